"""int8 CPU inference: every linear layer of a model through oneDNN's int8 GEMM, in eager PyTorch.

``quantize_int8(model)`` replaces each of the model's ``swinkit.layers.Linear`` (qkv, proj, the MLP's fc1 and fc2,
the patch-merging reductions, the classifier) in place by an ``Int8Linear``:

- **weights**: int8, symmetric, one scale per output channel (so no channel's range is set by another's), prepacked
  once for the CPU's int8 GEMM (``torch.ops.onednn.qlinear_prepack``);
- **activations**: quantized on every call to uint8 over the tensor's own range (dynamic quantization: no calibration
  set; the range is read in one pass), multiplied in int8 with int32 accumulation by
  ``torch.ops.onednn.qlinear_pointwise``, the kernel PyTorch's PT2E x86 path lowers a quantized linear to, which
  dequantizes the result and adds the bias (and applies the MLP's GELU) inside the GEMM;
- **the rest** stays in floating point: the residual stream, norms, patch embedding and CSWin's attention in fp32;
  Swin V1/V2's window attention in bf16 where the CPU computes bf16 natively (the qkv GEMM writes bf16, and the
  attention follows its input's dtype), fp32 elsewhere.

Chosen by measurement against the field's int8 routes, side by side with swinkit's fp32 eager forward
(``swinv2_tiny_window8_256``, batch 8, a 2-core AMD EPYC with AVX512-VNNI and AVX512-BF16;
``benchmarks/int8_routes.py`` reruns the first two): this path 1.87-2.18x over ten runs (1.65-1.77x with the
attention in fp32, which then took a quarter of the time); ONNX Runtime's dynamic quantization of the exported
graph 1.52-1.73x (its transposes and unfused ops around the integer GEMMs cost much of what the GEMMs gain); PT2E
with torchao 0.18's x86 Inductor quantizer, compiled with freezing, 0.76-0.92x; PyTorch's classic dynamic int8
linear (fbgemm's ``quantized::linear_dynamic``) took 1.08x this path's time over Swin V2-T's 16 linear shapes, with
no GELU inside. On a CPU without AVX512-VNNI the GEMM's 8-bit products can saturate, so activations get 7 bits
there (PyTorch's ``reduce_range`` rule). Static
quantization with calibrated ranges would save the range pass (3% of the forward) and, with fc1 writing uint8 for fc2,
one quantize pass; a prototype measured 1.90-2.24x against this path's 1.70-1.89x at the time, in separate, noisy runs.
It would need a calibration set, so it is not offered.

The converted model is for inference only: its int8 GEMM has no gradient. ``swinkit export --format onnx --quantize
int8`` writes the deployable ONNX Runtime graph instead (``swinkit.deploy.export``).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..core import machine
from ..core.errors import ConfigError
from ..layers import WindowAttention
from ..layers.linear import Linear


def int8_available() -> bool:
    """Whether this PyTorch build has oneDNN's int8 linear kernels (x86 builds do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


class Int8Linear(nn.Module):
    """A ``Linear`` with int8 weights and dynamically quantized activations (see the module docstring).

    Same call interface as ``Linear``: ``forward(x, bias=None)`` and ``forward_gelu(x, approximate)``; x is fp32 or
    bf16 of shape (..., in_features), the output (..., out_features) in ``output_dtype`` (fp32 unless set).
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127
        quantized = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight_int8", quantized)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self._packed: torch.Tensor | None = None  # oneDNN's layout for this CPU, made on first use
        self._zero_points = torch.zeros(self.out_features, dtype=torch.long)
        self._levels = 255 if "AVX512-VNNI" in machine.isa() else 127  # see the module docstring
        self.output_dtype = torch.float32

    def __getstate__(self) -> dict:
        # The packed weight is an opaque oneDNN tensor, which neither copies nor pickles: it is packed again.
        return {**self.__dict__, "_packed": None}

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return self._gemm(x, self.bias if bias is None else bias, "none", "")

    def forward_gelu(self, x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
        return self._gemm(x, self.bias, "gelu", approximate)

    def _gemm(self, x: torch.Tensor, bias: torch.Tensor | None, post_op: str, algorithm: str) -> torch.Tensor:
        shape = x.shape
        # 2-D: the kernel crashes on some inputs of more dimensions (seen with a (8, 64, 64, 96) input).
        activations, scale, zero_point = self._quantize(x.reshape(-1, shape[-1]))
        if self._packed is None:
            self._packed = torch.ops.onednn.qlinear_prepack(self.weight_int8, [1, self.in_features])
        out = torch.ops.onednn.qlinear_pointwise(
            activations, scale, zero_point, self._packed, self.weight_scale, self._zero_points,
            None if bias is None else bias.float(), 1.0, 0, self.output_dtype, post_op, [], algorithm,
        )  # fmt: skip
        return out.view(*shape[:-1], self.out_features)

    def _quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """uint8 of ``x`` over its own range (which always holds 0, so that 0 is exact), with scale and zero point."""
        low, high = (v.item() for v in torch.aminmax(x))  # one pass (quantize_per_tensor_dynamic makes two)
        low, high = min(low, 0.0), max(high, 0.0)
        scale = (high - low) / self._levels or 1.0
        zero_point = min(max(round(-low / scale), 0), self._levels)
        with warnings.catch_warnings():  # PyTorch marks quantized tensor types deprecated; the kernel reads bytes
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.quantize_per_tensor(x.float(), scale, zero_point, torch.quint8)
        return quantized.view(torch.uint8), scale, zero_point

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights, dynamic activations"


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every ``swinkit.layers.Linear`` of ``model`` by an ``Int8Linear``, in place; returns ``model``."""
    if not int8_available():
        raise ConfigError("int8 inference needs PyTorch's oneDNN int8 kernels, which this build lacks: use fp32")
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if isinstance(child, Linear)]  # fmt: skip
    if not targets:
        raise ConfigError(f"{type(model).__name__} has no swinkit linear layers to quantize")
    for parent, name, child in targets:
        setattr(parent, name, Int8Linear(child))
        if isinstance(parent, WindowAttention) and name == "qkv" and machine.native_bf16():
            getattr(parent, name).output_dtype = torch.bfloat16  # the attention then runs in bf16
    return model
