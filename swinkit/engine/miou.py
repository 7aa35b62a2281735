"""Semantic segmentation scores as mmsegmentation computes them: area histograms summed over the whole set.

The evaluation sums a confusion matrix (labelled class x predicted class, in pixels); its diagonal, column sums and
row sums are mmseg's intersection, predicted and labelled area histograms.

Per class c, over every evaluated pixel whose label is not the ignore index: the intersection (predicted c and
labelled c), the predicted area, the labelled area, and the union (predicted + labelled - intersection). Summed over
all images (and processes) first, then

- IoU_c = intersection_c / union_c, mIoU = the mean over classes with a non-zero union (a class absent from both the
  labels and the predictions of the whole set is NaN and left out, as ``nanmean`` does);
- Acc_c = intersection_c / labelled_c, mAcc = their mean over labelled classes;
- aAcc = sum(intersection) / sum(labelled).

So a large image weighs more than a small one, and a class seen in few images is scored over its total area, not
per image.
"""

from __future__ import annotations

import math

import torch

from ..data.label_maps import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "area_histograms", "confusion_matrix", "histograms", "scores", "table"]


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:  # fmt: skip
    """(num_classes, num_classes) int64: pixels labelled i (row) and predicted j (column) in a batch of (…, H, W)
    class maps, over the pixels whose label is not ``ignore_index``. Labels outside ``[0, num_classes)`` other than
    the ignore index are refused (the data pipeline checks them; this guards the sum)."""
    keep = labels != ignore_index
    predicted, labelled = predictions[keep].long(), labels[keep].long()
    if labelled.numel() and (labelled.min() < 0 or labelled.max() >= num_classes):
        raise ValueError(f"labels outside 0..{num_classes - 1} (ignore index {ignore_index})")
    counts = torch.bincount(labelled * num_classes + predicted, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def histograms(confusion: torch.Tensor) -> torch.Tensor:
    """(3, num_classes): intersection, predicted area and labelled area, from a ``confusion_matrix``."""
    return torch.stack([confusion.diagonal(), confusion.sum(0), confusion.sum(1)])


def area_histograms(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    ignore_index: int = IGNORE_INDEX) -> torch.Tensor:  # fmt: skip
    """(3, num_classes) int64: intersection, predicted area and labelled area of a batch (see ``confusion_matrix``)."""
    return histograms(confusion_matrix(predictions, labels, num_classes, ignore_index))


def scores(histograms: torch.Tensor, classes: list[str] | None = None) -> dict:
    """``{"mIoU", "mAcc", "aAcc"}`` in percent and ``per_class``: ``[{"class", "IoU", "Acc"}]`` (NaN where the class
    has no union or no labelled pixel), from the summed ``area_histograms``."""
    intersection, predicted, labelled = (h.double() for h in histograms.cpu())
    union = predicted + labelled - intersection
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.nan)
    acc = torch.where(labelled > 0, intersection / labelled.clamp(min=1), torch.nan)
    names = classes or [str(i) for i in range(len(iou))]
    total = labelled.sum().item()
    return {
        "mIoU": 100.0 * _nanmean(iou),
        "mAcc": 100.0 * _nanmean(acc),
        "aAcc": 100.0 * intersection.sum().item() / total if total else math.nan,
        "per_class": [{"class": n, "IoU": 100.0 * i, "Acc": 100.0 * a}
                      for n, i, a in zip(names, iou.tolist(), acc.tolist(), strict=True)],  # fmt: skip
    }


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return kept.mean().item() if kept.numel() else math.nan


def table(result: dict) -> str:
    """The per-class table and the summary line, as ``swinkit eval`` prints them."""
    width = max(len("class"), *(len(row["class"]) for row in result["per_class"]))
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}"]
    for row in result["per_class"]:
        lines.append(f"{row['class']:<{width}}  {_percent(row['IoU'])}  {_percent(row['Acc'])}")
    lines.append(f"mIoU {result['mIoU']:.2f}  mAcc {result['mAcc']:.2f}  aAcc {result['aAcc']:.2f}")
    return "\n".join(lines)


def _percent(value: float) -> str:
    return "   nan" if math.isnan(value) else f"{value:6.2f}"
