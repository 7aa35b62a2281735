"""CSWin: parity with PaddleClas and the official code, parameter counts, padding, variants, checkpoint formats."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import swinkit
from swinkit.checkpoints import CheckpointError, detect_format, load_checkpoint
from swinkit.models import CSWinTransformer, model_info
from swinkit.models.cswin import CSWinBlock, stripe_attention
from swinkit.models.flops import count_flops

from .conftest import CSWIN_TINY_OVERRIDES, perturb_parameters, perturbed_state_dict

FIXTURES = Path(__file__).parent / "fixtures"
# The configuration of tests/fixtures/make_paddle_fixtures.py (PaddleClas names: image_size, depths, splits, ...).
PADDLE_TINY = dict(
    img_size=64, embed_dim=8, depths=(1, 2, 2, 1), split_size=(1, 2, 2, 2), num_heads=(2, 2, 4, 4), num_classes=10
)
CSWIN_MODELS = swinkit.list_models("cswin*")


def images(batch: int = 2, size: tuple[int, int] = (64, 64), seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def tiny(name: str = "cswin_tiny_224", seed: int = 0, **overrides) -> CSWinTransformer:
    torch.manual_seed(seed)
    model = swinkit.create_model(name, **{**CSWIN_TINY_OVERRIDES, **overrides})
    return perturb_parameters(model, seed=seed)


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> float:
    diff = ((actual - expected).abs().max() / expected.abs().max()).item()
    assert diff <= rtol, diff
    return diff


# --- a reference: the official microsoft/CSWin-Transformer model code (fixed-size, square), for its key layout -------


def _img2windows(img: torch.Tensor, h_sp: int, w_sp: int) -> torch.Tensor:
    b, c, h, w = img.shape
    img = img.view(b, c, h // h_sp, h_sp, w // w_sp, w_sp)
    return img.permute(0, 2, 4, 3, 5, 1).contiguous().reshape(-1, h_sp * w_sp, c)


def _windows2img(windows: torch.Tensor, h_sp: int, w_sp: int, h: int, w: int) -> torch.Tensor:
    b = int(windows.shape[0] / (h * w / h_sp / w_sp))
    img = windows.view(b, h // h_sp, w // w_sp, h_sp, w_sp, -1)
    return img.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


class OfficialLePEAttention(nn.Module):
    def __init__(self, dim: int, resolution: int, idx: int, split_size: int, num_heads: int) -> None:
        super().__init__()
        self.resolution, self.num_heads = resolution, num_heads
        self.scale = (dim // num_heads) ** -0.5
        if idx == -1:
            self.h_sp, self.w_sp = resolution, resolution
        elif idx == 0:
            self.h_sp, self.w_sp = resolution, split_size
        else:
            self.h_sp, self.w_sp = split_size, resolution
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)

    def im2cswin(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = w = int(math.sqrt(n))
        x = _img2windows(x.transpose(-2, -1).contiguous().view(b, c, h, w), self.h_sp, self.w_sp)
        return x.reshape(-1, self.h_sp * self.w_sp, self.num_heads, c // self.num_heads).permute(0, 2, 1, 3)

    def get_lepe(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        h = w = int(math.sqrt(n))
        x = x.transpose(-2, -1).contiguous().view(b, c, h, w)
        x = x.view(b, c, h // self.h_sp, self.h_sp, w // self.w_sp, self.w_sp)
        x = x.permute(0, 2, 4, 1, 3, 5).contiguous().reshape(-1, c, self.h_sp, self.w_sp)
        lepe = self.get_v(x).reshape(-1, self.num_heads, c // self.num_heads, self.h_sp * self.w_sp)
        x = x.reshape(-1, self.num_heads, c // self.num_heads, self.h_sp * self.w_sp)
        return x.permute(0, 1, 3, 2).contiguous(), lepe.permute(0, 1, 3, 2).contiguous()

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        q, k, v = qkv[0], qkv[1], qkv[2]
        b, _, c = q.shape
        q, k = self.im2cswin(q), self.im2cswin(k)
        v, lepe = self.get_lepe(v)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v) + lepe
        x = x.transpose(1, 2).reshape(-1, self.h_sp * self.w_sp, c)
        return _windows2img(x, self.h_sp, self.w_sp, self.resolution, self.resolution).view(b, -1, c)


class OfficialMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class OfficialCSWinBlock(nn.Module):
    def __init__(self, dim: int, reso: int, num_heads: int, split_size: int, last_stage: bool) -> None:
        super().__init__()
        self.reso = reso
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.norm1 = nn.LayerNorm(dim)
        if reso == split_size:  # the official rule: such a stage attends over the whole map with one branch
            last_stage = True
        self.branch_num = 1 if last_stage else 2
        self.proj = nn.Linear(dim, dim)
        if last_stage:
            self.attns = nn.ModuleList([OfficialLePEAttention(dim, reso, -1, split_size, num_heads)])
        else:
            self.attns = nn.ModuleList(
                [OfficialLePEAttention(dim // 2, reso, i, split_size, num_heads // 2) for i in range(2)]
            )
        self.mlp = OfficialMlp(dim, dim * 4)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, -1, 3, c).permute(2, 0, 1, 3)
        if self.branch_num == 2:
            out = torch.cat([self.attns[0](qkv[:, :, :, : c // 2]), self.attns[1](qkv[:, :, :, c // 2 :])], dim=2)
        else:
            out = self.attns[0](qkv)
        x = x + self.proj(out)
        return x + self.mlp(self.norm2(x))


class OfficialMergeBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, 2, 1)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = w = int(math.sqrt(n))
        x = self.conv(x.transpose(-2, -1).contiguous().view(b, c, h, w))
        return self.norm(x.view(b, x.shape[1], -1).transpose(-2, -1).contiguous())


class Tokens(nn.Module):
    """Stands in for the official ``Rearrange('b c h w -> b (h w) c')`` (no parameters, like it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class OfficialCSWin(nn.Module):
    def __init__(self, img_size, embed_dim, depth, split_size, num_heads, num_classes) -> None:
        super().__init__()
        self.stage1_conv_embed = nn.Sequential(nn.Conv2d(3, embed_dim, 7, 4, 2), Tokens(), nn.LayerNorm(embed_dim))
        dim = embed_dim
        for i in range(4):
            if i > 0:
                setattr(self, f"merge{i}", OfficialMergeBlock(dim, dim * 2))
                dim *= 2
            blocks = [
                OfficialCSWinBlock(dim, img_size // 4 // 2**i, num_heads[i], split_size[i], last_stage=i == 3)
                for _ in range(depth[i])
            ]
            setattr(self, f"stage{i + 1}", nn.ModuleList(blocks))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1_conv_embed(x)
        for i in range(4):
            if i > 0:
                x = getattr(self, f"merge{i}")(x)
            for block in getattr(self, f"stage{i + 1}"):
                x = block(x)
        return self.head(self.norm(x).mean(dim=1))


def official_pair(img_size: int = 64, split_size=(1, 2, 2, 2), seed: int = 0):
    """The official model with random weights, and the swinkit model of the same architecture."""
    arch = dict(embed_dim=16, depth=(1, 2, 2, 1), num_heads=(2, 2, 4, 4), num_classes=7)
    torch.manual_seed(seed)
    official = OfficialCSWin(img_size, split_size=split_size, **arch).eval()
    official.load_state_dict(perturbed_state_dict(official, seed=seed))
    ours = CSWinTransformer(
        img_size=img_size,
        embed_dim=16,
        depths=(1, 2, 2, 1),
        split_size=split_size,
        num_heads=(2, 2, 4, 4),
        num_classes=7,
    ).eval()
    return official, ours


# --- parity -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["auto", "paddle"])
def test_paddleclas_weights_give_paddleclas_logits(fmt):
    model = CSWinTransformer(**PADDLE_TINY).eval()
    report = load_checkpoint(model, FIXTURES / "cswin_paddle_tiny.pdparams", format=fmt)
    assert report.format == "paddle" and not report.missing and not report.unexpected
    recorded = np.load(FIXTURES / "cswin_paddle_tiny_io.npz")
    with torch.no_grad():
        logits = model(torch.from_numpy(recorded["input"]))
    assert_close_relative(logits, torch.from_numpy(recorded["logits"]), 1e-4)


def test_paddle_layout_transposes_every_linear_weight():
    from swinkit.checkpoints.pdparams import read_pdparams

    raw = read_pdparams(FIXTURES / "cswin_paddle_tiny.pdparams")
    model = CSWinTransformer(**PADDLE_TINY)
    load_checkpoint(model, FIXTURES / "cswin_paddle_tiny.pdparams")
    state = model.state_dict()
    # The square proj of the last stage (64 x 64) would load untransposed by shape; it must arrive transposed.
    paddle_proj = raw["stages.3.blocks.0.proj.weight"]
    assert paddle_proj.shape[0] == paddle_proj.shape[1]
    assert torch.equal(state["layers.3.blocks.0.proj.weight"], paddle_proj.t())
    assert torch.equal(state["layers.1.downsample.conv.weight"], raw["stages.0.merge.conv.weight"])
    assert torch.equal(state["layers.0.blocks.0.attns.1.lepe.weight"], raw["stages.0.blocks.0.attns.1.get_v.weight"])


def test_microsoft_layout_loads_strictly_and_matches_official_code():
    official, ours = official_pair()
    state = official.state_dict()
    # The official key names of the reference (section 1.3).
    for key in (
        "stage1_conv_embed.0.weight",
        "stage1_conv_embed.2.bias",
        "stage3.1.attns.1.get_v.weight",
        "merge1.conv.weight",
        "merge3.norm.bias",
        "stage4.0.qkv.weight",
        "norm.weight",
        "head.weight",
    ):
        assert key in state, key
    assert state["stage4.0.attns.0.get_v.weight"].shape == (128, 1, 3, 3)  # the last stage: one branch, all channels
    assert detect_format(state) == "microsoft"
    report = load_checkpoint(ours, state, strict=True)
    assert report.format == "microsoft" and not report.missing and not report.unexpected
    x = images()
    with torch.no_grad():
        assert_close_relative(ours(x), official(x), 1e-5)


def test_official_single_branch_stage_is_split_into_two_half_branches():
    # At 64 px with split 4 in stage 3, the official stage-3 map (4x4) equals its split size: one branch, all heads.
    official, ours = official_pair(split_size=(1, 2, 4, 2))
    state = official.state_dict()
    assert "stage3.0.attns.1.get_v.weight" not in state and state["stage3.0.attns.0.get_v.weight"].shape[0] == 64
    load_checkpoint(ours, state, strict=True)
    x = images()
    with torch.no_grad():
        assert_close_relative(ours(x), official(x), 1e-5)


def test_ema_weights_are_chosen_from_a_timm_saver_container():
    official, ours = official_pair()
    trained = official.state_dict()
    ema = {k: v + 0.01 for k, v in trained.items()}
    container = {"epoch": 299, "arch": "CSWin_64_12211_tiny_224", "state_dict": trained, "state_dict_ema": ema}

    report = load_checkpoint(ours, container)
    assert "EMA" in report.source and "state_dict_ema" in report.source
    assert torch.equal(ours.patch_embed.proj.weight, ema["stage1_conv_embed.0.weight"])

    report = load_checkpoint(ours, container, ema=False)
    assert "EMA" not in report.source
    assert torch.equal(ours.patch_embed.proj.weight, trained["stage1_conv_embed.0.weight"])

    # An EMA-only container loads by default; asking for what is not there is an error that says so.
    load_checkpoint(ours, {"state_dict_ema": ema})
    with pytest.raises(CheckpointError, match="only EMA weights"):
        load_checkpoint(ours, {"state_dict_ema": ema}, ema=False)
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_checkpoint(ours, {"state_dict": trained}, ema=True)


def test_paddle_checkpoint_into_swin_is_a_clear_error():
    swin = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    model = swinkit.create_model("swin_tiny_patch4_window7_224", **swin)
    with pytest.raises(CheckpointError, match="CSWin only"):
        load_checkpoint(model, FIXTURES / "cswin_paddle_tiny.pdparams")


# --- sizes and numbers --------------------------------------------------------------------------------------------


def meta_model(name: str) -> CSWinTransformer:
    with torch.device("meta"):
        return swinkit.create_model(name)


@pytest.mark.parametrize(
    "name, millions, gmacs",
    [
        ("cswin_tiny_224", 22.3, 4.3),  # README: 23M 4.3G; paper: 23M
        ("cswin_small_224", 34.6, 6.8),  # README: 35M 6.9G
        ("cswin_base_224", 77.4, 15.0),  # README: 78M 15.0G
        ("cswin_base_384", 77.4, 47.0),  # README: 78M 47.0G
        ("cswin_large_224", 173.3, 33.1),  # README: 173M 31.5G
    ],
)
def test_parameter_counts_and_macs(name, millions, gmacs):
    model = meta_model(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions
    assert round(count_flops(model) / 1e9, 1) == gmacs


def test_macs_of_swin_match_published():
    assert round(count_flops(meta_model("swin_tiny_patch4_window7_224")) / 1e9, 1) == 4.5
    assert round(count_flops(meta_model("swinv2_tiny_window8_256")) / 1e9, 1) == 5.9


def test_count_flops_leaves_the_model_alone():
    model = tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert count_flops(model, (64, 48)) > 0
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize(
    "name, canonical",
    [
        ("CSWin_64_12211_tiny_224", "cswin_tiny_224"),
        ("cswin_64_24322_small_224", "cswin_small_224"),
        ("CSWin_64_24322_small_224", "cswin_small_224"),
        ("CSWin_96_24322_base_384", "cswin_base_384"),
        ("cswin_144_24322_large_224", "cswin_large_224"),
        ("CSWin_144_24322_large_384", "cswin_large_384"),
    ],
)
def test_official_and_seed_names_resolve(name, canonical):
    assert model_info(name).name == canonical


def test_registry_entries():
    assert CSWIN_MODELS == [
        "cswin_base_224",
        "cswin_base_384",
        "cswin_large_224",
        "cswin_large_384",
        "cswin_small_224",
        "cswin_tiny_224",
    ]
    assert [model_info(n).top1 for n in CSWIN_MODELS] == [84.2, 85.5, 86.5, 87.5, 83.6, 82.8]
    assert model_info("cswin_large_224").defaults["num_heads"] == (6, 12, 24, 24)
    assert model_info("cswin_base_384").defaults["split_size"] == (1, 2, 12, 12)
    # The seed config's split sizes build what it says.
    seed = meta_model_with("cswin_64_24322_small_224", split_size=[2, 2, 7, 7])
    assert [s.blocks[0].attns[0].split for s in seed.layers] == [(None, 2), (None, 2), (None, 7), (None, None)]


def meta_model_with(name: str, **overrides) -> CSWinTransformer:
    with torch.device("meta"):
        return swinkit.create_model(name, **overrides)


# --- any input size -----------------------------------------------------------------------------------------------


def test_224x200_runs():
    model = tiny(img_size=224, split_size=(1, 2, 7, 7)).eval()
    with torch.no_grad():
        out = model.forward_features(images(1, (224, 200)))
    assert out.shape == (1, 7, 7, 128) and torch.isfinite(out).all()  # maps 56x50, 28x25, 14x13 (padded), 7x7


def brute_force_attention(block: CSWinBlock, x: torch.Tensor) -> torch.Tensor:
    """The block's attention with no padding at all: the stripes that do not fit are narrower, token by token."""
    b, h, w, c = x.shape
    q, k, v = block.qkv(x).view(b, h, w, 3, c).unbind(3)
    out = torch.zeros(b, h, w, c)
    start = 0
    for attn in block.attns:
        cs = slice(start, start + attn.dim)
        sh = min(attn.split[0], h) if attn.split[0] else h
        sw = min(attn.split[1], w) if attn.split[1] else w
        heads, d = attn.num_heads, attn.dim // attn.num_heads
        for top in range(0, h, sh):
            for left in range(0, w, sw):
                rows, cols = slice(top, min(top + sh, h)), slice(left, min(left + sw, w))
                qs, ks, vs = (t[:, rows, cols, cs] for t in (q, k, v))  # (B, h', w', C') of a (narrower) stripe
                hh, ww = qs.shape[1:3]
                lepe = F.conv2d(vs.permute(0, 3, 1, 2), attn.lepe.weight, attn.lepe.bias, padding=1, groups=attn.dim)
                qs, ks, vs = (t.reshape(b, hh * ww, heads, d).transpose(1, 2) for t in (qs, ks, vs))
                weights = (qs @ ks.transpose(-2, -1) * d**-0.5).softmax(-1)
                y = (weights @ vs).transpose(1, 2).reshape(b, hh, ww, attn.dim) + lepe.permute(0, 2, 3, 1)
                out[:, rows, cols, cs] = y
        start += attn.dim
    return out


@pytest.mark.parametrize("size", [(5, 7), (6, 6), (9, 4), (3, 2), (8, 4)])
def test_padded_stripes_match_brute_force(size):
    torch.manual_seed(0)
    block = CSWinBlock(
        16,
        4,
        split_size=4,
        full_attention=False,
        mlp_ratio=4.0,
        qkv_bias=True,
        proj_drop=0.0,
        attn_drop=0.0,
        drop_path=0.0,
    )
    perturb_parameters(block)
    x = torch.randn(2, *size, 16)
    assert (block.padded_size(*size) != size) == (size in [(5, 7), (6, 6), (9, 4)])  # (3, 2): stripes clamped
    with torch.no_grad():
        torch.testing.assert_close(stripe_attention(block, x), brute_force_attention(block, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(64, 64), (60, 44)])
def test_extra_padding_changes_nothing(size, monkeypatch):
    """Pad every stripe block by one more stripe in each direction: real tokens must not see the difference.

    At 64x64 no stage needs padding, so this also compares the padded, masked path with the plain one.
    """
    model = tiny().eval()
    x = images(2, size)
    with torch.no_grad():
        plain = model(x)
    padded_size = CSWinBlock.padded_size

    def pad_more(self, height, width):
        hp, wp = padded_size(self, height, width)
        return hp + min(self.attns[1].split[0], height), wp + min(self.attns[0].split[1], width)

    monkeypatch.setattr(CSWinBlock, "padded_size", pad_more)
    with torch.no_grad():
        padded = model(x)
    torch.testing.assert_close(padded, plain, atol=1e-5, rtol=1e-5)


def test_maps_smaller_than_the_stripe_attend_over_the_whole_map():
    # Stage 3 of a 64 px input is 4x4 with split 7: both branches see the whole map, as full attention would.
    block = CSWinBlock(
        16,
        4,
        split_size=7,
        full_attention=False,
        mlp_ratio=4.0,
        qkv_bias=True,
        proj_drop=0.0,
        attn_drop=0.0,
        drop_path=0.0,
    )
    perturb_parameters(block)
    full = CSWinBlock(
        16,
        4,
        split_size=7,
        full_attention=True,
        mlp_ratio=4.0,
        qkv_bias=True,
        proj_drop=0.0,
        attn_drop=0.0,
        drop_path=0.0,
    )
    state = block.state_dict()
    state["attns.0.lepe.weight"] = torch.cat([state.pop("attns.0.lepe.weight"), state.pop("attns.1.lepe.weight")])
    state["attns.0.lepe.bias"] = torch.cat([state.pop("attns.0.lepe.bias"), state.pop("attns.1.lepe.bias")])
    full.load_state_dict(state)
    x = torch.randn(2, 4, 3, 16)
    assert block.padded_size(4, 3) == (4, 3)
    with torch.no_grad():
        torch.testing.assert_close(block(x), full(x), atol=1e-5, rtol=1e-5)


# --- every variant, features, transfer ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", CSWIN_MODELS)
def test_variant_trains_on_a_padded_non_square_input(name):
    # 60x44: maps 15x11, 8x6, 4x3, 2x2, so the stripe-2 stages pad; every parameter still gets a finite gradient.
    model = tiny(name, drop_path_rate=0.1).train()
    logits = model(images(2, (60, 44)))
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{param_name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{param_name} has an all-zero gradient"


@pytest.mark.parametrize("size", [(64, 64), (72, 40)])
def test_features_only(size):
    model = perturb_parameters(swinkit.create_model("cswin_small_224", features_only=True, **CSWIN_TINY_OVERRIDES))
    model.eval()
    with torch.no_grad():
        maps = model(images(2, size))
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    for i, fmap in enumerate(maps):
        stride = 4 * 2**i
        assert fmap.shape == (2, 16 * 2**i, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
        assert model.feature_info[i]["num_chs"] == 16 * 2**i and torch.isfinite(fmap).all()


@pytest.mark.parametrize(
    "target, overrides",
    [
        ("cswin_base_384", dict(img_size=96)),  # 224 -> 384: split sizes (1, 2, 7, 7) -> (1, 2, 12, 12)
        ("cswin_base_224", dict(split_size=(2, 2, 7, 7))),  # the seed config's split sizes
    ],
)
def test_same_weights_load_at_another_split_size_or_resolution(target, overrides):
    arch = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(4, 4, 4, 4), num_classes=7)
    source = tiny("cswin_base_224", **arch)
    model = swinkit.create_model(target, **arch, **overrides).eval()
    report = load_checkpoint(model, source.state_dict(), strict=True)
    assert not report.adapted and not report.missing
    size = model.img_size
    with torch.no_grad():
        assert torch.isfinite(model(images(1, size))).all()
    for name, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


# --- untrusted files ----------------------------------------------------------------------------------------------


class _CreatesAFile:
    """A pickle payload: unpickling it calls open(path, 'w'), which creates the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_pdparams_with_a_non_array_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload_ran"
    data = pickle.dumps({"head.weight": np.zeros((4, 2), np.float32), "evil": _CreatesAFile(marker)}, protocol=4)
    pickle.loads(data).clear()  # the payload is live: an ordinary unpickler runs it
    assert marker.exists()
    marker.unlink()

    path = tmp_path / "model.pdparams"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=r"global (io|builtins)\.open") as info:
        load_checkpoint(tiny(), path, format="paddle")
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_pdparams_reader_rejects_garbage(tmp_path):
    path = tmp_path / "broken.pdparams"
    path.write_bytes((FIXTURES / "cswin_paddle_tiny.pdparams").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable .pdparams"):
        load_checkpoint(tiny(), path)


def test_weight_decay_follows_the_official_recipe():
    # timm's add_weight_decay as the official recipe uses it: 1-D parameters and biases are not decayed; the LePE
    # and merge convolutions are.
    model = tiny()
    skip = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert "layers.0.blocks.0.attns.0.lepe.bias" in skip and "layers.1.downsample.norm.weight" in skip
    decayed = {n for n in params if n not in skip}
    assert "layers.0.blocks.0.attns.0.lepe.weight" in decayed and "layers.1.downsample.conv.weight" in decayed
    assert all(params[n].ndim > 1 for n in decayed) and all(params[n].ndim == 1 for n in skip)
