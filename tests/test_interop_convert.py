"""``swinkit convert``: what it mapped, dropped and rebuilt, and the written file."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch

import swinkit
from swinkit.checkpoints.mindspore_ckpt import read_ckpt
from swinkit.cli import main
from swinkit.deploy import convert

FIXTURES = Path(__file__).parent / "fixtures"
TINY = dict(img_size=64, embed_dim=16, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=4)


def test_convert_mindcv_to_swinkit_and_back(tmp_path):
    dst = tmp_path / "model.safetensors"
    out = convert(FIXTURES / "swinv2_mindcv_tiny.ckpt", dst, "swinv2_tiny_window8", overrides=TINY)
    assert "mindspore layout" in out and "10 classes" in out and "mapped 119 tensors" in out
    assert "rebuilt 14 derived" in out and "GELU" in out and f"wrote {dst}" in out

    # The swinkit file keeps MindCV's numerics: its logits are MindCV's.
    model = swinkit.create_model("swinv2_tiny_window8_256", **TINY, num_classes=10).eval()
    swinkit.load_checkpoint(model, dst)
    recorded = np.load(FIXTURES / "swinv2_mindcv_tiny_io.npz")
    with torch.no_grad():
        logits = model(torch.from_numpy(recorded["input"]))
    expected = torch.from_numpy(recorded["logits"])
    assert ((logits - expected).abs().max() / expected.abs().max()).item() < 1e-3

    back = tmp_path / "back.ckpt"
    convert(dst, back, "swinv2_tiny_window8", to_format="mindspore", overrides=TINY)
    original_raw = {k: v for k, v in read_ckpt(FIXTURES / "swinv2_mindcv_tiny.ckpt").items()}
    written = read_ckpt(back)
    assert torch.equal(written["layers.1.blocks.0.attn.q.weight"], original_raw["0.blocks.1.blocks.0.attn.q.weight"])


def test_cli_convert_with_a_label_map(tmp_path, capsys, monkeypatch):
    convert_module = importlib.import_module("swinkit.deploy.convert")
    original = convert_module.create_model
    monkeypatch.setattr(convert_module, "create_model", lambda name, **kw: original(name, **{**TINY, **kw}))
    label_map = tmp_path / "map.txt"
    label_map.write_text("7\n2\n5\n")
    dst = tmp_path / "three.pth"
    # The CLI builds the registered architecture; the fixture's tiny widths come from the patched builder.
    args = ["convert", str(FIXTURES / "swinv2_mindcv_tiny.ckpt"), str(dst), "--model", "swinv2_tiny_window8",
            "--label-map", str(label_map), "--to", "microsoft"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3 classes" in out and "through the label map" in out
    state = torch.load(dst, weights_only=True)["model"]
    source = read_ckpt(FIXTURES / "swinv2_mindcv_tiny.ckpt")
    assert torch.equal(state["head.weight"], source["head.weight"][[7, 2, 5]])
