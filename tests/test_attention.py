"""Window attention: the SDPA path against an explicit softmax implementation, and the eval-mode bias cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import swinkit
from swinkit.core.errors import ConfigError
from swinkit.layers import (
    WindowAttentionV1,
    WindowAttentionV2,
    WindowGeometry,
    relative_position,
    window,
    window_partition,
)
from swinkit.layers import attention as attention_module
from swinkit.layers.window import attention_mask

from .conftest import perturb_parameters

DIM, HEADS = 16, 2

GEOMETRIES = {
    "plain": WindowGeometry(8, 8, (4, 4), (0, 0)),
    "shifted": WindowGeometry(8, 12, (4, 4), (2, 2)),
    "padded": WindowGeometry(13, 11, (4, 4), (0, 0)),
    "shifted+padded": WindowGeometry(13, 11, (4, 4), (2, 2)),
    "non-square shifted+padded": WindowGeometry(10, 13, (4, 6), (2, 3)),
    "clamped": WindowGeometry(3, 3, (3, 3), (0, 0)),  # a map smaller than the module's 4x4 window
}


def module_window(geometry: WindowGeometry) -> tuple[int, int]:
    return (4, 6) if geometry.window == (4, 6) else (4, 4)


def relative_offsets(window: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, N) row and column offsets query - key inside a window, tokens row-major."""
    rows, cols = torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    return rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]


def v1_bias(attn: WindowAttentionV1, window: tuple[int, int]) -> torch.Tensor:
    th, tw = attn.window_size
    dh, dw = relative_offsets(window)
    index = (dh + th - 1) * (2 * tw - 1) + (dw + tw - 1)
    return attn.relative_position_bias_table[index].permute(2, 0, 1)  # (nH, N, N)


def v2_bias(attn: WindowAttentionV2, window: tuple[int, int]) -> torch.Tensor:
    def log_coord(offset: torch.Tensor, size: int, pretrained: int) -> torch.Tensor:
        x = offset.float() / max(pretrained - 1 if pretrained > 0 else size - 1, 1) * 8
        return torch.sign(x) * torch.log2(x.abs() + 1) / math.log2(8)

    dh, dw = relative_offsets(window)
    pretrained = attn.pretrained_window_size
    coords = torch.stack(
        [log_coord(dh, window[0], pretrained[0]), log_coord(dw, window[1], pretrained[1])], dim=-1
    )  # (N, N, 2)
    return 16 * torch.sigmoid(attn.cpb_mlp(coords)).permute(2, 0, 1)


