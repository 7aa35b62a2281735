"""int8 ONNX graphs through ONNX Runtime's quantization: dynamic, or static with a calibration set from a folder.

``swinkit export --format onnx --quantize int8`` quantizes the checked fp32 graph in one of two ways:

- **dynamic** (no calibration set): weights int8 per tensor, activations quantized per batch over their own range at
  run time (``DynamicQuantizeLinear`` + ``MatMulInteger``).
- **static** (``--calibrate DIR``): ONNX Runtime's QDQ format, weights int8 per output channel, every activation
  uint8 with one fixed range, the min-max range it took over the calibration images (``CalibrationMethod.MinMax``).
  This is the graph runtimes that need fixed scales take (TensorRT, OpenVINO, the NPU execution providers); its
  accuracy is only as good as the calibration set is representative.

Measured on an AMD EPYC (AVX512-VNNI, 2 cores): the two ran at the same speed on ONNX Runtime's CPU provider
(``benchmarks/int8_routes.py``, ``swinv2_tiny_window8_256`` at batch 8: 1.60x and 1.58x swinkit's fp32 eager
forward), and on the digits quick start (``benchmarks/precision_table.py``) dynamic agreed with fp32 on 100% of the
validation images and static on 99.2-99.7% (top-1 0.3-0.8 points below fp32, over four random choices of 256
calibration images). So dynamic stays the default and static is there for the runtimes that need it.

Static min-max was chosen over ONNX Runtime's histogram methods (percentile, entropy), which hold every activation
tensor of every calibration batch in memory until the end; averaging the per-batch ranges
(``CalibMovingAverage``) changed the digits accuracy in one of four calibration sets. Activations are uint8 with
int8 weights (U8S8) because that is the format x86's VNNI instructions multiply: int8 activations ran 1.8x slower
in one run. On an x86 CPU without VNNI, ONNX Runtime's U8S8 kernels can saturate; its documentation's remedy is
``reduce_range``.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from ..core.errors import DataError
from ..data.datasets import IMG_EXTENSIONS
from .preprocess import IMAGE_ERRORS, read_rgb

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 256  # images a static quantization calibrates on by default
CALIBRATION_BATCH = 16
CALIBRATION_SEED = 0


def calibration_images(
    directory: str | os.PathLike, transform: Callable[[Image.Image], torch.Tensor], count: int = CALIBRATION_IMAGES
) -> torch.Tensor:
    """``count`` images of ``directory`` (every image file under it, at any depth) through ``transform``, stacked.

    With more images than ``count``, a seeded random choice of them (an ImageNet-layout training folder's first
    images in sorted order would all be one class). A file that is not a readable image is skipped with a warning.

    Raises:
        DataError: ``directory`` is not a directory, holds no image files, or none of them can be read.
    """
    if count < 1:
        raise DataError(f"--calibrate-images {count}: calibrate on at least one image")
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"--calibrate {root}: not a directory; give a folder of images like those the model will see")
    files = sorted(
        os.path.join(dirpath, name)
        for dirpath, _, names in os.walk(root)
        for name in names
        if name.lower().endswith(IMG_EXTENSIONS)
    )
    if not files:
        raise DataError(f"--calibrate {root}: no image files ({', '.join(IMG_EXTENSIONS)}) in it or below it")
    random.Random(CALIBRATION_SEED).shuffle(files)
    images, unreadable = [], []
    for path in files:
        if len(images) == count:
            break
        try:
            images.append(transform(read_rgb(path)))
        except IMAGE_ERRORS as err:
            unreadable.append(f"{path} ({type(err).__name__})")
    if unreadable:
        log.warning("calibration skipped %d unreadable file(s): %s", len(unreadable), ", ".join(unreadable[:5]))
    if not images:
        raise DataError(f"--calibrate {root}: none of its {len(files)} image files could be read")
    log.info("calibrating on %d image(s) of %s", len(images), root)
    return torch.stack(images)


class _Batches:
    """An ONNX Runtime ``CalibrationDataReader``: the calibration images in batches as the graph's input."""

    def __init__(self, images: torch.Tensor) -> None:
        self._batches = iter(images.split(CALIBRATION_BATCH))

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {"images": batch.numpy()}


def quantize_onnx(fp32: Path, output: Path, calibration: torch.Tensor | None) -> None:
    """Write the int8 graph of the fp32 graph ``fp32`` to ``output``: dynamic without ``calibration``, static (QDQ,
    min-max ranges over the ``calibration`` images) with it."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    # ONNX Runtime logs "consider pre-processing" at WARNING: its pre-processing's shape inference fails on Swin's
    # graph, and quantization does not need it.
    logging.disable(logging.WARNING)
    try:
        if calibration is None:
            quantize_dynamic(str(fp32), str(output), weight_type=QuantType.QInt8)
        else:
            quantize_static(
                str(fp32), str(output), _Batches(calibration), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,
            )  # fmt: skip
    finally:
        logging.disable(logging.NOTSET)
