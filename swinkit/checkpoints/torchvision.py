"""torchvision's layout: ``swin_t``/``swin_s``/``swin_b`` (V1) and ``swin_v2_t``/``swin_v2_s``/``swin_v2_b`` (V2).

Differences from swinkit's (timm's) layout:

- Stages are flattened into one ``features`` sequence: ``features.0.0`` is the patch embedding conv and
  ``features.0.2`` its norm, ``features.{2i+1}.{j}`` block j of stage i, and ``features.{2i+2}`` the patch merging
  between stages i and i + 1 (swinkit's ``layers.{i+1}.downsample``).
- The MLP is an ``nn.Sequential``: ``mlp.0`` and ``mlp.3`` are ``mlp.fc1`` and ``mlp.fc2``; the classifier is
  ``head`` rather than ``head.fc``.
- V2 keeps a single 3C ``attn.qkv.bias`` whose middle (key) third torchvision zeroes in every forward; swinkit keeps
  ``q_bias`` and ``v_bias`` and has no key bias. Early releases named ``logit_scale`` ``v2_logit_scale``.
- ``relative_position_index`` and V2's ``relative_coords_table`` are persistent buffers, so they are saved.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..layers import WindowAttentionV1, WindowAttentionV2
from ..layers.relative_position import log_spaced_coords, relative_position_index
from .common import Converted, drop_derived, rename
from .io import TORCH_SUFFIXES, write_tensors

FAMILIES = ("swin", "swinv2")
VARIANTS: tuple[str, ...] = ()
SUFFIXES = TORCH_SUFFIXES

_RULES = [
    (r"^features\.0\.0\.", "patch_embed.proj."),
    (r"^features\.0\.2\.", "patch_embed.norm."),
    (r"\.attn\.v2_logit_scale$", ".attn.logit_scale"),
    (r"\.mlp\.0\.", ".mlp.fc1."),
    (r"\.mlp\.3\.", ".mlp.fc2."),
    (r"^head\.", "head.fc."),
]


def detect(state: dict[str, torch.Tensor]) -> bool:
    """The flattened ``features`` sequence: block 0 of stage 0 is ``features.1.0``."""
    return "features.1.0.attn.qkv.weight" in state


def _stage_key(key: str) -> str:
    """``features.{2i+1}.{j}`` -> ``layers.{i}.blocks.{j}``; ``features.{2i}`` (i >= 1) -> ``layers.{i}.downsample``."""

    def repl(match: re.Match) -> str:
        index = int(match.group(1))
        return f"layers.{index // 2}.{'blocks' if index % 2 else 'downsample'}."

    return re.sub(r"^features\.([1-9]\d*)\.", repl, key)


def _split_qkv_bias(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # The key third is dropped whatever it holds: torchvision ignores it too, so the model computes the same function.
    out = {}
    for key, value in state.items():
        if key.endswith(".attn.qkv.bias"):
            prefix = key.removesuffix("qkv.bias")
            q_bias, _, v_bias = value.chunk(3)
            out[prefix + "q_bias"], out[prefix + "v_bias"] = q_bias, v_bias
        else:
            out[key] = value
    return out


def to_swinkit(state: dict[str, torch.Tensor], family: str) -> Converted:
    kept, dropped = drop_derived(state)
    out = {_stage_key(k): v for k, v in rename(kept, _RULES).items()}
    return Converted(_split_qkv_bias(out) if family == "swinv2" else out, dropped)


_TO_TORCHVISION = [
    (r"^patch_embed\.proj\.", "features.0.0."),
    (r"^patch_embed\.norm\.", "features.0.2."),
    (r"^layers\.(\d+)\.blocks\.", lambda m: f"features.{2 * int(m[1]) + 1}."),
    (r"^layers\.(\d+)\.downsample\.", lambda m: f"features.{2 * int(m[1])}."),
    (r"\.mlp\.fc1\.", ".mlp.0."),
    (r"\.mlp\.fc2\.", ".mlp.3."),
    (r"^head\.fc\.", "head."),
]


def from_swinkit(model: nn.Module, state: dict[str, torch.Tensor], variant: str | None) -> dict[str, torch.Tensor]:
    """swinkit's layout -> torchvision's, with the persistent ``relative_position_index`` (and V2's
    ``relative_coords_table``) of each block's window, so ``load_state_dict(strict=True)`` accepts it."""
    out = {}
    for key, value in rename(state, _TO_TORCHVISION).items():
        if key.endswith(".attn.q_bias"):
            prefix = key.removesuffix("q_bias")
            v_bias = state[_swinkit_key(key, "v_bias")]
            out[prefix + "qkv.bias"] = torch.cat([value, torch.zeros_like(value), v_bias])
        elif not key.endswith(".attn.v_bias"):
            out[key] = value
    # torchvision's derived tables are persistent buffers: write them for each block's window.
    for name, module in model.named_modules():
        if not isinstance(module, (WindowAttentionV1, WindowAttentionV2)):
            continue
        prefix = rename({name + ".x": None}, _TO_TORCHVISION).popitem()[0].removesuffix("x")
        window = tuple(module.window_size)
        out[prefix + "relative_position_index"] = relative_position_index(window).flatten().clone()
        if isinstance(module, WindowAttentionV2):
            out[prefix + "relative_coords_table"] = log_spaced_coords(window, (0, 0)).unsqueeze(0).clone()
    return out


def _swinkit_key(torchvision_key: str, leaf: str) -> str:
    """``features.{2i+1}.{j}.attn.q_bias`` -> ``layers.{i}.blocks.{j}.attn.<leaf>``."""
    m = re.match(r"features\.(\d+)\.(\d+)\.attn\.", torchvision_key)
    return f"layers.{(int(m[1]) - 1) // 2}.blocks.{m[2]}.attn.{leaf}"


write = write_tensors
