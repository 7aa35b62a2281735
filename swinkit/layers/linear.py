"""Linear layers whose CPU matmuls run through oneDNN's GEMM, with the MLP's GELU fused into it at inference.

PyTorch sends fp32 CPU matmuls to MKL's sgemm and bf16 ones to ``addmm``, which first copies the bias into the
output and then accumulates into it. oneDNN's linear adds the bias inside the GEMM and can apply the GELU of the MLP
on the GEMM's output tile while it is still in cache (``linear_gelu``), instead of a separate pass over an activation
of 50 MB (Swin V2-T stage 1 at batch 8): on CPUs where MKL takes no fast path (AMD EPYC here) and in bf16 on CPUs with
native bf16 (AVX512-BF16, AMX) this is markedly faster end to end (the README's performance table), with fp32 logits
equal to 1.4e-6 relative.

- **Inference** (grad mode off: ``torch.no_grad``/``inference_mode``): fp32 or bf16 input and weight of one dtype
  take oneDNN's linear, the MLP's GELU inside it.
- **fp32 training** (grad mode on): oneDNN's op has no autograd formula, so ``OneDNNLinear`` gives it one: the
  forward and the input's gradient (``dY W``, itself a linear of ``dY`` with ``W^T``) through oneDNN, the weight's
  gradient (``dY^T X``) and the bias's through PyTorch's matmul and sum (oneDNN's linear given the transposes took
  1.32x longer than MKL's ``mm`` on Swin V2-T's shapes at batch 16, ``benchmarks/kernel_choices.py``). The GELU stays a
  separate op, since its backward needs the GEMM's output before it. One fp32 training step at batch 16 ran 1.12x
  faster than through ``F.linear`` for ``swinv2_tiny_window8_256`` and 1.14x for ``swin_tiny_patch4_window7_224``
  (AMD EPYC, one-process A/B), gradients equal to 3e-6 relative.
- **Everything else** keeps ``F.linear``: autocast, bf16 training, other dtypes and devices, and tracing
  (torch.compile lowers ``F.linear`` itself).

Set ``USE_ONEDNN = False`` to turn the route off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tracing import tracing

USE_ONEDNN = torch.backends.mkldnn.is_available()
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``x @ weight.T`` takes oneDNN's linear: at inference in fp32 or bf16, in training in fp32."""
    return (
        USE_ONEDNN
        and not tracing()  # before reading x: under torch.fx it is a proxy
        and x.device.type == "cpu"
        and x.dtype in (_ONEDNN_DTYPES if not torch.is_grad_enabled() else (torch.float32,))
        and weight.dtype == x.dtype
        and not torch.is_autocast_enabled("cpu")
    )


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, post_op: str = "none",
                   algorithm: str = "") -> torch.Tensor:  # fmt: skip
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, post_op, [], algorithm)


class OneDNNLinear(torch.autograd.Function):
    """oneDNN's linear with a gradient (see the module docstring): ``OneDNNLinear.apply(x, weight, bias)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        rows = grad.reshape(-1, grad.shape[-1])
        grad_x = _onednn_linear(grad, weight.t().contiguous(), None) if ctx.needs_input_grad[0] else None
        grad_weight = rows.t() @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        grad_bias = rows.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``, through oneDNN where that applies (see the module docstring)."""
    if not _onednn_applies(x, weight):
        return F.linear(x, weight, bias)
    return OneDNNLinear.apply(x, weight, bias) if torch.is_grad_enabled() else _onednn_linear(x, weight, bias)


def linear_gelu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, approximate: str = "none"
) -> torch.Tensor:
    """``F.gelu(F.linear(x, weight, bias), approximate=approximate)``, as one oneDNN op at inference."""
    if _onednn_applies(x, weight) and not torch.is_grad_enabled():
        return _onednn_linear(x, weight, bias, "gelu", approximate)
    return F.gelu(linear(x, weight, bias), approximate=approximate)


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
