"""Arbitrary input sizes: padding to window multiples never changes real tokens, and small maps clamp the window."""

from __future__ import annotations

import math
import types

import pytest
import torch

import swinkit
import swinkit.layers.window
import swinkit.models.swin_v2
from swinkit.models.swin import SwinTransformerBlock
from swinkit.models.swin_v2 import SwinTransformerV2Block

from .conftest import perturb_parameters, tiny_overrides

V2, V1 = "swinv2_tiny_window8_256", "swin_tiny_patch4_window7_224"


@pytest.mark.parametrize("name", [V2, V1])
def test_odd_input_size_runs(name, tiny_model):
    model = tiny_model(name).eval()
    x = torch.randn(1, 3, 250, 333, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        maps = model.forward_intermediates(x, intermediates_only=True)
    assert logits.shape == (1, 7) and torch.isfinite(logits).all()
    # 250x333 -> patches 63x84 (padded to 252x336), then ceil-halved by each merge.
    assert [tuple(m.shape[-2:]) for m in maps] == [(63, 84), (32, 42), (16, 21), (8, 11)]
    assert all(torch.isfinite(m).all() for m in maps)


@pytest.mark.parametrize("name", [V2, V1])
def test_img_size_is_metadata_only(name, tiny_model):
    odd = tiny_model(name, img_size=(250, 333)).eval()
    square = swinkit.create_model(name, **{**tiny_overrides(name), "img_size": 256}).eval()
    square.load_state_dict(odd.state_dict())
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(odd(x), square(x))


# --- brute-force reference for one block on a map that needs padding ----------------------------------------------


def _region(pos: int, padded: int, window: int, shift: int) -> int:
    """Official shifted-window region of a coordinate of the shifted, padded map: slices (0,-ws), (-ws,-s), (-s,)."""
    if not shift:
        return 0
    return 0 if pos < padded - window else (1 if pos < padded - shift else 2)


def _log_coord(offset: int, window: int) -> float:
    x = offset / max(window - 1, 1) * 8
    return math.copysign(math.log2(abs(x) + 1) / 3, x) if x else 0.0


def reference_window_attention(attn, x: torch.Tensor, window: tuple[int, int], shifted: bool) -> torch.Tensor:
    """x: (B, H, W, C). Each real query attends only to the real keys of its (shifted) window, token by token."""
    b, h, w, c = x.shape
    (wh, ww), heads = window, attn.num_heads
    sh, sw = (wh // 2, ww // 2) if shifted else (0, 0)
    hp, wp = math.ceil(h / wh) * wh, math.ceil(w / ww) * ww
    d = c // heads
    v2 = hasattr(attn, "cpb_mlp")
    if v2:
        qkv = x @ attn.qkv.weight.T + torch.cat([attn.q_bias, torch.zeros(c), attn.v_bias])
    else:
        qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = (qkv[..., i * c : (i + 1) * c].reshape(b, h, w, heads, d) for i in range(3))
    if v2:
        q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
        q = q * torch.exp(torch.clamp(attn.logit_scale.view(heads, 1), max=math.log(100.0)))
    else:
        q = q * d**-0.5

    out = torch.zeros(b, h, w, heads, d)
    for i in range(h):
        for j in range(w):
            qi, qj = (i - sh) % hp, (j - sw) % wp  # position on the shifted, padded map
            keys, bias = [], []
            for ki in range(h):
                for kj in range(w):
                    si, sj = (ki - sh) % hp, (kj - sw) % wp
                    if si // wh != qi // wh or sj // ww != qj // ww:
                        continue  # another window
                    dh, dw = qi - si, qj - sj
                    if v2:
                        coord = torch.tensor([_log_coord(dh, wh), _log_coord(dw, ww)])
                        position = 16 * torch.sigmoid(attn.cpb_mlp(coord))
                    else:
                        position = attn.relative_position_bias_table[(dh + wh - 1) * (2 * ww - 1) + dw + ww - 1]
                    same_region = (_region(qi, hp, wh, sh), _region(qj, wp, ww, sw)) == (
                        _region(si, hp, wh, sh),
                        _region(sj, wp, ww, sw),
                    )
                    keys.append((ki, kj))
                    bias.append(position + (0.0 if same_region else -100.0))
            rows, cols = zip(*keys, strict=True)
            key, value = k[:, rows, cols], v[:, rows, cols]  # (B, K, nH, d)
            logits = torch.einsum("bhd,bkhd->bhk", q[:, i, j], key) + torch.stack(bias, dim=-1)
            out[:, i, j] = torch.einsum("bhk,bkhd->bhd", torch.softmax(logits, dim=-1), value)
    return out.reshape(b, h, w, c) @ attn.proj.weight.T + attn.proj.bias


def make_block(version: int, window: tuple[int, int], shifted: bool, dim: int = 8, heads: int = 2):
    torch.manual_seed(0)
    common = dict(mlp_ratio=2.0, qkv_bias=True, proj_drop=0.0, attn_drop=0.0, drop_path=0.0)
    if version == 1:
        block = SwinTransformerBlock(dim, heads, window, shifted, **common)
    else:
        block = SwinTransformerV2Block(dim, heads, window, shifted, (0, 0), extra_norm=False, norm_eps=1e-5, **common)
    return perturb_parameters(block, std=0.3).eval()


def reference_block(block, x: torch.Tensor, window: tuple[int, int], shifted: bool) -> torch.Tensor:
    if isinstance(block, SwinTransformerBlock):
        x = x + reference_window_attention(block.attn, block.norm1(x), window, shifted)
        return x + block.mlp(block.norm2(x))
    x = x + block.norm1(reference_window_attention(block.attn, x, window, shifted))
    return x + block.norm2(block.mlp(x))


BLOCK_CASES = [((13, 11), (4, 4), True), ((13, 11), (4, 4), False), ((10, 13), (4, 6), True), ((9, 9), (4, 4), True)]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("size, window, shifted", BLOCK_CASES)
def test_block_on_padded_map_matches_brute_force(version, size, window, shifted):
    block = make_block(version, window, shifted)
    x = torch.randn(2, *size, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference_block(block, x, window, shifted)
        actual = block(x)
    assert actual.shape == x.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("shifted", [False, True])
def test_padding_content_never_reaches_real_tokens(version, shifted, monkeypatch):
    block = make_block(version, (4, 4), shifted)
    x = torch.randn(2, 13, 11, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        zero_padded = block(x)

    calls = []
    real_pad = torch.nn.functional.pad

    def pad_with_garbage(tensor, pad, mode="constant", value=None):
        calls.append(pad)
        return real_pad(tensor, pad, mode=mode, value=1e3)

    monkeypatch.setattr(swinkit.layers.window, "F", types.SimpleNamespace(pad=pad_with_garbage))
    with torch.no_grad():
        garbage_padded = block(x)
    assert calls == [(0, 0, 0, 1, 0, 3)]
    assert torch.equal(garbage_padded, zero_padded)


def test_feature_map_smaller_than_window_is_clamped(tiny_model, monkeypatch):
    seen = []
    geometry_of = swinkit.layers.window.window_geometry

    def recording(height, width, window, shifted, visible_padding=False):
        geometry = geometry_of(height, width, window, shifted, visible_padding)
        seen.append(geometry)
        return geometry

    monkeypatch.setattr(swinkit.layers.window, "window_geometry", recording)
    model = tiny_model(V2, window_size=8, depths=(2, 2, 2, 2)).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    by_size = {(g.height, g.width, g.window, g.shift) for g in seen}
    assert by_size == {
        (16, 16, (8, 8), (0, 0)),
        (16, 16, (8, 8), (4, 4)),  # the only stage with a map larger than the window keeps its shift
        (8, 8, (8, 8), (0, 0)),  # equal to the window: clamped, no shift
        (4, 4, (4, 4), (0, 0)),
        (2, 2, (2, 2), (0, 0)),
    }
