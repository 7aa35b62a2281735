"""The segmentation quick start, measured (docs/segmentation.md includes the output): ``swinkit train -c
upernet_digits``, ``swinkit eval`` of its best checkpoint, ``swinkit predict`` of a validation scene and ``swinkit
export`` of the checkpoint to one ONNX graph for every size, each run through the command line as a user runs it,
with their wall times.

    python benchmarks/segmentation_quickstart.py [--run runs/upernet_digits]
        [--output benchmarks/segmentation_results.md]

The page also gets the overlay ``swinkit predict`` wrote (``docs/img/digit-scene-overlay.png``), the confusion
matrix ``swinkit eval`` drew (``docs/img/digit-scenes-confusion.png``) and, beside the
measured mIoU, the background-only baseline: the mIoU of predicting background everywhere on the same validation
scenes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from recorded import recorded

from swinkit.data.build import build_segmentation_datasets
from swinkit.engine.config import load_config
from swinkit.engine.miou import area_histograms, scores

SCENE = Path("examples/digit-scene.png")
OVERLAY = Path("docs/img/digit-scene-overlay.png")
CONFUSION = Path("docs/img/digit-scenes-confusion.png")


def swinkit(*args: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "swinkit", *args], check=True, capture_output=True, text=True)
    return time.perf_counter() - start, proc.stdout


def background_only(config: str) -> float:
    cfg = load_config(config)
    (val,) = build_segmentation_datasets(cfg.data, cfg.seg, ("val",))
    total = sum(area_histograms(torch.zeros(labels.shape, dtype=torch.long), torch.from_numpy(labels).long(),
                                len(val.classes)) for labels in (val.load(i)[1] for i in range(len(val))))  # fmt: skip
    return scores(total)["mIoU"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/upernet_digits"))
    parser.add_argument("--output", default="benchmarks/segmentation_results.md")
    args = parser.parse_args()
    if args.run.exists():
        shutil.rmtree(args.run)
    train_s, _ = swinkit("train", "-c", "upernet_digits", "--output", str(args.run))
    best = args.run / "checkpoints" / "best"
    eval_s, _ = swinkit("eval", "--checkpoint", str(best))
    predictions = args.run / "predictions"
    predict_s, printed = swinkit("predict", "--checkpoint", str(best), "--output", str(predictions), str(SCENE))
    onnx = args.run / "upernet_digits.onnx"
    export_args = ("--checkpoint", str(best), "--format", "onnx", "--dynamic-size", "--dynamic-batch", "--img-size",
                   "128", "128", "--output", str(onnx))  # fmt: skip
    export_s, exported = swinkit("export", *export_args)
    OVERLAY.parent.mkdir(exist_ok=True)
    shutil.copyfile(predictions / f"{SCENE.stem}.overlay.png", OVERLAY)
    shutil.copyfile(best / "confusion.png", CONFUSION)
    records = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epochs = [r for r in records if "val_miou" in r]
    top = max(epochs, key=lambda r: r["val_miou"])
    evaluated = json.loads((best / "eval.json").read_text())
    rows = "\n".join(f"| {row['class']} | {row['IoU']:.2f} | {row['Acc']:.2f} |" for row in evaluated["per_class"])
    with recorded(args.output):
        print(f"""| measurement | value |
|---|---|
| `swinkit train -c upernet_digits` ({epochs[-1]['step']:,} iterations) | {train_s / 60:.1f} min |
| validation mIoU after each epoch | {', '.join(f"{r['val_miou']:.2f}" for r in epochs)} |
| best validation mIoU | {top['val_miou']:.2f} (iteration {top['step']:,}) |
| `swinkit eval` of `checkpoints/best` | mIoU {evaluated['mIoU']:.2f}, mAcc {evaluated['mAcc']:.2f}, aAcc \
{evaluated['aAcc']:.2f} (n={evaluated['n']}); {eval_s:.0f} s |
| background everywhere (the baseline) | mIoU {background_only('upernet_digits'):.2f} |
| `swinkit predict` of `{SCENE}` | {predict_s:.0f} s |
| `swinkit export` to ONNX (dynamic batch and size), checked in ONNX Runtime | {export_s:.0f} s |

Per class (`swinkit eval`):

| class | IoU | Acc |
|---|---|---|
{rows}

```console
$ swinkit predict --checkpoint {best} --output {predictions} {SCENE}
{printed.rstrip()}
$ swinkit export {' '.join(export_args)}
{exported.rstrip()}
```""")


if __name__ == "__main__":
    main()
