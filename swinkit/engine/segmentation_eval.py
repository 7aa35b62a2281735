"""Semantic segmentation inference and evaluation as mmseg runs them, exact for any number of processes.

An evaluation image arrives normalised at its own size, beside its label map. For each ratio of ``seg.tta_ratios``
(none: one pass at ratio 1) the image is rescaled to fit ``seg.scale`` times the ratio keeping its aspect ratio
(mmcv's ``imrescale`` rule; without ``seg.scale``, its own size times the ratio), run whole or in sliding windows,
and its logits are resized to the label map's size; with ``seg.tta_flip`` the mirrored image too, its logits mirrored
back. One pass gives the logits' argmax; several average their softmax probabilities first (mmseg's ``aug_test``).
The area histograms of ``swinkit.engine.miou`` are summed over each process's round-robin share and then over the
processes, so every image is counted once whatever the number of processes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core import device as devices
from ..core.distributed import all_reduce_sum
from ..models.upernet import resize
from .config import SegConfig
from .miou import area_histograms, scores
from .parallel import forwards_to_run, pad_forwards
from .setup import autocast


def fit_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """The size mmcv's ``imrescale`` gives an image to fit ``scale`` (long side, short side), keeping its ratio."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def slide_logits(model: nn.Module, images: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int],
                 num_classes: int) -> torch.Tensor:  # fmt: skip
    """mmseg's ``slide_inference``: windows of ``crop`` every ``stride`` pixels (the last one flush with the
    border), each window's logits added where it lies, divided by how many windows cover each pixel."""
    b, _, h, w = images.shape
    rows = max(h - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    cols = max(w - crop[1] + stride[1] - 1, 0) // stride[1] + 1
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
    ratios = seg.tta_ratios or [1.0]
    passes = []
    for ratio in ratios:
        if seg.scale:
            size = fit_size(h, w, (int(seg.scale[0] * ratio), int(seg.scale[1] * ratio)))
        else:
            size = (int(h * ratio + 0.5), int(w * ratio + 0.5))
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
    "per_class", "n"}`` (``swinkit.engine.miou.scores``)."""
    was_training = model.training
    model.eval()
    histograms = torch.zeros(3, num_classes, dtype=torch.int64)
    images_seen = torch.zeros(1, dtype=torch.int64)
    total, forwards, example = forwards_to_run(model, len(loader), device), 0, None
    for images, labels, _ in loader:
        if len(labels) == 0:
            continue
        forwards += 1
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        example = images
        with autocast(device, precision):
            logits = predict_logits(model, images, labels.shape[-2:], seg, num_classes)
        histograms += area_histograms(logits.argmax(1), labels, num_classes).cpu()
        images_seen += len(labels)
    pad_forwards(model, total - forwards, example)
    if devices.distributed_backend(device) != "gloo":
        histograms, images_seen = histograms.to(device), images_seen.to(device)
    all_reduce_sum(histograms)
    all_reduce_sum(images_seen)
    model.train(was_training)
    return {**scores(histograms, classes), "n": int(images_seen.item())}
