"""What a segmentation evaluation leaves beside its numbers: the per-class table and the confusion-matrix plot.

A training run writes them to its directory after each evaluation (``val_per_class.txt``, ``val_confusion.png``: the
latest evaluation, its epoch and step in the table's first line); ``swinkit eval`` writes ``confusion.png`` beside
its ``eval.json``. The plot shows each labelled class's row normalised to 1 (where its pixels went), so a small class
reads as clearly as the background; it names the classes on the axes up to ``NAMED_CLASSES`` of them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.atomic import write_atomic
from .miou import table

NAMED_CLASSES = 40


def write_confusion_plot(result: dict, path: str | Path, title: str) -> Path:
    """``result``'s confusion matrix (``evaluate_segmentation``) as a PNG at ``path``, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = torch.tensor(result["confusion"], dtype=torch.float64)
    rows = confusion / confusion.sum(1, keepdim=True).clamp(min=1)
    names = [row["class"] for row in result["per_class"]]
    side = min(4 + 0.3 * len(names), 24)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(rows.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the labelled class's pixels")
    if len(names) <= NAMED_CLASSES:
        ax.set_xticks(range(len(names)), names, rotation=90)
        ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("labelled")
    ax.set_title(f"{title}: mIoU {result['mIoU']:.2f}, {result['n']} images")
    fig.tight_layout()
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


def write_run_report(run_dir: Path, result: dict, epoch: int, step: int) -> None:
    """The latest evaluation of a run: ``val_per_class.txt`` and ``val_confusion.png`` in ``run_dir``."""
    text = f"epoch {epoch} (step {step}), {result['n']} validation images\n{table(result)}\n"
    write_atomic(run_dir / "val_per_class.txt", lambda tmp: Path(tmp).write_text(text))
    write_confusion_plot(result, run_dir / "val_confusion.png", f"validation, epoch {epoch}")
