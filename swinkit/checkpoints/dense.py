"""The backbone of an OpenMMLab dense checkpoint (mmseg's UperNet, mmdet's Mask R-CNN), both ways: ``backbone.*`` in
the official classification names (``checkpoints.microsoft``) or OpenMMLab's own (``checkpoints.openmmlab``), with
the four output norms as ``backbone.norm{i}``. swinkit writes the official names, as the Swin releases do."""

from __future__ import annotations

import re

import torch

from . import microsoft, openmmlab
from .common import Converted

_NORM = re.compile(r"^norm(\d+)\.(.*)$")


def backbone_to_swinkit(backbone: dict[str, torch.Tensor], family: str) -> tuple[Converted, dict[str, torch.Tensor]]:
    """``backbone.*`` entries (the prefix removed) -> (the classification backbone in swinkit's names, the output
    norms as ``{i}.weight`` / ``{i}.bias``)."""
    rest, norms = {}, {}
    for key, value in backbone.items():
        m = _NORM.match(key)
        if m:
            norms[f"{m[1]}.{m[2]}"] = value
        else:
            rest[key] = value
    names = openmmlab if openmmlab.detect(rest) else microsoft
    return names.to_swinkit(rest, family), norms


def backbone_from_swinkit(body: dict[str, torch.Tensor], norms: dict[str, torch.Tensor],
                          family: str) -> dict[str, torch.Tensor]:  # fmt: skip
    """The inverse of ``backbone_to_swinkit``, in the official names, with the ``backbone.`` prefix."""
    out = {"backbone." + k: v for k, v in microsoft.to_official(body, family).items()}
    out.update({f"backbone.norm{key}": v for key, v in norms.items()})
    return out
