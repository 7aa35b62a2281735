"""Window multi-head self-attention for Swin V1 (scaled dot product, bias table) and V2 (cosine, continuous bias).

Both run through ``attend``: ``F.scaled_dot_product_attention``, or where that kernel is the slow one (bf16 on a CPU
without AMX) the same softmax written out. The additive mask passed to it is the position bias plus the
shift/padding mask of the window geometry. That tensor depends only on the weights and the geometry, so in eval mode
(and whenever no gradient can reach the bias parameters) it is computed once per geometry and cached. The cache is
dropped on ``train()``/``eval()``, on ``load_state_dict`` and on ``to()``; entries also carry the version counters of
the parameters they came from, so an in-place weight edit is never served stale.

For compiled inference (``freeze_bias``, set by ``swinkit.deploy.inference.InferenceModel``) each cached mask is also
kept as a non-persistent buffer, which a compiled graph reads instead of recomputing the mask from the geometry: with
Inductor's freezing a buffer is a constant, whereas the geometry's tables come from tensor constructors, which
freezing does not fold, so the position-bias MLP, the gather and the shift mask would otherwise run on every call
(1.06-1.07x compiled Swin V2-T, fp32 and bf16, in one-process A/Bs on the AMD EPYC). Whoever sets it fills the
buffers with an eager call per image size and clears them (``clear_cache``) when the weights change in place.

``attention_chunks`` (``HierarchicalModel.set_attention_chunks``) computes the attention a group of windows at a time,
the Swin V2 paper's "sequential self-attention": with N chunks only 1/N of the attention matrices (and, in training,
their softmax saved for the backward pass) is alive at once, because each chunk is recomputed in the backward pass
instead of kept. Every (window, head) is attended independently, so the output is bit-identical to one call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..core import machine
from ..core.errors import ConfigError
from .linear import Linear
from .relative_position import log_spaced_coords, relative_position_index
from .tracing import tracing
from .window import WindowGeometry, attention_mask

_MAX_CACHED_GEOMETRIES = 16


class WindowAttention(nn.Module):
    """Machinery common to both versions: the qkv projection, SDPA over windows, and the bias cache.

    Subclasses define ``split_heads`` and ``position_bias``; V2 also ``assembled_qkv_bias``.
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.attention_chunks = 1
        self.freeze_bias = False
        self._bias_cache: dict[tuple, tuple[tuple[int, ...], torch.Tensor]] = {}
        self._frozen_names: set[str] = set()

    def assembled_qkv_bias(self) -> torch.Tensor | None:
        """The qkv projection's bias where it is assembled from other parameters (V2); None: the projection's own."""
        return None

    def split_heads(
        self, qkv: torch.Tensor, masks: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None]:
        """q, k, v (B', masks * nH, N, d) of qkv (B', masks, N, 3, nH, d), and the attention scale (None for the
        default head_dim ** -0.5)."""
        raise NotImplementedError

    def position_bias(self, window: tuple[int, int]) -> torch.Tensor:
        """(num_heads, N, N) additive bias for a window of the given size."""
        raise NotImplementedError

    def bias_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    # --- the cached additive mask -------------------------------------------------------------------------------

    def attention_bias(self, geometry: WindowGeometry, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(1 or num_windows, num_heads, N, N): position bias plus shift/padding mask, in ``dtype``."""
        if self.freeze_bias and torch.compiler.is_compiling() and not torch.compiler.is_exporting():
            frozen = getattr(self, _frozen_name(geometry), None)
            if frozen is not None and frozen.dtype == dtype and frozen.device == device:
                return frozen
        if not self._cacheable():
            return self._compute_attention_bias(geometry, dtype, device)
        key = (geometry, dtype, device)
        versions = tuple(p._version for p in self.bias_parameters())
        hit = self._bias_cache.get(key)
        if hit is not None and hit[0] == versions:
            return hit[1]
        if len(self._bias_cache) >= _MAX_CACHED_GEOMETRIES:
            self.clear_cache()
        with torch.inference_mode(False), torch.no_grad():
            bias = self._compute_attention_bias(geometry, dtype, device)
        self._bias_cache[key] = (versions, bias)
        if self.freeze_bias:
            name = _frozen_name(geometry)
            self.register_buffer(name, bias, persistent=False)
            self._frozen_names.add(name)
        return bias

    def _compute_attention_bias(
        self, geometry: WindowGeometry, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        bias = self.position_bias(geometry.window).unsqueeze(0)  # (1, nH, N, N)
        mask = attention_mask(geometry, device)
        if mask is not None:
            # Expanded, not broadcast: broadcasting would ask whether num_windows is 1, which a dynamic-size export
            # would freeze into its graph.
            bias = bias.expand(mask.shape[0], -1, -1, -1) + mask.unsqueeze(1)  # (nW, nH, N, N)
        return bias.to(dtype).contiguous()

    def _cacheable(self) -> bool:
        if self.training or tracing():
            return False
        return not (torch.is_grad_enabled() and any(p.requires_grad for p in self.bias_parameters()))

    def clear_cache(self) -> None:
        self._bias_cache.clear()
        for name in self._frozen_names:
            delattr(self, name)
        self._frozen_names.clear()

    def train(self, mode: bool = True):
        self.clear_cache()
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        self.clear_cache()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self.clear_cache()
        super()._load_from_state_dict(*args, **kwargs)

    # --- forward ------------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, geometry: WindowGeometry) -> torch.Tensor:
        """x: (B * num_windows, N, C) windows of one geometry -> same shape."""
        bw, n, c = x.shape[0], geometry.window[0] * geometry.window[1], self.dim
        qkv = self.qkv(x, self.assembled_qkv_bias())
        device, dtype = qkv.device, qkv.dtype
        bias = self.attention_bias(geometry, dtype, device)
        masks = bias.shape[0]  # 1, or num_windows when windows differ in their shift/padding mask
        heads = masks * self.num_heads
        # Windows that differ in mask are folded into the head dimension: SDPA then sees 4-D inputs and a
        # (1, nW * nH, N, N) mask broadcast over the images, which the fused kernels take (a 5-D input or a mask
        # repeated per image would not be).
        q, k, v, scale = self.split_heads(qkv.view(bw // masks, masks, n, 3, self.num_heads, self.head_dim), masks)
        dropout = self.attn_drop if self.training else 0.0
        # One mask for all images, broadcast by SDPA. Expanded to the images (a view) only where that is needed: in
        # torch.export, since broadcasting asks whether the image count is 1, which a dynamic-size export would
        # freeze into its graph; and for chunks, which split the mask with the images. Inductor would write an
        # expanded mask out in full for every image on every call (1.05x compiled fp32 for Swin V2-T without it).
        mask = bias.reshape(1, heads, n, n)
        if torch.compiler.is_exporting() or self.attention_chunks > 1:
            mask = mask.expand(bw // masks, -1, -1, -1)
        if self.attention_chunks > 1:
            # Chunks are groups of windows: the batch of windows when all share one mask, else the windows folded
            # into the head dimension. (Only here is the mask count compared: a dynamic-size export must not be.)
            dim = 0 if masks == 1 else 1
            out = chunked_attention(q, k, v, mask, dropout, scale, self.attention_chunks, dim)
        else:
            out = attend(q, k, v, mask, dropout, scale)
        if torch.compiler.is_exporting():
            # SDPA's output strides depend on the kernel, and torch.onnx's passes disagree on them: one traces the
            # reshape below as a view that a later one cannot apply. A copy makes it a view for both.
            out = out.clone(memory_format=torch.contiguous_format)
        out = out.unflatten(1, (masks, self.num_heads)).transpose(2, 3).reshape(bw, n, c)  # (B', nW, N, nH, d)
        return self.proj_drop(self.proj(out))


def _frozen_name(geometry: WindowGeometry) -> str:
    """The buffer that keeps the attention mask of ``geometry`` for compiled inference (module docstring)."""
    (wh, ww), (sh, sw) = geometry.window, geometry.shift
    padding = "_visible_padding" if geometry.visible_padding else ""
    return f"frozen_attention_bias_{geometry.height}x{geometry.width}_window{wh}x{ww}_shift{sh}x{sw}{padding}"


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float, scale: float | None
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v over (B, H, N, d) inputs (scale None: d ** -0.5).

    ``F.scaled_dot_product_attention``, except for bf16 and fp16 on a CPU without AMX: there PyTorch's fused CPU
    kernel runs 2-2.7x slower than the three ops written out (Swin-T's windows of 64 tokens, AMD EPYC with
    AVX512-BF16; ``benchmarks/kernel_choices.py``; with AMX the fused kernel is the faster one), so they are written
    out.
    """
    if not _written_out(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    if scale != 1.0:
        q = q * (q.shape[-1] ** -0.5 if scale is None else scale)
    logits = q @ k.transpose(-2, -1)
    if mask is not None:
        logits = logits + mask
    weights = torch.softmax(logits, dim=-1)
    return F.dropout(weights, dropout) @ v if dropout else weights @ v


# Read once, at import: a function call in ``_written_out`` would break torch.compile's graph.
CPU_HAS_AMX = machine.has_amx()


def _written_out(q: torch.Tensor) -> bool:
    return q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and not CPU_HAS_AMX


def chunked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float,
    scale: float | None, chunks: int, dim: int,
) -> torch.Tensor:  # fmt: skip
    """SDPA over ``chunks`` slices of ``dim`` in turn (one call when ``chunks`` is 1); each slice is recomputed in the
    backward pass rather than keeping its attention matrices (see the module docstring). ``mask`` must have the
    inputs' size along ``dim`` (or be None)."""
    if chunks <= 1:  # before reading any size: a traced symbolic size must not be compared here
        return attend(q, k, v, mask, dropout, scale)
    chunks = min(chunks, q.shape[dim])
    tensors = [t for t in (q, k, v, mask) if t is not None]
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    masks = [None] * chunks if mask is None else mask.tensor_split(chunks, dim)
    outs = []
    for parts in zip(*(t.tensor_split(chunks, dim) for t in (q, k, v)), masks, strict=True):
        if recompute:
            outs.append(checkpoint(attend, *parts, dropout, scale, use_reentrant=False))
        else:
            outs.append(attend(*parts, dropout, scale))
    return torch.cat(outs, dim)


class WindowAttentionV1(WindowAttention):
    """Swin V1 attention: softmax(q k^T / sqrt(d) + B) v with B looked up in a learned table."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: tuple[int, int],
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop)
        self.window_size = window_size
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        table_len = (2 * window_size[0] - 1) * (2 * window_size[1] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_len, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def split_heads(self, qkv, masks):
        b, n, d = qkv.shape[0], qkv.shape[2], self.head_dim
        # One copy of all three when windows are folded into heads; views otherwise.
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).reshape(3, b, masks * self.num_heads, n, d).unbind(0)
        return q, k, v, None

    def position_bias(self, window: tuple[int, int]) -> torch.Tensor:
        device = self.relative_position_bias_table.device
        index = relative_position_index(window, self.window_size).to(device)
        n = window[0] * window[1]
        return self.relative_position_bias_table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def bias_parameters(self) -> list[nn.Parameter]:
        return [self.relative_position_bias_table]


class WindowAttentionV2(WindowAttention):
    """Swin V2 attention: scaled cosine attention with a log-spaced continuous position bias (CPB).

    cos(q, k) * exp(min(logit_scale, log 100)) + 16 * sigmoid(MLP(log-spaced offsets)). The logit scale is folded
    into the normalised q, so SDPA runs with scale 1.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: tuple[int, int],
        pretrained_window_size: tuple[int, int] = (0, 0),
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        cpb_hidden: int = 512,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop)
        self.window_size = window_size
        self.pretrained_window_size = pretrained_window_size
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, cpb_hidden, bias=True), nn.ReLU(inplace=True), nn.Linear(cpb_hidden, num_heads, bias=False)
        )
        self.qkv = Linear(dim, 3 * dim, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None

    def assembled_qkv_bias(self) -> torch.Tensor | None:
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))

    def split_heads(self, qkv, masks):
        # q / |q| * exp(logit scale) and k / |k| (F.normalize's eps) as one multiply by a per-token factor. The norms
        # are taken of q and k as they lie in qkv, rows of d contiguous numbers: after the permutation into heads the
        # same reduction runs 8x slower in fp32 (a strided-reduction kernel), which made F.normalize a tenth of the
        # forward.
        b, n, d = qkv.shape[0], qkv.shape[2], self.head_dim
        heads = masks * self.num_heads
        # Two slices, not ``split``: with torch.compile and activation checkpointing, torch 2.14.1's recomputed split
        # gave a wrong logit_scale gradient (the compile test in tests/test_attention.py catches it).
        qk = qkv[:, :, :, :2]
        scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp().view(1, -1, 1)
        scale = torch.cat((scale, torch.ones_like(scale))).to(qkv.dtype)  # (2, nH, 1): q's scale, 1 for k
        qk = qk * (scale / torch.linalg.vector_norm(qk, dim=-1, keepdim=True).clamp_min(1e-12))
        q, k = qk.permute(3, 0, 1, 4, 2, 5).reshape(2, b, heads, n, d).unbind(0)
        v = qkv[:, :, :, 2].permute(0, 1, 3, 2, 4).reshape(b, heads, n, d)
        return q, k, v, 1.0

    def position_bias(self, window: tuple[int, int]) -> torch.Tensor:
        pretrained = self.pretrained_window_size
        device, dtype = self.cpb_mlp[0].weight.device, self.cpb_mlp[0].weight.dtype
        coords = log_spaced_coords(window, pretrained).to(device, dtype)
        table = self.cpb_mlp(coords).view(-1, self.num_heads)
        index = relative_position_index(window).to(device)
        n = window[0] * window[1]
        return 16 * torch.sigmoid(table[index.view(-1)].view(n, n, -1).permute(2, 0, 1))

    def bias_parameters(self) -> list[nn.Parameter]:
        return list(self.cpb_mlp.parameters())
