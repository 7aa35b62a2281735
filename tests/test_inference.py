"""Inference at a precision (fp32, bf16 weights, int8 GEMMs; the int8 ONNX Runtime export), eager or compiled with
freezing."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from swinkit.cli import main
from swinkit.core import machine
from swinkit.core.errors import ConfigError, DataError
from swinkit.deploy import export
from swinkit.deploy.export import onnx_runner
from swinkit.deploy.inference import InferenceModel, inference_precision
from swinkit.deploy.int8 import Int8Linear
from swinkit.deploy.onnx_int8 import calibration_images
from swinkit.deploy.preprocess import evaluation_transform
from swinkit.engine.train import train
from swinkit.layers import linear as linear_module
from swinkit.layers.linear import Linear, linear_gelu
from swinkit.tools.matmul_peak import matmul_peak_gflops
from tests.engine_utils import tiny_config

FAMILIES = ("swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256", "cswin_tiny_224")


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_gelu_is_gelu_of_linear(approximate, dtype):
    x, weight, bias = (torch.randn(shape).to(dtype) for shape in ((2, 7, 96), (192, 96), (192,)))
    expected = F.gelu(F.linear(x.float(), weight.float(), bias.float()), approximate=approximate)
    with torch.no_grad():
        assert linear_module._onednn_applies(x, weight) == linear_module.USE_ONEDNN
        out = linear_gelu(x, weight, bias, approximate)
    assert out.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), expected, rtol=tolerance, atol=tolerance)
    # With gradients it is the autograd path, and the same function.
    weight.requires_grad_(True)
    linear_gelu(x, weight, bias, approximate).float().sum().backward()
    assert weight.grad is not None


def test_auto_precision_follows_native_bf16(monkeypatch, caplog):
    cpu = torch.device("cpu")
    monkeypatch.setattr(machine, "isa", lambda: ["AVX2", "AVX-512"])
    assert machine.native_bf16() == [] and inference_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(machine, "isa", lambda: ["AVX2", "AVX-512", "AVX512-BF16", "AMX-BF16"])
    with caplog.at_level("INFO"):
        assert inference_precision("auto", cpu) == "bf16"
    assert "AVX512-BF16, AMX-BF16" in caplog.text
    assert inference_precision("fp32", cpu) == "fp32"
    with pytest.raises(ConfigError, match="fp16 inference is for accelerators"):
        inference_precision("fp16", cpu)
    with pytest.raises(ConfigError, match="int8 inference runs on the CPU"):
        inference_precision("int8", torch.device("cuda"))
    with pytest.raises(ConfigError, match="choose one of"):
        inference_precision("fp8", cpu)


@pytest.mark.parametrize("name", FAMILIES)
def test_bf16_inference_casts_the_weights_and_returns_fp32_logits(tiny_model, name):
    model = tiny_model(name).eval()
    x = torch.randn(3, 3, *model.img_size)
    with torch.no_grad():
        expected = model(x)
    runner = InferenceModel(model, "bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    out = runner(x)
    assert out.dtype == torch.float32 and _relative(out, expected) < 3e-2


def test_compiled_inference_serves_every_batch_with_one_graph_and_sees_new_weights(tiny_model):
    model = tiny_model("swinv2_tiny_window8_256").eval()
    other = tiny_model("swinv2_tiny_window8_256", seed=1).state_dict()
    x = torch.randn(5, 3, *model.img_size)
    runner = InferenceModel(model, "fp32", compile=True)
    torch._dynamo.reset()
    with torch.no_grad():
        assert _relative(runner(x[:4]), model(x[:4])) < 1e-5
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        for n in (5, 3, 2, 1):  # larger and smaller batches, and a single image (padded to two)
            out = runner(x[:n])
            assert out.shape[0] == n and _relative(out, model(x[:n])) < 1e-5
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # no second graph
        model.load_state_dict(other)  # frozen into the graph: the next call compiles it again
        assert _relative(runner(x), model(x)) < 1e-5


def test_compiled_inference_reads_the_attention_masks_as_constants_and_sees_in_place_edits(tiny_model):
    model = tiny_model("swinv2_tiny_window8_256").eval()
    x = torch.randn(2, 3, *model.img_size)
    runner = InferenceModel(model, "fp32", compile=True)
    torch._dynamo.reset()
    with torch.no_grad():
        runner(x)  # compiles, after one eager image has left the masks in buffers
        with torch.profiler.profile() as profile:
            runner(x)
    linear_ops = ("mkldnn::_linear_pointwise", "mkl::_mkl_linear", "aten::addmm", "aten::mm", "aten::linear")
    calls = sum(event.count for event in profile.key_averages() if event.key in linear_ops)
    # Every linear layer but those of the position-bias MLPs, which the frozen masks leave out of the graph.
    assert calls == sum(isinstance(m, nn.Linear) for name, m in model.named_modules() if "cpb_mlp" not in name)
    with torch.no_grad():
        assert torch._dynamo.explain(model)(x).graph_break_count == 0  # reading the masks breaks no graph
        model.layers[0].blocks[1].attn.cpb_mlp[2].weight.mul_(3)  # in place: a new mask, not a new state dict
        assert _relative(runner(x), model(x)) < 1e-5


@pytest.mark.parametrize("shape", [(7, 96), (2, 7, 96), (2, 3, 4, 96)])
@pytest.mark.parametrize("op", ["linear", "override bias", "no bias", "gelu", "gelu tanh"])
def test_int8_linear_is_linear_within_8_bit_error(shape, op):
    torch.manual_seed(0)
    reference = Linear(96, 192, bias=op != "no bias")
    x = torch.randn(shape)
    bias = torch.randn(192) if op == "override bias" else reference.bias
    quantized = Int8Linear(reference)
    with torch.no_grad():
        if op.startswith("gelu"):
            approximate = "tanh" if op.endswith("tanh") else "none"
            expected = F.gelu(F.linear(x, reference.weight, bias), approximate=approximate)
            out = quantized.forward_gelu(x, approximate)
        else:
            expected = F.linear(x, reference.weight, bias)
            out = quantized(x, bias) if op == "override bias" else quantized(x)
    assert out.shape == expected.shape and out.dtype == torch.float32
    # 8-bit activations and weights: ~1% of the output's range, far below a wrong scale or layout (~100%).
    assert _relative(out, expected) < 0.03
    assert quantized.weight_int8.dtype == torch.int8 and quantized.weight_scale.shape == (192,)


@pytest.mark.parametrize("name", FAMILIES)
def test_int8_inference_quantizes_every_linear_layer(tiny_model, name):
    model = tiny_model(name).eval()
    x = torch.randn(3, 3, *model.img_size)
    with torch.no_grad():
        expected = model(x)
    linears = sum(isinstance(m, Linear) for m in model.modules())
    runner = InferenceModel(model, "int8")
    assert not any(isinstance(m, Linear) for m in model.modules())
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == linears > 0
    out = runner(x)
    assert out.dtype == torch.float32 and _relative(out, expected) < 0.05
    # The packed weight is repacked, not copied: the model copies and pickles.
    assert torch.equal(copy.deepcopy(runner)(x), out)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    assert torch.equal(InferenceModel(torch.load(buffer, weights_only=False), "fp32")(x), out)
    with pytest.raises(ConfigError, match="drop --compile"):
        InferenceModel(tiny_model(name), "int8", compile=True)
    with pytest.raises(ConfigError, match="int8 inference runs on the CPU"):
        InferenceModel(tiny_model(name).to("meta"), "int8")


def test_int8_onnx_export_through_onnx_runtime(tiny_model, tmp_path):
    model = tiny_model("swin_tiny_patch4_window7_224").eval()
    x = torch.randn(5, 3, *model.img_size)
    with torch.no_grad():
        expected = model(x)
    result = export(None, tmp_path / "int8.onnx", model=model, dynamic_batch=True, quantize="int8")
    assert result.quantize == "int8" and result.max_difference < 0.1 and "onnx, int8" in str(result)
    fp32 = export(None, tmp_path / "fp32.onnx", model=model, dynamic_batch=True)
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "MatMulInteger" not in {
        node.op_type for node in onnx.load(str(fp32.path)).graph.node
    }
    assert _relative(onnx_runner(result.path)(x), expected) < 0.1 and fp32.max_difference < 1e-4
    with pytest.raises(ConfigError, match="use --format onnx"):
        export(None, tmp_path / "m.pt", model=model, format="torchscript", quantize="int8")


def _calibration_folder(root, sizes=((40, 56), (64, 64), (80, 48), (64, 96), (72, 72))):
    """Images of several sizes at two depths, a corrupt image and a file that is not an image."""
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        folder = root / f"class{i % 2}" / ("deeper" if i > 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (root / "class0" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def test_static_int8_onnx_export_calibrates_on_a_folder_of_images(tiny_model, tmp_path, caplog):
    model = tiny_model("swin_tiny_patch4_window7_224").eval()
    folder = _calibration_folder(tmp_path / "calibration")
    with caplog.at_level("WARNING"):
        images = calibration_images(folder, evaluation_transform(model, None), count=100)
    assert images.shape == (5, 3, *model.img_size)  # every readable image, the broken one skipped with a warning
    assert "skipped 1 unreadable" in caplog.text and "broken.jpg" in caplog.text
    assert len(calibration_images(folder, evaluation_transform(model, None), count=3)) == 3
    result = export(None, tmp_path / "static.onnx", model=model, dynamic_batch=True, quantize="int8",
                    calibrate=folder)  # fmt: skip
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "DynamicQuantizeLinear" not in ops
    assert [shape for shape, _ in result.checks] == [(1, 3, *model.img_size), (4, 3, *model.img_size)]
    assert result.max_difference < 0.1
    x = images[:4]
    with torch.no_grad():
        assert _relative(onnx_runner(result.path)(x), model(x)) < 0.1


@pytest.mark.parametrize(
    "calibrate, kwargs, error, message",
    [("folder", {}, ConfigError, "add --quantize int8"),
     ("missing", {"quantize": "int8"}, DataError, "not a directory"),
     ("empty", {"quantize": "int8"}, DataError, "no image files"),
     ("broken", {"quantize": "int8"}, DataError, "none of its 1 image files could be read"),
     ("folder", {"quantize": "int8", "calibrate_images": 0}, DataError, "at least one image")],
)  # fmt: skip
def test_a_calibration_folder_that_cannot_serve_is_refused_before_exporting(
    tiny_model, tmp_path, monkeypatch, calibrate, kwargs, error, message
):
    _calibration_folder(tmp_path / "folder")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"\x89PNG truncated")
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: pytest.fail("exported before checking the folder"))
    with pytest.raises(error, match=message):
        export(None, tmp_path / "m.onnx", model=tiny_model("swin_tiny_patch4_window7_224"),
               calibrate=tmp_path / calibrate, **kwargs)  # fmt: skip
    assert not (tmp_path / "m.onnx").exists()


def test_predict_and_eval_cli_take_a_precision(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(out, "train.ema=true"))
    best = out / "checkpoints" / "best"
    assert main(["eval", "--checkpoint", str(best), "--output", str(tmp_path / "fp32")]) == 0
    assert main(["eval", "--checkpoint", str(best), "--precision", "bf16", "--output", str(tmp_path / "bf16")]) == 0
    assert main(["eval", "--checkpoint", str(best), "--precision", "int8", "--output", str(tmp_path / "int8")]) == 0
    fp32 = json.loads((tmp_path / "fp32" / "eval.json").read_text())
    assert "precision" not in fp32
    for precision in ("bf16", "int8"):
        result = json.loads((tmp_path / precision / "eval.json").read_text())
        assert result["precision"] == precision and result["n"] == fp32["n"]
        assert abs(result["loss"] - fp32["loss"]) < 0.05 * fp32["loss"]
        # The EMA weights are evaluated at the same precision (int8: quantized from an fp32 copy).
        assert abs(result["ema_loss"] - fp32["ema_loss"]) < 0.05 * fp32["ema_loss"]
    image = str(tmp_path / "digit.png")
    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(best), "--precision", "bf16", "--json", image]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"]
    assert main(["predict", "--checkpoint", str(best), "--precision", "fp16", image]) == 2
    assert "fp16 inference is for accelerators" in capsys.readouterr().err


def test_matmul_peak_is_the_best_over_shapes_and_routes():
    cpu = torch.device("cpu")
    small = ((64, 64, 64),)
    large = ((256, 256, 256), (64, 64, 64))
    assert matmul_peak_gflops(torch.float32, cpu, shapes=large, trials=1) > 0
    assert matmul_peak_gflops(torch.int8, cpu, shapes=small, trials=1) > 0
    assert matmul_peak_gflops(torch.bfloat16, cpu, shapes=small, trials=1) > 0
