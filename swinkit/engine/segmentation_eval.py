"""Semantic segmentation inference and evaluation as mmseg runs them, exact for any number of processes.

An evaluation image arrives normalised at its own size, beside its label map. For each ratio of ``seg.tta_ratios``
(none: one pass at ratio 1) the image is rescaled to fit ``seg.scale`` times the ratio keeping its aspect ratio
(mmcv's ``imrescale`` rule; without ``seg.scale``, its own size times the ratio), run whole or in sliding windows,
and its logits are resized to the label map's size; with ``seg.tta_flip`` the mirrored image too, its logits mirrored
back. One pass gives the logits' argmax; several average their softmax probabilities first (mmseg's ``aug_test``).
The confusion matrix of ``swinkit.engine.miou`` is summed over each process's round-robin share and then over the
processes, so every image is counted once whatever the number of processes; under FSDP the processes run their
forwards in step (``swinkit.engine.parallel.evaluation_batches``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core import device as devices
from ..core.distributed import all_reduce_sum
from ..data.segmentation import fit_size
from ..models.upernet import resize
from .config import SegConfig
from .miou import confusion_matrix, histograms, scores
from .parallel import evaluation_batches
from .setup import autocast


def _windows(size: tuple[int, int], crop: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of sliding windows over an image of ``size``."""
    return tuple(max(n - c + s - 1, 0) // s + 1 for n, c, s in zip(size, crop, stride, strict=True))


def _pass_sizes(height: int, width: int, seg: SegConfig) -> list[tuple[int, int]]:
    """The size the image is run at for each ratio of ``seg.tta_ratios`` (module docstring)."""
    sizes = []
    for ratio in seg.tta_ratios or [1.0]:
        if seg.scale:
            sizes.append(fit_size(height, width, (int(seg.scale[0] * ratio), int(seg.scale[1] * ratio))))
        else:
            sizes.append((int(height * ratio + 0.5), int(width * ratio + 0.5)))
    return sizes


def forwards(shape: torch.Size, seg: SegConfig) -> int:
    """How many times ``predict_logits`` calls the model on a batch of ``shape``."""
    sizes = _pass_sizes(shape[-2], shape[-1], seg)
    if seg.inference == "slide":
        crop, stride = tuple(seg.slide_crop), tuple(seg.slide_stride)
        per_flip = sum(rows * cols for rows, cols in (_windows(size, crop, stride) for size in sizes))
    else:
        per_flip = len(sizes)
    return per_flip * (2 if seg.tta_flip else 1)


def slide_logits(model: nn.Module, images: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int],
                 num_classes: int) -> torch.Tensor:  # fmt: skip
    """mmseg's ``slide_inference``: windows of ``crop`` every ``stride`` pixels (the last one flush with the
    border), each window's logits added where it lies, divided by how many windows cover each pixel."""
    b, _, h, w = images.shape
    rows, cols = _windows((h, w), crop, stride)
    logits = images.new_zeros(b, num_classes, h, w, dtype=torch.float32)
    counts = images.new_zeros(1, 1, h, w, dtype=torch.float32)
    for i in range(rows):
        for j in range(cols):
            y2, x2 = min(i * stride[0] + crop[0], h), min(j * stride[1] + crop[1], w)
            y1, x1 = max(y2 - crop[0], 0), max(x2 - crop[1], 0)
            logits[:, :, y1:y2, x1:x2] += model(images[:, :, y1:y2, x1:x2]).float()
            counts[:, :, y1:y2, x1:x2] += 1
    return logits / counts


def predict_logits(model: nn.Module, images: torch.Tensor, out_size: tuple[int, int], seg: SegConfig,
                   num_classes: int) -> torch.Tensor:  # fmt: skip
    """(B, num_classes, *out_size) scores of normalised ``images`` (module docstring): logits for one pass, the
    mean softmax over several."""
    h, w = images.shape[2:]
    passes = []
    for size in _pass_sizes(h, w, seg):
        scaled = images if size == (h, w) else resize(images, size)
        for flip in (False, True) if seg.tta_flip else (False,):
            x = scaled.flip(-1) if flip else scaled
            if seg.inference == "slide":
                logits = slide_logits(model, x, tuple(seg.slide_crop), tuple(seg.slide_stride), num_classes)
            else:
                logits = model(x).float()
            logits = resize(logits.flip(-1) if flip else logits, out_size)
            passes.append(logits)
    if len(passes) == 1:
        return passes[0]
    return torch.stack([p.softmax(dim=1) for p in passes]).mean(0)


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader, device: torch.device, precision: str, num_classes: int,
                          seg: SegConfig, classes: list[str] | None = None) -> dict:  # fmt: skip
    """mmseg's scores over every image of ``loader``'s dataset, summed over processes: ``{"mIoU", "mAcc", "aAcc",
    "per_class", "n", "confusion"}`` (``swinkit.engine.miou.scores``; ``confusion``: pixels labelled i and predicted
    j, as lists)."""
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    images_seen = torch.zeros(1, dtype=torch.int64)
    for images, labels in evaluation_batches(model, loader, device, lambda images: forwards(images.shape, seg)):
        with autocast(device, precision):
            logits = predict_logits(model, images, labels.shape[-2:], seg, num_classes)
        confusion += confusion_matrix(logits.argmax(1), labels, num_classes).cpu()
        images_seen += len(labels)
    if devices.distributed_backend(device) != "gloo":
        confusion, images_seen = confusion.to(device), images_seen.to(device)
    all_reduce_sum(confusion)
    all_reduce_sum(images_seen)
    return {**scores(histograms(confusion), classes), "n": int(images_seen.item()), "confusion": confusion.tolist()}
