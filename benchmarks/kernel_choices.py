"""The kernel choices behind swinkit's CPU speed, timed on this machine: the measurements the performance page's lever
table quotes, to rerun on another CPU.

    python benchmarks/kernel_choices.py [--output benchmarks/kernel_results.md]

1. GEMM: ``F.linear`` (MKL's ``addmm``, what timm, torchvision and HF run) against oneDNN's linear
   (``swinkit.layers.linear``) on the 13 linear shapes of Swin V2-T at batch 8, fp32 and bf16.
2. Attention at Swin V2-T's stage-1 shape (8 images x 64 windows, 3 heads, 64 tokens, a mask per window): PyTorch's
   fused SDPA against the same attention written out (``swinkit.layers.attention.attend`` on a CPU without AMX).
3. V2's cosine attention inputs: ``F.normalize`` of q and k after their permutation into heads (the textbook form)
   against ``WindowAttentionV2.split_heads`` (norms on qkv's contiguous rows, one multiply), forward and
   forward + backward.
4. Training's weight gradients ``dY^T X`` (``OneDNNLinear``'s backward) on the same shapes at batch 16: PyTorch's
   ``mm`` (MKL, what the backward runs) against oneDNN's linear given the two transposes as strided views.

Each figure is the best of several calls, in ms.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from recorded import recorded

from swinkit.layers import WindowAttentionV2
from swinkit.layers import attention as attention_module
from swinkit.layers.linear import _onednn_linear, linear
from swinkit.runtime import reuse_freed_memory

# (tokens, in, out) of every linear of Swin V2-T at batch 8, 256 px: qkv, proj, fc1, fc2 per stage, and the merges.
SHAPES = [(32768, 96, 288), (32768, 96, 96), (32768, 96, 384), (32768, 384, 96),
          (8192, 192, 576), (8192, 192, 192), (8192, 192, 768), (8192, 768, 192),
          (2048, 384, 1152), (2048, 384, 1536), (2048, 1536, 384), (512, 768, 3072), (512, 3072, 768)]  # fmt: skip


def best_ms(fn, calls: int = 7) -> float:
    fn()
    best = math.inf
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def shapes_row(label: str, timings: list[tuple[float, float]]) -> str:
    """A table row of (reference, oneDNN) ms per shape: both totals and oneDNN's speed-up range over the shapes."""
    ratios = [reference / onednn for reference, onednn in timings]
    totals = [sum(column) for column in zip(*timings, strict=True)]
    return f"| {label} | {totals[0]:.1f} | {totals[1]:.1f} | {min(ratios):.2f}-{max(ratios):.2f}x |"


def gemms() -> None:
    print("| dtype | F.linear ms | oneDNN ms | oneDNN speed-up, per shape |\n|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        timings = []
        for m, k, n in SHAPES:
            x, w, b = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype), torch.randn(n).to(dtype)
            with torch.no_grad():
                reference = best_ms(lambda: F.linear(x, w, b))  # noqa: B023
                onednn = best_ms(lambda: linear(x, w, b))  # noqa: B023
            timings.append((reference, onednn))
        print(shapes_row(str(dtype), timings))


def attention() -> None:
    print("| dtype | fused SDPA ms | written out ms |\n|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = (torch.randn(8, 64 * 3, 64, 32).to(dtype) for _ in range(3))
        mask = torch.randn(1, 64 * 3, 64, 64).to(dtype).expand(8, -1, -1, -1)
        with torch.no_grad():
            fused = best_ms(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0))  # noqa: B023
            written_out = attention_module._written_out
            attention_module._written_out = lambda q: True
            try:
                explicit = best_ms(lambda: attention_module.attend(q, k, v, mask, 0.0, 1.0))  # noqa: B023
            finally:
                attention_module._written_out = written_out
        print(f"| {dtype} | {fused:.2f} | {explicit:.2f} |")


def textbook_split(attn: WindowAttentionV2, qkv: torch.Tensor, masks: int):
    b, n, d = qkv.shape[0], qkv.shape[2], attn.head_dim
    q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # (B', masks, nH, N, d), strided
    scale = torch.clamp(attn.logit_scale, max=math.log(100.0)).exp()
    q, k = F.normalize(q, dim=-1) * scale, F.normalize(k, dim=-1)
    return tuple(t.reshape(b, masks * attn.num_heads, n, d) for t in (q, k, v))


def cosine_inputs() -> None:
    print("| pass | F.normalize after the permutation ms | split_heads ms |\n|---|---|---|")
    attn = WindowAttentionV2(96, 3, (8, 8))
    masks = 64
    qkv = torch.randn(8, masks, 64, 3, 3, 32)
    with torch.no_grad():
        forward = [best_ms(lambda f=f: f(qkv)) for f in (lambda t: textbook_split(attn, t, masks),
                                                         lambda t: attn.split_heads(t, masks))]  # fmt: skip
    leaf = qkv.clone().requires_grad_(True)

    def train(split) -> None:
        q, k, v = split(leaf)[:3]
        (q.sum() + k.sum() + v.sum()).backward()

    backward = [best_ms(lambda s=s: train(s)) for s in (lambda t: textbook_split(attn, t, masks),
                                                        lambda t: attn.split_heads(t, masks))]  # fmt: skip
    print(f"| forward | {forward[0]:.2f} | {forward[1]:.2f} |")
    print(f"| forward + backward | {backward[0]:.2f} | {backward[1]:.2f} |")


def weight_gradients() -> None:
    print("| GEMM | mm (MKL) ms | oneDNN ms | oneDNN speed-up, per shape |\n|---|---|---|---|")
    timings = []
    for m, k, n in SHAPES:
        x, grad = torch.randn(2 * m, k), torch.randn(2 * m, n)
        reference = best_ms(lambda: grad.t() @ x)  # noqa: B023
        onednn = best_ms(lambda: _onednn_linear(grad.t(), x.t(), None))  # noqa: B023
        timings.append((reference, onednn))
    print(shapes_row("dY^T X, fp32", timings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="benchmarks/kernel_results.md")
    args = parser.parse_args()
    reuse_freed_memory()
    with recorded(args.output):
        print("GEMMs of Swin V2-T's 13 linear shapes at batch 8:\n")
        gemms()
        print("\nAttention at Swin V2-T's stage-1 shape (8 x 64 windows, 3 heads, 64 tokens):\n")
        attention()
        print("\nV2's q and k norms at the stage-1 shifted block, fp32:\n")
        cosine_inputs()
        print("\nTraining's weight gradients on the same shapes at batch 16:\n")
        weight_gradients()


if __name__ == "__main__":
    main()
