"""Parity with torchvision and HF transformers: the same random weights, converted, give the same logits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import pytest
import torch
import transformers
from torch import nn
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

import swinkit
from swinkit.checkpoints import hf, timm
from swinkit.checkpoints import torchvision as tv
from swinkit.tools.peers import perturb_parameters

# Tiny's four stages, windows and input sizes, but two blocks per stage (one shifted) and a third of the width, so that
# a test takes seconds on a CPU. Nothing in the layouts depends on width or depth beyond this.
EMBED_DIM = 32
DEPTHS = (2, 2, 2, 2)
HEADS = (2, 4, 8, 16)
NUM_CLASSES = 10


@dataclass(frozen=True)
class Peer:
    build: Callable[[], nn.Module]
    logits: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    converter: ModuleType
    family: str
    swinkit_name: str
    img_size: int


def _torchvision(v2: bool) -> nn.Module:
    if v2:
        extra = dict(window_size=[8, 8], block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2)
    else:
        extra = dict(window_size=[7, 7])
    return SwinTransformer([4, 4], EMBED_DIM, list(DEPTHS), list(HEADS), num_classes=NUM_CLASSES, **extra)


def _hf_config(v2: bool):
    config_cls = transformers.Swinv2Config if v2 else transformers.SwinConfig
    # Swinv2 clamps its windows at init from image_size, so it must be the size the model is run at.
    size, window = (256, 8) if v2 else (224, 7)
    return config_cls(
        image_size=size, embed_dim=EMBED_DIM, depths=list(DEPTHS), num_heads=list(HEADS), window_size=window,
        num_labels=NUM_CLASSES,
    )  # fmt: skip


def _hf(v2: bool) -> nn.Module:
    model_cls = transformers.Swinv2ForImageClassification if v2 else transformers.SwinForImageClassification
    return model_cls(_hf_config(v2))


PEERS = {
    "torchvision-swin_v2_t": Peer(
        lambda: _torchvision(v2=True), lambda m, x: m(x), tv, "swinv2", "swinv2_tiny_window8_256", 256
    ),
    "torchvision-swin_t": Peer(
        lambda: _torchvision(v2=False), lambda m, x: m(x), tv, "swin", "swin_tiny_patch4_window7_224", 224
    ),
    "hf-swinv2": Peer(
        lambda: _hf(v2=True), lambda m, x: m(pixel_values=x).logits, hf, "swinv2", "swinv2_tiny_window8_256", 256
    ),
    "hf-swin": Peer(
        lambda: _hf(v2=False), lambda m, x: m(pixel_values=x).logits, hf, "swin", "swin_tiny_patch4_window7_224", 224
    ),
}


def _perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Noise on every parameter, so zero-initialised norms and biases carry information (torchvision's derived
    buffers are left alone: converters drop them; the key third of V2's qkv bias, which torchvision ignores in forward,
    is perturbed too and dropped by the converter)."""
    return perturb_parameters(model, seed, std=0.02).eval()


def _swinkit(peer: Peer, state: dict[str, torch.Tensor], num_classes: int = NUM_CLASSES) -> nn.Module:
    model = swinkit.create_model(
        peer.swinkit_name, embed_dim=EMBED_DIM, depths=DEPTHS, num_heads=HEADS, num_classes=num_classes
    )
    layout = peer.converter.__name__.rsplit(".", 1)[-1]
    report = swinkit.load_checkpoint(model, state, format=layout, strict=True)
    assert report.format == layout and not report.missing and not report.unexpected
    assert swinkit.checkpoints.detect_format(state) == layout
    return model.eval()


