"""``swinkit predict`` of a segmentation model: a label map and a colour overlay per image.

Each image is normalised as the run trained it (its config's ``data.mean``/``data.std``, else the model's) and
predicted as ``swinkit eval`` predicts (``seg.*`` of the run: rescale, whole or sliding windows, test-time ratios and
flip), at the image's own size. Written into the output folder, per image ``STEM``:

- ``STEM.labels.png``: the class index of every pixel (8-bit, a palette image whose colours are the overlay's);
- ``STEM.overlay.png``: the image with each pixel tinted by its class colour at half opacity (mmseg's
  ``show_result``), enlarged by whole pixels when it is under 256 px, and a legend beside it naming the classes with
  the most pixels and their share of the image.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..core.atomic import check_output, write_atomic
from ..engine.config import SegConfig
from ..engine.segmentation_eval import predict_logits
from .preprocess import IMAGE_ERRORS, read_rgb, unreadable

OPACITY = 0.5
LEGEND_WIDTH = 160
LEGEND_ROWS = 12  # the classes with the most pixels; the rest are in the label map
SWATCH = 12
MIN_SIDE = 256  # a smaller image is enlarged (whole pixels) to be read
# Kelly's colours of maximum contrast (without white and black) for the first classes, then hues by the golden ratio.
KELLY = (
    "f3c300", "875692", "f38400", "a1caf1", "be0032", "c2b280", "848482", "008856", "e68fac", "0067a5",
    "f99379", "604e97", "f6a600", "b3446c", "dcd300", "882d17", "8db600", "654522", "e25822", "2b3d26",
)  # fmt: skip


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours, the same for every run: Kelly's 20, then hues spaced by the golden ratio."""
    colours = [tuple(int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)) for h in KELLY[:num_classes]]
    colours += [colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95 if i % 2 else 0.7)
                for i in range(len(colours), num_classes)]  # fmt: skip
    return np.round(np.array(colours).reshape(-1, 3) * 255).astype(np.uint8)


def overlay(image: Image.Image, labels: np.ndarray, classes: Sequence[str]) -> Image.Image:
    """The image tinted by class at ``OPACITY`` (enlarged to ``MIN_SIDE`` when smaller), with a legend of the
    classes with the most pixels."""
    colours = palette(len(classes))
    pixels = np.asarray(image, dtype=np.float32)
    tinted = Image.fromarray(np.round(pixels * (1 - OPACITY) + colours[labels] * OPACITY).astype(np.uint8))
    h, w = labels.shape
    zoom = max(1, MIN_SIDE // max(h, w))
    tinted = tinted.resize((w * zoom, h * zoom), Image.Resampling.NEAREST)
    counts = np.bincount(labels.ravel(), minlength=len(classes))
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c]][:LEGEND_ROWS]
    h, w = h * zoom, w * zoom
    canvas = Image.new("RGB", (w + LEGEND_WIDTH, max(h, SWATCH * 2 * len(present) + SWATCH)), "white")
    canvas.paste(tinted, (0, 0))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for row, c in enumerate(present):
        top = SWATCH // 2 + row * 2 * SWATCH
        draw.rectangle([w + 6, top, w + 6 + SWATCH, top + SWATCH], fill=tuple(int(v) for v in colours[c]))
        share = 100 * counts[c] / labels.size
        draw.text((w + 12 + SWATCH, top), f"{classes[c]}  {share:.1f}%", fill="black", font=font)
    return canvas


def label_image(labels: np.ndarray, num_classes: int) -> Image.Image:
    out = Image.fromarray(labels.astype(np.uint8), mode="P")
    out.putpalette(palette(num_classes).ravel().tolist())
    return out


def prediction_folder(output: str | os.PathLike) -> Path:
    """``output`` as a folder the predictions' PNG files can be written into (made when it does not exist)."""
    out_dir = Path(output)
    if not out_dir.is_dir():
        check_output(out_dir.with_suffix(".png"), (".png",), "the predictions folder")  # its parent: exists, writable
        out_dir.mkdir()
    check_output(out_dir / "prediction.png", (".png",), "the predictions")
    return out_dir


@torch.no_grad()
def segment_images(model: torch.nn.Module, images: Sequence[str | os.PathLike], output: str | os.PathLike,
                   classes: Sequence[str], mean: Sequence[float], std: Sequence[float],
                   seg: SegConfig) -> list[dict]:  # fmt: skip
    """Predict and write each image's label map and overlay into ``output``.

    Returns:
        One dict per image, in order: ``{"image", "labels", "overlay", "classes": {name: share}}``, or
        ``{"image", "error"}`` for a file that cannot be read as an image (the others are still predicted).
    """
    out_dir = prediction_folder(output)
    model.eval()
    mean_t = torch.tensor(mean).view(1, 3, 1, 1) * 255
    std_t = torch.tensor(std).view(1, 3, 1, 1) * 255
    results = []
    for path in images:
        try:
            image = read_rgb(path)
        except IMAGE_ERRORS as err:
            results.append(unreadable(path, err))
            continue
        x = (torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)[None] - mean_t) / std_t
        labels = predict_logits(model, x, x.shape[2:], seg, len(classes)).argmax(1)[0].numpy()
        stem = Path(path).stem
        written = {}
        pictures = (("labels", label_image(labels, len(classes))), ("overlay", overlay(image, labels, classes)))
        for kind, picture in pictures:
            target = out_dir / f"{stem}.{kind}.png"
            write_atomic(target, lambda tmp, p=picture: p.save(tmp, format="PNG"))
            written[kind] = str(target)
        counts = np.bincount(labels.ravel(), minlength=len(classes))
        shares = {classes[c]: float(counts[c] / labels.size) for c in np.argsort(-counts) if counts[c]}
        results.append({"image": str(path), **written, "classes": shares})
    return results
