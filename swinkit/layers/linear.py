"""Linear layers whose CPU inference runs through oneDNN's GEMM, with the MLP's GELU fused into it.

PyTorch sends fp32 CPU matmuls to MKL's sgemm and bf16 ones to ``addmm``, which first copies the bias into the
output and then accumulates into it. oneDNN's linear adds the bias inside the GEMM and can apply the GELU of the MLP
on the GEMM's output tile while it is still in cache (``linear_gelu``), instead of a separate pass over an activation
of 50 MB (Swin V2-T stage 1 at batch 8): on CPUs where MKL takes no fast path (AMD EPYC here) and in bf16 on CPUs with
native bf16 (AVX512-BF16, AMX) this is markedly faster end to end (the README's performance table), with fp32 logits
equal to 1.4e-6 relative. oneDNN's op has no autograd formula, so only calls that cannot need a gradient (grad mode
off: ``torch.no_grad``/``inference_mode``) with input and weight of one dtype, fp32 or bf16, take it; training,
autocast, other dtypes and devices, and tracing keep ``F.linear``. Set ``USE_ONEDNN = False`` to turn the route off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tracing import tracing

USE_ONEDNN = torch.backends.mkldnn.is_available()
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        USE_ONEDNN
        and not torch.is_grad_enabled()
        and not tracing()  # before reading x: under torch.fx it is a proxy
        and x.device.type == "cpu"
        and x.dtype in _ONEDNN_DTYPES
        and weight.dtype == x.dtype
        and not torch.is_autocast_enabled("cpu")
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``, through oneDNN where that applies (see the module docstring)."""
    if _onednn_applies(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def linear_gelu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, approximate: str = "none"
) -> torch.Tensor:
    """``F.gelu(F.linear(x, weight, bias), approximate=approximate)``, as one oneDNN op where that applies."""
    if _onednn_applies(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], approximate)
    return F.gelu(F.linear(x, weight, bias), approximate=approximate)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) using ``linear``.

    ``bias`` replaces the module's own bias for one call (Swin V2's qkv assembles its bias from ``q_bias`` and
    ``v_bias``), and ``forward_gelu`` is the MLP's GELU of the output as one op. Every model calls its linear layers
    through these two methods, so that a module of the same interface can stand in for them (``swinkit.deploy.int8``).
    """

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return linear(x, self.weight, self.bias if bias is None else bias)

    def forward_gelu(self, x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
        return linear_gelu(x, self.weight, self.bias, approximate)
