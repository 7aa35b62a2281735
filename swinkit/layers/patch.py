"""Patch embedding and patch merging (the 2x2 downsampling between Swin stages)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import Linear
from .tracing import map_size


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

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The token grid of an image of ``size``."""
        return -(-size[0] // self.patch_size), -(-size[1] // self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = map_size(x, self, dims=(2, 3))
        p = self.patch_size
        if h % p or w % p:
            x = F.pad(x, (0, (-w) % p, 0, (-h) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


def merge_2x2(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 4C), odd sides zero-padded; ``size`` is (H, W) (``map_size``).

    Channel order is the official cat([x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]]).
    """
    b, c = x.shape[0], x.shape[3]
    h, w = size
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
        return self.reduction(self.norm(merge_2x2(x, map_size(x, self))))


class PatchMergingV2(nn.Module):
    """Swin V2 merging: the projection first, then LayerNorm(2C) (post-norm)."""

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        out_dim = out_dim or 2 * dim
        self.reduction = Linear(4 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(merge_2x2(x, map_size(x, self))))
