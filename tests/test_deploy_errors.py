"""User mistakes at the deploy commands: one line, exit 2, nothing built or written; bombs and full disks handled."""

from __future__ import annotations

import errno
import importlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import swinkit
from swinkit.cli import main
from swinkit.core.errors import MissingExtraError, StorageError
from swinkit.deploy import export, predict

from .conftest import perturb_parameters
from .test_predict import TINY

convert_module = importlib.import_module("swinkit.deploy.convert")


@pytest.fixture
def tiny_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = perturb_parameters(swinkit.create_model("swinv2_tiny_window8_256", **TINY))
    original = convert_module.create_model
    monkeypatch.setattr(convert_module, "create_model", lambda name, **kw: original(name, **{**TINY, **kw}))
    return swinkit.save_checkpoint(model, tmp_path / "m.safetensors")


def _one_line(capsys, expected: str) -> None:
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_predict_keeps_going_past_a_decompression_bomb(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    paths = []
    for name, side in (("small", 32), ("large", 120), ("bomb", 250)):  # under, over and twice over the limit
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(np.zeros((side, side, 3), dtype=np.uint8)).save(paths[-1])
    results = predict("swinv2_tiny_window8_256", tiny_checkpoint, paths, topk=2)
    assert "top" in results[0] and "error" in results[1] and "error" in results[2]
    assert "DecompressionBomb" in results[2]["error"]


def test_predict_topk_must_be_positive(tmp_path, tiny_checkpoint, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    assert main(["predict", "--model", "swinv2_tiny_window8_256", "--checkpoint", str(tiny_checkpoint),
                 "--topk", "0", str(image)]) == 2  # fmt: skip
    _one_line(capsys, "--topk 0")


@pytest.mark.parametrize(
    "output, expected",
    [("missing/dir/m.onnx", "does not exist; create it first"), ("m.onx", "written as .onnx"), ("m", "no suffix")],
)
def test_export_checks_the_output_before_building(tmp_path, capsys, monkeypatch, output, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(importlib.import_module("swinkit.deploy.export"), "load_model",
                        lambda *a, **k: pytest.fail("built a model for an output it cannot write"))  # fmt: skip
    assert main(["export", "--model", "swinv2_tiny_window8_256", "--format", "onnx", "--output", output]) == 2
    _one_line(capsys, expected)
    assert not (tmp_path / "missing").exists()


def test_a_missing_export_extra_names_the_install_command(tmp_path, monkeypatch):
    export_module = importlib.import_module("swinkit.deploy.export")
    real = importlib.import_module

    def without_onnxscript(name, *args):
        if name == "onnxscript":
            raise ModuleNotFoundError("No module named 'onnxscript'")
        return real(name, *args)

    monkeypatch.setattr(export_module.importlib, "import_module", without_onnxscript)
    with pytest.raises(MissingExtraError, match=r'pip install "swinkit\[export\]"'):
        export("swinv2_tiny_window8_256", tmp_path / "m.onnx", format="onnx")


@pytest.mark.parametrize(
    "dst, to, expected",
    [("out.ckpt", "swinkit", "written as .safetensors"), ("out.safetensors", "mindspore", "written as .ckpt"),
     ("nowhere/out.safetensors", "swinkit", "does not exist")],
)  # fmt: skip
def test_convert_checks_the_output_suffix_and_directory(tmp_path, tiny_checkpoint, capsys, dst, to, expected):
    assert main(["convert", str(tiny_checkpoint), str(tmp_path / dst), "--model", "swinv2_tiny_window8_256",
                 "--to", to]) == 2  # fmt: skip
    _one_line(capsys, expected)
    assert not (tmp_path / dst).exists()


def test_written_files_get_the_usual_permissions(tmp_path, tiny_checkpoint):
    umask = os.umask(0)
    os.umask(umask)
    out = tmp_path / "out.pth"
    assert main(["convert", str(tiny_checkpoint), str(out), "--model", "swinv2_tiny_window8_256", "--to", "timm"]) == 0
    for path in (tiny_checkpoint, out):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_full_disk_names_the_path_and_keeps_the_previous_file(tmp_path, tiny_checkpoint, monkeypatch):
    before = tiny_checkpoint.read_bytes()
    model = swinkit.create_model("swinv2_tiny_window8_256", **TINY)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(importlib.import_module("swinkit.checkpoints.io"), "save_file", full)
    with pytest.raises(StorageError, match=r"could not write .*m\.safetensors: No space left on device \(\d+ MB free"):
        swinkit.save_checkpoint(model, tiny_checkpoint)
    assert tiny_checkpoint.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "args, expected",
    [(["pretrain"], "--config is required"),
     (["eval", "--checkpoint", "{tmp}/nothing"], "nothing does not exist"),
     (["eval", "--checkpoint", "{tmp}"], "not a swinkit checkpoint directory"),
     (["predict", "--model", "resnet50", "{tmp}/x.png"], "unknown model 'resnet50'"),
     (["export", "--model", "swinv2_tiny_window8_256", "--format", "onnx", "--output", "{tmp}/m.onnx",
       "--checkpoint", "{tmp}/empty.pth"], "is empty (0 bytes)"),
     (["export", "--model", "swinv2_tiny_window8_256", "--format", "onnx", "--output", "{tmp}/m.onnx",
       "--calibrate-images", "8"], "give the folder too"),
     (["export", "--model", "swinv2_tiny_window8_256", "--format", "onnx", "--output", "{tmp}/m.onnx",
       "--quantize", "int8", "--calibrate", "{tmp}/no-such-folder"], "not a directory"),
     (["convert", "{tmp}/empty.pth", "{tmp}/out.safetensors", "--model", "swinv2_tiny_window8_256"], "is empty"),
     (["convert", "{tmp}/tagged.pth", "{tmp}/out.safetensors", "--model", "swinv2_tiny_window8_256"],
      "refuses to unpickle"),
     (["benchmark", "--model", "swin_tinyy"], "unknown model"),
     (["benchmark", "--model", "swinv2_tiny_window8_256", "--against", "paddle"], "unknown peers"),
     (["train", "--resume", "{tmp}"], "not a swinkit run directory"),
     (["plot", "{tmp}"], "metrics.jsonl does not exist")],
)  # fmt: skip
def test_every_command_answers_a_mistake_with_one_line(tmp_path, capsys, args, expected):
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"w": torch.zeros(1), "cfg": os.environ.__class__}, tmp_path / "tagged.pth")
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    _one_line(capsys, expected)


