"""``swinkit predict`` of a detector: each image's detections drawn on it, and as data.

Each image goes to the model as a 0..1 RGB tensor at its own size; the model resizes it to its test scale and
returns boxes in the image's pixels (as ``swinkit eval`` runs it). Detections scoring at least ``threshold`` are
kept. Written into the output folder, per image ``STEM``: ``STEM.detections.png``, the image (enlarged by whole
pixels when it is under 512 px) with each detection's mask tinted at half opacity, its box outlined in its class's
colour and its class and score on a label of that colour at its corner (torchvision's ``draw_segmentation_masks`` and
``draw_bounding_boxes``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..core.atomic import write_atomic
from ..engine.coco_eval import MASK_THRESHOLD
from .preprocess import IMAGE_ERRORS, read_rgb, unreadable
from .segment_images import OPACITY, palette, prediction_folder

DEFAULT_THRESHOLD = 0.5
MIN_SIDE = 512  # a smaller image is enlarged (whole pixels) to be read
LABEL_SIZE = 18


def _font() -> str:
    """A TrueType font for the labels (matplotlib's DejaVu Sans, which it ships): PIL's default bitmap font is too
    small to read."""
    from matplotlib import font_manager

    return font_manager.findfont("DejaVu Sans")


def draw(image: Image.Image, detections: dict, classes: Sequence[str]) -> Image.Image:
    """``detections`` (boxes, labels, scores, masks of one image) drawn on ``image``, enlarged by whole pixels to at
    least ``MIN_SIDE`` on its longer side."""
    w, h = image.size
    zoom = max(1, -(-MIN_SIDE // max(h, w)))
    pixels = torch.from_numpy(np.asarray(image.resize((w * zoom, h * zoom), Image.Resampling.NEAREST)).copy())
    canvas = pixels.permute(2, 0, 1)
    colours = [tuple(int(v) for v in c) for c in palette(len(classes))]
    labels = detections["labels"].tolist()
    chosen = [colours[label - 1] for label in labels]
    if "masks" in detections and len(labels):
        masks = F.interpolate(detections["masks"].float(), scale_factor=zoom, mode="nearest")[:, 0] > MASK_THRESHOLD
        canvas = draw_segmentation_masks(canvas, masks, alpha=OPACITY, colors=chosen)
    if labels:
        text = [f"{classes[label - 1]} {score:.2f}" for label, score in zip(labels, detections["scores"].tolist(),
                                                                            strict=True)]  # fmt: skip
        canvas = draw_bounding_boxes(canvas, detections["boxes"] * zoom, labels=text, colors=chosen, width=3,
                                     font=_font(), font_size=LABEL_SIZE, fill_labels=True,
                                     label_colors="black")  # fmt: skip
    return Image.fromarray(canvas.permute(1, 2, 0).numpy())


@torch.no_grad()
def detect_images(model: torch.nn.Module, images: Sequence[str | os.PathLike], output: str | os.PathLike,
                  classes: Sequence[str], threshold: float = DEFAULT_THRESHOLD) -> list[dict]:  # fmt: skip
    """Detect and draw each image into ``output``.

    Returns:
        One dict per image, in order: ``{"image", "drawing", "detections": [{"label", "class", "score", "box":
        [x0, y0, x1, y1]}, ...]}`` (by falling score), or ``{"image", "error"}`` for a file that cannot be read as
        an image (the others are still predicted).
    """
    out_dir = prediction_folder(output)
    model.eval()
    results = []
    for path in images:
        try:
            image = read_rgb(path)
        except IMAGE_ERRORS as err:
            results.append(unreadable(path, err))
            continue
        x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        output_ = model([x])[0]
        keep = output_["scores"] >= threshold
        kept = {k: v[keep] for k, v in output_.items()}
        target = out_dir / f"{Path(path).stem}.detections.png"
        picture = draw(image, kept, classes)
        write_atomic(target, lambda tmp, p=picture: p.save(tmp, format="PNG"))
        found = [{"label": int(label), "class": classes[int(label) - 1], "score": float(score),
                  "box": [round(float(v), 2) for v in box]}
                 for label, score, box in zip(kept["labels"], kept["scores"], kept["boxes"], strict=True)]  # fmt: skip
        results.append({"image": str(path), "drawing": str(target), "detections": found})
    return results
