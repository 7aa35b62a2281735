"""Self-supervised pretraining checkpoints: MoBY (Transformer-SSL) and SimMIM, official or from ``swinkit pretrain``.

Both keep the backbone under ``encoder.``; loading one into a backbone takes those weights (MoBY's online encoder,
not the momentum copy) and drops the rest. The backbone part is in whatever layout the encoder was saved in (the
official repositories: microsoft; ``swinkit pretrain``: swinkit's own), which ``load_checkpoint`` then converts.

=========================  =========================================================================================
MoBY                       ``encoder.*`` (online), ``encoder_k.*`` (target), ``projector.*``, ``projector_k.*``,
                           ``predictor.*`` (``linear_hidden.{1: Linear, 2: BatchNorm1d}``, ``linear_out``),
                           ``queue1``, ``queue2`` (dim x K), ``queue_ptr``
SimMIM                     ``encoder.*`` with ``encoder.mask_token``, ``decoder.0.*`` (1x1 conv before pixel shuffle)
=========================  =========================================================================================
"""

from __future__ import annotations

import torch

from .common import Converted

ENCODER = "encoder."
MASK_TOKEN = "encoder.mask_token"


def detect(state: dict[str, torch.Tensor]) -> str | None:
    """'moby', 'simmim' or None, by the key prefixes."""
    if not any(k.startswith(ENCODER) for k in state):
        return None
    if any(k.startswith("encoder_k.") for k in state) and any(k.startswith("predictor.") for k in state):
        return "moby"
    if any(k.startswith("decoder.") for k in state) or MASK_TOKEN in state:
        return "simmim"
    return None


def split(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def online_encoder(state: dict[str, torch.Tensor]) -> Converted:
    """The backbone of an SSL checkpoint (MoBY's online encoder, SimMIM's encoder without its mask token)."""
    kept = {k: v for k, v in state.items() if k.startswith(ENCODER) and k != MASK_TOKEN}
    return Converted(split(kept, ENCODER), sorted(k for k in state if k not in kept))
