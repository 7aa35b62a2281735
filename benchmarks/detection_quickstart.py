"""The detection quick start, measured (docs/detection.md includes the output): ``swinkit train -c maskrcnn_digits``,
``swinkit eval`` of its best checkpoint in one process and under 2-process torchrun, ``swinkit predict`` of a
validation scene and ``swinkit export`` to ONNX, each run through the command line as a user runs it, with their
wall times.

    python benchmarks/detection_quickstart.py [--run runs/maskrcnn_digits] [--skip-train]
        [--output benchmarks/detection_results.md]

``--skip-train`` measures everything after training again on the run already there. The page also gets the drawing
``swinkit predict`` wrote (``docs/img/digit-scene-detections.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from recorded import recorded

SCENE = Path("examples/digit-scene.png")
DRAWING = Path("docs/img/digit-scene-detections.png")


def timed(*command: str) -> tuple[float, str]:
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if command[0] == "torchrun" else None
    proc = subprocess.run(list(command), check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, proc.stdout


def swinkit(*args: str) -> tuple[float, str]:
    return timed(sys.executable, "-m", "swinkit", *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/maskrcnn_digits"))
    parser.add_argument("--output", default="benchmarks/detection_results.md")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    train_s = None
    if not args.skip_train:
        if args.run.exists():
            shutil.rmtree(args.run)
        train_s, _ = swinkit("train", "-c", "maskrcnn_digits", "--output", str(args.run))
    best = args.run / "checkpoints" / "best"
    eval_s, _ = swinkit("eval", "--checkpoint", str(best))
    single = json.loads((best / "eval.json").read_text())
    two_dir = args.run / "eval-2-processes"
    two_dir.mkdir(exist_ok=True)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    two_s, _ = timed(torchrun, "--standalone", "--nproc_per_node", "2", "-m", "swinkit", "eval", "--checkpoint",
                     str(best), "--output", str(two_dir))  # fmt: skip
    two = json.loads((two_dir / "eval.json").read_text())
    predictions = args.run / "predictions"
    predict_s, printed = swinkit("predict", "--checkpoint", str(best), "--output", str(predictions), str(SCENE))
    onnx = args.run / "maskrcnn_digits.onnx"
    export_args = ("--checkpoint", str(best), "--format", "onnx", "--img-size", "64", "64", "--output", str(onnx))
    export_s, exported = swinkit("export", *export_args)
    DRAWING.parent.mkdir(exist_ok=True)
    shutil.copyfile(predictions / f"{SCENE.stem}.detections.png", DRAWING)
    records = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epochs = [r for r in records if "val_box_ap" in r]
    top = max(epochs, key=lambda r: r["val_box_ap"])
    box, mask = single["bbox"], single["segm"]
    same = all(two[k]["stats"] == single[k]["stats"] for k in ("bbox", "segm")) and two["n"] == single["n"]
    rows = "\n".join(f"| {b['class']} | {b['AP']:.1f} | {m['AP']:.1f} |"
                     for b, m in zip(box["per_class"], mask["per_class"], strict=True))  # fmt: skip
    trained = f"{train_s / 60:.1f} min" if train_s is not None else "(not measured in this invocation)"
    with recorded(args.output):
        print(f"""| measurement | value |
|---|---|
| `swinkit train -c maskrcnn_digits` ({epochs[-1]['epoch']} epochs, {epochs[-1]['step']:,} steps) | {trained} |
| validation box AP after each epoch | {', '.join(f"{r['val_box_ap']:.1f}" for r in epochs)} |
| validation mask AP after each epoch | {', '.join(f"{r['val_mask_ap']:.1f}" for r in epochs)} |
| best validation box / mask AP | {top['val_box_ap']:.1f} / {top['val_mask_ap']:.1f} (epoch {top['epoch']}) |
| `swinkit eval` of `checkpoints/best` | box AP {box['stats']['AP']:.1f} (AP50 {box['stats']['AP50']:.1f}, AP75 \
{box['stats']['AP75']:.1f}), mask AP {mask['stats']['AP']:.1f} (n={single['n']}); {eval_s:.0f} s |
| the same under 2-process `torchrun` | {"identical scores" if same else "DIFFERENT scores"}; {two_s:.0f} s |
| `swinkit predict` of `{SCENE}` | {predict_s:.0f} s |
| `swinkit export` to ONNX (64x64), checked in ONNX Runtime | {export_s:.0f} s |

Per class (`swinkit eval`, AP at IoU 0.5:0.95):

| class | box AP | mask AP |
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
