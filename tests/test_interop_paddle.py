"""PaddleClas ``.pdparams``: Swin V2 read from a file PaddleClas made, and Swin V2 / CSWin files swinkit wrote.

PaddleClas 2.6.0's Swin V2 cannot run a forward pass as released, so the fixture (tests/fixtures/make_paddle_fixtures.py
swinv2) holds PaddleClas's real state dict (names, shapes, [in, out] Linear weights, saved buffers) with random
weights, and swinkit is checked against timm's Swin V2 loaded from the same arrays through a conversion written out
here by hand. The files swinkit writes were loaded by PaddleClas itself (``make_paddle_fixtures.py write`` and
``readback``, Swin V2 with its broken forwards repaired), which recorded its logits.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import swinkit
from swinkit.checkpoints import CheckpointError, detect_format, load_checkpoint, save_checkpoint
from swinkit.checkpoints.common import DERIVED_BUFFERS
from swinkit.checkpoints.pdparams import PDPARAMS_NAME_TABLE, read_pdparams
from swinkit.cli import main

from .fixtures.make_paddle_fixtures import READBACK, SWINKIT_GEOMETRY, state_digest, swinkit_written_model

FIXTURES = Path(__file__).parent / "fixtures"
PADDLE_SWINV2 = dict(
    img_size=64, embed_dim=16, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=4, num_classes=10
)
# Every Linear of the layout; Paddle stores them [in, out].
LINEARS = (
    "attn.qkv.weight",
    "attn.proj.weight",
    "attn.cpb_mlp.0.weight",
    "attn.cpb_mlp.2.weight",
    "mlp.fc1.weight",
    "mlp.fc2.weight",
    "downsample.reduction.weight",
    "head.weight",
)


def official_from_paddle(raw: dict) -> dict[str, torch.Tensor]:
    return {k: v.t() if k.endswith(LINEARS) else v for k, v in raw.items() if isinstance(v, torch.Tensor)}


def test_paddleclas_swinv2_matches_timm_on_the_same_arrays():
    raw = read_pdparams(FIXTURES / "swinv2_paddle_tiny.pdparams")
    assert raw["layers.0.blocks.0.attn.qkv.weight"].shape == (16, 48)  # [in, out]
    assert raw["layers.3.blocks.0.attn.proj.weight"].shape == (128, 128)  # square: the shape cannot tell
    assert detect_format(raw) == "paddle"

    model = swinkit.create_model("swinv2_tiny_window8_256", **PADDLE_SWINV2).eval()
    report = load_checkpoint(model, FIXTURES / "swinv2_paddle_tiny.pdparams")
    assert report.format == "paddle" and not report.missing and not report.unexpected
    assert any(k.endswith("relative_coords_table") for k in report.dropped)
    state = model.state_dict()
    assert torch.equal(state["layers.3.blocks.0.attn.proj.weight"], raw["layers.3.blocks.0.attn.proj.weight"].t())
    assert torch.equal(state["layers.1.downsample.reduction.weight"], raw["layers.0.downsample.reduction.weight"].t())

    peer = timm.create_model(
        "swinv2_tiny_window8_256", pretrained=False, img_size=64, window_size=4, embed_dim=16, depths=(2, 2, 1, 1),
        num_heads=(1, 2, 2, 4), num_classes=10,
    ).eval()  # fmt: skip
    from timm.models.swin_transformer_v2 import checkpoint_filter_fn

    peer.load_state_dict(checkpoint_filter_fn(official_from_paddle(raw), peer))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = peer(x), model(x)
    assert ((expected - actual).abs().max() / expected.abs().max()).item() < 1e-5


def test_official_swinv2_weights_are_not_taken_for_paddle():
    official = official_from_paddle(read_pdparams(FIXTURES / "swinv2_paddle_tiny.pdparams"))
    assert detect_format(official) == "microsoft"


def test_paddle_swin_checkpoint_into_cswin_is_a_clear_error():
    model = swinkit.create_model("cswin_tiny_224", embed_dim=16, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2))
    with pytest.raises(CheckpointError, match="Swin one"):
        load_checkpoint(model, FIXTURES / "swinv2_paddle_tiny.pdparams")


def arrays(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in read_pdparams(path).items() if k != PDPARAMS_NAME_TABLE}


@pytest.mark.parametrize("family", ["swinv2", "cswin"])
def test_cli_convert_to_paddle_gives_back_paddleclas_own_file(family, tmp_path, capsys, monkeypatch):
    """PaddleClas's file -> swinkit -> ``--to paddle``: the arrays PaddleClas saved, bit for bit, bar derived ones."""
    name, overrides = SWINKIT_GEOMETRY[family]
    convert_module = importlib.import_module("swinkit.deploy.convert")
    original = convert_module.create_model
    monkeypatch.setattr(convert_module, "create_model", lambda arch, **kw: original(arch, **{**overrides, **kw}))
    source, dst = FIXTURES / f"{family}_paddle_tiny.pdparams", tmp_path / "back.pdparams"
    assert main(["convert", str(source), str(dst), "--model", name, "--to", "paddle"]) == 0
    assert "(paddle layout)" in capsys.readouterr().out
    original_arrays = {k: v for k, v in arrays(source).items() if not any(d in k for d in DERIVED_BUFFERS)}
    written = arrays(dst)
    assert sorted(written) == sorted(original_arrays)
    assert all(torch.equal(written[k], v) for k, v in original_arrays.items())


@pytest.mark.parametrize("family", ["swinv2", "cswin"])
def test_swinkit_written_pdparams_gives_paddleclas_the_same_logits(family, tmp_path):
    """What PaddleClas did with the file swinkit wrote (make_paddle_fixtures.py readback); swinkit still writes it."""
    result = json.loads(READBACK.read_text())[family]
    # set_state_dict loaded every parameter; it only missed the derived buffers, which it keeps as it built them.
    assert not result["unexpected"] and all(any(d in k for d in DERIVED_BUFFERS) for k in result["missing"])
    assert result["max_relative_difference"] < 1e-3

    model = swinkit_written_model(family)
    path = save_checkpoint(model, tmp_path / "model.pdparams", format="paddle")
    assert state_digest({k: v.numpy() for k, v in arrays(path).items()}) == result["digest"]
    recorded = np.load(FIXTURES / "cswin_paddle_tiny_io.npz")
    with torch.no_grad():
        logits = model(torch.from_numpy(recorded["input"]))
    expected = torch.tensor(result["logits"])
    assert ((logits - expected).abs().max() / expected.abs().max()).item() < 1e-3
