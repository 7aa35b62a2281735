"""``swinkit export``: ONNX in onnxruntime, TorchScript and torch.export programs, checked against eager PyTorch."""

from __future__ import annotations

import importlib

import pytest
import torch

import swinkit
from swinkit.cli import main
from swinkit.deploy import ExportCheckError, export

from .conftest import perturb_parameters


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    # 64 px with window 4: shifted windows with masks in stages 1-2, clamped windows in stages 3-4, as at 256 / 8.
    model = swinkit.create_model(
        "swinv2_tiny_window8_256", img_size=64, window_size=4, embed_dim=16, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4)
    )
    return perturb_parameters(model, std=0.02).eval()


@pytest.mark.slow
def test_cli_onnx_of_swinv2_tiny_with_dynamic_batch_runs_in_onnxruntime(tmp_path, capsys):
    output = tmp_path / "swinv2_tiny.onnx"
    assert main(["export", "--model", "swinv2_tiny_window8_256", "--format", "onnx", "--output", str(output),
                 "--dynamic-batch"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "input (1, 3, 256, 256)" in out and "input (4, 3, 256, 256)" in out and "largest relative difference" in out


@pytest.mark.parametrize("fmt, suffix", [("torchscript", "pt"), ("exported-program", "pt2"), ("onnx", "onnx")])
def test_export_formats_match_pytorch_at_batch_1_and_4(fmt, suffix, tmp_path):
    result = export("swinv2_tiny_window8_256", tmp_path / f"m.{suffix}", format=fmt, model=small_model(),
                    dynamic_batch=True)  # fmt: skip
    assert [shape[0] for shape, _ in result.checks] == [1, 4]
    assert result.max_difference <= 1e-4


def test_export_at_another_size(tmp_path):
    result = export("swinv2_tiny_window8_256", tmp_path / "m.pt2", format="exported-program", model=small_model(),
                    img_size=(80, 64))  # fmt: skip
    assert result.checks[0][0] == (1, 3, 80, 64)


def test_dynamic_size_is_refused_with_the_reason(tmp_path, capsys):
    code = main(["export", "--model", "swinv2_tiny_window8_256", "--format", "onnx", "--output",
                 str(tmp_path / "m.onnx"), "--dynamic-size"])  # fmt: skip
    assert code == 1
    assert "window geometry" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()


def test_a_mismatch_fails_loudly(tmp_path, monkeypatch):
    export_module = importlib.import_module("swinkit.deploy.export")
    monkeypatch.setattr(export_module, "_relative", lambda a, b: 1.0)
    with pytest.raises(ExportCheckError, match="does not match PyTorch"):
        export("swinv2_tiny_window8_256", tmp_path / "m.pt", format="torchscript", model=small_model())