def _other_format(kind: str, path: Path) -> str:
    """Write a file of ``kind`` that is no checkpoint at ``path`` (a checkpoint's suffix); what the error calls it."""
    linear = torch.nn.Linear(2, 2)
    if kind == "onnx":
        torch.onnx.export(linear, (torch.randn(1, 2),), path, dynamo=False)
        return "is an ONNX model"
    if kind == "torchscript":
        torch.jit.save(torch.jit.script(linear), path)
        return "is a TorchScript model"
    if kind == "exported":
        with open(path, "wb") as f:  # a stream: torch.export warns about a file not named .pt2
            torch.export.save(torch.export.export(linear, (torch.randn(1, 2),)), f)
        return "is a torch.export program"
    if kind == "npz":
        with open(path, "wb") as f:
            np.savez(f, a=np.zeros(3))
        return "is a NumPy archive"
    Image.new("RGB", (4, 4)).save(path, format="PNG")
    return "is an image"


@pytest.mark.parametrize("kind", ["onnx", "torchscript", "exported", "npz", "image"])
def test_files_that_are_no_checkpoint_are_named_for_what_they_are(tmp_path, capsys, kind):
    """Routed by content before anything is unpickled; never the advice to unpickle them with weights_only=False."""
    path = tmp_path / ("model.onnx" if kind == "onnx" else "model.pth")
    what = _other_format(kind, path)
    capsys.readouterr()
    assert main(["convert", str(path), str(tmp_path / "out.safetensors"), "--model", "swinv2_tiny_window8_256"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and what in err and "not a checkpoint" in err and "weights_only" not in err


@pytest.mark.parametrize("command", ["eval", "predict", "convert", "export"])
def test_a_path_that_does_not_exist_is_called_that(tmp_path, capsys, command):
    missing = str(tmp_path / "nowhere" / "model.pth")
    argv = {"eval": ["eval", "--checkpoint", missing],
            "predict": ["predict", "--checkpoint", missing, "--model", "swinv2_tiny_window8_256", "x.png"],
            "convert": ["convert", missing, str(tmp_path / "out.safetensors"), "--model", "swinv2_tiny_window8_256"],
            "export": ["export", "--model", "swinv2_tiny_window8_256", "--checkpoint", missing, "--format", "onnx",
                       "--output", str(tmp_path / "m.onnx")]}[command]  # fmt: skip
    assert main(argv) == 2
    _one_line(capsys, f"{missing} does not exist")


def test_a_checkpoint_of_another_architecture_is_named_before_its_head(tmp_path):
    """A Swin V1 file into a 10-class Swin V2: the architecture is the problem, not the head's 1000 classes."""
    v1 = swinkit.save_checkpoint(swinkit.create_model("swin_tiny_patch4_window7_224", **TINY), tmp_path / "v1.pth")
    v2 = swinkit.create_model("swinv2_tiny_window8_256", **{**TINY, "num_classes": 10})
    with pytest.raises(swinkit.CheckpointError, match="looks like Swin V1") as caught:
        swinkit.load_checkpoint(v2, v1)
    assert "head='reset'" not in str(caught.value)
    # The same architecture with another class count still gets the head advice.
    same = swinkit.save_checkpoint(swinkit.create_model("swinv2_tiny_window8_256", **TINY), tmp_path / "v2.pth")
    with pytest.raises(swinkit.CheckpointError, match="head='reset'"):
        swinkit.load_checkpoint(v2, same)
