"""Tracing: torch.fx symbolic tracing (``torch.fx.symbolic_trace``, torchvision's ``create_feature_extractor``,
timm's feature extraction), and the check every tracer's code paths share.

fx traces with proxies that carry no sizes, but window and stripe geometry is decided from each input's size. So the
pieces that decide it are leaf functions: ``pad_to_patches`` and ``merge_2x2`` (``layers.patch``),
``window_attention`` (``layers.window``) and CSWin's ``stripe_attention``. Each is marked with ``torch.fx.wrap``
(which plain ``symbolic_trace`` and torchvision's tracer honour) and timm's ``register_notrace_function`` (which
timm's feature extraction passes to its tracer), so a graph records a call to it and runs it with real tensors. A
traced graph therefore serves every input size the eager model takes, as timm's Swin graphs do not.
"""

from __future__ import annotations

import torch
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

__all__ = ["is_fx_symbolic_tracing", "tracing"]


def tracing() -> bool:
    """True while any tracer records the model: torch.compile/export, TorchScript tracing or scripting, torch.fx."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()
            or is_fx_symbolic_tracing())  # fmt: skip
