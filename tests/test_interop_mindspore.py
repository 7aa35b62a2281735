"""MindSpore .ckpt: the container read and written without MindSpore, MindCV / ModelZoo / CSWin layouts, fixtures.

The fixtures come from the real frameworks (tests/fixtures/make_mindspore_fixtures.py): MindCV's own Swin V2 wrote
``swinv2_mindcv_tiny.ckpt`` and its logits, and MindSpore read back the file swinkit wrote.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import swinkit
from swinkit.checkpoints import CheckpointError, detect_format, load_checkpoint, mindspore_ckpt, save_checkpoint
from swinkit.checkpoints import mindspore as ms_layout
from swinkit.checkpoints.io import read_file
from swinkit.checkpoints.layouts import from_swinkit

from .conftest import CSWIN_TINY_OVERRIDES, perturb_parameters

FIXTURES = Path(__file__).parent / "fixtures"
# tests/fixtures/make_mindspore_fixtures.py CONFIG, in swinkit's words.
MINDCV_TINY = dict(
    img_size=64, embed_dim=16, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=4, num_classes=10,
    drop_path_rate=0.0,
)  # fmt: skip


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def mindcv_tiny(**overrides) -> torch.nn.Module:
    return swinkit.create_model("swinv2_tiny_window8_256", **{**MINDCV_TINY, **overrides}).eval()


@pytest.mark.parametrize("fmt", ["auto", "mindspore"])
def test_mindcv_weights_give_mindcv_logits(fmt):
    model = mindcv_tiny()
    report = load_checkpoint(model, FIXTURES / "swinv2_mindcv_tiny.ckpt", format=fmt)
    assert report.format == "mindspore" and not report.missing and not report.unexpected
    # MindCV's tables and masks are parameters in the file: dropped and rebuilt.
    assert any(k.endswith("relative_coords_table") for k in report.dropped)
    assert any(k.endswith("attn_mask") for k in report.dropped)
    # The model now computes with the numerics MindCV trained with.
    assert any("eps" in note for note in report.adapted) and any("GELU" in note for note in report.adapted)
    assert model.norm.eps == 1e-6 and model.layers[0].blocks[0].norm1.eps == 1e-6
    assert model.patch_embed.norm.eps == 1e-6 and model.layers[1].downsample.norm.eps == 1e-5
    assert model.layers[0].blocks[0].mlp.act.approximate == "tanh"
    recorded = np.load(FIXTURES / "swinv2_mindcv_tiny_io.npz")
    with torch.no_grad():
        logits = model(torch.from_numpy(recorded["input"]))
    assert relative_error(logits, torch.from_numpy(recorded["logits"])) < 1e-3


def test_mindcv_numerics_matter():
    """With the official eps and exact GELU the same weights miss MindCV's logits by far more than kernel noise."""
    model = mindcv_tiny()
    load_checkpoint(model, FIXTURES / "swinv2_mindcv_tiny.ckpt")
    recorded = np.load(FIXTURES / "swinv2_mindcv_tiny_io.npz")
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-5
        if isinstance(module, torch.nn.GELU):
            module.approximate = "none"
    with torch.no_grad():
        logits = model(torch.from_numpy(recorded["input"]))
    assert relative_error(logits, torch.from_numpy(recorded["logits"])) > 1e-4


def test_mindcv_names_are_matched_by_structure():
    raw = mindspore_ckpt.read_ckpt(FIXTURES / "swinv2_mindcv_tiny.ckpt")
    # MindSpore 2.x names nested CellLists by position; the file carries those names.
    assert "0.blocks.1.blocks.0.norm1.gamma" in raw and "0.downsample.reduction.weight" in raw
    names, _ = ms_layout.normalise_names(raw)
    assert "layers.1.blocks.0.norm1.gamma" in names and "layers.0.downsample.reduction.weight" in names
    # Training wrappers and optimizer state, as TrainOneStepCell saves them.
    wrapped = {f"network._backbone.{k}": v for k, v in raw.items()}
    wrapped.update({"moments.head.weight": raw["head.weight"], "global_step": torch.tensor([3], dtype=torch.int32)})
    assert detect_format(wrapped) == "mindspore"
    model = mindcv_tiny()
    report = load_checkpoint(model, wrapped)
    assert "moments.head.weight" in report.dropped and "global_step" in report.dropped


def test_swinkit_written_ckpt_was_read_back_by_mindspore():
    """The readback MindSpore did in make_mindspore_fixtures.py, and that swinkit still writes that very file."""
    result = json.loads((FIXTURES / "swinv2_swinkit_written_readback.json").read_text())
    assert result["trainable_parameters_missing_by_structural_name"] == []
    assert result["loaded_by_structural_name"] == result["parameters_in_file"]
    assert result["max_relative_difference"] < 1e-3

    torch.manual_seed(1)
    model = mindcv_tiny(norm_eps=1e-6, gelu_approximate="tanh")
    model = perturb_parameters(model, seed=1).eval()
    recorded = np.load(FIXTURES / "swinv2_swinkit_written_io.npz")
    with torch.no_grad():
        torch.testing.assert_close(model(torch.from_numpy(recorded["input"])), torch.from_numpy(recorded["logits"]))
    committed = mindspore_ckpt.read_ckpt(FIXTURES / "swinv2_swinkit_written.ckpt")
    written = from_swinkit(model, "mindspore")
    assert list(written) == list(committed)
    assert all(torch.equal(written[k], committed[k]) for k in written)


