"""Mask R-CNN and Faster R-CNN (He et al., 2017; Ren et al., 2015) on a swinkit backbone: the detection and
instance segmentation models of the Swin papers, built from torchvision's ``torchvision.models.detection`` (its RPN,
RoI heads, box coder, transform and post-processing are used as they are; only the backbone is swinkit's).

- The backbone's four stage maps go through a LayerNorm each (the official detection backbone's ``norm{i}``), then
  torchvision's ``FeaturePyramidNetwork`` (1x1 laterals, nearest top-down sums, 3x3 outputs, 256 channels) and
  ``LastLevelMaxPool``: P2-P6 at strides 4-64, mmdet's neck for the Swin configs.
- Anchors of one size per level (32-512 px) at ratios 0.5, 1, 2; RPN 3x3 conv + objectness + box deltas; RoIAlign
  7x7 (boxes) and 14x14 (masks) over P2-P5 by box size; two 1024-wide FCs for boxes; four 3x3 convs, a transposed
  conv and per-class logits for masks: mmdet's Mask R-CNN heads, in torchvision's modules and names, so torchvision's
  own head weights load (``swinkit.checkpoints.detection``).
- ``num_classes`` counts object classes (80 for COCO, mmdet's convention); torchvision's predictors hold one more, the
  background, at index 0, so a target's ``labels`` run from 1 to ``num_classes``.
- The model takes a list of RGB images in 0..1 of any sizes (torchvision's convention) and normalises them. In
  eval mode it resizes each to fit ``max_size`` x ``min_size`` (mmdet's test scale 1333 x 800) and returns boxes,
  labels, scores (and masks) in the input image's pixels. In training it does not resize: swinkit's pipeline has
  already drawn the training scale (``swinkit.data.detection``), as torchvision's references do for multi-scale
  and large-scale-jitter training (``_skip_resize``). Batches are padded to a multiple of 32.
- Where torchvision differs from mmdet's Swin configs, torchvision is kept and the difference is documented:
  RoIAlign with ``sampling_ratio=2`` and no half-pixel alignment (mmdet: adaptive sampling, ``aligned=True``),
  smooth-L1 box losses (beta 1/9; mmdet's Swin configs: L1), anchors rounded to whole pixels. The RPN keeps 1000
  proposals per image in training, as mmdet's Swin configs (torchvision's default: 2000).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..core.errors import ConfigError
from .base import NO_WEIGHT_DECAY_KEYWORDS
from .dense import dense_backbone, output_norms, stage_maps
from .registry import IMAGENET_MEAN, IMAGENET_STD, register_model

# What the official Swin detection configs keep out of weight decay (absolute_pos_embed,
# relative_position_bias_table, norm: mmdet's paramwise custom_keys, matched as substrings), plus Swin V2's
# position-bias MLP and logit scales.
DETECTION_NO_DECAY = ("absolute_pos_embed", "norm", *NO_WEIGHT_DECAY_KEYWORDS)
ANCHOR_RATIOS = (0.5, 1.0, 2.0)


class SwinFPN(nn.Module):
    """The backbone torchvision's detectors take: ``body`` (the swinkit backbone), ``out_norms`` and ``fpn``; its
    forward returns P2-P6 as an ordered dict ('0'-'3', 'pool') of ``out_channels`` maps."""

    def __init__(self, body: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.out_norms = output_norms(body)
        widths = [info["num_chs"] for info in body.feature_info]
        self.fpn = FeaturePyramidNetwork(widths, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = stage_maps(self.body, self.out_norms, x)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


class _SwinDetector:
    """What Faster and Mask R-CNN share on top of torchvision's classes: swinkit's model interface (class count,
    patch embedding, stage info, weight decay, activation memory)."""

    family = "rcnn"
    first_conv = "backbone.body.patch_embed.proj"
    classifier = "roi_heads.box_predictor.cls_score"
    backbone: SwinFPN

    @property
    def num_classes(self) -> int:
        """Object classes, the background not counted."""
        return self.roi_heads.box_predictor.cls_score.out_features - 1

    @property
    def patch_embed(self) -> nn.Module:
        return self.backbone.body.patch_embed

    @property
    def feature_info(self) -> list[dict]:
        return self.backbone.body.feature_info

    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if any(k in name for k in DETECTION_NO_DECAY)}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.body.set_grad_checkpointing(enable)

    def set_attention_chunks(self, chunks: int) -> None:
        self.backbone.body.set_attention_chunks(chunks)


def _parts(backbone: str, num_classes: int, img_size, drop_path_rate: float, window_padding: str,
           backbone_args: dict | None, fpn_channels: int, anchor_sizes: Sequence[int], representation_size: int,
           min_size: int, max_size: int, image_mean: Sequence[float], image_std: Sequence[float],
           rpn_batch_size_per_image: int, box_batch_size_per_image: int) -> dict:  # fmt: skip
    """torchvision's constructor arguments for a Swin detector."""
    if num_classes < 1:
        raise ConfigError(f"a detector needs num_classes >= 1 (object classes, background not counted), got "
                          f"{num_classes}")  # fmt: skip
    if len(anchor_sizes) != 5:
        raise ConfigError(f"anchor_sizes: one size per level P2-P6, five in all; got {tuple(anchor_sizes)}")
    body = dense_backbone(backbone, img_size, drop_path_rate, window_padding, backbone_args)
    return dict(
        backbone=SwinFPN(body, fpn_channels),
        min_size=min_size, max_size=max_size, image_mean=list(image_mean), image_std=list(image_std),
        rpn_anchor_generator=AnchorGenerator(tuple((s,) for s in anchor_sizes), (ANCHOR_RATIOS,) * 5),
        rpn_post_nms_top_n_train=1000,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        box_head=TwoMLPHead(fpn_channels * 7 * 7, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
        box_batch_size_per_image=box_batch_size_per_image,
        _skip_resize=True,
    )  # fmt: skip


class FasterRCNN(_SwinDetector, TorchvisionFasterRCNN):
    """torchvision's Faster R-CNN on a swinkit backbone with an FPN (see the module docstring).

    Args:
        backbone: a registered classification model name; its classifier and final norm are dropped.
        num_classes: object classes (80 for COCO), the background not counted.
        img_size: the nominal input (H, W) or an int: what the backbone's position tables are built for; any size
            runs.
        drop_path_rate: the backbone's stochastic depth (0.2 in the official Swin-T configs).
        window_padding: 'visible' (the official dense backbone's rule, default) or 'masked', see ``UperNet``.
        backbone_args: further constructor arguments of the backbone (``window_size``, ``depths``, ...).
        fpn_channels: the FPN's width (256).
        anchor_sizes: the anchor side of each level P2-P6, in pixels.
        representation_size: the box head's FC width (1024).
        min_size, max_size: the test scale (shorter side, longer-side limit); training keeps the pipeline's sizes.
        image_mean, image_std: normalisation of 0..1 RGB inputs.
        rpn_batch_size_per_image, box_batch_size_per_image: anchors and proposals sampled per image for the losses.
    """

    def __init__(
        self,
        backbone: str = "swin_tiny_patch4_window7_224",
        num_classes: int = 80,
        img_size: int | tuple[int, int] = (800, 1333),
        drop_path_rate: float = 0.2,
        window_padding: str = "visible",
        backbone_args: dict | None = None,
        fpn_channels: int = 256,
        anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
        representation_size: int = 1024,
        min_size: int = 800,
        max_size: int = 1333,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        rpn_batch_size_per_image: int = 256,
        box_batch_size_per_image: int = 512,
    ) -> None:
        parts = _parts(backbone, num_classes, img_size, drop_path_rate, window_padding, backbone_args, fpn_channels,
                       anchor_sizes, representation_size, min_size, max_size, image_mean, image_std,
                       rpn_batch_size_per_image, box_batch_size_per_image)  # fmt: skip
        super().__init__(num_classes=None, **parts)
        self.backbone_name, self.img_size = backbone, self.backbone.body.img_size


class MaskRCNN(_SwinDetector, TorchvisionMaskRCNN):
    """torchvision's Mask R-CNN on a swinkit backbone with an FPN: ``FasterRCNN``'s arguments, and ``mask_channels``,
    the width of the mask head's four convs (256)."""

    def __init__(
        self,
        backbone: str = "swin_tiny_patch4_window7_224",
        num_classes: int = 80,
        img_size: int | tuple[int, int] = (800, 1333),
        drop_path_rate: float = 0.2,
        window_padding: str = "visible",
        backbone_args: dict | None = None,
        fpn_channels: int = 256,
        anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
        representation_size: int = 1024,
        mask_channels: int = 256,
        min_size: int = 800,
        max_size: int = 1333,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        rpn_batch_size_per_image: int = 256,
        box_batch_size_per_image: int = 512,
    ) -> None:
        parts = _parts(backbone, num_classes, img_size, drop_path_rate, window_padding, backbone_args, fpn_channels,
                       anchor_sizes, representation_size, min_size, max_size, image_mean, image_std,
                       rpn_batch_size_per_image, box_batch_size_per_image)  # fmt: skip
        heads = MaskRCNNHeads(fpn_channels, (mask_channels,) * 4, 1)
        super().__init__(num_classes=None, mask_head=heads,
                         mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes + 1),
                         **parts)  # fmt: skip
        self.backbone_name, self.img_size = backbone, self.backbone.body.img_size


