"""The machine's achieved matmul rate per dtype: the reference a model's FLOP utilisation (MFU) is measured against.

The peak is the best rate over several GEMM shapes (large squares, and the tall-skinny shapes of a Swin stage-1 MLP
and qkv projection at batch 8), over every kernel route a model can take (``torch.mm``, ``F.linear``, oneDNN's
linear for fp32/bf16 on CPU; ``torch._int_mm`` and oneDNN's int8 linear of ``swinkit.deploy.int8`` for int8), over
repeated trials, all in the calling process. Taking
the maximum of all of these keeps it from being under-measured, so a model's MFU against it stays at or below 100%.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..core import device as devices
from ..deploy.int8 import int8_available

# (M, K, N): a square, a large-K square, Swin-T stage 1's fc1 and qkv at batch 8 (8 * 64 * 64 tokens), stage 3's fc1.
SHAPES = ((2048, 2048, 2048), (1024, 4096, 1024), (32768, 96, 384), (32768, 96, 288), (2048, 384, 1536))
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int8: "int8"}


def _kernels(a: torch.Tensor, w: torch.Tensor) -> list[Callable[[], torch.Tensor]]:
    """Every route a model's GEMM can take for these operands: ``a`` (M, K) times ``w`` (N, K) transposed."""
    if a.dtype == torch.int8:
        kernels = [lambda: torch._int_mm(a, w.t())]
        if a.device.type == "cpu" and int8_available():
            activations = (a.to(torch.int16) + 128).to(torch.uint8)  # the uint8 activations of deploy.int8
            packed = torch.ops.onednn.qlinear_prepack(w, [1, w.shape[1]])
            scales, zero_points = torch.ones(w.shape[0]), torch.zeros(w.shape[0], dtype=torch.long)
            kernels.append(lambda: torch.ops.onednn.qlinear_pointwise(
                activations, 1.0, 128, packed, scales, zero_points, None, 1.0, 0, torch.float32, "none", [], ""))
        return kernels
    kernels = [lambda: torch.mm(a, w.t()), lambda: F.linear(a, w)]
    if a.device.type == "cpu" and a.dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available():
        kernels.append(lambda: torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], ""))
    return kernels


def _operands(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device):
    g = torch.Generator().manual_seed(0)
    if dtype == torch.int8:
        return (torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8).to(device),
                torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8).to(device))  # fmt: skip
    return torch.randn(m, k, generator=g).to(device, dtype), torch.randn(n, k, generator=g).to(device, dtype)


def matmul_peak_gflops(
    dtype: torch.dtype, device: torch.device, shapes=SHAPES, trials: int = 3, min_seconds: float = 0.05
) -> float:
    """Best achieved GFLOP/s (GOP/s for int8) over ``shapes`` x kernel routes x ``trials``; see the module docstring.

    Each trial times as many calls as fill ``min_seconds`` (at least two), after a warm-up call. A route the build
    lacks for a dtype (``torch._int_mm`` on some CPUs) is skipped; with none left the peak is 0.
    """
    best = 0.0
    for m, k, n in shapes:
        a, w = _operands(m, k, n, dtype, device)
        for kernel in _kernels(a, w):
            try:
                kernel()
            except RuntimeError:  # no kernel for this dtype and shape on this build
                continue
            for _ in range(trials):
                calls, start = 0, time.perf_counter()
                while calls < 2 or time.perf_counter() - start < min_seconds:
                    kernel()
                    calls += 1
                devices.synchronize(device)
                best = max(best, 2 * m * k * n * calls / (time.perf_counter() - start) / 1e9)
    return best


def peaks_line(device: torch.device, dtypes=(torch.float32, torch.bfloat16, torch.int8)) -> str:
    """``"matmul peak: fp32 310, bf16 1790, int8 3500 GFLOP/s"`` for the head of a benchmark table."""
    rates = ", ".join(f"{DTYPE_NAMES[d]} {matmul_peak_gflops(d, device):.0f}" for d in dtypes)
    return f"matmul peak (best of {len(SHAPES)} GEMM shapes, every kernel route, 3 trials): {rates} GFLOP/s"
