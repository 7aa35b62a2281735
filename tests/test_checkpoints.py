"""load_checkpoint / save_checkpoint: timm and official layouts, window transfer, head handling, bad input."""

from __future__ import annotations

import argparse
import re
import sys

import pytest
import timm
import torch

import swinkit
from swinkit.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from swinkit.checkpoints.io import read_file
from swinkit.checkpoints.transfer import resample_patch_embed, resize_bias_table

from .conftest import perturbed_state_dict


def _timm_pair(name: str, timm_name: str | None = None, **overrides):
    """A timm model with non-trivial random weights, and the same architecture from swinkit."""
    peer = timm.create_model(timm_name or name, pretrained=False, **overrides).eval()
    peer.load_state_dict(perturbed_state_dict(peer))
    return peer, swinkit.create_model(name, **overrides).eval()


def _assert_same_logits(ours: torch.nn.Module, peer: torch.nn.Module, size: int | tuple[int, int]) -> None:
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = peer(x), ours(x)
    scale = expected.abs().max()
    assert (actual - expected).abs().max() <= 1e-4 * scale, (actual - expected).abs().max() / scale


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, size",
    [
        ("swinv2_tiny_window8_256", 256),
        ("swinv2_tiny_window16_256", 256),
        ("swinv2_base_window12to16_192to256", 256),
        ("swin_tiny_patch4_window7_224", 224),
        ("swin_base_patch4_window12_384", 384),
    ],
)
def test_timm_weights_give_timm_logits(name, size):
    peer, ours = _timm_pair(name)
    report = load_checkpoint(ours, peer.state_dict(), format="timm")
    assert not report.missing and not report.unexpected
    _assert_same_logits(ours, peer, size)


def microsoft_layout(timm_state: dict[str, torch.Tensor], peer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The official layout, built from timm's by the documented mapping, with the derived buffers present."""
    state = {}
    for key, value in timm_state.items():
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", key)
        state[re.sub(r"^head\.fc\.", "head.", key)] = value
    for name, buffer in peer.named_buffers():  # relative_position_index, relative_coords_table, attn_mask
        state[name] = buffer
    for name, _ in peer.named_modules():
        if name.endswith("blocks.1"):
            state[f"{name}.attn_mask"] = torch.zeros(4, 64, 64)
    return state


@pytest.mark.parametrize("name", ["swinv2_tiny_window8_256", "swin_tiny_patch4_window7_224"])
def test_microsoft_layout_loads_and_matches(name):
    overrides = dict(depths=(2, 2, 2, 2))
    peer, ours = _timm_pair(name, **overrides)
    state = microsoft_layout(peer.state_dict(), peer)
    assert "layers.0.downsample.reduction.weight" in state and "head.weight" in state
    assert any(k.endswith("attn_mask") for k in state) and any(k.endswith("relative_position_index") for k in state)
    report = load_checkpoint(ours, {"model": state})
    assert report.format == "microsoft"
    assert any(k.endswith("attn_mask") for k in report.dropped)
    _assert_same_logits(ours, peer, 256 if "v2" in name else 224)


@pytest.mark.slow
def test_window12_192_checkpoint_transfers_to_window16_256_with_label_map():
    source = timm.create_model("swinv2_base_window12_192", pretrained=False)
    state = perturbed_state_dict(source)
    peer = timm.create_model("swinv2_base_window12to16_192to256", pretrained=False).eval()
    label_map = swinkit.checkpoints.transfer.read_label_map("imagenet22k_to_1k")
    peer_state = dict(state, **{k: state[k][torch.tensor(label_map)] for k in ("head.fc.weight", "head.fc.bias")})
    peer.load_state_dict(peer_state)

    ours = swinkit.create_model("swinv2_base_window12to16_192to256").eval()
    report = load_checkpoint(ours, state, label_map="imagenet22k_to_1k")
    assert any("label map" in note for note in report.adapted)
    _assert_same_logits(ours, peer, 256)


def test_safetensors_round_trip_is_exact(tmp_path):
    model = swinkit.create_model("swinv2_tiny_window8_256", depths=(1, 1, 1, 1), img_size=64)
    model.load_state_dict(perturbed_state_dict(model))
    path = save_checkpoint(model, tmp_path / "weights.safetensors")
    again = swinkit.create_model("swinv2_tiny_window8_256", depths=(1, 1, 1, 1), img_size=64)
    report = load_checkpoint(again, path)
    assert report.format == "swinkit"
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert not list(tmp_path.glob(".*tmp")), "the temporary file was left behind"


def test_pth_container_with_module_prefix(tmp_path):
    model = swinkit.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1))
    torch.save({"epoch": 3, "model": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "c.pth")
    report = load_checkpoint(
        swinkit.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1)), tmp_path / "c.pth"
    )
    assert report.format == "timm" and len(report.loaded) == len(model.state_dict())


