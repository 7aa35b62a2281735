"""``swinkit export``: ONNX (``torch.onnx.export(dynamo=True)``), TorchScript (tracing) or a torch.export program,
checked against the PyTorch model on random inputs.

The batch can be dynamic in all three. A dynamic image size (ONNX and exported programs, Swin V1/V2) makes one graph
for every size that is a multiple of the model's total stride (32) and at least ``window * stride`` on each side, so
that no stage's window is ever clamped to a smaller map: 256 px and up for swinv2_tiny_window8_256. Within that range
the window machinery runs on symbolic sizes (see ``swinkit.layers.window``): padding, the shift dropped where a map
equals its window, the window order and the masks are all computed in the graph. TorchScript tracing records sizes
as constants, and CSWin decides its stripe padding in Python, so those are exported per size.

A detector (Faster/Mask R-CNN) exports to ONNX through torch's TorchScript-based exporter, which torchvision's
detection models support (opset 17; the dynamo exporter does not trace their data-dependent proposal selection):
one image of the exported size (``--img-size``, 3 x H x W RGB in 0..1) in, ``boxes``, ``labels``, ``scores`` (and
``masks``) out, as the model returns them. Tracing records the window geometry and torchvision's resize of that size
as constants, so a graph is for its size alone (another size gives wrong boxes without an error): export one file
per size. The check runs two random images through both and compares every output (same detections, in the same
order). TorchScript and exported programs of detectors, a dynamic batch or size and int8 are refused with that
reason.

``quantize="int8"`` (ONNX only) writes the checked fp32 graph through ONNX Runtime's quantization
(``swinkit.deploy.onnx_int8``): dynamic, or static with ``calibrate``, a folder of images the model's evaluation
preprocessing turns into the calibration set. It is the deployable int8 artifact (a quarter of the weight bytes, runs
wherever ONNX Runtime does), checked against PyTorch like the fp32 graph with the tolerance of 8-bit arithmetic
(``INT8_TOLERANCE``): a dynamic graph on random images, a static one on calibration images (random noise lies
outside the ranges it was calibrated for). In-process int8 inference (``--precision int8``, ``swinkit.deploy.int8``)
is faster than either.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.fx.experimental._config
import torch.nn.functional as F
from torch import nn

from ..core.atomic import check_output
from ..core.errors import ConfigError, MissingExtraError, SwinkitError
from ..layers import to_2tuple
from ..models.rcnn import FasterRCNN, MaskRCNN
from .convert import load_model
from .onnx_int8 import CALIBRATION_IMAGES, calibration_images, quantize_onnx
from .preprocess import evaluation_transform

FORMATS = ("onnx", "torchscript", "exported-program")
TOLERANCE = 1e-4  # largest |exported - eager| relative to the largest |eager| logit
INT8_TOLERANCE = 0.1  # the same for an int8 graph (measured 2.4e-2 on swinv2_tiny_window8_256)


class ExportCheckError(SwinkitError, RuntimeError):
    """The exported model disagrees with PyTorch beyond the tolerance."""


@dataclass
class ExportResult:
    path: Path
    format: str
    img_size: tuple[int, int]
    checks: list[tuple[tuple[int, ...], float]] = field(default_factory=list)  # (input shape, relative difference)
    size_range: str = ""  # the sizes a dynamic-size export accepts
    quantize: str | None = None

    @property
    def tolerance(self) -> float:
        return INT8_TOLERANCE if self.quantize == "int8" else TOLERANCE

    @property
    def max_difference(self) -> float:
        return max(diff for _, diff in self.checks)

    def __str__(self) -> str:
        size = self.size_range or f"{self.img_size[0]}x{self.img_size[1]}"
        kind = f"{self.format}, {self.quantize}" if self.quantize else self.format
        lines = [f"wrote {self.path} ({kind}, {size})"]
        lines += [f"  input {shape}: max |exported - pytorch| / max |pytorch| = {d:.2e}" for shape, d in self.checks]
        lines.append(f"largest relative difference {self.max_difference:.2e} (tolerance {self.tolerance:g})")
        return "\n".join(lines)


OUTPUT_SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth"), "exported-program": (".pt2",)}


def require_onnx() -> None:
    """ONNX export needs onnx and onnxscript, and its check onnxruntime: the ``export`` extra."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise MissingExtraError(
                f"ONNX export needs {module}, which is not installed: pip install \"swinkit[export]\""
            ) from err


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def export(
    name: str,
    output: str | os.PathLike,
    *,
    format: str = "onnx",
    checkpoint: str | os.PathLike | None = None,
    img_size: int | tuple[int, int] | None = None,
    dynamic_batch: bool = False,
    dynamic_size: bool = False,
    model: nn.Module | None = None,
    weights: bool | str | None = None,
    quantize: str | None = None,
    calibrate: str | os.PathLike | None = None,
    calibrate_images: int = CALIBRATION_IMAGES,
) -> ExportResult:
    """Export a model and check it against eager PyTorch on random images (batch 1 and 4 with a dynamic batch; a
    static int8 graph on its calibration images).

    Args:
        name: registered model name (built with the checkpoint's class count).
        output: the file to write (.onnx, .pt for TorchScript, .pt2 for an exported program by convention).
        format: 'onnx', 'torchscript' or 'exported-program'.
        checkpoint: weights to load (any layout ``load_checkpoint`` reads); random initial weights without one.
            With ``model`` given, only the evaluation transform a swinkit run stored with it is read (calibration).
        img_size: export image size, int or (H, W); the model's default size without one.
        dynamic_batch: let the batch dimension vary.
        dynamic_size: let the image size vary (ONNX and exported programs of Swin V1/V2; see the module docstring).
            ``img_size`` is then the smallest size and the example traced.
        model: an already built model to export instead of building ``name`` (for tests and library use).
        weights: published weights instead of a checkpoint: True (the default tag), a tag, a file or a URL.
        quantize: 'int8' for an int8 ONNX graph (see the module docstring).
        calibrate: a folder of images: ``quantize`` statically with ranges calibrated on up to ``calibrate_images``
            of them (``swinkit.deploy.onnx_int8``); without one, dynamically.

    Raises:
        ExportCheckError: the largest relative difference exceeds 1e-4 (``INT8_TOLERANCE`` for int8).
    """
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if quantize not in (None, "int8"):
        raise ConfigError(f"quantize {quantize!r}: the one quantization offered is int8")
    if quantize and format != "onnx":
        raise ConfigError("--quantize int8 writes an ONNX graph for ONNX Runtime: use --format onnx")
    if calibrate is not None and not quantize:
        raise ConfigError("--calibrate DIR is the calibration set of a static int8 graph: add --quantize int8")
    if dynamic_size and format == "torchscript":
        raise ConfigError(
            "TorchScript tracing records the image size as constants: use --format onnx or exported-program for a "
            "dynamic size, or export one TorchScript file per size"
        )
    check_output(output, OUTPUT_SUFFIXES[format], f"the {format} export")
    if format == "onnx":
        require_onnx()
    if model is None:
        model, _, _ = load_model(name, checkpoint, weights=weights)
    model = model.eval()
    size = to_2tuple(img_size or model.img_size)
    if isinstance(model, FasterRCNN | MaskRCNN):
        if format != "onnx" or dynamic_batch or dynamic_size or quantize:
            raise ConfigError(
                f"{name or model.model_info.name} is a detector: it exports to ONNX for one image size (--format onnx "
                "--img-size H W), without --dynamic-batch, --dynamic-size or --quantize (see swinkit export's docs)"
            )  # fmt: skip
        return _export_detector(model, Path(output), size)
    calibration = None
    if calibrate is not None:
        calibration = _resized(
            calibration_images(calibrate, evaluation_transform(model, checkpoint), calibrate_images), size
        )
    example = torch.randn(2 if dynamic_batch else 1, 3, *size, generator=torch.Generator().manual_seed(0))
    output = Path(output)
    dims = {0: torch.export.Dim("batch", min=1, max=1024)} if dynamic_batch else {}
    check_sizes = [size]
    tracing_options = contextlib.nullcontext()
    if dynamic_size:
        stride = _dynamic_size_stride(model, name, size)
        dims |= {2: stride * torch.export.Dim("height_units", min=size[0] // stride, max=4096 // stride),
                 3: stride * torch.export.Dim("width_units", min=size[1] // stride, max=4096 // stride)}  # fmt: skip
        check_sizes += [(size[0] + 2 * stride, size[1]), (size[0], size[1] + stride)]
        # Sizes are traced as sizes of at least 2, so that a stage with one window at the example size (the last
        # stage at 256 px) is not frozen to one window: the symbolic window code never asks whether a size is 1.
        tracing_options = torch.fx.experimental._config.patch(backed_size_oblivious=True)
    dynamic_shapes = (dims,) if dims else None
    with torch.no_grad():
        if format == "onnx":
            with tracing_options, _onnx_target(output, quantize, calibration) as target:
                torch.onnx.export(
                    model, (example,), str(target), dynamo=True, dynamic_shapes=dynamic_shapes,
                    input_names=["images"], output_names=["logits"],
                )  # fmt: skip
            run = onnx_runner(output)
        elif format == "torchscript":
            with warnings.catch_warnings():
                # Tracing records the window geometry of the example size as constants: expected, see above.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(model, example, check_trace=False)
            traced.save(str(output))
            loaded = torch.jit.load(str(output))
            run = loaded
        else:
            with tracing_options:
                program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
            torch.export.save(program, str(output))
            run = torch.export.load(str(output)).module()
        result = ExportResult(output, format, size, quantize=quantize)
        if dynamic_size:
            checked = (
                "the program refuses other sizes"
                if format == "exported-program"
                else "ONNX runtimes do not check this: other sizes error or differ from PyTorch"
            )
            result.size_range = f"any HxW with H, W multiples of {stride}, H >= {size[0]}, W >= {size[1]}; {checked}"
        for check_size in check_sizes:
            for b in (1, 4) if dynamic_batch else (example.shape[0],):
                x = torch.randn(b, 3, *check_size, generator=torch.Generator().manual_seed(b))
                if calibration is not None:  # a static graph is checked on the images it was calibrated for
                    x = _resized(calibration[torch.arange(b) % len(calibration)], check_size)
                result.checks.append((tuple(x.shape), _relative(run(x), model(x))))
    if not result.max_difference <= result.tolerance:  # NaN fails too
        raise ExportCheckError(f"{result}\nthe exported model does not match PyTorch: do not deploy {output}")
    return result


DETECTOR_OUTPUTS = ("boxes", "labels", "scores", "masks")


def _export_detector(model: nn.Module, output: Path, size: tuple[int, int]) -> ExportResult:
    """A Faster/Mask R-CNN as one ONNX graph for images of ``size`` (module docstring), checked in ONNX Runtime."""
    import onnxruntime

    names = [n for n in DETECTOR_OUTPUTS if n != "masks" or model.roi_heads.has_mask()]
    example = torch.rand(3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warns of every size it records as a constant: expected, see above
        torch.onnx.export(model, ([example],), str(output), dynamo=False, opset_version=17, input_names=["image"],
                          output_names=names)  # fmt: skip
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # the graph's traced shape hints name one detection; every count runs right
    session = onnxruntime.InferenceSession(str(output), options, providers=["CPUExecutionProvider"])
    result = ExportResult(output, "onnx", size)
    for seed in (1, 2):
        x = torch.rand(3, *size, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = model([x])[0]
        got = dict(zip(names, session.run(None, {"image": x.numpy()}), strict=True))
        if any(got[n].shape != tuple(expected[n].shape) for n in names) or not (got["labels"] == expected[
                "labels"].numpy()).all():  # fmt: skip
            raise ExportCheckError(f"wrote {output}, whose detections differ from PyTorch's on a random image "
                                   f"({len(got['boxes'])} vs {len(expected['boxes'])} boxes, or other classes): do not "
                                   "deploy it")  # fmt: skip
        differences = [_relative(torch.from_numpy(got[n]).float(), expected[n].float()) for n in names
                       if n != "labels" and expected[n].numel()]  # fmt: skip
        result.checks.append(((3, *size), max(differences, default=0.0)))
    if not result.max_difference <= result.tolerance:
        raise ExportCheckError(f"{result}\nthe exported model does not match PyTorch: do not deploy {output}")
    return result


def _resized(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``images`` at ``size`` (an export size other than the one the evaluation transform crops to)."""
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True)


def _dynamic_size_stride(model: nn.Module, name: str, size: tuple[int, int]) -> int:
    """The model's total stride; ValueError unless ``size`` can start a dynamic-size export (module docstring). A
    segmentation model's is its backbone's."""
    model = getattr(model, "backbone", model)
    if getattr(model, "family", "") not in ("swin", "swinv2"):
        raise ConfigError(
            f"a dynamic image size is exported for Swin V1/V2 models; {name} decides its geometry in Python from each "
            "input's size, so export one file per image size with --img-size H W (the batch can stay dynamic)"
        )
    stride = model.feature_info[-1]["reduction"]
    min_size = max(model.window_size) * stride
    if min(size) < min_size or size[0] % stride or size[1] % stride:
        raise ConfigError(
            f"a dynamic-size export of {name} starts at a size whose sides are multiples of {stride} and at least "
            f"{min_size} (window {max(model.window_size)} x stride {stride}, so that no stage clamps its window), "
            f"got {size[0]}x{size[1]}: pass --img-size {max(min_size, size[0] + -size[0] % stride)} "
            f"{max(min_size, size[1] + -size[1] % stride)}, or export this size without --dynamic-size"
        )
    return stride


@contextlib.contextmanager
def _onnx_target(output: Path, quantize: str | None, calibration: torch.Tensor | None):
    """Where ``torch.onnx.export`` writes: ``output`` itself, or for int8 a temporary fp32 graph that is quantized
    into ``output`` once written (statically on ``calibration``'s images when given)."""
    if quantize is None:
        yield output
        return
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        yield fp32
        quantize_onnx(fp32, output, calibration)


def onnx_runner(path: Path):
    """A function from a torch batch to the ONNX graph's torch logits, through ONNX Runtime on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"images": x.float().numpy()})[0])

    return run
