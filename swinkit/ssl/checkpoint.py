"""Loading checkpoints into the SSL meta-architectures: the parts MoBY and SimMIM share.

``SSLCheckpointLoading.load_ssl_checkpoint`` reads a file or state dict once (``read_state``) and hands it to the
meta-architecture: ``load_parts`` for a checkpoint of the same method (encoders through
``swinkit.checkpoints.load_checkpoint``, for layout conversion and window transfer, and the heads, queues and tokens
as they are, each checked by ``check_part``), or ``load_backbone`` for a plain backbone checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from ..checkpoints import LoadReport, load_checkpoint
from ..checkpoints import ssl as layout
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


class SSLCheckpointLoading:
    """``load_ssl_checkpoint`` for a meta-architecture that defines ``ssl_method`` and
    ``load_parts(state, format, strict, source)`` / ``load_backbone(...)``, each returning a ``LoadReport``."""

    ssl_method: str

    def load_ssl_checkpoint(
        self,
        src: str | os.PathLike | Mapping[str, torch.Tensor],
        *,
        format: str = "auto",
        strict: bool = True,
        ema: bool | None = None,
    ) -> LoadReport:
        """Load a checkpoint of this method (official or ``swinkit pretrain``) to continue pretraining, or a backbone
        checkpoint to start from supervised weights. ``load_checkpoint`` calls this.

        Encoder weights in another layout (the official ``microsoft`` one) are converted; ``format`` names the
        encoders' layout ('auto' detects it).
        """
        source, state, metadata = read_state(src, ema)
        if format == "auto" and metadata.get("format") == "swinkit":
            format = "swinkit"
        if layout.detect(state) != self.ssl_method:
            return self.load_backbone(state, format, strict, source)
        return self.load_parts(state, format, strict, source)
