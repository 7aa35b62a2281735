"""``swinkit plot RUN_DIR``: loss, accuracy and learning rate against epoch, rendered from ``metrics.jsonl``."""

from __future__ import annotations

import math
from pathlib import Path

from .run_dir import read_metrics


def plot_metrics(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write ``curves.png`` (or ``output``) with three panels: train/val loss, val top-1/top-5, learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    out = Path(output) if output else Path(run_dir) / "curves.png"

    def series(key: str) -> tuple[list, list]:  # finite numbers only: a hand-edited or foreign line may hold anything
        pts = [(r["epoch"], r[key]) for r in records
               if type(r.get(key)) in (int, float) and math.isfinite(r[key])]  # fmt: skip
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, label in [("train_loss", "train"), ("val_loss", "val"), ("ema_val_loss", "val (EMA)")]:
        x, y = series(key)
        if x:
            axes[0].plot(x, y, marker=".", label=label)
    axes[0].set_title("loss")
    accuracy = [("val_top1", "top-1"), ("val_top5", "top-5"), ("ema_val_top1", "top-1 (EMA)"),
                ("knn_top1", "kNN top-1"), ("val_miou", "mIoU"), ("val_macc", "mAcc"),
                ("ema_val_miou", "mIoU (EMA)")]  # fmt: skip
    for key, label in accuracy:
        x, y = series(key)
        if x:
            axes[1].plot(x, y, marker=".", label=label)
    axes[1].set_title("validation accuracy / mIoU (%)")
    x, y = series("lr")
    axes[2].plot(x, y, marker=".")
    axes[2].set_title("learning rate (end of epoch)")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(Path(run_dir).resolve().name)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
