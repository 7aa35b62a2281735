"""Symbolic tracing with torch.fx (``torch.fx.symbolic_trace``, torchvision's ``create_feature_extractor``).

fx traces with proxies that carry no sizes, but the window and stripe geometry is decided from each input's size.
So while fx traces, every module that decides geometry reads the size its input has at the model's ``img_size``
(``traced_size``, which the model sets on them at construction, as timm fixes its Swin geometry at construction),
and the tables it builds take the device and dtype of its own parameters. The traced graph is the model at its
``img_size`` for any batch size; for another image size, build the model with that ``img_size`` and trace it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

__all__ = ["is_fx_symbolic_tracing", "map_size", "placement", "tracing"]


def tracing() -> bool:
    """True while any tracer records the model: torch.compile/export, TorchScript tracing or scripting, torch.fx."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()
            or is_fx_symbolic_tracing())  # fmt: skip


def map_size(x: torch.Tensor, module: nn.Module, dims: tuple[int, int] = (1, 2)) -> tuple[int, int]:
    """(H, W) of ``x`` along ``dims``: its own sizes, or ``module.traced_size`` while fx traces."""
    if is_fx_symbolic_tracing():
        return module.traced_size
    return x.shape[dims[0]], x.shape[dims[1]]


def placement(x: torch.Tensor, module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of ``x``; while fx traces (``x`` is a proxy), those of ``module``'s parameters."""
    if is_fx_symbolic_tracing():
        parameter = next(module.parameters())
        return parameter.device, parameter.dtype
    return x.device, x.dtype
