"""The SSL page's measurements on the built-in digits (docs/ssl.md includes the output): MoBY pre-training with the
frozen encoder's kNN top-1 per epoch, linear probes of a random and of the MoBY encoder, and SimMIM's masked-pixel
loss per epoch, each run through the ``swinkit`` command line as a user runs it.

    python benchmarks/ssl_digits.py [--output benchmarks/ssl_results.md]

The runs go into a temporary directory; the table gives each command, its result read from the run's
``metrics.jsonl`` and the CPU seconds it took (user + system of the child process).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from recorded import recorded


def swinkit(*args: str) -> float:
    """Runs one ``swinkit`` command to completion and returns the CPU seconds its process tree used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "swinkit", *args], check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def accuracy(run: Path, key: str) -> tuple[dict, dict]:
    """The last and the best epoch record carrying ``key``."""
    epochs = [r for r in records(run) if key in r]
    return epochs[-1], max(epochs, key=lambda r: r[key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="benchmarks/ssl_results.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        moby_cmd = ("pretrain", "-c", "moby_quickstart")
        moby_cpu = swinkit(*moby_cmd, "--output", str(runs / "moby"))
        curve = [r for r in records(runs / "moby") if "knn_top1" in r]
        moby_last, moby_best = accuracy(runs / "moby", "knn_top1")
        probe_cmd = ("train", "-c", "moby_linear_eval_quickstart")
        random_cpu = swinkit(*probe_cmd, "--output", str(runs / "random"))
        random_last, random_best = accuracy(runs / "random", "val_top1")
        encoder = "model.pretrained=runs/moby_quickstart/checkpoints/last/model.safetensors"
        moby_probe_cpu = swinkit(*probe_cmd, "--output", str(runs / "probe"),
                                 encoder.replace("runs/moby_quickstart", str(runs / "moby")))  # fmt: skip
        probe_last, probe_best = accuracy(runs / "probe", "val_top1")
        simmim_cmd = ("pretrain", "-c", "simmim_quickstart")
        simmim_cpu = swinkit(*simmim_cmd, "--output", str(runs / "simmim"))
        simmim_losses = [r["train_loss"] for r in records(runs / "simmim") if "train_loss" in r]
    start, end = curve[0]["knn_top1"], moby_last["knn_top1"]
    closed = 100.0 * (end - start) / (100.0 - start)
    steps = moby_last["step"]
    table = f"""CPU seconds are the user + system time of each command.

| run | command | result | CPU s |
|---|---|---|---|
| MoBY, {moby_last['epoch']} epochs ({steps:,} steps) | `swinkit {' '.join(moby_cmd)}` | kNN top-1 of the frozen \
encoder **{start:.2f}% at initialisation → {end:.2f}%** after the last epoch (best {moby_best['knn_top1']:.2f}%, \
epoch {moby_best['epoch']}): {closed:.0f}% of the gap to 100% closed | {moby_cpu:.0f} |
| linear probe, random encoder | `swinkit {' '.join(probe_cmd)}` | val top-1 **{random_last['val_top1']:.2f}%** \
(best {random_best['val_top1']:.2f}%) | {random_cpu:.0f} |
| linear probe, MoBY encoder | `swinkit {' '.join(probe_cmd)} {encoder}` | val top-1 \
**{probe_last['val_top1']:.2f}%** (best {probe_best['val_top1']:.2f}%) | {moby_probe_cpu:.0f} |
| SimMIM, {len(simmim_losses)} epochs | `swinkit {' '.join(simmim_cmd)}` | L1 loss on masked pixels per epoch: \
{', '.join(f'{loss:.3f}' for loss in simmim_losses)} | {simmim_cpu:.0f} |

MoBY kNN top-1 per epoch (epoch 0 is the encoder at initialisation): \
{', '.join(f'{r["knn_top1"]:.1f}' for r in curve)}.
"""
    with recorded(args.output):
        print(table, end="")


if __name__ == "__main__":
    main()