def explicit_attention(attn, x: torch.Tensor, geometry: WindowGeometry) -> torch.Tensor:
    """softmax(q k^T * scale + bias + mask) v, written out; x: (B * nW, N, C)."""
    bw, n, c = x.shape
    d = c // attn.num_heads
    if isinstance(attn, WindowAttentionV1):
        qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    else:
        qkv = x @ attn.qkv.weight.T + torch.cat([attn.q_bias, torch.zeros(c), attn.v_bias])
    q, k, v = (qkv[..., i * c : (i + 1) * c].reshape(bw, n, attn.num_heads, d).transpose(1, 2) for i in range(3))
    if isinstance(attn, WindowAttentionV1):
        logits = q @ k.transpose(-1, -2) * d**-0.5 + v1_bias(attn, geometry.window)
    else:
        q = q / q.norm(dim=-1, keepdim=True)
        k = k / k.norm(dim=-1, keepdim=True)
        scale = torch.exp(torch.clamp(attn.logit_scale, max=math.log(100.0)))
        logits = q @ k.transpose(-1, -2) * scale + v2_bias(attn, geometry.window)
    mask = attention_mask(geometry, x.device)
    if mask is not None:
        nw = mask.shape[0]
        logits = (logits.view(bw // nw, nw, attn.num_heads, n, n) + mask[None, :, None]).view(bw, attn.num_heads, n, n)
    out = torch.softmax(logits, dim=-1) @ v  # (B*nW, nH, N, d)
    return out.transpose(1, 2).reshape(bw, n, c) @ attn.proj.weight.T + attn.proj.bias


def make_attention(version: int, window: tuple[int, int] = (4, 4), pretrained: tuple[int, int] = (0, 0), seed: int = 0):
    torch.manual_seed(seed)
    if version == 1:
        attn = WindowAttentionV1(DIM, HEADS, window)
    else:
        attn = WindowAttentionV2(DIM, HEADS, window, pretrained_window_size=pretrained)
    perturb_parameters(attn, seed=seed, std=0.2)
    if version == 2:
        with torch.no_grad():
            attn.logit_scale[0] = 5.0  # above log(100): exercises the clamp
    return attn


def windows_for(geometry: WindowGeometry, batch: int = 2, seed: int = 1) -> torch.Tensor:
    hp, wp = geometry.padded_size
    x = torch.randn(batch, hp, wp, DIM, generator=torch.Generator().manual_seed(seed))
    return window_partition(x, geometry.window)


@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("training", [False, True])
def test_sdpa_matches_explicit_attention(version, geometry, training):
    attn = make_attention(version, module_window(geometry), pretrained=(6, 6) if version == 2 else (0, 0))
    attn.train(training)
    x = windows_for(geometry)
    with torch.no_grad():
        expected = explicit_attention(attn, x, geometry)
        actual = attn(x, geometry)
    assert actual.shape == x.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    if version == 2:
        assert attn.logit_scale[0].item() > math.log(100.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale", [None, 1.0, 0.3])
def test_written_out_attention_equals_sdpa(dtype, scale, monkeypatch):
    monkeypatch.setattr(attention_module, "_written_out", lambda q: True)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 6, 16, 8, generator=g).to(dtype) for _ in range(3))
    mask = (3 * torch.randn(1, 6, 16, 16, generator=g)).to(dtype).expand(2, -1, -1, -1)
    for m in (mask, None):
        written = attention_module.attend(q, k, v, m, 0.0, scale)
        fused = F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=scale)
        assert written.dtype == dtype
        tolerance = 1e-6 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(written.float(), fused.float(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("amx", [False, True])
def test_cpu_bf16_attention_is_written_out_only_without_amx(amx, monkeypatch):
    monkeypatch.setattr(attention_module, "CPU_HAS_AMX", amx)
    calls = []
    fused = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or fused(*a, **kw))
    for dtype, expected in ((torch.bfloat16, [1] if amx else []), (torch.float32, [1])):
        calls.clear()
        q = torch.randn(1, 2, 4, 8).to(dtype)
        attention_module.attend(q, q, q, None, 0.0, None)
        assert calls == expected, dtype


def test_v2_logit_scale_clamp_matters():
    """Guard against a vacuous clamp check: without the clamp the explicit result differs."""
    geometry = GEOMETRIES["shifted"]
    attn = make_attention(2)
    x = windows_for(geometry)
    with torch.no_grad():
        clamped = attn(x, geometry)
        attn.logit_scale.clamp_(max=math.log(100.0))
        assert torch.allclose(attn(x, geometry), clamped, atol=1e-6)
        attn.logit_scale[0] = 4.0
        assert not torch.allclose(attn(x, geometry), clamped, atol=1e-3)


# --- the eval-mode bias cache -----------------------------------------------------------------------------------


def bias_parameter(attn) -> torch.nn.Parameter:
    return attn.relative_position_bias_table if isinstance(attn, WindowAttentionV1) else attn.cpb_mlp[2].weight


def count_bias_computations(attn, monkeypatch) -> list[int]:
    calls = []
    compute = attn._compute_attention_bias

    def counted(*args, **kwargs):
        calls.append(1)
        return compute(*args, **kwargs)

    monkeypatch.setattr(attn, "_compute_attention_bias", counted)
    return calls


@pytest.mark.parametrize("version", [1, 2])
def test_eval_no_grad_reuses_cached_bias(version, monkeypatch):
    geometry = GEOMETRIES["shifted+padded"]
    attn = make_attention(version).eval()
    calls = count_bias_computations(attn, monkeypatch)
    x = windows_for(geometry)
    with torch.no_grad():
        first = attn(x, geometry)
        assert len(attn._bias_cache) == 1
        cached = next(iter(attn._bias_cache.values()))[1]
        second = attn(x, geometry)
        assert next(iter(attn._bias_cache.values()))[1] is cached
    assert len(calls) == 1
    assert torch.equal(first, second)
    assert cached.shape == (geometry.num_windows, HEADS, 16, 16)
    # The cached tensor is the position bias plus the mask, and carries no autograd history.
    assert not cached.requires_grad
    with torch.no_grad():
        recomputed = type(attn)._compute_attention_bias(attn, geometry, torch.float32, torch.device("cpu"))
    torch.testing.assert_close(cached, recomputed)

    # A second geometry is a second entry.
    other = GEOMETRIES["plain"]
    with torch.no_grad():
        attn(windows_for(other), other)
    assert len(attn._bias_cache) == 2 and len(calls) == 2


@pytest.mark.parametrize("version", [1, 2])
def test_train_eval_and_load_state_dict_empty_the_cache(version):
    geometry = GEOMETRIES["shifted"]
    attn = make_attention(version).eval()
    x = windows_for(geometry)

    def fill():
        with torch.no_grad():
            attn(x, geometry)
        assert len(attn._bias_cache) == 1

    fill()
    attn.train()
    assert not attn._bias_cache
    attn.eval()
    fill()
    attn.eval()
    assert not attn._bias_cache
    fill()
    attn.load_state_dict(attn.state_dict())
    assert not attn._bias_cache

    # Through a parent module too, as loading a whole model does.
    parent = torch.nn.Sequential(attn).eval()
    fill()
    parent.load_state_dict(parent.state_dict())
    assert not attn._bias_cache
    fill()
    parent.train()
    assert not attn._bias_cache


@pytest.mark.parametrize("version", [1, 2])
def test_in_place_weight_edit_is_not_served_stale(version):
    geometry = GEOMETRIES["shifted+padded"]
    attn = make_attention(version).eval()
    x = windows_for(geometry)
    with torch.no_grad():
        before = attn(x, geometry)
        assert len(attn._bias_cache) == 1
        if version == 2:
            attn.cpb_mlp[2].weight.mul_(-3.0)
            attn.cpb_mlp[0].bias.add_(0.5)
        else:
            attn.relative_position_bias_table.mul_(-20.0)
        after = attn(x, geometry)
        expected = explicit_attention(attn, x, geometry)
        attn.clear_cache()
        fresh = attn(x, geometry)
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.equal(after, fresh)
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("mode", ["train", "eval with grad"])
def test_no_cache_when_gradients_can_reach_the_bias(version, mode):
    geometry = GEOMETRIES["shifted+padded"]
    attn = make_attention(version).train(mode == "train")
    x = windows_for(geometry)
    out = attn(x, geometry)
    assert not attn._bias_cache
    torch.testing.assert_close(out, explicit_attention(attn, x, geometry), atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    params = [attn.relative_position_bias_table] if version == 1 else list(attn.cpb_mlp.parameters())
    params.append(attn.qkv.weight)
    for param in params:
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0
    # Gradients match the explicit implementation's (float32, logits up to 100 for the clamped head).
    grads = [p.grad.clone() for p in params]
    attn.zero_grad()
    explicit_attention(attn, x, geometry).square().sum().backward()
    for param, grad in zip(params, grads, strict=True):
        torch.testing.assert_close(grad, param.grad, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("version", [1, 2])
def test_eval_with_grad_but_frozen_bias_uses_the_cache(version):
    geometry = GEOMETRIES["shifted"]
    attn = make_attention(version).eval()
    for param in attn.bias_parameters():
        param.requires_grad_(False)
    x = windows_for(geometry)
    out = attn(x, geometry)
    assert len(attn._bias_cache) == 1
    out.sum().backward()
    assert attn.qkv.weight.grad is not None and attn.qkv.weight.grad.abs().sum() > 0
    assert bias_parameter(attn).grad is None


@pytest.mark.parametrize("name", ["swinv2_tiny_window8_256", "swin_tiny_patch4_window7_224", "cswin_tiny_224"])
def test_inference_mode_then_training_step(name):
    """Tables and biases cached under torch.inference_mode() must not poison a later training step."""
    for table in (window._attention_mask_cpu, relative_position.relative_position_index,
                  relative_position.log_spaced_coords):  # fmt: skip
        table.cache_clear()
    model = swinkit.create_model(name, depths=(1, 1, 1, 1), drop_path_rate=0.0).eval()
    x = torch.randn(1, 3, *model.img_size)
    with torch.inference_mode():
        model(x)
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("swinv2_tiny_window8_256", dict(img_size=64, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2))),
        ("swin_tiny_patch4_window7_224", dict(img_size=72, window_size=4, embed_dim=16, depths=(2, 2),
                                              num_heads=(1, 2))),
        ("cswin_tiny_224", dict(img_size=64, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(2, 2, 4, 4))),
    ],
)  # fmt: skip
def test_chunked_attention_is_bit_identical(name, overrides):
    # 72 px with window 4 pads the maps: the windows then differ in mask and are chunked in the head dimension.
    model = perturb_parameters(swinkit.create_model(name, num_classes=5, drop_path_rate=0.0, **overrides), seed=2)
    x = torch.randn(2, 3, overrides["img_size"], overrides["img_size"], generator=torch.Generator().manual_seed(0))
    results = []
    for chunks, checkpointing in ((1, False), (3, False), (3, True)):
        model.set_attention_chunks(chunks)
        model.set_grad_checkpointing(checkpointing)
        with torch.no_grad():
            inference = model.eval()(x)
        model.train().zero_grad(set_to_none=True)
        out = model(x)
        out.square().sum().backward()
        results.append((inference, out.detach(), [p.grad.clone() for p in model.parameters()]))
    (ref_eval, ref_train, ref_grads), *chunked = results
    for inference, out, grads in chunked:
        assert torch.equal(inference, ref_eval) and torch.equal(out, ref_train)
        for got, want in zip(grads, ref_grads, strict=True):  # the backward sums partial bias gradients per chunk
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_chunked_attention_lowers_peak_training_memory():
    from torch.distributed._tools.mem_tracker import MemTracker

    model = perturb_parameters(swinkit.create_model("swinv2_tiny_window8_256", img_size=512, window_size=16,
                                                    embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                                                    num_classes=10, drop_path_rate=0.0))  # fmt: skip
    x = torch.randn(1, 3, 512, 512)
    peaks = {}
    for chunks in (1, 8):
        model.set_attention_chunks(chunks)
        tracker = MemTracker()
        tracker.track_external(model)
        with tracker:
            model(x).sum().backward()
        model.zero_grad(set_to_none=True)
        peaks[chunks] = sum(stats["Total"] for stats in tracker.get_tracker_snapshot("peak").values())
    assert peaks[8] < 0.95 * peaks[1], peaks  # measured: 271 MB -> 243 MB


def test_attention_chunks_must_be_a_positive_integer():
    model = swinkit.create_model("swinv2_tiny_window8_256", embed_dim=16, depths=(1, 1), num_heads=(1, 2))
    for bad in (0, 2.5):
        with pytest.raises(ConfigError, match="attention_chunks must be an integer >= 1"):
            model.set_attention_chunks(bad)


@pytest.mark.slow
def test_checkpointing_and_chunked_attention_compose_with_torch_compile():
    model = perturb_parameters(swinkit.create_model("swinv2_tiny_window8_256", img_size=32, window_size=4,
                                                    embed_dim=16, depths=(2, 2), num_heads=(1, 2), num_classes=5,
                                                    drop_path_rate=0.0))  # fmt: skip
    model.set_grad_checkpointing(True)
    model.set_attention_chunks(2)
    model.train()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    results = []
    for net in (model, torch.compile(model)):
        model.zero_grad(set_to_none=True)
        out = net(x)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (eager, eager_grads), (compiled, compiled_grads) = results
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)  # measured 5e-8
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)  # measured 4e-7