def test_v1_bias_table_is_resized_for_another_window():
    small = swinkit.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1))
    big = swinkit.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1), window_size=12, img_size=384)
    report = load_checkpoint(big, small.state_dict())
    key = "layers.0.blocks.0.attn.relative_position_bias_table"
    assert big.state_dict()[key].shape == (23 * 23, 3)
    assert any(key in note for note in report.adapted)
    # The centre of the resized table (offset 0) keeps the value it had.
    old = small.state_dict()[key].T.reshape(3, 13, 13)[:, 6, 6]
    new = big.state_dict()[key].T.reshape(3, 23, 23)[:, 11, 11]
    assert torch.allclose(old, new, atol=0.02 * old.abs().max())


def test_resize_bias_table_identity_and_shape():
    table = torch.randn(13 * 13, 4)
    assert torch.allclose(resize_bias_table(table, (7, 7)), table, atol=1e-6)
    assert resize_bias_table(table, (4, 6)).shape == (7 * 11, 4)


def test_patch_embed_resample_preserves_embedding_of_resized_patches():
    weight = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    new = resample_patch_embed(weight, (8, 8))
    assert new.shape == (8, 3, 8, 8)
    patch = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    big = torch.nn.functional.interpolate(patch, size=(8, 8), mode="bicubic", antialias=True, align_corners=False)
    assert torch.allclose((patch * weight).sum((1, 2, 3)), (big * new).sum((1, 2, 3)), atol=1e-8)


def test_patch_embed_is_resampled_when_patch_size_differs():
    src = swinkit.create_model("swinv2_tiny_window8_256", depths=(1, 1, 1, 1))
    dst = swinkit.create_model("swinv2_tiny_window8_256", depths=(1, 1, 1, 1), patch_size=2)
    report = load_checkpoint(dst, src.state_dict())
    assert dst.patch_embed.proj.weight.shape[-2:] == (2, 2)
    assert any("patch_embed" in note for note in report.adapted)


# --- bad input ---------------------------------------------------------------------------------------------------


def test_class_count_mismatch_says_how_to_fix():
    src = swinkit.create_model("swinv2_tiny_window8_256", depths=(1, 1, 1, 1), num_classes=21841)
    dst = swinkit.create_model("swinv2_tiny_window8_256", depths=(1, 1, 1, 1))
    with pytest.raises(CheckpointError, match=r"21841 classes.*num_classes=21841.*head='reset'.*label_map"):
        load_checkpoint(dst, src.state_dict())
    before = dst.head.fc.weight.clone()
    report = load_checkpoint(dst, src.state_dict(), head="reset")
    assert torch.equal(dst.head.fc.weight, before)
    assert "head.fc.weight" in report.dropped and not report.missing
    assert torch.equal(dst.patch_embed.proj.weight, src.patch_embed.proj.weight)


def test_wrong_architecture_names_the_mismatch():
    base = swinkit.create_model("swinv2_base_window8_256", depths=(1, 1, 1, 1))
    tiny = swinkit.create_model("swinv2_tiny_window8_256", depths=(1, 1, 1, 1))
    with pytest.raises(CheckpointError, match=r"differ in shape.*embed_dim=128.*embed_dim=96"):
        load_checkpoint(tiny, base.state_dict())


def test_v1_checkpoint_into_v2_model_fails_clearly():
    v1 = swinkit.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1))
    v2 = swinkit.create_model("swinv2_tiny_window8_256", depths=(1, 1, 1, 1))
    with pytest.raises(CheckpointError, match=r"does not fit.*looks like Swin V1.*the model is swinv2"):
        load_checkpoint(v2, v1.state_dict())


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match=r"notes.pth is not a PyTorch checkpoint"):
        load_checkpoint(swinkit.create_model("swin_tiny_patch4_window7_224"), text)


def test_truncated_safetensors(tmp_path):
    model = swinkit.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1))
    path = save_checkpoint(model, tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"w.safetensors is not a readable safetensors file"):
        load_checkpoint(model, path)


def test_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": {"x": torch.zeros(1)}, "payload": Exploit()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"refuses to unpickle"):
        load_checkpoint(swinkit.create_model("swin_tiny_patch4_window7_224"), tmp_path / "evil.pth")
    assert not marker.exists()


