"""``swinkit export``: ONNX (``torch.onnx.export(dynamo=True)``), TorchScript (tracing) or a torch.export program,
checked against the PyTorch model on random inputs.

The batch can be dynamic in all three. The image size is fixed at export: every Swin model decides its window
geometry (the clamp of a window to a small map, padding to a window multiple, the shift masks) in Python from the
feature map size, so a traced graph holds the decisions of the example size, and a size that would decide otherwise
needs its own export. ``dynamic_size=True`` is refused with that explanation rather than producing a graph that is
silently wrong at other sizes.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .convert import load_model

FORMATS = ("onnx", "torchscript", "exported-program")
TOLERANCE = 1e-4  # largest |exported - eager| relative to the largest |eager| logit


class ExportCheckError(RuntimeError):
    """The exported model disagrees with PyTorch beyond the tolerance."""


@dataclass
class ExportResult:
    path: Path
    format: str
    img_size: tuple[int, int]
    checks: list[tuple[tuple[int, ...], float]] = field(default_factory=list)  # (input shape, relative difference)

    @property
    def max_difference(self) -> float:
        return max(diff for _, diff in self.checks)

    def __str__(self) -> str:
        lines = [f"wrote {self.path} ({self.format}, {self.img_size[0]}x{self.img_size[1]})"]
        lines += [f"  input {shape}: max |exported - pytorch| / max |pytorch| = {d:.2e}" for shape, d in self.checks]
        lines.append(f"largest relative difference {self.max_difference:.2e} (tolerance {TOLERANCE:g})")
        return "\n".join(lines)


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
) -> ExportResult:
    """Export a model and check it against eager PyTorch on random images (batch 1 and 4 with a dynamic batch).

    Args:
        name: registered model name (built with the checkpoint's class count).
        output: the file to write (.onnx, .pt for TorchScript, .pt2 for an exported program by convention).
        format: 'onnx', 'torchscript' or 'exported-program'.
        checkpoint: weights to load (any layout ``load_checkpoint`` reads); random initial weights without one.
        img_size: export image size, int or (H, W); the model's default size without one.
        dynamic_batch: let the batch dimension vary.
        dynamic_size: not supported (see the module docstring); raises ValueError.
        model: an already built model to export instead of building ``name`` (for tests and library use).

    Raises:
        ExportCheckError: the largest relative difference exceeds 1e-4.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if dynamic_size:
        raise ValueError(
            "a dynamic image size cannot be exported: the window geometry (window clamping, padding, shift masks) is "
            "decided in Python from each input's size, so a graph traced at one size is wrong at sizes that decide "
            "otherwise. Export one file per image size with --img-size H W (the batch can stay dynamic)"
        )
    if model is None:
        model, _, _ = load_model(name, checkpoint)
    model = model.eval()
    size = img_size or model.model_info.img_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    example = torch.randn(2 if dynamic_batch else 1, 3, *size, generator=torch.Generator().manual_seed(0))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    batch = {0: torch.export.Dim("batch", min=1, max=1024)} if dynamic_batch else {}
    with torch.no_grad():
        if format == "onnx":
            torch.onnx.export(
                model, (example,), str(output), dynamo=True, dynamic_shapes=(batch,) if batch else None,
                input_names=["images"], output_names=["logits"],
            )  # fmt: skip
            run = _onnx_runner(output)
        elif format == "torchscript":
            with warnings.catch_warnings():
                # Tracing records the window geometry of the example size as constants: expected, see above.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(model, example, check_trace=False)
            traced.save(str(output))
            loaded = torch.jit.load(str(output))
            run = loaded
        else:
            program = torch.export.export(model, (example,), dynamic_shapes=(batch,) if batch else None)
            torch.export.save(program, str(output))
            run = torch.export.load(str(output)).module()
        result = ExportResult(output, format, size)
        for b in (1, 4) if dynamic_batch else (example.shape[0],):
            x = torch.randn(b, 3, *size, generator=torch.Generator().manual_seed(b))
            result.checks.append((tuple(x.shape), _relative(run(x), model(x))))
    if result.max_difference > TOLERANCE:
        raise ExportCheckError(f"{result}\nthe exported model does not match PyTorch: do not deploy {output}")
    return result


def _onnx_runner(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])

    return run
