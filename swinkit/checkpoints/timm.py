"""timm's layout, which is swinkit's own for Swin V1 and V2: nothing to rename, derived buffers dropped."""

from __future__ import annotations

import torch

from .common import Converted, drop_derived


def detect(state: dict[str, torch.Tensor]) -> bool:
    return "head.fc.weight" in state or any(k.startswith("layers.1.downsample.") for k in state)


def to_swinkit(state: dict[str, torch.Tensor], family: str) -> Converted:
    return drop_derived(state)
