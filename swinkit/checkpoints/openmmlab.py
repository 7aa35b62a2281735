"""OpenMMLab's own Swin (V1) layout: mmsegmentation 1.x, mmdetection 2.x/3.x and their converted pretrained files
(``swin2mmseg``), against the official one (``checkpoints.microsoft``):

- ``stages.{i}`` for ``layers.{i}`` (patch merging at the end of stage i, as in the official layout);
- ``attn.w_msa.*`` for ``attn.*``, ``ffn.layers.0.0`` and ``ffn.layers.1`` for ``mlp.fc1`` and ``mlp.fc2``;
- ``patch_embed.projection`` for ``patch_embed.proj``, ``norm3`` for the final ``norm`` (``norm0``-``norm2`` are a
  dense model's other output norms: a classifier has none, they are dropped and reported);
- patch merging through ``nn.Unfold``, which concatenates a 2x2 neighbourhood channel by channel, in the order
  (top-left, top-right, bottom-left, bottom-right), where the official code concatenates the four maps whole, in the
  order (top-left, bottom-left, top-right, bottom-right): the merge's ``reduction`` columns and its norm are
  permuted to match. A classifier, where a file has one, is ``head.fc`` (mmpretrain's name).

Files are mmcv's ``{"state_dict": ...}``. Swin V2 and CSWin have no OpenMMLab layout here.
"""

from __future__ import annotations

import re
from functools import partial

import torch
from torch import nn

from . import microsoft
from .common import Converted, rename
from .io import TORCH_SUFFIXES, write_tensors

FAMILIES = ("swin",)
VARIANTS: tuple[str, ...] = ()
SUFFIXES = TORCH_SUFFIXES
UNFOLD_ORDER = [0, 2, 1, 3]  # the official concatenation's parts in nn.Unfold's order; the permutation is its inverse

# (OpenMMLab's name, the official one, whether it starts the key): one table, read both ways.
_NAMES = [
    ("stages.", "layers.", True),
    (".attn.w_msa.", ".attn.", False),
    (".ffn.layers.0.0.", ".mlp.fc1.", False),
    (".ffn.layers.1.", ".mlp.fc2.", False),
    ("patch_embed.projection.", "patch_embed.proj.", True),
    ("norm3.", "norm.", True),
    ("head.fc.", "head.", True),
]


def _rules(to_official: bool) -> list[tuple[str, str]]:
    rules = []
    for mm, official, starts in _NAMES:
        old, new = (mm, official) if to_official else (official, mm)
        rules.append(("^" * starts + re.escape(old), new))
    return rules


_TO_OFFICIAL, _FROM_OFFICIAL = _rules(True), _rules(False)
_OUTPUT_NORMS = re.compile(r"^norm[012]\.")
_MERGE = re.compile(r"^layers\.\d+\.downsample\.(reduction\.weight|norm\.(weight|bias))$")


def detect(state: dict[str, torch.Tensor]) -> bool:
    """The stage and window-attention names: ``stages.0.blocks.0.attn.w_msa``."""
    return "stages.0.blocks.0.attn.w_msa.qkv.weight" in state


def _unfold_to_official(value: torch.Tensor) -> torch.Tensor:
    """A merge's reduction weight (out, 4C) or norm (4C) from nn.Unfold's order (channel-major) to the official
    one (part-major)."""
    lead = value.shape[:-1]
    parts = value.reshape(*lead, -1, 4).transpose(-1, -2)
    return parts[..., UNFOLD_ORDER, :].reshape(*lead, -1)


def _official_to_unfold(value: torch.Tensor) -> torch.Tensor:
    lead = value.shape[:-1]
    parts = value.reshape(*lead, 4, -1)[..., UNFOLD_ORDER, :]
    return parts.transpose(-1, -2).reshape(*lead, -1)


def to_official(state: dict[str, torch.Tensor]) -> Converted:
    """OpenMMLab's names -> the official ones (the output norms ``norm0``-``norm2`` dropped)."""
    dropped = [k for k in state if _OUTPUT_NORMS.match(k)]
    renamed = rename({k: v for k, v in state.items() if k not in dropped}, _TO_OFFICIAL)
    return Converted({k: _unfold_to_official(v) if _MERGE.match(k) else v for k, v in renamed.items()}, dropped)


def from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official names -> OpenMMLab's, the inverse of ``to_official``."""
    merged = {k: _official_to_unfold(v) if _MERGE.match(k) else v for k, v in state.items()}
    return rename(merged, _FROM_OFFICIAL)


def to_swinkit(state: dict[str, torch.Tensor], family: str) -> Converted:
    official, dropped = to_official(state)
    converted = microsoft.to_swinkit(official, family)
    return Converted(converted.state, dropped + converted.dropped)


def from_swinkit(model: nn.Module, state: dict[str, torch.Tensor], variant: str | None) -> dict[str, torch.Tensor]:
    return from_official(microsoft.to_official(state, model.family))


write = partial(write_tensors, container="state_dict")  # mmcv's checkpoint envelope
