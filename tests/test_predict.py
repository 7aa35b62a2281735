"""``swinkit predict``: top-k with class names; an unreadable file gets one error line and the rest are predicted."""

from __future__ import annotations

import importlib
import json

import numpy as np
import torch
from PIL import Image

import swinkit
from swinkit.cli import main
from swinkit.engine.checkpoint import save_training_checkpoint
from swinkit.engine.config import load_config

from .conftest import perturb_parameters

TINY = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), img_size=64, window_size=4)


def images(tmp_path, n: int = 3) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = tmp_path / f"image{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, (48 + 16 * i, 80, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_predict_prints_top5_with_imagenet_names_and_one_error_line(tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    model = perturb_parameters(swinkit.create_model("swinv2_tiny_window8_256", **TINY))
    path = swinkit.save_checkpoint(model, tmp_path / "m.safetensors")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    paths = images(tmp_path)
    args = ["predict", "--model", "swinv2_tiny_window8_256", "--checkpoint", str(path), paths[0], str(text), *paths[1:]]
    # The CLI builds the registered architecture; the checkpoint's tiny widths come from the patched builder.
    convert_module = importlib.import_module("swinkit.deploy.convert")
    original = convert_module.create_model
    monkeypatch.setattr(convert_module, "create_model", lambda name, **kw: original(name, **{**TINY, **kw}))
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2  # the docs' promise for any failed input; the readable images are still predicted
    assert err.count("\n") == 1 and str(text) in err and "not a readable image" in err
    for p in paths:
        assert p in out
    lines = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(lines) == 15  # top-5 of three images
    assert any("," in line or line.split()[-1].isalpha() for line in lines)  # ImageNet descriptions


def test_predict_uses_class_folder_names_of_a_training_checkpoint(tmp_path):
    from swinkit.deploy import predict

    torch.manual_seed(0)
    model = perturb_parameters(swinkit.create_model("swinv2_tiny_window8_256", **TINY, num_classes=3))
    cfg = load_config("quickstart", [])
    save_training_checkpoint(tmp_path / "best", cfg, model, None, {}, classes=["cat", "dog", "emu"])
    results = predict("swinv2_tiny_window8_256", tmp_path / "best", images(tmp_path, 2), topk=2, overrides=TINY)
    assert [len(r["top"]) for r in results] == [2, 2]
    assert {t["label"] for r in results for t in r["top"]} <= {"cat", "dog", "emu"}
    assert sum(t["probability"] for t in results[0]["top"]) <= 1.0 + 1e-6
    json.dumps(results)
