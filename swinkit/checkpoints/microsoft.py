"""The official microsoft/Swin-Transformer layout (V1 and V2).

Differences from swinkit's (timm's) layout: patch merging sits at the END of stage i (``layers.{i}.downsample``,
i < 3) instead of the start of stage i + 1, the classifier is ``head`` rather than ``head.fc``, and the derived
``relative_position_index``, ``relative_coords_table`` and ``attn_mask`` buffers are saved.
"""

from __future__ import annotations

import re

import torch

from .common import Converted, drop_derived


def detect(state: dict[str, torch.Tensor]) -> bool:
    return "head.weight" in state or any(k.startswith("layers.0.downsample.") for k in state)


def _shift_downsample(key: str, step: int) -> str:
    return re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + step}.downsample.", key)


def to_swinkit(state: dict[str, torch.Tensor], family: str) -> Converted:
    kept, dropped = drop_derived(state)
    out = {}
    for key, value in kept.items():
        key = _shift_downsample(key, +1)
        key = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)
        out[key] = value
    return Converted(out, dropped)
