"""Faster / Mask R-CNN checkpoints in the layouts they are published in, both ways.

swinkit's detectors are torchvision's modules on a Swin backbone (``swinkit.models.rcnn``), so their own names are
torchvision's (``backbone.fpn.*``, ``rpn.head.*``, ``roi_heads.*``) with the Swin backbone under ``backbone.body.``
and its output norms under ``backbone.out_norms.``. Layouts:

- ``torchvision``: those names, in a ``.pth`` file. A torchvision detector of another backbone
  (``maskrcnn_resnet50_fpn``'s ``backbone.body.layer1...``) gives its heads: the ResNet body is reported and not
  taken, and so is every tensor whose shape does not fit (the FPN's lateral convs read the backbone's widths).
- ``mmdet``: the official Swin-Transformer-Object-Detection releases and mmdetection's own (``state_dict``
  envelope): ``backbone.*`` in the official or OpenMMLab names with ``backbone.norm{i}`` (``checkpoints.dense``),
  ``neck.lateral_convs.{i}.conv`` / ``neck.fpn_convs.{i}.conv`` (torchvision's FPN ``inner_blocks`` /
  ``layer_blocks``), ``rpn_head.rpn_conv|rpn_cls|rpn_reg``, ``roi_head.bbox_head.shared_fcs.{0,1}|fc_cls|fc_reg``
  and ``roi_head.mask_head.convs.{i}.conv|upsample|conv_logits``. mmdet puts the background last in ``fc_cls`` and
  has no background rows in ``fc_reg`` and ``conv_logits``; torchvision puts it first in all three: the class rows
  are moved and the background's box and mask rows are zeros (never read: torchvision skips the background in both).
  A class-agnostic ``fc_reg`` (4 rows), extra FPN convs and heads torchvision has no module for (Cascade, HTC) are
  reported and not taken.
"""

from __future__ import annotations

import re

import torch

from ..core.errors import CheckpointError
from .common import Converted, rename
from .dense import backbone_from_swinkit, backbone_to_swinkit

LAYOUTS = ("torchvision", "mmdet")
BOX_CLASSIFIER = "roi_heads.box_predictor.cls_score"
BOX_REGRESSOR = "roi_heads.box_predictor.bbox_pred"
MASK_CLASSIFIER = "roi_heads.mask_predictor.mask_fcn_logits"
PREDICTORS = tuple(f"{name}.{p}" for name in (BOX_CLASSIFIER, BOX_REGRESSOR, MASK_CLASSIFIER) for p in ("weight",
                                                                                                       "bias"))
# (mmdet's name, torchvision's; {i} a level or layer): one table read both ways. The predictors' class rows are
# moved apart (``mmdet_to_swinkit``).
_NAMES = [
    ("neck.lateral_convs.{i}.conv.", "backbone.fpn.inner_blocks.{i}.0."),
    ("neck.fpn_convs.{i}.conv.", "backbone.fpn.layer_blocks.{i}.0."),
    ("rpn_head.rpn_conv.", "rpn.head.conv.0.0."),
    ("rpn_head.rpn_cls.", "rpn.head.cls_logits."),
    ("rpn_head.rpn_reg.", "rpn.head.bbox_pred."),
    ("roi_head.bbox_head.shared_fcs.0.", "roi_heads.box_head.fc6."),
    ("roi_head.bbox_head.shared_fcs.1.", "roi_heads.box_head.fc7."),
    ("roi_head.bbox_head.fc_cls.", f"{BOX_CLASSIFIER}."),
    ("roi_head.bbox_head.fc_reg.", f"{BOX_REGRESSOR}."),
    ("roi_head.mask_head.convs.{i}.conv.", "roi_heads.mask_head.{i}.0."),
    ("roi_head.mask_head.upsample.", "roi_heads.mask_predictor.conv5_mask."),
    ("roi_head.mask_head.conv_logits.", f"{MASK_CLASSIFIER}."),
]
_MMDET_HEADS = ("neck.", "rpn_head.", "roi_head.")


def _rules(to_torchvision: bool) -> list[tuple[str, str]]:
    rules = []
    for mm, tv in _NAMES:
        old, new = (mm, tv) if to_torchvision else (tv, mm)
        rules.append(("^" + re.escape(old).replace(re.escape("{i}"), r"(\d+)"), new.replace("{i}", r"\1")))
    return rules


