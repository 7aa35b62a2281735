"""The quick start's numbers, written by the quick start itself (``make quickstart``) into ``docs/quickstart.md``.

``python benchmarks/quickstart_report.py RUN_DIR --seconds N --output docs/quickstart.md`` reads what the run left
(``metrics.jsonl``, ``checkpoints/best/eval.json``, ``predict.txt``: the output of ``swinkit predict``) and writes
the page: the machine, the time the three commands took, the best and last validation top-1, what ``swinkit eval``
measured on the best checkpoint, and the prediction. Nothing on the page is typed by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch

from swinkit.core.atomic import write_atomic
from swinkit.core.machine import describe


def report(run: Path, seconds: int) -> str:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epochs = [r for r in records if "val_top1" in r and r["epoch"] > 0]
    best = max(epochs, key=lambda r: r["val_top1"])
    last = epochs[-1]
    evaluated = json.loads((run / "checkpoints" / "best" / "eval.json").read_text())
    predicted = (run / "predict.txt").read_text().rstrip("\n")
    return f"""# Quick start results

Written by `make quickstart` (`benchmarks/quickstart_report.py`) on {datetime.date.today().isoformat()}, on
{describe()}, torch {torch.__version__}.

`swinkit train` (30 epochs of a small Swin V2 on the built-in digits), `swinkit eval` and `swinkit predict` took
{seconds // 60} min {seconds % 60} s together (the one-off `pip install` set-up not counted).

| measurement | value |
|---|---|
| best validation top-1 | {best["val_top1"]:.2f}% (epoch {best["epoch"]}) |
| validation top-1 after the last epoch ({last["epoch"]}) | {last["val_top1"]:.2f}% |
| `swinkit eval` of `checkpoints/best` | {evaluated["top1"]:.2f}% top-1, {evaluated["top5"]:.2f}% top-5 \
(n={evaluated["n"]}) |

```console
$ swinkit predict --checkpoint {run}/checkpoints/best examples/digit-7.png
{predicted}
```
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--seconds", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    text = report(args.run, args.seconds)
    write_atomic(args.output, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
