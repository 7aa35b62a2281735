"""CSWin Transformer (Dong et al., 2022): cross-shaped window self-attention with locally-enhanced positional encoding.

A block splits its channels (and heads) in two: the first half attends within vertical stripes (the full map height,
``split_size`` columns wide), the second half within horizontal stripes (``split_size`` rows, the full width), in
parallel; together the two halves see a cross around every token. LePE adds a depthwise 3x3 convolution of V,
computed on each stripe with zero padding at the stripe borders. The last stage attends over the whole map with all
heads in one branch. The stem is a 7x7 stride-4 convolution, and a 3x3 stride-2 convolution halves the map between
stages; both are followed by a LayerNorm.

Parameter layout, swinkit's own, and its counterparts in the official repository (microsoft/CSWin-Transformer) and in
PaddleClas (whose Linear weights are stored [in, out]); ``swinkit.checkpoints`` converts both:

=============================================== ================================== =====================================
swinkit                                         official                           PaddleClas
=============================================== ================================== =====================================
patch_embed.proj, patch_embed.norm              stage1_conv_embed.0, .2            patch_embedding.patch_embed, .norm
layers.{i}.downsample.conv, .norm (i >= 1)      merge{i}.conv, .norm               stages.{i-1}.merge.conv, .norm
layers.{i}.blocks.{j}.norm1, qkv, proj, norm2,  stage{i+1}.{j}.<same>              stages.{i}.blocks.{j}.<same>
mlp.fc1, mlp.fc2
layers.{i}.blocks.{j}.attns.{b}.lepe            stage{i+1}.{j}.attns.{b}.get_v     stages.{i}.blocks.{j}.attns.{b}.get_v
norm, head.fc                                   norm, head                         norm, head
=============================================== ================================== =====================================

``attns.0`` is the vertical-stripe branch and ``attns.1`` the horizontal one; the last stage has only ``attns.0``,
attending over the whole map with all channels.

Any input size runs, non-square included. The official code is fixed-size and needs every stage's map to be a multiple
of its stripe width; here each block pads its q/k/v map on the bottom/right to a stripe multiple, masks the padded keys
out of attention and leaves their V at zero, so the LePE convolution sees exactly the zero border an unpadded stripe
has. Real tokens therefore get the result the narrower last stripe would give, and a map that needs no padding takes
the plain path (no mask). Every stripe holds at least one real token, so no attention row is ever fully masked.

Small maps: a stripe is never wider than the map (the width is clamped to the map side), so where a side is no larger
than ``split_size`` that branch attends over the whole map. This is the official rule generalised: the official model
switches a stage to one full-attention branch with all heads where its map equals the split size, which is the same
computation as two full-map branches of half the heads each (heads are independent and LePE is depthwise); the
converters split such a branch's LePE weights in two, so the parameter layout does not depend on the input size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from ..core.errors import ConfigError
from ..layers import DropPath, Mlp, build_stages, chunked_attention
from ..layers.linear import Linear
from .base import HierarchicalModel
from .registry import register_model


class StripeAttention(nn.Module):
    """One branch of cross-shaped attention: heads attending within stripes, plus LePE.

    Args:
        dim: channels of this branch.
        num_heads: heads of this branch.
        split: (stripe height, stripe width), where None spans the whole (padded) map: (None, sw) for vertical
            stripes, (sh, None) for horizontal ones, (None, None) for attention over the whole map.
        attn_drop: attention dropout.
    """

    def __init__(self, dim: int, num_heads: int, split: tuple[int | None, int | None], attn_drop: float) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ConfigError(f"an attention branch of {dim} channels cannot have {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.split = split
        self.attn_drop = attn_drop
        self.attention_chunks = 1  # stripes attended a group at a time (``set_attention_chunks``)
        self.lepe = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def stripe(self, height: int, width: int, padded: tuple[int, int]) -> tuple[int, int]:
        """The stripe of a map of real size (height, width) padded to ``padded``: split sizes clamped to the map."""
        sh, sw = self.split
        return (min(sh, height) if sh else padded[0], min(sw, width) if sw else padded[1])

    def forward(self, qkv: torch.Tensor, stripe: tuple[int, int], key_mask: torch.Tensor | None) -> torch.Tensor:
        """Attention within stripes.

        Args:
            qkv: (B, Hp, Wp, 3, dim), a map whose sides are stripe multiples; padded tokens are zero.
            stripe: (sh, sw).
            key_mask: (num_stripes, sh * sw) additive mask of the padded keys, or None.

        Returns:
            (B * num_stripes, sh * sw, dim), stripes in (B, Hp / sh, Wp / sw) order, tokens row-major.
        """
        b, hp, wp, _, c = qkv.shape
        sh, sw = stripe
        # (3, B * nS, L, C). A view for horizontal stripes and the whole map; one copy for vertical stripes.
        windows = qkv.view(b, hp // sh, sh, wp // sw, sw, 3, c).permute(5, 0, 1, 3, 2, 4, 6).reshape(3, -1, sh * sw, c)
        q, k, v = windows.unbind(0)
        # LePE on every stripe of every image in one depthwise convolution, fed a channels-last view of V.
        lepe = self.lepe(v.view(-1, sh, sw, c).permute(0, 3, 1, 2))  # (B * nS, C, sh, sw)
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B * nS, nH, L, d)
        mask = None
        if key_mask is not None:
            mask = key_mask.to(q.dtype).repeat(b, 1)[:, None, None, :]  # (B * nS, 1, 1, L)
        dropout = self.attn_drop if self.training else 0.0
        out = chunked_attention(q, k, v, mask, dropout, None, self.attention_chunks, dim=0)  # (B * nS, nH, L, d)
        lepe = lepe.permute(0, 2, 3, 1).reshape(-1, sh * sw, self.num_heads, c // self.num_heads)  # (B * nS, L, nH, d)
        return (lepe + out.transpose(1, 2)).flatten(2)


def _padded_key_mask(
    height: int, width: int, padded: tuple[int, int], stripe: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """(num_stripes, sh * sw): 0 for real tokens, -inf for the padding, in the stripe order of ``StripeAttention``."""
    (hp, wp), (sh, sw) = padded, stripe
    pad = (torch.arange(hp, device=device) >= height)[:, None] | (torch.arange(wp, device=device) >= width)[None, :]
    pad = pad.view(hp // sh, sh, wp // sw, sw).transpose(1, 2).reshape(-1, sh * sw)
    return torch.zeros(pad.shape, device=device).masked_fill_(pad, float("-inf"))


class CSWinBlock(nn.Module):
    """Pre-norm block: x + DropPath(proj(cross-shaped attention(LN(x)))), then x + DropPath(MLP(LN(x))).

    ``full_attention`` (the last stage) uses one branch over the whole map with all heads; otherwise the first half of
    the channels and heads take vertical stripes and the second half horizontal ones.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        split_size: int,
        full_attention: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        proj_drop: float,
        attn_drop: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.full_attention = full_attention
        if full_attention:
            branches = [StripeAttention(dim, num_heads, (None, None), attn_drop)]
        else:
            if num_heads % 2 or dim % 2:
                raise ConfigError(f"a stripe-attention stage splits its heads in two: got {num_heads} heads, dim {dim}")
            branches = [
                StripeAttention(dim // 2, num_heads // 2, (None, split_size), attn_drop),  # vertical stripes
                StripeAttention(dim // 2, num_heads // 2, (split_size, None), attn_drop),  # horizontal stripes
            ]
        self.attns = nn.ModuleList(branches)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.drop_path2 = DropPath(drop_path)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The map size after padding each side to a multiple of every (clamped) stripe side that constrains it."""
        unit_h = math.lcm(*(min(a.split[0], height) for a in self.attns if a.split[0]))
        unit_w = math.lcm(*(min(a.split[1], width) for a in self.attns if a.split[1]))
        return height + (-height) % unit_h, width + (-width) % unit_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C)."""
        x = x + self.drop_path1(self.proj_drop(self.proj(stripe_attention(self, self.norm1(x)))))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


@register_notrace_function
@torch.fx.wrap
def stripe_attention(block: CSWinBlock, x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) normalised map -> (B, H, W, C) concatenated branch outputs of ``block``, before ``proj``; the
    stripes and padding decided by the map's own size. An fx leaf (``swinkit.layers.tracing``)."""
    b, h, w, c = x.shape
    qkv = block.qkv(x)  # (B, H, W, 3C)
    if block.full_attention:  # the whole map is one window: no padding, no mask
        return block.attns[0](qkv.view(b, h, w, 3, c), (h, w), None).view(b, h, w, c)
    hp, wp = block.padded_size(h, w)
    if (hp, wp) != (h, w):
        # Padding after the projection leaves q, k and v of padded tokens at zero (no bias), which LePE needs.
        qkv = F.pad(qkv, (0, 0, 0, wp - w, 0, hp - h))
    qkv = qkv.view(b, hp, wp, 3, c)
    # Each branch writes its channels of the output map: the stripe reverse and the concatenation in one copy.
    out, start = qkv.new_empty(b, hp, wp, c), 0
    for attn in block.attns:
        sh, sw = attn.stripe(h, w, (hp, wp))
        mask = _padded_key_mask(h, w, (hp, wp), (sh, sw), x.device) if (hp, wp) != (h, w) else None
        y = attn(qkv[..., start : start + attn.dim], (sh, sw), mask)  # (B * nS, sh * sw, C_branch)
        y = y.view(b, hp // sh, wp // sw, sh, sw, attn.dim).transpose(2, 3)
        out[..., start : start + attn.dim].view(b, hp // sh, sh, wp // sw, sw, attn.dim).copy_(y)
        start += attn.dim
    return out[:, :h, :w] if (hp, wp) != (h, w) else out


class ConvPatchEmbed(nn.Module):
    """Overlapping convolutional stem: (B, C, H, W) -> (B, H/4, W/4, dim), Conv 7x7 stride 4 padding 2, then LayerNorm.

    Another ``patch_size`` p uses kernel 2p - 1 and padding p // 2 (the same overlap rule; p = 4 is the official stem).
    """

    def __init__(self, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=2 * patch_size - 1, stride=patch_size, padding=patch_size // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvMerge(nn.Module):
    """Downsampling between stages: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out_dim), Conv 3x3 stride 2, LayerNorm."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The permuted input is an NCHW tensor in channels-last memory: no copy on the way in or out.
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class CSWinTransformer(HierarchicalModel):
    """CSWin Transformer classifier and backbone.

    Args:
        img_size: the default input size (int or (H, W)); metadata only, since any input size runs.
        patch_size: stride of the stem (4 officially).
        embed_dim: channels of the first stage; each later stage doubles them.
        depths: blocks per stage (the official ``depth``).
        split_size: stripe width per stage (or one int for all). The last stage attends over the whole map, so its
            entry only documents the official configuration (7 at 224 px, 12 at 384 px).
        num_heads: heads per stage, split evenly between the two stripe directions (even except in the last stage).
        drop_rate: dropout before the classifier.
        proj_drop_rate: dropout after the attention projection and in the MLP (the official ``drop_rate``).
        attn_drop_rate: attention dropout.
        drop_path_rate: stochastic depth, increasing linearly over all blocks.
    """

    family = "cswin"

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 64,
        depths: Sequence[int] = (1, 2, 21, 1),
        split_size: int | Sequence[int] = (1, 2, 7, 7),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        num_stages = len(depths)
        if isinstance(split_size, int):
            split_size = [split_size] * num_stages
        if not len(num_heads) == len(split_size) == num_stages:
            raise ConfigError(
                f"depths {tuple(depths)}, split_size {tuple(split_size)} and num_heads {tuple(num_heads)} must have "
                "one entry per stage"
            )
        if any(s < 1 for s in split_size):
            raise ConfigError(f"split sizes must be positive, got {tuple(split_size)}")
        self._set_widths(img_size, embed_dim, depths, num_heads)
        self.split_size = tuple(split_size)

        self.patch_embed = ConvPatchEmbed(patch_size, in_chans, embed_dim)
        self.layers = build_stages(
            depths, self.embed_dims, drop_path_rate,
            lambda i, j, dim, drop_path: CSWinBlock(
                dim, num_heads[i], self.split_size[i], full_attention=i == num_stages - 1, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, drop_path=drop_path,
            ),
            ConvMerge,
        )  # fmt: skip
        self._finish_init(num_classes, drop_rate)


# --- registered models ------------------------------------------------------------------------------------------
# Published top-1: the official README (ImageNet-1k val; large is ImageNet-22k pretrained, 1k fine-tuned). Drop path
# follows the official recipes: 0.2 / 0.4 / 0.5 for T / S / B at 224, 0.7 for the B-384 fine-tune and 0.2 for the
# L 22k -> 1k fine-tunes. Evaluation: resize to size / 0.875 and centre crop at 224, plain resize at 384. Names
# resolve case-insensitively, so the seed's ``cswin_64_24322_small_224`` is the official ``CSWin_64_24322_small_224``.

_OFFICIAL = "microsoft/CSWin-Transformer README"
_FINETUNED = _OFFICIAL + " (22k pretrain, 1k fine-tune)"
_SPLIT_224 = (1, 2, 7, 7)
_SPLIT_384 = (1, 2, 12, 12)
_TINY = dict(embed_dim=64, depths=(1, 2, 21, 1), num_heads=(2, 4, 8, 16))
_SMALL = dict(embed_dim=64, depths=(2, 4, 32, 2), num_heads=(2, 4, 8, 16))
_BASE = dict(embed_dim=96, depths=(2, 4, 32, 2), num_heads=(4, 8, 16, 32))
_LARGE = dict(embed_dim=144, depths=(2, 4, 32, 2), num_heads=(6, 12, 24, 24))  # 24 heads in the last stage, not 48


@register_model(
    defaults=dict(_TINY, img_size=224, split_size=_SPLIT_224, drop_path_rate=0.2),
    top1=82.8,
    source=_OFFICIAL,
    aliases=("CSWin_64_12211_tiny_224",),
)
def cswin_tiny_224(**kwargs) -> CSWinTransformer:
    """CSWin-T, 224 px."""
    return CSWinTransformer(**kwargs)


@register_model(
    defaults=dict(_SMALL, img_size=224, split_size=_SPLIT_224, drop_path_rate=0.4),
    top1=83.6,
    source=_OFFICIAL,
    aliases=("CSWin_64_24322_small_224",),
)
def cswin_small_224(**kwargs) -> CSWinTransformer:
    """CSWin-S, 224 px."""
    return CSWinTransformer(**kwargs)


@register_model(
    defaults=dict(_BASE, img_size=224, split_size=_SPLIT_224, drop_path_rate=0.5),
    top1=84.2,
    source=_OFFICIAL,
    aliases=("CSWin_96_24322_base_224",),
)
def cswin_base_224(**kwargs) -> CSWinTransformer:
    """CSWin-B, 224 px."""
    return CSWinTransformer(**kwargs)


@register_model(
    defaults=dict(_LARGE, img_size=224, split_size=_SPLIT_224, drop_path_rate=0.2),
    top1=86.5,
    source=_FINETUNED,
    aliases=("CSWin_144_24322_large_224",),
)
def cswin_large_224(**kwargs) -> CSWinTransformer:
    """CSWin-L, 224 px, ImageNet-22k pretrained."""
    return CSWinTransformer(**kwargs)


@register_model(
    defaults=dict(_BASE, img_size=384, split_size=_SPLIT_384, drop_path_rate=0.7),
    crop_pct=1.0,
    top1=85.5,
    source=_OFFICIAL,
    aliases=("CSWin_96_24322_base_384",),
)
def cswin_base_384(**kwargs) -> CSWinTransformer:
    """CSWin-B, 384 px."""
    return CSWinTransformer(**kwargs)


@register_model(
    defaults=dict(_LARGE, img_size=384, split_size=_SPLIT_384, drop_path_rate=0.2),
    crop_pct=1.0,
    top1=87.5,
    source=_FINETUNED,
    aliases=("CSWin_144_24322_large_384",),
)
def cswin_large_384(**kwargs) -> CSWinTransformer:
    """CSWin-L, 384 px, ImageNet-22k pretrained."""
    return CSWinTransformer(**kwargs)
