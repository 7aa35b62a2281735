"""timm's layout, which is swinkit's own for Swin V1 and V2: nothing to rename, derived buffers dropped.

Patch merging sits at the START of stage i + 1 (``layers.{i+1}.downsample``) and the classifier is ``head.fc``.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import Converted, drop_derived
from .io import TORCH_SUFFIXES, write_tensors

FAMILIES = ("swin", "swinv2")  # what timm has; swinkit's CSWin files use the same scheme and read through here
VARIANTS: tuple[str, ...] = ()
SUFFIXES = TORCH_SUFFIXES


def detect(state: dict[str, torch.Tensor]) -> bool:
    """Merging at the start of stage 1 (not the end of stage 0, as in the official layout), or a ``head.fc`` beside
    ``layers`` (OpenMMLab's classifier is ``head.fc`` too, beside ``stages``)."""
    starts = "layers.1.downsample.norm.weight" in state and "layers.0.downsample.norm.weight" not in state
    return starts or ("head.fc.weight" in state and not any(k.startswith("stages.") for k in state))


def to_swinkit(state: dict[str, torch.Tensor], family: str) -> Converted:
    return drop_derived(state)


def from_swinkit(model: nn.Module, state: dict[str, torch.Tensor], variant: str | None) -> dict[str, torch.Tensor]:
    return dict(state)


write = write_tensors
