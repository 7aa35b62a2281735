"""Patch embedding and patch merging (the 2x2 downsampling between Swin stages)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from .linear import Linear


class PatchEmbed(nn.Module):
    """Non-overlapping patches by a strided convolution, then LayerNorm.

    An image whose sides are not patch multiples is zero-padded on the bottom/right, as timm and torchvision do.
    Input (B, C, H, W), output (B, H / p, W / p, embed_dim).
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(pad_to_patches(x, self.patch_size)).permute(0, 2, 3, 1))


@register_notrace_function
@torch.fx.wrap
def pad_to_patches(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) zero-padded on the bottom/right to patch multiples. An fx leaf (``layers.tracing``)."""
    h, w = x.shape[2], x.shape[3]
    if h % patch_size or w % patch_size:
        x = F.pad(x, (0, (-w) % patch_size, 0, (-h) % patch_size))
    return x


@register_notrace_function
@torch.fx.wrap
def merge_2x2(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 4C), odd sides zero-padded. An fx leaf (``layers.tracing``).

    Channel order is the official cat([x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]]).
    """
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        h, w = h + h % 2, w + w % 2
    return x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)


class PatchMerging(nn.Module):
    """Swin V1 merging: LayerNorm(4C) then a bias-free 4C -> 2C projection."""

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = Linear(4 * dim, out_dim or 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(merge_2x2(x)))


class PatchMergingV2(nn.Module):
    """Swin V2 merging: the projection first, then LayerNorm(2C) (post-norm)."""

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        out_dim = out_dim or 2 * dim
        self.reduction = Linear(4 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(merge_2x2(x)))
