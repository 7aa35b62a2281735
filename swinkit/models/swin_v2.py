"""Swin Transformer V2 (Liu et al., 2022): scaled cosine attention, log-spaced continuous position bias, res-post-norm.

Layout of the parameters is timm's (patch merging at the start of stages 1..3, ``head.fc``), which is swinkit's own
layout for Swin; ``swinkit.checkpoints`` converts the official, HF, torchvision and other layouts to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.errors import ConfigError
from ..layers import (
    DropPath,
    Mlp,
    PatchEmbed,
    PatchMergingV2,
    WindowAttentionV2,
    build_stages,
    to_2tuple,
    window_attention,
)
from .base import HierarchicalModel
from .registry import register_model

torch.fx.wrap("window_attention")  # an fx leaf: the window geometry is decided per input (layers.tracing)


class SwinTransformerV2Block(nn.Module):
    """Res-post-norm block: x + DropPath(LN(WindowAttention(x))), then x + DropPath(LN(MLP(x))).

    Odd blocks of a stage shift their windows by half a window. ``extra_norm`` adds the LayerNorm on the main branch
    that the paper puts every 6 blocks in SwinV2-H and -G.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: tuple[int, int],
        shifted: bool,
        pretrained_window_size: tuple[int, int],
        mlp_ratio: float,
        qkv_bias: bool,
        proj_drop: float,
        attn_drop: float,
        drop_path: float,
        extra_norm: bool,
        norm_eps: float,
        gelu_approximate: str = "none",
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shifted = shifted
        self.visible_padding = False  # the dense-task window rule (layers.window), set by set_window_padding
        self.attn = WindowAttentionV2(
            dim,
            num_heads,
            window_size,
            pretrained_window_size,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
        )
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.drop_path1 = DropPath(drop_path)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop, approximate_gelu=gelu_approximate)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.drop_path2 = DropPath(drop_path)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps) if extra_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C)."""
        x = x + self.drop_path1(self.norm1(window_attention(x, self.attn, self.window_size, self.shifted,
                                                         self.visible_padding)))
        x = x + self.drop_path2(self.norm2(self.mlp(x)))
        if self.norm3 is not None:
            x = self.norm3(x)
        return x


class SwinTransformerV2(HierarchicalModel):
    """Swin Transformer V2 classifier and backbone.

    Any input size runs: sides that are not patch multiples are zero-padded, and each stage pads its map to a window
    multiple with the padded tokens masked out of attention. Where a stage's map is no larger than the window, the
    window shrinks to the map and the shift is dropped (the official rule), decided per input.

    Args:
        img_size: the default input size (int or (H, W)); informs metadata only, since the window rule is applied
            to each input's actual size.
        window_size: window per stage (int or (wh, ww)), the same for all stages.
        pretrained_window_sizes: the window each stage was pretrained with (0 = none); the continuous position bias
            normalises offsets by it, so a model fine-tuned at a larger window keeps the pretrained coordinates.
        extra_norm_period: add a LayerNorm on the main branch after every n-th block of a stage (0 = never).
        norm_eps: LayerNorm epsilon of the patch embedding, the blocks and the final norm (MindCV trained with 1e-6).
        gelu_approximate: the MLP's GELU, 'none' (exact, the official one) or 'tanh' (MindSpore's default, which
            MindCV's weights were trained with).
    """

    family = "swinv2"

    def __init__(
        self,
        img_size: int | tuple[int, int] = 256,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | tuple[int, int] = 8,
        pretrained_window_sizes: int | Sequence[int] | Sequence[tuple[int, int]] = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        extra_norm_period: int = 0,
        norm_eps: float = 1e-5,
        gelu_approximate: str = "none",
    ) -> None:
        super().__init__()
        self._set_widths(img_size, embed_dim, depths, num_heads)
        if isinstance(pretrained_window_sizes, int):
            pretrained_window_sizes = [pretrained_window_sizes] * len(depths)
        if len(pretrained_window_sizes) != len(depths):
            raise ConfigError(f"pretrained_window_sizes needs {len(depths)} entries, got {pretrained_window_sizes}")
        self.window_size = to_2tuple(window_size)
        self.pretrained_window_sizes = [to_2tuple(p) for p in pretrained_window_sizes]

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_eps=norm_eps)
        self.layers = build_stages(
            depths, self.embed_dims, drop_path_rate,
            lambda i, j, dim, drop_path: SwinTransformerV2Block(
                dim, num_heads[i], self.window_size, shifted=j % 2 == 1,
                pretrained_window_size=self.pretrained_window_sizes[i], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, drop_path=drop_path,
                extra_norm=extra_norm_period > 0 and (j + 1) % extra_norm_period == 0, norm_eps=norm_eps,
                gelu_approximate=gelu_approximate,
            ),
            PatchMergingV2,
        )  # fmt: skip
        self._finish_init(num_classes, drop_rate, norm_eps)
        for stage in self.layers:
            for block in stage.blocks:
                # Official res-post-norm init: every residual branch starts as the identity.
                for norm in (block.norm1, block.norm2):
                    nn.init.zeros_(norm.weight)
                    nn.init.zeros_(norm.bias)


# --- registered models ------------------------------------------------------------------------------------------
# Published top-1 are the official MODELHUB numbers (ImageNet-1k val); crop_pct follows the official evaluation:
# resize to size / 0.875 then centre crop, and no crop at 384.

_TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SMALL = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_BASE = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_LARGE = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
# SwinV2-H and -G: the paper gives widths and depths only. Heads follow mmpretrain, the one public implementation
# of both: head dim 44 for H (352 / 8) and 32 for G (512 / 16), doubling per stage like every other Swin.
_HUGE = dict(embed_dim=352, depths=(2, 2, 18, 2), num_heads=(8, 16, 32, 64), extra_norm_period=6)
_GIANT = dict(embed_dim=512, depths=(2, 2, 42, 4), num_heads=(16, 32, 64, 128), extra_norm_period=6)
_FROM_192 = (12, 12, 12, 6)  # stage 4 of a 192 px model is 6x6, so its window was clamped to 6

_OFFICIAL = "microsoft/Swin-Transformer MODELHUB"
_FINETUNED = _OFFICIAL + " (22k pretrain, 1k fine-tune)"


@register_model(
    defaults=dict(_TINY, img_size=256, window_size=8),
    top1=81.8,
    source=_OFFICIAL,
    aliases=("swinv2_tiny_window8",),
)
def swinv2_tiny_window8_256(**kwargs) -> SwinTransformerV2:
    """Swin V2-T, 8x8 windows, 256 px, ImageNet-1k."""
    return SwinTransformerV2(**kwargs)


@register_model(
    defaults=dict(_TINY, img_size=256, window_size=16),
    top1=82.8,
    source=_OFFICIAL,
    aliases=("swinv2_tiny_window16",),
)
def swinv2_tiny_window16_256(**kwargs) -> SwinTransformerV2:
    """Swin V2-T, 16x16 windows, 256 px, ImageNet-1k."""
    return SwinTransformerV2(**kwargs)


@register_model(
    defaults=dict(_SMALL, img_size=256, window_size=8),
    top1=83.7,
    source=_OFFICIAL,
    aliases=("swinv2_small_window8",),
)
def swinv2_small_window8_256(**kwargs) -> SwinTransformerV2:
    """Swin V2-S, 8x8 windows, 256 px, ImageNet-1k."""
    return SwinTransformerV2(**kwargs)


@register_model(
    defaults=dict(_SMALL, img_size=256, window_size=16),
    top1=84.1,
    source=_OFFICIAL,
    aliases=("swinv2_small_window16",),
)
def swinv2_small_window16_256(**kwargs) -> SwinTransformerV2:
    """Swin V2-S, 16x16 windows, 256 px, ImageNet-1k."""
    return SwinTransformerV2(**kwargs)


@register_model(
    defaults=dict(_BASE, img_size=256, window_size=8),
    top1=84.2,
    source=_OFFICIAL,
    aliases=("swinv2_base_window8",),
)
def swinv2_base_window8_256(**kwargs) -> SwinTransformerV2:
    """Swin V2-B, 8x8 windows, 256 px, ImageNet-1k."""
    return SwinTransformerV2(**kwargs)


@register_model(
    defaults=dict(_BASE, img_size=256, window_size=16),
    top1=84.6,
    source=_OFFICIAL,
    aliases=("swinv2_base_window16",),
)
def swinv2_base_window16_256(**kwargs) -> SwinTransformerV2:
    """Swin V2-B, 16x16 windows, 256 px, ImageNet-1k."""
    return SwinTransformerV2(**kwargs)


@register_model(
    defaults=dict(_BASE, img_size=192, window_size=12, num_classes=21841),
    source="ImageNet-22k pretraining (no 1k accuracy)",
    aliases=("swinv2_base_window12_192_22k",),
)
def swinv2_base_window12_192(**kwargs) -> SwinTransformerV2:
    """Swin V2-B, 12x12 windows, 192 px, ImageNet-22k pretraining."""
    return SwinTransformerV2(**kwargs)


@register_model(
    defaults=dict(_LARGE, img_size=192, window_size=12, num_classes=21841),
    source="ImageNet-22k pretraining (no 1k accuracy)",
    aliases=("swinv2_large_window12_192_22k",),
)
def swinv2_large_window12_192(**kwargs) -> SwinTransformerV2:
    """Swin V2-L, 12x12 windows, 192 px, ImageNet-22k pretraining."""
    return SwinTransformerV2(**kwargs)


@register_model(
    defaults=dict(_BASE, img_size=256, window_size=16, pretrained_window_sizes=_FROM_192, drop_path_rate=0.2),
    top1=86.2,
    source=_FINETUNED,
    aliases=(
        "swinv2_base_patch4_window12to16_192to256_22kto1k_ft",
        "swinv2_base_window12to16_192to256_22kft1k",
    ),
)
def swinv2_base_window12to16_192to256(**kwargs) -> SwinTransformerV2:
    """Swin V2-B pretrained on 22k at 192 px (window 12), fine-tuned on 1k at 256 px (window 16)."""
    return SwinTransformerV2(**kwargs)


@register_model(
    defaults=dict(_BASE, img_size=384, window_size=24, pretrained_window_sizes=_FROM_192, drop_path_rate=0.2),
    crop_pct=1.0,
    top1=87.1,
    source=_FINETUNED,
    aliases=(
        "swinv2_base_patch4_window12to24_192to384_22kto1k_ft",
        "swinv2_base_window12to24_192to384_22kft1k",
    ),
)
def swinv2_base_window12to24_192to384(**kwargs) -> SwinTransformerV2:
    """Swin V2-B pretrained on 22k at 192 px (window 12), fine-tuned on 1k at 384 px (window 24)."""
    return SwinTransformerV2(**kwargs)


@register_model(
    defaults=dict(_LARGE, img_size=256, window_size=16, pretrained_window_sizes=_FROM_192, drop_path_rate=0.2),
    top1=86.9,
    source=_FINETUNED,
    aliases=(
        "swinv2_large_patch4_window12to16_192to256_22kto1k_ft",
        "swinv2_large_window12to16_192to256_22kft1k",
    ),
)
def swinv2_large_window12to16_192to256(**kwargs) -> SwinTransformerV2:
    """Swin V2-L pretrained on 22k at 192 px (window 12), fine-tuned on 1k at 256 px (window 16)."""
    return SwinTransformerV2(**kwargs)


@register_model(
    defaults=dict(_LARGE, img_size=384, window_size=24, pretrained_window_sizes=_FROM_192, drop_path_rate=0.2),
    crop_pct=1.0,
    top1=87.6,
    source=_FINETUNED,
    aliases=(
        "swinv2_large_patch4_window12to24_192to384_22kto1k_ft",
        "swinv2_large_window12to24_192to384_22kft1k",
    ),
)
def swinv2_large_window12to24_192to384(**kwargs) -> SwinTransformerV2:
    """Swin V2-L pretrained on 22k at 192 px (window 12), fine-tuned on 1k at 384 px (window 24)."""
    return SwinTransformerV2(**kwargs)


@register_model(defaults=dict(_HUGE, img_size=192, window_size=12), source="paper architecture (no public weights)")
def swinv2_huge_window12_192(**kwargs) -> SwinTransformerV2:
    """Swin V2-H as the paper describes it, 12x12 windows, 192 px (no public weights)."""
    return SwinTransformerV2(**kwargs)


@register_model(defaults=dict(_GIANT, img_size=192, window_size=12), source="paper architecture (no public weights)")
def swinv2_giant_window12_192(**kwargs) -> SwinTransformerV2:
    """Swin V2-G as the paper describes it, 12x12 windows, 192 px (no public weights)."""
    return SwinTransformerV2(**kwargs)
