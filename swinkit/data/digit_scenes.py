"""Digit scenes: the built-in dense-task dataset, generated from the digits that ship in scikit-learn (no download).

Each scene is a ``size`` x ``size`` RGB image: a textured background (a smooth two-colour gradient, stripes at a random
angle and pixel noise) with two to ``max_digits`` handwritten digits pasted at random scales (``size / 3`` to
``size * 5 / 8``) and positions (where they do not overlap, if a free place is found in 20 draws), each in its own
colour. Scenes are made from the digits of the classification split
(``Digits``: 1,437 training, 360 validation), so no validation digit is ever seen in training, and scene ``i`` of a
split is generated from a generator seeded with (split, i): the set is fixed without being stored.

Labels: a per-pixel map, 0 for background and ``1 + digit`` (1-10) where a digit's ink covers the pixel (its upscaled
intensity at least a third of its peak), later digits over earlier ones; and per digit an instance (class ``1 + digit``,
its visible mask and the box around it) for detection. A digit hidden entirely by later ones is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .datasets import Digits

CLASSES = ["background", *(str(d) for d in range(10))]
SPLIT_SEEDS = {"train": 0, "val": 1}
PLACE_TRIES = 20
INK_THRESHOLD = 1 / 3  # of a digit's peak intensity: the pixels labelled as the digit


@dataclass(frozen=True)
class Instance:
    """One visible digit: its class (1-10), its mask (H, W) bool and its box (x0, y0, x1, y1), pixel edges."""

    label: int
    mask: np.ndarray
    box: tuple[int, int, int, int]


class DigitScenes:
    """``len`` scenes of a split (``'train'`` or ``'val'``); ``scene(i)`` gives the image, the label map and the
    instances, ``load(i)`` the first two (a segmentation dataset, ``swinkit.data.segmentation``)."""

    def __init__(self, split: str, length: int | None = None, size: int = 64, max_digits: int = 3) -> None:
        if split not in SPLIT_SEEDS:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if size < 32:
            raise ValueError(f"digit scenes need size >= 32 px (digits are pasted at size/3 and up), got {size}")
        self.split, self.size, self.max_digits = split, size, max_digits
        self.digits = Digits(split)
        self.length = length if length is not None else (1000 if split == "train" else 200)
        self.classes = list(CLASSES)

    def __len__(self) -> int:
        return self.length

    def name(self, index: int) -> str:
        return f"digit-scenes/{self.split}[{index}]"

    def scene(self, index: int) -> tuple[Image.Image, np.ndarray, list[Instance]]:
        if not 0 <= index < self.length:
            raise IndexError(f"{self.name(index)}: the split has {self.length} scenes")
        rng = np.random.default_rng([SPLIT_SEEDS[self.split], index])
        size = self.size
        image = _background(rng, size)
        labels = np.zeros((size, size), dtype=np.uint8)
        owner = np.full((size, size), -1, dtype=np.int64)
        placed, boxes = [], []
        for k in range(int(rng.integers(2, self.max_digits + 1))):
            which = int(rng.integers(len(self.digits)))
            side = int(rng.integers(size * 5 // 16, size // 2 + 1))
            top, left = _free_place(rng, size, side, boxes)
            boxes.append((top, left, side))
            ink = _upscale(self.digits.images[which], side)
            colour = rng.uniform(0.0, 1.0, size=3)
            colour[int(rng.integers(3))] = 1.0 - 0.2 * rng.random()  # one bright channel: visible on any texture
            region = (slice(top, top + side), slice(left, left + side))
            alpha = ink[..., None]
            image[region] = image[region] * (1.0 - alpha) + colour * alpha
            covered = ink >= INK_THRESHOLD * ink.max()
            labels[region][covered] = 1 + self.digits.target(which)
            owner[region][covered] = k
            placed.append(1 + self.digits.target(which))
        instances = []
        for k, label in enumerate(placed):
            mask = owner == k
            if mask.any():
                rows, cols = np.nonzero(mask)
                box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
                instances.append(Instance(label, mask, box))
        pixels = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, mode="RGB"), labels, instances

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        image, labels, _ = self.scene(index)
        return image, labels


def _free_place(rng: np.random.Generator, size: int, side: int, boxes: list[tuple[int, int, int]]) -> tuple[int, int]:
    """A random (top, left) for a ``side`` square whose box overlaps no earlier digit's, in up to ``PLACE_TRIES``
    draws (the last draw when none is free: digits then overlap, the later one in front)."""
    for _ in range(PLACE_TRIES):
        top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        if all(top + side <= t or t + s <= top or left + side <= lf or lf + s <= left for t, lf, s in boxes):
            break
    return top, left


def _upscale(digit: np.ndarray, side: int) -> np.ndarray:
    """An 8x8 digit (0-255) bilinearly upscaled to side x side, in 0..1."""
    x = torch.from_numpy(digit.astype(np.float32) / 255.0)[None, None]
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) in 0..1: a dim gradient between two colours, stripes at a random angle, pixel noise."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) / size
    angle = rng.uniform(0, np.pi)
    ramp = (np.cos(angle) * xs + np.sin(angle) * ys)[..., None]
    ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-9)
    low, high = rng.uniform(0.0, 0.45, size=(2, 3))
    image = low * (1 - ramp) + high * ramp
    period = rng.uniform(4.0, 12.0)
    turn = rng.uniform(0, np.pi)
    stripes = 0.08 * np.sin(2 * np.pi * (np.cos(turn) * xs + np.sin(turn) * ys) * size / period)
    image = image + stripes[..., None] + rng.normal(0.0, 0.03, size=(size, size, 3))
    return np.clip(image, 0.0, 1.0)


class DigitSceneInstances:
    """The digit scenes as a detection dataset (``swinkit.data.coco``): each visible digit an instance of its class
    ('0'-'9', labels 1-10, COCO category ids 1-10) with its mask and box; ``record(i)`` gives it in COCO's JSON form
    (masks as compressed RLE, ``area`` the mask's pixels)."""

    def __init__(self, split: str, length: int | None = None, size: int = 64, max_digits: int = 3) -> None:
        self.scenes = DigitScenes(split, length, size, max_digits)
        self.classes = CLASSES[1:]
        self.category_ids = list(range(1, len(self.classes) + 1))
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.scenes)

    def name(self, index: int) -> str:
        return self.scenes.name(index)

    def load(self, index: int) -> tuple[Image.Image, dict]:
        """The scene and its target, with ``record``: its ``record(index)``, the ground truth it is scored on."""
        image, _, instances = self.scenes.scene(index)
        size = self.scenes.size
        return image, {
            "record": self._record(index, instances),
            "boxes": torch.tensor([inst.box for inst in instances], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([inst.label for inst in instances], dtype=torch.int64),
            "masks": torch.from_numpy(np.stack([inst.mask for inst in instances]).astype(np.uint8))
            if instances else torch.zeros(0, size, size, dtype=torch.uint8),
            "image_id": index,
        }  # fmt: skip

    def record(self, index: int) -> tuple[dict, list[dict]]:
        return self._record(index, self.scenes.scene(index)[2])

    def _record(self, index: int, instances: list[Instance]) -> tuple[dict, list[dict]]:
        from .coco import coco_mask

        size = self.scenes.size
        image = {"id": index, "file_name": f"{self.scenes.split}-{index:06d}.png", "width": size, "height": size}
        annotations = []
        for k, inst in enumerate(instances):
            rle = coco_mask().encode(np.asfortranarray(inst.mask.astype(np.uint8)))
            x0, y0, x1, y1 = inst.box
            annotations.append({
                "id": index * 16 + k + 1, "image_id": index, "category_id": inst.label, "iscrowd": 0,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(inst.mask.sum()),
                "segmentation": {"size": [size, size], "counts": rle["counts"].decode("ascii")},
            })  # fmt: skip
        return image, annotations