def relative_logit_error(peer: Peer) -> float:
    """max |peer - swinkit| / max |peer| over the logits of a seeded batch of two."""
    torch.manual_seed(0)
    model = _perturb(peer.build())
    ours = _swinkit(peer, model.state_dict())
    x = torch.randn(2, 3, peer.img_size, peer.img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = peer.logits(model, x), ours(x)
    return ((expected - actual).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("name", list(PEERS))
def test_logits_match_peer(name: str) -> None:
    error = relative_logit_error(PEERS[name])
    assert error <= 1e-4, f"{name}: relative logit error {error:.2e}"


def test_torchvision_v2_key_bias_is_ignored_and_dropped() -> None:
    # torchvision zeroes the key third of qkv.bias in every forward, so whatever it holds the converter may drop it.
    model = _perturb(_torchvision(v2=True))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(x)
        for block in model.modules():
            if isinstance(block, SwinTransformerBlockV2):
                dim = block.attn.qkv.bias.numel() // 3
                block.attn.qkv.bias[dim : 2 * dim] = 1.0
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    qkv_bias = model.state_dict()["features.1.0.attn.qkv.bias"]
    dim = qkv_bias.numel() // 3
    converted = tv.to_swinkit(model.state_dict(), "swinv2").state
    torch.testing.assert_close(converted["layers.0.blocks.0.attn.q_bias"], qkv_bias[:dim])
    torch.testing.assert_close(converted["layers.0.blocks.0.attn.v_bias"], qkv_bias[2 * dim :])


def test_torchvision_old_logit_scale_name() -> None:
    state = _torchvision(v2=True).state_dict()
    old = {k.replace("attn.logit_scale", "attn.v2_logit_scale"): v for k, v in state.items()}
    assert tv.to_swinkit(old, "swinv2").state.keys() == tv.to_swinkit(state, "swinv2").state.keys()


@pytest.mark.parametrize("v2", [True, False], ids=["swinv2", "swin"])
def test_hf_saved_file_converts_like_live_state(v2: bool, tmp_path) -> None:
    # save_pretrained writes the hub's key names, which for V1 under transformers >= 5 differ from the live ones.
    from safetensors.torch import load_file

    model = _hf(v2)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    family = "swinv2" if v2 else "swin"
    live, on_disk = hf.to_swinkit(model.state_dict(), family).state, hf.to_swinkit(saved, family).state
    assert live.keys() == on_disk.keys()
    for key, value in live.items():
        torch.testing.assert_close(on_disk[key], value, rtol=0, atol=0, msg=key)


def test_hf_bare_model_matches_pooled_features() -> None:
    model = _perturb(transformers.Swinv2Model(_hf_config(v2=True)))
    peer = PEERS["hf-swinv2"]
    ours = _swinkit(peer, model.state_dict(), num_classes=0)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = model(pixel_values=x).pooler_output, ours(x)
    assert (expected - actual).abs().max() <= 1e-4 * expected.abs().max()


def test_converted_state_reports_derived_buffers() -> None:
    state = _torchvision(v2=True).state_dict()
    dropped = tv.to_swinkit(state, "swinv2").dropped
    assert "features.1.0.attn.relative_coords_table" in dropped
    assert "features.1.0.attn.relative_position_index" in dropped
    assert all("relative_" in key for key in dropped)


@pytest.fixture(scope="module")
def layouts() -> dict[str, dict[str, torch.Tensor]]:
    import timm as timm_lib

    states = {name: peer.build().state_dict() for name, peer in PEERS.items()}
    states["hf-swinv2-bare"] = transformers.Swinv2Model(_hf_config(v2=True)).state_dict()
    for name in ("swinv2_tiny_window8_256", "swin_tiny_patch4_window7_224"):
        states[f"timm-{name}"] = timm_lib.create_model(
            name, embed_dim=EMBED_DIM, depths=DEPTHS, num_heads=HEADS, num_classes=NUM_CLASSES
        ).state_dict()
    return states


@pytest.mark.parametrize("converter", [hf, tv, timm], ids=["hf", "torchvision", "timm"])
def test_detect_recognises_only_its_own_layout(converter: ModuleType, layouts) -> None:
    prefix = {hf: "hf-", tv: "torchvision-", timm: "timm-"}[converter]
    for name, state in layouts.items():
        assert converter.detect(state) == name.startswith(prefix), name
