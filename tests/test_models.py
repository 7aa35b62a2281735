"""Every registered model: shapes, gradients, parameter counts, features, intermediates, checkpointing, weight decay."""

from __future__ import annotations

import pytest
import timm
import torch

import swinkit
import swinkit.layers.stage
from swinkit.models import CSWinTransformer, FeatureExtractor, SwinTransformer, SwinTransformerV2, model_info

from .conftest import TINY_OVERRIDES, tiny_overrides

ALL_MODELS = swinkit.list_models()
EMBED_DIM = TINY_OVERRIDES["embed_dim"]
NUM_CLASSES = TINY_OVERRIDES["num_classes"]


def images(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_registry_has_every_family():
    assert {model_info(n).cls for n in ALL_MODELS} == {SwinTransformer, SwinTransformerV2, CSWinTransformer}
    assert "swinv2_tiny_window8_256" in ALL_MODELS and "swin_tiny_patch4_window7_224" in ALL_MODELS
    assert "cswin_tiny_224" in ALL_MODELS


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward_reaches_every_parameter(name, tiny_model):
    model = tiny_model(name).train()
    logits = model(images())
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{param_name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{param_name} has an all-zero gradient"
    if model_info(name).defaults.get("extra_norm_period"):
        extra = [n for n, _ in model.named_parameters() if ".norm3." in n]
        assert extra and all(n.startswith("layers.2.blocks.5.") for n in extra)
    else:
        assert not any(".norm3." in n for n, _ in model.named_parameters())


def timm_param_count(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())


def swinkit_param_count(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in swinkit.create_model(name).parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL_MODELS if n in timm.list_models()])
def test_parameter_count_equals_timm(name):
    assert swinkit_param_count(name) == timm_param_count(name)


def test_swinv2_tiny_parameter_count():
    assert swinkit_param_count("swinv2_tiny_window8_256") == 28_347_154


def test_every_timm_swin_name_is_compared():
    # The names timm shares with us: all of V1 and every V2 variant except the paper-only huge and giant (timm has
    # no CSWin; tests/test_cswin.py compares it with PaddleClas and an official-code reference instead).
    not_in_timm = sorted(n for n in ALL_MODELS if n not in timm.list_models() and not n.startswith("cswin_"))
    assert not_in_timm == ["swinv2_giant_window12_192", "swinv2_huge_window12_192"]


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("swinv2_base_patch4_window12to16_192to256_22kto1k_ft", "swinv2_base_window12to16_192to256"),
        ("swinv2_tiny_window8", "swinv2_tiny_window8_256"),
        ("swinv2_large_window12to24_192to384_22kft1k", "swinv2_large_window12to24_192to384"),
    ],
)
def test_aliases_resolve(alias, canonical):
    assert model_info(alias).name == canonical
    assert alias in swinkit.list_models(include_aliases=True) and alias not in ALL_MODELS
    with torch.device("meta"):
        by_alias, by_name = swinkit.create_model(alias), swinkit.create_model(canonical)
    assert type(by_alias) is type(by_name)
    assert by_alias.pretrained_window_sizes == by_name.pretrained_window_sizes
    shapes = {k: v.shape for k, v in by_name.state_dict().items()}
    assert {k: v.shape for k, v in by_alias.state_dict().items()} == shapes


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match="swinv2_tiny_window8_256") as info:
        swinkit.create_model("swinv2_tiny_windw8_256")
    assert "swinv2_tiny_windw8_256" in str(info.value)


def test_unknown_override_is_named():
    with pytest.raises(TypeError, match="embed_dimm") as info:
        swinkit.create_model("swinv2_tiny_window8_256", embed_dimm=32)
    assert "embed_dim" in str(info.value).replace("embed_dimm", "")
    # A V2-only argument is unknown to V1.
    with pytest.raises(TypeError, match="pretrained_window_sizes"):
        swinkit.create_model("swin_tiny_patch4_window7_224", pretrained_window_sizes=(0, 0, 0, 0))