_TO_TORCHVISION, _TO_MMDET = _rules(True), _rules(False)


def detect(state: dict[str, torch.Tensor]) -> str | None:
    """'swinkit', 'torchvision' or 'mmdet' for a whole detector's state dict, None for anything else (a
    classification or SSL checkpoint, which gives the backbone only)."""
    if any(k.startswith(_MMDET_HEADS) for k in state) and any(k.startswith("backbone.") for k in state):
        return "mmdet"
    if any(k.startswith("roi_heads.") for k in state):
        return "swinkit" if "backbone.body.patch_embed.proj.weight" in state else "torchvision"
    return None


def object_classes(state: dict[str, torch.Tensor]) -> int | None:
    """The object classes (background not counted) of a whole detector's box classifier (any layout), None for a
    checkpoint without one."""
    for key in (f"{BOX_CLASSIFIER}.weight", "roi_head.bbox_head.fc_cls.weight"):
        if key in state:
            return len(state[key]) - 1
    return None


def _class_rows(value: torch.Tensor, per_class: int, background_last: bool) -> torch.Tensor:
    """mmdet's rows (classes, then the background for the classifier, or no background) -> torchvision's
    (background first)."""
    if background_last:
        return torch.cat([value[-per_class:], value[:-per_class]])
    return torch.cat([value.new_zeros(per_class, *value.shape[1:]), value])


def mmdet_to_swinkit(state: dict[str, torch.Tensor], family: str) -> tuple[Converted, list[str]]:
    """mmdet's names -> swinkit's (``backbone.body.*``, ``backbone.out_norms.*``, torchvision's heads). Returns the
    converted state with the keys dropped as derived, and notes of what was moved or not taken."""
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    converted, norms = backbone_to_swinkit(backbone, family)
    out = {f"backbone.body.{k}": v for k, v in converted.state.items()}
    out.update({f"backbone.out_norms.{k}": v for k, v in norms.items()})
    notes, not_taken = [], []
    heads = {k: v for k, v in state.items() if k.startswith(_MMDET_HEADS)}
    for key, value in rename(heads, _TO_TORCHVISION).items():
        if key.startswith(_MMDET_HEADS):
            not_taken.append(key)
        elif key.startswith(BOX_REGRESSOR) and value.shape[0] == 4:
            not_taken.append(f"{key} (class-agnostic: torchvision regresses per class)")
        elif key.startswith(BOX_CLASSIFIER):
            out[key] = _class_rows(value, 1, background_last=True)
        elif key.startswith(BOX_REGRESSOR):
            out[key] = _class_rows(value, 4, background_last=False)
        elif key.startswith(MASK_CLASSIFIER):
            out[key] = _class_rows(value, 1, background_last=False)
        else:
            out[key] = value
    if any(k.startswith(BOX_CLASSIFIER) for k in out):
        notes.append("mmdet's class rows: background moved first in cls_score, zero background rows added to "
                     "bbox_pred and mask_fcn_logits")  # fmt: skip
    dropped = [f"backbone.{k}" for k in converted.dropped] + not_taken
    return Converted(out, dropped), notes


def swinkit_to_mmdet(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """The inverse of ``mmdet_to_swinkit``: official backbone names, mmdet's heads, mmdet's class rows."""
    body = {k.removeprefix("backbone.body."): v for k, v in state.items() if k.startswith("backbone.body.")}
    norms = {k.removeprefix("backbone.out_norms."): v for k, v in state.items() if k.startswith("backbone.out_norms.")}
    out = backbone_from_swinkit(body, norms, family)
    for key, value in state.items():
        if key.startswith(("backbone.body.", "backbone.out_norms.")):
            continue
        if key.startswith(BOX_CLASSIFIER):
            value = torch.cat([value[1:], value[:1]])
        elif key.startswith(BOX_REGRESSOR):
            value = value[4:]
        elif key.startswith(MASK_CLASSIFIER):
            value = value[1:]
        renamed = rename({key: value}, _TO_MMDET)
        (name,) = renamed
        if name == key:
            raise CheckpointError(f"{key} has no mmdet name; mmdet's Mask R-CNN layout holds the FPN, RPN and RoI "
                                  "heads only")  # fmt: skip
        out[name] = value
    return out
