"""The official layouts: microsoft/Swin-Transformer (V1 and V2) and microsoft/CSWin-Transformer.

Swin, against swinkit's (timm's) layout: patch merging sits at the END of stage i (``layers.{i}.downsample``,
i < 3) instead of the start of stage i + 1, the classifier is ``head`` rather than ``head.fc``, and the derived
``relative_position_index``, ``relative_coords_table`` and ``attn_mask`` buffers are saved.

CSWin (``model.family == "cswin"``): ``stage1_conv_embed.{0,2}`` is the stem conv and norm, ``stage{s}.{j}`` the
blocks of stage s (1-based), ``merge{i}`` the downsampling before stage i + 1, ``attns.{b}.get_v`` the LePE conv and
``head`` the classifier; see ``swinkit.models.cswin`` for the full table. Its checkpoints come in timm's
CheckpointSaver container (``state_dict`` and ``state_dict_ema``), unwrapped by ``io.extract_state_dict``.
"""

from __future__ import annotations

import re

import torch

from .common import Converted, drop_derived, rename, split_full_attention_branches

_CSWIN_RULES = [
    (r"^stage1_conv_embed\.0\.", "patch_embed.proj."),
    (r"^stage1_conv_embed\.2\.", "patch_embed.norm."),
    (r"^stage(\d+)\.(\d+)\.", lambda m: f"layers.{int(m[1]) - 1}.blocks.{m[2]}."),
    (r"^merge(\d+)\.", r"layers.\1.downsample."),
    (r"\.attns\.(\d+)\.get_v\.", r".attns.\1.lepe."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
]


def detect(state: dict[str, torch.Tensor]) -> bool:
    return (
        "head.weight" in state
        or "stage1_conv_embed.0.weight" in state
        or any(k.startswith("layers.0.downsample.") for k in state)
    )


def _shift_downsample(key: str, step: int) -> str:
    return re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + step}.downsample.", key)


def to_swinkit(state: dict[str, torch.Tensor], family: str) -> Converted:
    if family == "cswin":
        return Converted(split_full_attention_branches(rename(state, _CSWIN_RULES)), [])
    kept, dropped = drop_derived(state)
    out = {}
    for key, value in kept.items():
        key = _shift_downsample(key, +1)
        key = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)
        out[key] = value
    return Converted(out, dropped)