@pytest.mark.parametrize("name", ["swinv2_tiny_window8_256", "swin_tiny_patch4_window7_224", "cswin_tiny_224"])
def test_features_only(name, perturb):
    model = perturb(swinkit.create_model(name, features_only=True, **tiny_overrides(name))).eval()
    assert isinstance(model, FeatureExtractor)
    with torch.no_grad():
        maps = model(images())
    assert len(maps) == 4
    for i, fmap in enumerate(maps):
        channels, stride = EMBED_DIM * 2**i, 4 * 2**i
        assert fmap.shape == (2, channels, 64 // stride, 64 // stride)
        assert model.feature_info[i]["num_chs"] == channels and model.feature_info[i]["reduction"] == stride
        assert torch.isfinite(fmap).all()
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]

    # Another patch size moves every stride: feature_info says what the maps are (it once said 4 for any patch).
    coarse = swinkit.create_model(name, features_only=True, **{**tiny_overrides(name), "patch_size": 2}).eval()
    with torch.no_grad():
        sides = [fmap.shape[-1] for fmap in coarse(images())]
    assert [f["reduction"] for f in coarse.feature_info] == [64 // side for side in sides] == [2, 4, 8, 16]

    partial = perturb(swinkit.create_model(name, features_only=True, out_indices=(1, 3), **tiny_overrides(name)))
    partial.eval()
    with torch.no_grad():
        two = partial(images())
    assert [m.shape for m in two] == [(2, 2 * EMBED_DIM, 8, 8), (2, 8 * EMBED_DIM, 2, 2)]
    assert partial.feature_info.channels() == [2 * EMBED_DIM, 8 * EMBED_DIM]  # timm's FeatureInfo: the maps returned
    assert partial.feature_info.reduction() == [8, 32]
    # Same weights as the full extractor: the same maps.
    partial.load_state_dict(model.state_dict())
    with torch.no_grad():
        two = partial(images())
    assert torch.equal(two[0], maps[1]) and torch.equal(two[1], maps[3])

    early = swinkit.create_model(name, features_only=True, out_indices=(0, 1), **tiny_overrides(name))
    assert len(early.model.layers) == 2
    assert not any(k.startswith(("layers.2.", "head.fc.", "norm.")) for k in early.model.state_dict())


@pytest.mark.parametrize("name", ["swinv2_tiny_window8_256", "swin_tiny_patch4_window7_224", "cswin_tiny_224"])
def test_forward_intermediates(name, tiny_model):
    model = tiny_model(name).eval()
    x = images()
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        features = model.forward_features(x)
        nhwc = model.forward_intermediates(x, indices=2, output_fmt="NHWC", intermediates_only=True)
    assert torch.equal(final, features)
    assert final.shape == (2, 2, 2, 8 * EMBED_DIM)
    assert [m.shape for m in maps] == [(2, EMBED_DIM * 2**i, 64 // (4 * 2**i), 64 // (4 * 2**i)) for i in range(4)]
    assert len(nhwc) == 2 and torch.equal(nhwc[0], maps[2].permute(0, 2, 3, 1))
    assert torch.equal(nhwc[1], maps[3].permute(0, 2, 3, 1))
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(model.forward_head(final), logits)


@pytest.mark.parametrize("name", ["swinv2_tiny_window8_256", "swin_tiny_patch4_window7_224", "cswin_tiny_224"])
def test_grad_checkpointing_gives_same_output_and_gradients(name, tiny_model, monkeypatch):
    model = tiny_model(name).train()
    x = images()

    def run():
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain_out, plain_grads = run()

    calls = []
    checkpoint = swinkit.layers.stage.checkpoint

    def counted(*args, **kwargs):
        calls.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(swinkit.layers.stage, "checkpoint", counted)
    model.set_grad_checkpointing(True)
    ckpt_out, ckpt_grads = run()
    assert len(calls) == 6  # every block of the tiny model ran under checkpoint
    assert torch.equal(plain_out, ckpt_out)
    for param_name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[param_name], grad, atol=1e-6, rtol=1e-5, msg=param_name)

    model.set_grad_checkpointing(False)
    calls.clear()
    run()
    assert not calls


DECAYED = (
    "qkv.weight",
    "proj.weight",
    "mlp.fc1.weight",
    "mlp.fc2.weight",
    "reduction.weight",
    "head.fc.weight",
    "patch_embed.proj.weight",
)


@pytest.mark.parametrize(
    "name", ["swinv2_tiny_window8_256", "swin_tiny_patch4_window7_224", "swinv2_huge_window12_192"]
)
def test_no_weight_decay_names_parameters(name, tiny_model):
    model = tiny_model(name)
    params = dict(model.named_parameters())
    skip = model.no_weight_decay()
    assert skip <= set(params)
    for param_name in params:
        leaf = param_name.rsplit(".", 1)[-1]
        by_keyword = any(k in param_name for k in ("logit_scale", "cpb_mlp.", "relative_position_bias_table"))
        is_norm = ".norm" in param_name or param_name.startswith("norm.")
        if by_keyword or is_norm or leaf in ("bias", "q_bias", "v_bias"):
            assert param_name in skip, param_name
        else:
            assert param_name.endswith(DECAYED), param_name
            assert param_name not in skip, param_name
    # Both kinds are present, so the loop above checked something of each.
    expected_markers = ("cpb_mlp.0.weight", "cpb_mlp.2.weight", "logit_scale", "q_bias")
    if "v2" not in name:
        expected_markers = ("relative_position_bias_table", "qkv.bias")
    for marker in expected_markers + ("norm1.weight", "patch_embed.norm.bias", "head.fc.bias"):
        assert any(marker in n for n in skip), marker
    for decayed in DECAYED:
        assert any(n.endswith(decayed) for n in params if n not in skip), decayed