def test_seed_modelzoo_layout_round_trips_with_official_numerics(tmp_path):
    """ModelZoo SwinV2: the seed's architecture name, official names with LayerNorm gamma/beta (pth2ckpt)."""
    overrides = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), img_size=64, num_classes=5)
    name = "swinv2_base_patch4_window12to16_192to256_22kto1k_ft"
    torch.manual_seed(0)
    source = perturb_parameters(swinkit.create_model(name, **overrides))
    path = save_checkpoint(source, tmp_path / "modelzoo.ckpt", format="mindspore", layout="modelzoo")
    raw = mindspore_ckpt.read_ckpt(path)
    for key in (
        "layers.0.blocks.0.attn.qkv.weight",
        "layers.0.blocks.0.attn.q_bias",
        "layers.0.blocks.0.attn.cpb_mlp.0.weight",
        "layers.0.blocks.0.norm1.gamma",
        "layers.0.downsample.norm.beta",
        "patch_embed.norm.gamma",
        "norm.gamma",
        "head.weight",
    ):
        assert key in raw, key
    target = swinkit.create_model(name, **overrides)
    report = load_checkpoint(target, path)
    assert report.format == "mindspore" and not report.adapted  # not MindCV: the official numerics stay
    assert target.norm.eps == 1e-5
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())


def test_mindspore_cswin_layout_loads(tmp_path):
    torch.manual_seed(0)
    source = perturb_parameters(swinkit.create_model("cswin_tiny_224", **CSWIN_TINY_OVERRIDES))
    official = from_swinkit(source, "microsoft")
    # The MindSpore CSWin port: the official names, LayerNorm gamma/beta.
    ported = {re.sub(r"(norm\d?|stage1_conv_embed\.2)\.weight$", r"\1.gamma", k): v for k, v in official.items()}
    ported = {re.sub(r"(norm\d?|stage1_conv_embed\.2)\.bias$", r"\1.beta", k): v for k, v in ported.items()}
    assert "stage1_conv_embed.2.gamma" in ported and "merge1.norm.beta" in ported and "stage2.0.norm1.gamma" in ported
    target = swinkit.create_model("cswin_tiny_224", **CSWIN_TINY_OVERRIDES)
    assert load_checkpoint(target, ported).format == "mindspore"
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())
    path = save_checkpoint(source, tmp_path / "cswin.ckpt", format="mindspore")
    assert set(mindspore_ckpt.read_ckpt(path)) == set(ported)


# --- the container ------------------------------------------------------------------------------------------------


def test_ckpt_container_details(tmp_path, monkeypatch):
    state = {
        "a.weight": torch.randn(3, 5),
        "scalar": torch.tensor(2.5),
        "index": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "half": torch.randn(4).half(),
        "empty": torch.zeros(0),
    }
    monkeypatch.setattr(mindspore_ckpt, "_SLICE_BYTES", 16)  # a parameter split over several values, as MindSpore does
    path = mindspore_ckpt.write_ckpt(state, tmp_path / "x.ckpt")
    back = mindspore_ckpt.read_ckpt(path)
    assert list(back) == list(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    # crc_check=True appends a trailer, and append_dict entries are UTF-32 strings.
    trailer = b"crc_num" + (12345).to_bytes(10, "big")
    text = "swinv2".encode("utf-32-le")
    field = mindspore_ckpt._field
    extra = field(1, field(1, b"arch") + field(2, field(2, b"str") + field(3, text)))
    path.write_bytes(path.read_bytes() + extra + trailer)
    back = mindspore_ckpt.read_ckpt(path)
    assert back["arch"] == "swinv2" and torch.equal(back["a.weight"], state["a.weight"])


@pytest.mark.parametrize(
    "name, damage",
    [
        ("swinv2_mindcv_tiny.ckpt", lambda b: b[: len(b) // 2]),
        ("swinv2_mindcv_tiny.ckpt", lambda b: b"\xff" * 64),
        ("swinv2_mindcv_tiny.ckpt", lambda b: b""),
        ("swinv2_paddle_tiny.pdparams", lambda b: b[: len(b) // 3]),
    ],
)
def test_corrupt_or_truncated_files_give_one_clear_error(name, damage, tmp_path):
    path = tmp_path / name
    path.write_bytes(damage((FIXTURES / name).read_bytes()))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(mindcv_tiny(), path)
    assert str(path) in str(info.value)


def test_truncated_safetensors_gives_one_clear_error(tmp_path):
    path = save_checkpoint(mindcv_tiny(), tmp_path / "model.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated") as info:
        read_file(path)
    assert str(path) in str(info.value)
