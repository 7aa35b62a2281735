"""Loading checkpoints into the SSL meta-architectures: the parts MoBY and SimMIM share.

The meta-architectures' ``load_ssl_checkpoint`` methods read a file or state dict once (``read_state``), route the
encoder part through ``swinkit.checkpoints.load_checkpoint`` (layout conversion, window transfer) and load their own
heads, queues and tokens as they are, checking each part (``check_part``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..checkpoints import LoadReport, load_checkpoint
from ..checkpoints.io import extract_state_dict, read_file
from ..core.errors import CheckpointError
from ..models import HierarchicalModel


def read_state(src, ema: bool | None) -> tuple[str, dict[str, torch.Tensor], dict[str, str]]:
    """(a name for the source, its state dict unwrapped from training containers, its safetensors metadata)."""
    if isinstance(src, Mapping):
        return "<state dict>", extract_state_dict(src, "<state dict>", ema=ema), {}
    obj, metadata = read_file(src)
    return str(src), extract_state_dict(obj, str(src), ema=ema), metadata


def load_encoder(encoder: nn.Module, state: dict, format: str, strict: bool, source: str) -> LoadReport:
    """A swinkit encoder through ``load_checkpoint`` (layout conversion, window transfer); others as they are."""
    if isinstance(encoder, HierarchicalModel):
        report = load_checkpoint(encoder, state, format=format, strict=strict, head="reset")
        report.source = source
        return report
    result = encoder.load_state_dict(state, strict=False)
    check_part("encoder", result, strict, source)
    return LoadReport(source, "as is", loaded=sorted(state), missing=result.missing_keys)


def check_part(name: str, result, strict: bool, source: str) -> None:
    """Raise when ``strict`` and ``load_state_dict``'s ``result`` for part ``name`` has missing or unexpected keys."""
    if strict and (result.missing_keys or result.unexpected_keys):
        raise CheckpointError(
            f"{source}: the {name} weights do not match: missing {result.missing_keys[:8]}, unexpected "
            f"{result.unexpected_keys[:8]}; use strict=False to load the matching part only"
        )
