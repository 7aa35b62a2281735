"""What each inference precision does to a trained checkpoint: accuracy, top-1 agreement with fp32, and speed.

    python benchmarks/precision_table.py --checkpoint RUN_DIR/checkpoints/best [--compile] [--calibrate DIR]
        [--output benchmarks/precision_results.md] [key=value ...]

The validation set of the run's own config (or ``-c CONFIG``) is read once into memory; then fp32, bf16 and int8
(and with ``--compile`` compiled fp32 and bf16) ``InferenceModel``s of the checkpoint classify every image, and so
do the two int8 ONNX Runtime graphs ``swinkit export --format onnx --quantize int8`` writes (the deployable
artifacts): dynamic, and static calibrated on ``--calibrate DIR`` (by default on 256 images of the run's own
training split, written to a temporary folder). Each row gives top-1, the share of images whose top-1 class equals
fp32's, and img/s over the set after a warm-up batch (so a compiled model's first-call compilation is left out), with
its ratio to fp32 eager measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import random
import tempfile
import time
from pathlib import Path

import torch
from recorded import recorded

from swinkit.core.distributed import DistEnv
from swinkit.data import build_datasets
from swinkit.deploy.eval_checkpoint import checkpoint_and_loader
from swinkit.deploy.export import export, onnx_runner
from swinkit.deploy.inference import InferenceModel
from swinkit.deploy.onnx_int8 import CALIBRATION_IMAGES
from swinkit.engine.checkpoint import stored_config
from swinkit.engine.config import apply_overrides, load_config
from swinkit.runtime import reuse_freed_memory

VARIANTS = [("fp32", False), ("bf16", False), ("int8", False)]
COMPILED = [("fp32", True), ("bf16", True)]


def onnx_int8(model: torch.nn.Module, checkpoint: str, calibrate: str | Path | None = None):
    """The ONNX Runtime function of ``swinkit export --format onnx --quantize int8 [--calibrate DIR]``'s graph of
    ``model`` (``checkpoint``'s: its evaluation transform preprocesses the calibration images)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model-int8.onnx"
        export(None, path, model=copy.deepcopy(model).eval(), checkpoint=checkpoint, dynamic_batch=True,
               quantize="int8", calibrate=calibrate)  # fmt: skip
        return onnx_runner(path)  # the session has read the file


def write_training_images(cfg, directory: Path) -> Path:
    """A seeded random choice of ``CALIBRATION_IMAGES`` images of the run's training split, written to
    ``directory`` as PNG files: a folder for ``--calibrate``."""
    train, _ = build_datasets(cfg.data)
    for i in random.Random(0).sample(range(len(train)), min(CALIBRATION_IMAGES, len(train))):
        train.load(i).save(directory / f"{i}.png")
    return directory


def classify(runner, batches: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Top-1 classes of every batch and img/s after the first batch (the warm-up)."""
    predictions = [runner(batches[0]).argmax(1)]
    start = time.perf_counter()
    predictions += [runner(images).argmax(1) for images in batches[1:]]
    seconds = time.perf_counter() - start
    return torch.cat(predictions), sum(len(b) for b in batches[1:]) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("-c", "--config", help="default: the checkpoint's stored config")
    parser.add_argument("--compile", action="store_true", help="add compiled fp32 and bf16 rows")
    parser.add_argument("--calibrate", metavar="DIR", help="the static int8 graph's calibration images (default: "
                        f"{CALIBRATION_IMAGES} of the run's training split)")  # fmt: skip
    parser.add_argument("--output", default="benchmarks/precision_results.md")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    reuse_freed_memory()
    if args.config:
        cfg = load_config(args.config, args.overrides)
    elif (stored := stored_config(args.checkpoint)) is not None:
        cfg = apply_overrides(stored, args.overrides)
    else:
        parser.error(f"{args.checkpoint} stores no config: name the run's recipe with -c CONFIG")
    cpu = torch.device("cpu")
    model, loader, _, _ = checkpoint_and_loader(cfg, DistEnv(), cpu, args.checkpoint)
    batches, targets = [], []
    for images, labels, _ in loader:
        batches.append(images)
        targets.append(labels)
    targets = torch.cat(targets)
    reference = fp32_rate = None
    runners = [(precision + (", compiled" if compiled else ""),
                lambda p=precision, c=compiled: InferenceModel(copy.deepcopy(model), p, compile=c))
               for precision, compiled in VARIANTS + (COMPILED if args.compile else [])]  # fmt: skip
    runners.append(("int8 dynamic, ONNX Runtime (`swinkit export --quantize int8`)",
                    lambda: onnx_int8(model, args.checkpoint)))  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        calibrate = args.calibrate or write_training_images(cfg, Path(scratch))
        runners.append(("int8 static, ONNX Runtime (`swinkit export --quantize int8 --calibrate DIR`)",
                        lambda: onnx_int8(model, args.checkpoint, calibrate)))  # fmt: skip
        for label, build in runners:
            predictions, rate = classify(build(), batches)
            if reference is None:
                reference, fp32_rate = predictions, rate
            top1 = 100.0 * (predictions == targets).float().mean().item()
            agreement = 100.0 * (predictions == reference).float().mean().item()
            rows.append(f"| {label} | {top1:.2f} | {agreement:.2f}% | {rate:.0f} | {rate / fp32_rate:.2f} |")
    with recorded(args.output):  # the table alone: the ONNX exporter prints its progress to stdout
        print(f"{len(targets)} validation images in batches of {len(batches[0])}:\n")
        print("| precision | top-1 % | top-1 agreement with fp32 | img/s | x fp32 eager |\n|---|---|---|---|---|")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
