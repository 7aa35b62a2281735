"""UperNet (Xiao et al., 2018) on a swinkit backbone: the semantic segmentation model of the Swin papers.

The head is mmsegmentation's ``UPerHead`` and the auxiliary head its ``FCNHead``, with the Swin configs' settings, and
their parameter names (``decode_head.psp_modules.0.1.conv``, ``.bn``, ``conv_seg``), so the official releases load by
renaming the backbone alone:

- a pyramid pooling module on the last stage (pool scales 1, 2, 3, 6), a 3x3 bottleneck, then an FPN over the four
  stages (1x1 laterals, top-down bilinear sums, 3x3 convs), every level upsampled to stride 4, concatenated and fused
  by a 3x3 conv; dropout 0.1 (``Dropout2d``) and a 1x1 classifier;
- every conv is conv (no bias) + BatchNorm + ReLU; upsampling is bilinear with ``align_corners=False``;
- the auxiliary head (training only) is one 3x3 conv of 256 channels on stage 3, dropout 0.1 and a classifier;
- the backbone's stage maps go through a LayerNorm each (``out_norms``, the official ``backbone.norm{i}``) and its
  windows follow the dense-task padding rule of the official segmentation backbone (``layers.window``).

In eval mode ``model(images)`` returns the logits at the input's size, ``(B, num_classes, H, W)``, as HF's and mmseg's
inference do; in training it returns the main and auxiliary logits at the input's size, which
``swinkit.engine.objectives.Segmentation`` weighs 1.0 and 0.4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from .base import NO_WEIGHT_DECAY_KEYWORDS
from .dense import dense_backbone, output_norms, stage_maps
from .registry import register_model

# What the official Swin segmentation configs keep out of weight decay (mmseg's paramwise custom_keys, matched as
# substrings of the parameter names), plus Swin V2's position-bias MLP and logit scales.
SEGMENTATION_NO_DECAY = ("absolute_pos_embed", "norm", *NO_WEIGHT_DECAY_KEYWORDS)


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear, ``align_corners=False``: every upsampling in UperNet (mmseg's ``resize``)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class AdaptiveAvgPool(nn.Module):
    """``nn.AdaptiveAvgPool2d(size)`` with PyTorch's bins (bin i of n positions: floor(i*n/size) to
    ceil((i+1)*n/size)), computed as two averaging matrices made from the input's size inside the graph: one exported
    ONNX graph then pools every input size right, where the ONNX exporter's own lowering of adaptive pooling fixes
    gather indices at the traced size (other sizes fail in ONNX Runtime or pool the wrong pixels)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def _bins(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """(size, n): row i averages bin i."""
        i = torch.arange(self.size, device=like.device)
        start, end = (i * n) // self.size, ((i + 1) * n + self.size - 1) // self.size
        j = torch.arange(n, device=like.device)
        inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
        return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._bins(x.shape[-2], x) @ x @ self._bins(x.shape[-1], x).T

    def extra_repr(self) -> str:
        return f"size={self.size}"


class ConvModule(nn.Module):
    """conv (no bias) -> BatchNorm -> ReLU, mmcv's ``ConvModule`` with its parameter names."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class UPerHead(nn.Module):
    """The decode head: pyramid pooling on the last map, an FPN over all of them, one fused map at the first's
    stride, classified per pixel."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 512,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1) -> None:  # fmt: skip
        super().__init__()
        pools = (nn.Sequential(AdaptiveAvgPool(s), ConvModule(in_channels[-1], channels, 1)) for s in pool_scales)
        self.psp_modules = nn.ModuleList(pools)
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def pyramid_pooling(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [resize(module(x), x.shape[2:]) for module in self.psp_modules]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features, strict=False)]
        laterals.append(self.pyramid_pooling(features[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals, strict=False)]
        outs.append(laterals[-1])
        outs = [outs[0], *(resize(out, outs[0].shape[2:]) for out in outs[1:])]
        return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, dim=1))))


class FCNHead(nn.Module):
    """The auxiliary head: 3x3 convs on one stage's map (``in_index``), dropout and a per-pixel classifier."""

    def __init__(self, in_channels: int, num_classes: int, in_index: int = 2, channels: int = 256,
                 num_convs: int = 1, dropout: float = 0.1) -> None:  # fmt: skip
        super().__init__()
        self.in_index = in_index
        widths = [in_channels] + [channels] * num_convs
        self.convs = nn.Sequential(*(ConvModule(a, b, 3) for a, b in zip(widths, widths[1:], strict=False)))
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.convs(features[self.in_index])))