def _yacs_module(monkeypatch) -> type:
    """A stand-in ``yacs.config.CfgNode`` (a dict subclass with yacs's private attributes) to pickle configs with."""
    import types

    class CfgNode(dict):
        def __init__(self, init=None):
            super().__init__(init or {})
            self.__dict__.update({"__immutable__": False, "__deprecated_keys__": set(), "__new_allowed__": False})

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    module = types.ModuleType("yacs.config")
    module.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", types.ModuleType("yacs"))
    monkeypatch.setitem(sys.modules, "yacs.config", module)
    return CfgNode


def test_pickled_training_configs_are_read_as_inert_data(tmp_path, monkeypatch):
    # Official CSWin releases come from timm's saver (the run's argparse.Namespace beside the weights); official Swin
    # training checkpoints hold the yacs config. weights_only refuses both; swinkit reads them as plain data.
    model = swinkit.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1))
    cfg_node = _yacs_module(monkeypatch)
    state = swinkit.checkpoints.layouts.from_swinkit(model, "microsoft")
    config = cfg_node({"MODEL": cfg_node({"TYPE": "swin", "DEPTHS": [1, 1, 1, 1]}), "BASE_LR": 5e-4})
    torch.save({"model": state, "config": config, "args": argparse.Namespace(lr=1e-3, model="swin")},
               tmp_path / "official.pth")  # fmt: skip
    monkeypatch.delitem(sys.modules, "yacs.config")  # reading imports nothing of the original classes
    monkeypatch.delitem(sys.modules, "yacs")
    obj, _ = read_file(tmp_path / "official.pth")
    assert obj["config"]["MODEL"]["DEPTHS"] == [1, 1, 1, 1] and obj["args"].fields == {"lr": 1e-3, "model": "swin"}
    assert "yacs" not in sys.modules
    fresh = swinkit.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1))
    load_checkpoint(fresh, tmp_path / "official.pth")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True))


def test_a_config_class_does_not_admit_other_code(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": {"x": torch.zeros(1)}, "args": argparse.Namespace(lr=1), "payload": Exploit()},
               tmp_path / "evil.pth")  # fmt: skip
    with pytest.raises(CheckpointError, match=r"refuses to unpickle .*\(it references argparse.Namespace, io.open\)"):
        read_file(tmp_path / "evil.pth")
    assert not marker.exists()


def test_missing_file_and_unknown_format(tmp_path):
    model = swinkit.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(model, tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="format must be one of"):
        load_checkpoint(model, model.state_dict(), format="keras")
    with pytest.raises(CheckpointError, match="cannot tell which layout"):
        load_checkpoint(model, {"encoder.weight": torch.zeros(2)})


def test_label_map_errors(tmp_path):
    src = swinkit.create_model("swinv2_tiny_window8_256", depths=(1, 1, 1, 1), num_classes=20)
    dst = swinkit.create_model("swinv2_tiny_window8_256", depths=(1, 1, 1, 1), num_classes=3)
    bad = tmp_path / "map.txt"
    bad.write_text("1\nx\n3\n")
    with pytest.raises(CheckpointError, match="one integer class index per line"):
        load_checkpoint(dst, src.state_dict(), label_map=bad)
    with pytest.raises(CheckpointError, match="has 2 entries but the model has 3 classes"):
        load_checkpoint(dst, src.state_dict(), label_map=[1, 2])
    with pytest.raises(CheckpointError, match="up to 25"):
        load_checkpoint(dst, src.state_dict(), label_map=[1, 2, 25])
    load_checkpoint(dst, src.state_dict(), label_map=[4, 0, 19])
    assert torch.equal(dst.head.fc.weight, src.head.fc.weight[[4, 0, 19]])


def test_features_only_model_loads_a_classifier_checkpoint():
    full = swinkit.create_model("swinv2_tiny_window8_256", depths=(1, 1, 1, 1))
    features = swinkit.create_model(
        "swinv2_tiny_window8_256", depths=(1, 1, 1, 1), features_only=True, out_indices=(0, 1)
    )
    report = load_checkpoint(features, full.state_dict())
    assert any(k.startswith("layers.3.") for k in report.dropped) and "head.fc.weight" in report.dropped
    assert torch.equal(features.model.layers[1].downsample.reduction.weight, full.layers[1].downsample.reduction.weight)


def test_a_class_count_mismatch_names_the_real_settings():
    source = swinkit.create_model("swinv2_tiny_window8_256", embed_dim=8, depths=(1, 1), num_heads=(1, 2),
                                  num_classes=10)  # fmt: skip
    target = swinkit.create_model("swinv2_tiny_window8_256", embed_dim=8, depths=(1, 1), num_heads=(1, 2),
                                  num_classes=5)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"model\.head=reset.*model\.label_map=imagenet22k_to_1k"):
        load_checkpoint(target, source.state_dict())
    assert swinkit.count_flops(target) > 0  # the README names it at the top level
