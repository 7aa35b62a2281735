"""Swin Transformer (Liu et al., 2021): shifted-window attention with a learned relative position bias table.

Parameters follow timm's layout (patch merging at the start of stages 1..3, ``head.fc``), swinkit's own for Swin.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers import (
    DropPath,
    Mlp,
    PatchEmbed,
    PatchMerging,
    WindowAttentionV1,
    build_stages,
    to_2tuple,
    window_attention,
)
from .base import HierarchicalModel
from .registry import register_model

torch.fx.wrap("window_attention")  # an fx leaf: the window geometry is decided per input (layers.tracing)


class SwinTransformerBlock(nn.Module):
    """Pre-norm block: x + DropPath(WindowAttention(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: tuple[int, int],
        shifted: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        proj_drop: float,
        attn_drop: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shifted = shifted
        self.visible_padding = False  # the dense-task window rule (layers.window), set by set_window_padding
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttentionV1(
            dim, num_heads, window_size, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop
        )
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C)."""
        x = x + self.drop_path1(window_attention(self.norm1(x), self.attn, self.window_size, self.shifted,
                                                         self.visible_padding))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class SwinTransformer(HierarchicalModel):
    """Swin Transformer V1 classifier and backbone; any input size runs, as in ``SwinTransformerV2``.

    A window clamped below ``window_size`` (a small map) reads the centre of the bias table, i.e. the biases of the
    offsets it can see.
    """

    family = "swin"

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | tuple[int, int] = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self._set_widths(img_size, embed_dim, depths, num_heads)
        self.window_size = to_2tuple(window_size)

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.layers = build_stages(
            depths, self.embed_dims, drop_path_rate,
            lambda i, j, dim, drop_path: SwinTransformerBlock(
                dim, num_heads[i], self.window_size, shifted=j % 2 == 1, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, drop_path=drop_path,
            ),
            PatchMerging,
        )  # fmt: skip
        self._finish_init(num_classes, drop_rate)


# --- registered models ------------------------------------------------------------------------------------------
# Published top-1: official README; base and large are the ImageNet-22k pretrained, 1k fine-tuned weights that
# timm and torchvision ship under these names' defaults (base from 1k only: 83.5 at 224, 84.5 at 384).

_SOURCE = "microsoft/Swin-Transformer README"
_TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SMALL = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_BASE = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_LARGE = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))


@register_model(defaults=dict(_TINY, img_size=224, window_size=7), top1=81.2, source=_SOURCE)
def swin_tiny_patch4_window7_224(**kwargs) -> SwinTransformer:
    """Swin-T, 7x7 windows, 224 px."""
    return SwinTransformer(**kwargs)


@register_model(defaults=dict(_SMALL, img_size=224, window_size=7), top1=83.2, source=_SOURCE)
def swin_small_patch4_window7_224(**kwargs) -> SwinTransformer:
    """Swin-S, 7x7 windows, 224 px."""
    return SwinTransformer(**kwargs)


@register_model(defaults=dict(_BASE, img_size=224, window_size=7), top1=85.2, source=_SOURCE)
def swin_base_patch4_window7_224(**kwargs) -> SwinTransformer:
    """Swin-B, 7x7 windows, 224 px."""
    return SwinTransformer(**kwargs)


@register_model(defaults=dict(_LARGE, img_size=224, window_size=7), top1=86.3, source=_SOURCE)
def swin_large_patch4_window7_224(**kwargs) -> SwinTransformer:
    """Swin-L, 7x7 windows, 224 px."""
    return SwinTransformer(**kwargs)


@register_model(defaults=dict(_BASE, img_size=384, window_size=12), crop_pct=1.0, top1=86.4, source=_SOURCE)
def swin_base_patch4_window12_384(**kwargs) -> SwinTransformer:
    """Swin-B, 12x12 windows, 384 px."""
    return SwinTransformer(**kwargs)


@register_model(defaults=dict(_LARGE, img_size=384, window_size=12), crop_pct=1.0, top1=87.3, source=_SOURCE)
def swin_large_patch4_window12_384(**kwargs) -> SwinTransformer:
    """Swin-L, 12x12 windows, 384 px."""
    return SwinTransformer(**kwargs)
