"""A run's checkpoint describes itself: predict, export, convert and eval rebuild the architecture (overrides
included) and the evaluation preprocessing from the config stored with it, with no --model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import swinkit
from swinkit.cli import main
from swinkit.data import Digits, build_transform
from swinkit.deploy import load_model, predict
from swinkit.engine import checkpoint as ckpt
from swinkit.engine.train import train
from tests.engine_utils import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    train(tiny_config(out, "sched.epochs=1"))
    digit = out.parent / "digit.png"
    Digits("val").load(3).save(digit)
    return out, digit


def _eval_probabilities(run_dir, image) -> torch.Tensor:
    """What `swinkit eval` computes for one image: the run's config, model and evaluation transform."""
    cfg = ckpt.stored_config(run_dir / "checkpoints" / "best")
    model, _, _ = load_model(None, run_dir / "checkpoints" / "best")
    x = build_transform(cfg.data, model.img_size[0], False, model.model_info)(Image.open(image).convert("RGB"))
    with torch.no_grad():
        return model(x[None]).softmax(-1)[0]


def test_predict_needs_no_model_name_and_uses_the_runs_preprocessing(run, capsys):
    out, digit = run
    best = out / "checkpoints" / "best"
    for checkpoint in (best, best / "model.safetensors"):
        (result,) = predict(None, checkpoint, [digit], topk=10)
        probs = torch.tensor([t["probability"] for t in sorted(result["top"], key=lambda t: t["index"])])
        assert torch.allclose(probs, _eval_probabilities(out, digit), atol=1e-6)
        assert {t["label"] for t in result["top"]} == {str(i) for i in range(10)}  # the run's class folders
    assert main(["predict", "--checkpoint", str(best), str(digit), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["label"] in {str(i) for i in range(10)}


def test_a_foreign_file_still_needs_a_model_name(tmp_path, capsys):
    model = swinkit.create_model("swinv2_tiny_window8_256", embed_dim=8, depths=(1, 1), num_heads=(1, 2))
    path = swinkit.save_checkpoint(model, tmp_path / "m.pth", format="timm")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(image)
    assert main(["predict", "--checkpoint", str(path), str(image)]) == 2
    assert "name the architecture with --model" in capsys.readouterr().err


def test_export_and_convert_take_the_run_checkpoint(run, tmp_path):
    import onnxruntime

    out, digit = run
    best = out / "checkpoints" / "best"
    onnx_path = tmp_path / "run.onnx"
    assert main(["export", "--checkpoint", str(best), "--format", "onnx", "--output", str(onnx_path)]) == 0
    cfg = ckpt.stored_config(best)
    model, _, _ = load_model(None, best)
    x = build_transform(cfg.data, model.img_size[0], False, model.model_info)(Image.open(digit).convert("RGB"))[None]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    assert torch.allclose(logits.softmax(-1)[0], _eval_probabilities(out, digit), atol=1e-5)
    converted = tmp_path / "run_timm.safetensors"
    assert main(["convert", str(best / "model.safetensors"), str(converted), "--to", "timm"]) == 0
    fresh = swinkit.create_model(cfg.model.name, embed_dim=8, depths=(1, 1), num_heads=(1, 2), patch_size=4,
                                 window_size=2, img_size=16, num_classes=10)  # fmt: skip
    report = swinkit.load_checkpoint(fresh, converted)
    assert report.format == "timm" and not report.missing


def test_eval_of_a_file_uses_the_config_stored_with_it(run, tmp_path):
    out, _ = run
    copied = tmp_path / "elsewhere.safetensors"
    copied.write_bytes((out / "checkpoints" / "best" / "model.safetensors").read_bytes())
    assert main(["eval", "--checkpoint", str(copied), "--output", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["n"] == 33  # the run's 33 images, not the quick start's 360


def test_the_quick_starts_example_image_is_a_validation_digit(run):
    example = Path(__file__).resolve().parents[1] / "examples" / "digit-7.png"
    val = Digits("val")
    assert val.target(0) == 7
    assert np.array_equal(np.asarray(Image.open(example).convert("RGB")), np.asarray(val.load(0)))
    out, _ = run
    (result,) = predict(None, out / "checkpoints" / "best", [example], topk=10)
    assert sorted(top["label"] for top in result["top"]) == [str(i) for i in range(10)]  # the run's class names
