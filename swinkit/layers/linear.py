"""Linear layers whose fp32 inference on CPU runs through oneDNN's GEMM.

PyTorch sends fp32 CPU matmuls to MKL's sgemm. On CPUs where MKL takes no fast path (AMD EPYC here) oneDNN's GEMM is
markedly faster: ``swinv2_tiny_window8_256`` inference runs about 1.18x faster end to end on the project's 2-core
machine, with logits equal to 1.4e-6 relative. oneDNN's op has no autograd formula, so only calls that cannot need a
gradient (grad mode off: ``torch.no_grad``/``inference_mode``) take it; training, autocast, other dtypes and devices,
and tracing keep ``F.linear``. Set ``USE_ONEDNN = False`` to turn the route off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

USE_ONEDNN = torch.backends.mkldnn.is_available()


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        USE_ONEDNN
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting())
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``, through oneDNN where that applies (see the module docstring)."""
    if _onednn_applies(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) using ``linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
