"""What every layout module shares: the result type, the derived buffers that are never loaded, and renaming."""

from __future__ import annotations

import re
from typing import NamedTuple

import torch

# Tables and masks that a model derives from its window geometry. Checkpoints of the official code, torchvision and
# MindCV carry them; loading them would pin the old window, so they are always dropped and rebuilt.
DERIVED_BUFFERS = ("relative_position_index", "relative_coords_table", "attn_mask", "k_bias")


class Converted(NamedTuple):
    """A state dict in swinkit's layout, and the source keys that were dropped on the way (derived buffers)."""

    state: dict[str, torch.Tensor]
    dropped: list[str]


def drop_derived(state: dict[str, torch.Tensor]) -> Converted:
    dropped = [key for key in state if any(d in key for d in DERIVED_BUFFERS)]
    return Converted({k: v for k, v in state.items() if k not in dropped}, dropped)


def rename(state: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Apply regex substitutions in order to every key."""
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def split_full_attention_branches(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CSWin: split a one-branch, all-heads attention before the last stage into swinkit's two half branches.

    The official model gives a stage whose map equals its split size one full-attention branch (``attns.0`` with all
    channels). That is the same computation as two branches of half the channels and heads over the whole map, which
    is what swinkit's two stripe branches do on such a map, so the LePE weights are cut in two channel halves.
    """
    stages = {int(m[1]) for k in state if (m := re.match(r"layers\.(\d+)\.blocks\.", k))}
    if not stages:
        return state
    last = max(stages)
    out = {}
    for key, value in state.items():
        m = re.match(r"(layers\.(\d+)\.blocks\.\d+\.attns\.)0(\.lepe\.(?:weight|bias))$", key)
        other = m and f"{m[1]}1{m[3]}"
        if m and int(m[2]) != last and other not in state:
            half = value.shape[0] // 2
            out[key], out[other] = value[:half], value[half:]
        else:
            out[key] = value
    return out


def qkv_stored_in_by_out(state: dict[str, torch.Tensor]) -> bool:
    """Whether the fused qkv weights are stored [C, 3C] (Paddle's [in, out] Linear) instead of PyTorch's [3C, C]."""
    return any(
        k.endswith(".attn.qkv.weight") and v.ndim == 2 and v.shape[1] == 3 * v.shape[0] != 0
        for k, v in state.items()
        if isinstance(v, torch.Tensor)
    )