def init_head(module: nn.Module) -> None:
    """mmseg's initialisation of the heads: convs Kaiming-normal (fan out, ReLU), BatchNorm (1, 0), the per-pixel
    classifier normal with std 0.01 and zero bias."""
    if isinstance(module, ConvModule):
        nn.init.kaiming_normal_(module.conv.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, (UPerHead, FCNHead)):
        nn.init.normal_(module.conv_seg.weight, std=0.01)
        nn.init.zeros_(module.conv_seg.bias)


class UperNet(nn.Module):
    """UperNet on any swinkit backbone (Swin V1/V2, CSWin), see the module docstring.

    Args:
        backbone: a registered classification model name; its classifier and final norm are dropped.
        num_classes: segmentation classes (150 for ADE20K).
        img_size: the training crop, (H, W) or an int; any size runs.
        channels, pool_scales, dropout: the decode head's width, PPM scales and dropout.
        auxiliary: build the auxiliary FCN head (training only; its weights are kept in checkpoints).
        auxiliary_channels, auxiliary_index: its width and the stage it reads.
        drop_path_rate: the backbone's stochastic depth (0.3 in the official Swin-T/S/B ADE20K configs).
        window_padding: 'visible' (the official segmentation backbone's rule, default) or 'masked' (swinkit's
            classification rule), see ``HierarchicalModel.set_window_padding``. CSWin takes neither.
        backbone_args: further constructor arguments of the backbone (``window_size``, ``pretrained_window_sizes``,
            ``depths``, ...).
    """

    family = "upernet"
    first_conv = "backbone.patch_embed.proj"
    classifier = "decode_head.conv_seg"

    def __init__(
        self,
        backbone: str = "swin_tiny_patch4_window7_224",
        num_classes: int = 150,
        img_size: int | tuple[int, int] = 512,
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
        auxiliary: bool = True,
        auxiliary_channels: int = 256,
        auxiliary_index: int = 2,
        drop_path_rate: float = 0.3,
        window_padding: str = "visible",
        backbone_args: dict | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"a segmentation model needs num_classes >= 1, got {num_classes}")
        self.backbone_name = backbone
        model = self.backbone = dense_backbone(backbone, img_size, drop_path_rate, window_padding, backbone_args)
        widths = [info["num_chs"] for info in model.feature_info]
        if not 0 <= auxiliary_index < len(widths):
            raise ConfigError(f"auxiliary_index={auxiliary_index} is not a stage of {backbone} (0..{len(widths) - 1})")
        self.out_norms = output_norms(model)
        self.decode_head = UPerHead(widths, num_classes, channels, pool_scales, dropout)
        self.auxiliary_head = (
            FCNHead(widths[auxiliary_index], num_classes, auxiliary_index, auxiliary_channels, dropout=dropout)
            if auxiliary else None
        )  # fmt: skip
        self.img_size = model.img_size
        self._num_classes = num_classes
        for head in (self.decode_head, self.auxiliary_head):
            if head is not None:
                head.apply(init_head)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def patch_embed(self) -> nn.Module:
        return self.backbone.patch_embed

    @property
    def feature_info(self) -> list[dict]:
        return self.backbone.feature_info

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's four stage maps, each through its LayerNorm, (B, C_i, H / 4·2^i, W / 4·2^i)."""
        return stage_maps(self.backbone, self.out_norms, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        features = self.forward_features(x)
        logits = resize(self.decode_head(features), x.shape[2:])
        if not self.training:
            return logits
        if self.auxiliary_head is None:
            return (logits,)
        return logits, resize(self.auxiliary_head(features), x.shape[2:])

    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if any(k in name for k in SEGMENTATION_NO_DECAY)}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def set_attention_chunks(self, chunks: int) -> None:
        self.backbone.set_attention_chunks(chunks)


_ADE = dict(num_classes=150, img_size=512, drop_path_rate=0.3)
_SOURCE = "Swin-Transformer-Semantic-Segmentation (ADE20K val mIoU, single scale)"
_SEGMENTATION = dict(source=_SOURCE, task="segmentation")


@register_model(defaults=dict(_ADE, backbone="swin_tiny_patch4_window7_224"), miou=44.51, **_SEGMENTATION)
def upernet_swin_tiny_patch4_window7_512(**kwargs) -> UperNet:
    return UperNet(**kwargs)


@register_model(defaults=dict(_ADE, backbone="swin_small_patch4_window7_224"), miou=47.64, **_SEGMENTATION)
def upernet_swin_small_patch4_window7_512(**kwargs) -> UperNet:
    return UperNet(**kwargs)


@register_model(defaults=dict(_ADE, backbone="swin_base_patch4_window7_224"), miou=48.13, **_SEGMENTATION)
def upernet_swin_base_patch4_window7_512(**kwargs) -> UperNet:
    return UperNet(**kwargs)
