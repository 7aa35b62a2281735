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
from functools import partial

import torch
from torch import nn

from .common import Converted, drop_derived, qkv_stored_in_by_out, rename, split_full_attention_branches
from .io import TORCH_SUFFIXES, write_tensors

FAMILIES = ("swin", "swinv2", "cswin")
VARIANTS: tuple[str, ...] = ()
SUFFIXES = TORCH_SUFFIXES

_CSWIN_RULES = [
    (r"^stage1_conv_embed\.0\.", "patch_embed.proj."),
    (r"^stage1_conv_embed\.2\.", "patch_embed.norm."),
    (r"^stage(\d+)\.(\d+)\.", lambda m: f"layers.{int(m[1]) - 1}.blocks.{m[2]}."),
    (r"^merge(\d+)\.", r"layers.\1.downsample."),
    (r"\.attns\.(\d+)\.get_v\.", r".attns.\1.lepe."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
]


def detect(state: dict[str, torch.Tensor]) -> bool:
    """Swin: merging at the end of stage 0 with a LayerNorm named ``weight`` (MindSpore's is ``gamma``) and qkv
    stored [3C, C] (PaddleClas's is [C, 3C]); CSWin: the ``stage1_conv_embed`` stem with its norm's ``weight``."""
    swin = "layers.0.downsample.norm.weight" in state and not qkv_stored_in_by_out(state)
    return swin or "stage1_conv_embed.2.weight" in state


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


_CSWIN_TO_OFFICIAL = [
    (r"^patch_embed\.proj\.", "stage1_conv_embed.0."),
    (r"^patch_embed\.norm\.", "stage1_conv_embed.2."),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.", lambda m: f"stage{int(m[1]) + 1}.{m[2]}."),
    (r"^layers\.(\d+)\.downsample\.", r"merge\1."),
    (r"\.attns\.(\d+)\.lepe\.", r".attns.\1.get_v."),
    (r"^head\.fc\.", "head."),
]


def to_official(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """swinkit's layout -> the official one (the inverse of ``to_swinkit``; derived buffers are not written: the
    official ``load_pretrained`` deletes and rebuilds them anyway)."""
    if family == "cswin":
        return rename(state, _CSWIN_TO_OFFICIAL)
    return {re.sub(r"^head\.fc\.", "head.", _shift_downsample(k, -1)): v for k, v in state.items()}


def from_swinkit(model: nn.Module, state: dict[str, torch.Tensor], variant: str | None) -> dict[str, torch.Tensor]:
    return to_official(state, model.family)


write = partial(write_tensors, container="model")  # {"model": state}, as the official training code saves