_SOURCE = "Swin-Transformer-Object-Detection (COCO val2017 box/mask AP)"
_DETECTION = dict(source=_SOURCE, task="detection", interpolation="bilinear")


@register_model(defaults=dict(backbone="swin_tiny_patch4_window7_224", drop_path_rate=0.2), box_ap=46.0,
                mask_ap=41.6, **_DETECTION)  # fmt: skip
def maskrcnn_swin_tiny_patch4_window7(**kwargs) -> MaskRCNN:
    return MaskRCNN(**kwargs)


@register_model(defaults=dict(backbone="swin_small_patch4_window7_224", drop_path_rate=0.3), box_ap=48.5,
                mask_ap=43.3, **_DETECTION)  # fmt: skip
def maskrcnn_swin_small_patch4_window7(**kwargs) -> MaskRCNN:
    return MaskRCNN(**kwargs)


@register_model(defaults=dict(backbone="swin_base_patch4_window7_224", drop_path_rate=0.3), **_DETECTION)
def maskrcnn_swin_base_patch4_window7(**kwargs) -> MaskRCNN:
    return MaskRCNN(**kwargs)


@register_model(defaults=dict(backbone="swinv2_tiny_window8_256", drop_path_rate=0.2), **_DETECTION)
def maskrcnn_swinv2_tiny_window8(**kwargs) -> MaskRCNN:
    return MaskRCNN(**kwargs)


@register_model(defaults=dict(backbone="swin_tiny_patch4_window7_224", drop_path_rate=0.2), **_DETECTION)
def fasterrcnn_swin_tiny_patch4_window7(**kwargs) -> FasterRCNN:
    return FasterRCNN(**kwargs)
