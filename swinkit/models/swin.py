"""Swin Transformer (Liu et al., 2021): shifted-window attention with a learned relative position bias table.

Parameters follow timm's layout (patch merging at the start of stages 1..3, ``head.fc``), swinkit's own for Swin.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers import (
    ClassifierHead,
    DropPath,
    Mlp,
    PatchEmbed,
    PatchMerging,
    Stage,
    WindowAttentionV1,
    drop_path_rates,
    shifted_window_attention,
    to_2tuple,
    window_geometry,
)
from .base import HierarchicalModel, init_weights
from .registry import ModelInfo, register_model


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
        geometry = window_geometry(x.shape[1], x.shape[2], self.window_size, self.shifted)
        x = x + self.drop_path1(shifted_window_attention(self.norm1(x), geometry, self.attn))
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
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length")
        num_stages = len(depths)
        self.img_size = to_2tuple(img_size)
        self.window_size = to_2tuple(window_size)
        self.embed_dims = [embed_dim * 2**i for i in range(num_stages)]
        self.num_features = self.embed_dims[-1]

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        rates = drop_path_rates(drop_path_rate, depths)
        stages = []
        for i, (depth, heads, dim) in enumerate(zip(depths, num_heads, self.embed_dims, strict=True)):
            blocks = [
                SwinTransformerBlock(
                    dim,
                    heads,
                    self.window_size,
                    shifted=j % 2 == 1,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=rates[i][j],
                )
                for j in range(depth)
            ]
            downsample = PatchMerging(self.embed_dims[i - 1], dim) if i > 0 else None
            stages.append(Stage(downsample, blocks))
        self.layers = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate)
        self.apply(init_weights)
        self._finish_init()


# --- registered models ------------------------------------------------------------------------------------------
# Published top-1: official README; base and large are the ImageNet-22k pretrained, 1k fine-tuned weights that
# timm and torchvision ship under these names' defaults (base from 1k only: 83.5 at 224, 84.5 at 384).

_SOURCE = "microsoft/Swin-Transformer README"
for _name, _arch, _window, _size, _top1 in [
    ("tiny", dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)), 7, 224, 81.2),
    ("small", dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)), 7, 224, 83.2),
    ("base", dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)), 7, 224, 85.2),
    ("large", dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)), 7, 224, 86.3),
    ("base", dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)), 12, 384, 86.4),
    ("large", dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)), 12, 384, 87.3),
]:
    register_model(
        ModelInfo(
            f"swin_{_name}_patch4_window{_window}_{_size}",
            SwinTransformer,
            dict(_arch, img_size=_size, window_size=_window),
            img_size=_size,
            crop_pct=0.875 if _size == 224 else 1.0,
            top1=_top1,
            source=_SOURCE,
        )
    )
