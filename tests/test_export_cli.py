"""``swinkit export``: ONNX in onnxruntime, TorchScript and torch.export programs, checked against eager PyTorch."""

from __future__ import annotations

import importlib

import onnxruntime
import pytest
import torch

import swinkit
from swinkit.cli import main
from swinkit.deploy import ExportCheckError, export
from swinkit.deploy.export import OUTPUT_SUFFIXES

from .conftest import perturb_parameters


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    # 64 px with window 4: shifted windows with masks in stages 1-2, clamped windows in stages 3-4, as at 256 / 8.
    model = swinkit.create_model(
        "swinv2_tiny_window8_256", img_size=64, window_size=4, embed_dim=16, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4)
    )
    return perturb_parameters(model, std=0.02).eval()


@pytest.mark.slow
def test_cli_onnx_of_swinv2_tiny_with_dynamic_batch_and_size_runs_in_onnxruntime(tmp_path, capsys):
    torch.manual_seed(0)
    model = perturb_parameters(swinkit.create_model("swinv2_tiny_window8_256"), std=0.02).eval()
    checkpoint = tmp_path / "weights.safetensors"
    swinkit.save_checkpoint(model, checkpoint)
    output = tmp_path / "swinv2_tiny.onnx"
    assert main(["export", "--model", "swinv2_tiny_window8_256", "--checkpoint", str(checkpoint), "--format", "onnx",
                 "--output", str(output), "--dynamic-batch", "--dynamic-size"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    for shape in ("(1, 3, 256, 256)", "(4, 3, 256, 256)", "(1, 3, 320, 256)", "(4, 3, 320, 256)"):
        assert f"input {shape}" in out
    # The same file, run here at sizes and batches of the test's choosing, against the eager model.
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 256, 256), (4, 3, 320, 256), (2, 3, 256, 352)):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[0]))
        with torch.no_grad():
            expected = model(x)
        (actual,) = session.run(None, {"images": x.numpy()})
        assert actual.shape == (shape[0], 1000)
        assert (torch.from_numpy(actual) - expected).abs().max() <= 1e-4 * expected.abs().max()


def small_dynamic_model(name: str) -> torch.nn.Module:
    """Window 4 and stride 32: sizes from 128 px. At 192 px the last stage (6x6) is padded to 8x8 and shifted; at
    192x128 (6x4) it is padded with its shift dropped; at 128 px it is one window."""
    torch.manual_seed(0)
    model = swinkit.create_model(name, window_size=4, embed_dim=16, depths=(1, 1, 2, 2), num_heads=(1, 2, 2, 4),
                                 num_classes=5)  # fmt: skip
    return perturb_parameters(model, std=0.02).eval()


@pytest.mark.parametrize("name", ["swinv2_tiny_window8_256", "swin_tiny_patch4_window7_224"])
@pytest.mark.parametrize("fmt, suffix", [("exported-program", "pt2"), ("onnx", "onnx")])
def test_dynamic_size_export_matches_eager_at_sizes_that_pad_shift_and_clamp_differently(name, fmt, suffix, tmp_path):
    model = small_dynamic_model(name)
    path = tmp_path / f"m.{suffix}"
    result = export(name, path, format=fmt, model=model, img_size=128, dynamic_size=True)
    assert [shape for shape, _ in result.checks] == [(1, 3, 128, 128), (1, 3, 192, 128), (1, 3, 128, 160)]
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        run = lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])  # noqa: E731
    else:
        run = torch.export.load(str(path)).module()
        with pytest.raises(Exception, match="128"):  # below the range, where the window would be clamped
            run(torch.randn(1, 3, 96, 128))
    for size in ((192, 192), (160, 224), (128, 128), (256, 192)):
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
        with torch.no_grad():
            expected = model(x)
            actual = run(x)
        assert (actual - expected).abs().max() <= 1e-5 * expected.abs().max(), size


@pytest.mark.parametrize("name", ["swinv2_tiny_window8_256", "swin_tiny_patch4_window7_224"])
def test_dynamic_size_export_keeps_the_dense_task_window_rule(name, tmp_path):
    """With visible padding (segmentation and detection backbones) the symbolic path reads padded positions as zero
    tokens and never drops the shift: one exported graph equals eager at sizes that pad differently."""
    model = small_dynamic_model(name)
    model.set_window_padding("visible")
    export(name, tmp_path / "m.pt2", format="exported-program", model=model, img_size=128, dynamic_size=True)
    run = torch.export.load(str(tmp_path / "m.pt2")).module()
    for size in ((192, 192), (160, 224), (128, 128)):
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
        with torch.no_grad():
            expected = model(x)
            actual = run(x)
        assert (actual - expected).abs().max() <= 1e-5 * expected.abs().max(), size


@pytest.mark.parametrize(
    "name, fmt, img_size, message",
    [
        ("swinv2_tiny_window8_256", "torchscript", None, "records the image size as constants"),
        ("swinv2_tiny_window8_256", "onnx", 224, "--img-size 256 256"),
        ("swinv2_tiny_window8_256", "onnx", 300, "multiples of 32"),
        ("cswin_tiny_224", "exported-program", None, "one file per image size"),
    ],
)
def test_dynamic_size_outside_what_one_graph_covers_is_refused_with_the_fix(name, fmt, img_size, message, tmp_path,
                                                                           capsys):  # fmt: skip
    output = tmp_path / f"m{OUTPUT_SUFFIXES[fmt][0]}"
    args = ["export", "--model", name, "--format", fmt, "--output", str(output), "--dynamic-size"]
    assert main(args + (["--img-size", str(img_size)] if img_size else [])) == 2
    assert message in capsys.readouterr().err and not output.exists()


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


def test_a_mismatch_fails_loudly(tmp_path, monkeypatch):
    export_module = importlib.import_module("swinkit.deploy.export")
    monkeypatch.setattr(export_module, "_relative", lambda a, b: 1.0)
    with pytest.raises(ExportCheckError, match="does not match PyTorch"):
        export("swinv2_tiny_window8_256", tmp_path / "m.pt", format="torchscript", model=small_model())


@pytest.mark.slow
def test_upernet_exports_to_one_onnx_graph_for_every_size(tmp_path):
    # The whole segmentation model, dynamic in batch and size, checked in ONNX Runtime against PyTorch at sizes that
    # pad the windows and pool the pyramid differently; the logits come out at each input's size.
    from tests.engine_utils import tiny_upernet

    result = export("upernet_swin_tiny_patch4_window7_512", tmp_path / "upernet.onnx", model=tiny_upernet(5),
                    img_size=128, dynamic_size=True, dynamic_batch=True)  # fmt: skip
    assert [shape for shape, _ in result.checks] == [(1, 3, 128, 128), (4, 3, 128, 128), (1, 3, 192, 128),
                                                     (4, 3, 192, 128), (1, 3, 128, 160), (4, 3, 128, 160)]
    assert result.max_difference <= 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "upernet.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": torch.randn(1, 3, 224, 160).numpy()})[0]
    assert logits.shape == (1, 5, 224, 160)
