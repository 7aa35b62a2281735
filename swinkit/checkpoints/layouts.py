"""The table of foreign checkpoint layouts, both directions: one module per layout, each with

- ``detect(state) -> bool``: a decisive test of its own key names (no detector matches another layout's state),
- ``to_swinkit(state, family) -> Converted``: its names to swinkit's,
- ``from_swinkit(model, state, variant) -> dict``: swinkit's names to its own, the exact inverse,
- ``write(state, path)``: its file format, and ``SUFFIXES`` (of the files it writes), ``FAMILIES`` (what it can
  hold) and ``VARIANTS`` (name schemes).

swinkit's own layout is timm's for Swin V1/V2 (and the same scheme for CSWin); its files are told by their metadata.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ..core.errors import CheckpointError, ConfigError
from ..core.layout_names import DENSE_LAYOUT_NAMES, FORMATS, LAYOUT_NAMES, NATIVE, WRITE_FORMATS
from . import hf, microsoft, mindspore, openmmlab, paddle, timm, torchvision
from .io import TORCH_SUFFIXES

LAYOUTS: dict[str, ModuleType] = dict(zip(LAYOUT_NAMES, (timm, microsoft, hf, torchvision, mindspore, paddle,
                                                         openmmlab), strict=True))  # fmt: skip
FAMILY_NAMES = {"swin": "Swin V1", "swinv2": "Swin V2", "cswin": "CSWin"}


def suffixes(format: str) -> tuple[str, ...]:
    """The file suffixes ``format`` is written as (swinkit's own: safetensors with its metadata)."""
    if format in DENSE_LAYOUT_NAMES:
        return TORCH_SUFFIXES
    return (".safetensors",) if format == NATIVE else LAYOUTS[format].SUFFIXES


def preview(keys, limit: int = 8) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def detect_format(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> str:
    """The layout of a state dict: swinkit's by its metadata, the others by their key names.

    Raises:
        CheckpointError: no layout, or more than one, matches.
    """
    if metadata and metadata.get("format") == NATIVE:
        return NATIVE
    matches = [name for name, layout in LAYOUTS.items() if layout.detect(state)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CheckpointError(
            f"these weights look like several layouts ({', '.join(matches)}); pass format= one of them"
        )
    raise CheckpointError(
        f"cannot tell which layout these weights are in (first keys: {preview(sorted(state), 5)}); pass "
        f"format= one of {', '.join(FORMATS[1:])}"
    )


def reader(format: str) -> ModuleType:
    """The layout module that converts ``format`` to swinkit's names."""
    return timm if format == NATIVE else LAYOUTS[format]


def from_swinkit(model: nn.Module, format: str, variant: str | None = None) -> dict[str, torch.Tensor]:
    """The model's weights in the key layout of ``format`` (see ``WRITE_FORMATS``)."""
    if format not in LAYOUTS:
        raise ConfigError(f"format must be one of {', '.join(WRITE_FORMATS)}, got {format!r}")
    layout = LAYOUTS[format]
    if model.family not in layout.FAMILIES:
        holders = [NATIVE, *(name for name, m in LAYOUTS.items() if model.family in m.FAMILIES)]
        raise CheckpointError(
            f"{format} has no {FAMILY_NAMES[model.family]} models; write them as {', '.join(holders[:-1])} or "
            f"{holders[-1]}"
        )
    if variant is not None and variant not in layout.VARIANTS:
        raise ConfigError(f"layout={variant!r} is not one of {format}'s: {', '.join(layout.VARIANTS) or 'none'}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # Split views share storage, which safetensors refuses and torch.save would write whole: give each its own.
    return {k: v.clone() for k, v in layout.from_swinkit(model, state, variant).items()}


def write(model: nn.Module, path: str | os.PathLike, format: str, variant: str | None = None) -> Path:
    """Write ``from_swinkit(model, format, variant)`` to ``path`` in the layout's file format."""
    state = from_swinkit(model, format, variant)
    return LAYOUTS[format].write(state, path)
