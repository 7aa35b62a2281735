"""Semantic segmentation data: (image, label map) datasets, mmsegmentation's pipeline, and their loader.

Datasets have ``load(i) -> (PIL RGB image, (H, W) uint8 label map)``, ``name(i)``, ``classes`` and ``len``:

- ``SegmentationFolder`` (``label_maps.py``): ADE20K's and mmseg's folders of images beside label maps;
- ``HFSegmentation`` (``hf.py``): a Hugging Face dataset of images and label maps;
- ``DigitScenes`` (``digit_scenes.py``): the built-in scenes.

A folder written as shards by ``swinkit shard`` (``shards.py``: each image beside its ``.seg.png``) streams through
the same pipeline (``segmentation_loader`` of a ``ShardSplit``; ``ShardLabelMaps`` checks each label map as a
folder's are checked, naming the shard and the sample).

A label map that does not fit (``label_maps.py``) stops the run with a ``LabelMapError`` naming the file and the fix,
raised in the training process (``Loader`` turns a worker's report into it).

The pipeline is mmseg's for the Swin ADE20K configs, seeded per sample like every swinkit transform
(``datasets.transform_sample``): random rescale of ``scale`` by a ratio in ``ratio_range`` keeping the aspect ratio,
random crop to ``crop_size`` (re-drawn up to 10 times while one class covers more than ``cat_max_ratio`` of it),
horizontal flip, photometric distortion, normalisation, padding to the crop (label 255). Evaluation normalises the
image at its own size beside its label map; ``swinkit.engine.segmentation_eval`` rescales it (to ``scale`` and each
test-time ratio) and resizes the predictions back to the label map.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .datasets import decode_image, transform_sample
from .label_maps import IGNORE_INDEX, LabelMapError, decode_label_map
from .loader import Loader, StreamFailure, indexed_loader
from .shards import IMAGE_KEYS, SEGMENTATION_KEY, ShardSplit, stream_loader

MAX_CROP_TRIES = 10


class Repeated:
    """A dataset repeated end to end to ``length`` entries: an epoch of a fixed number of iterations (mmseg's
    iteration-based runs). ``EpochSampler``'s permutation of it draws every image equally often, to within one."""

    def __init__(self, base, length: int) -> None:
        self.base, self.length, self.classes = base, length, base.classes

    def __len__(self) -> int:
        return self.length

    def name(self, index: int) -> str:
        return self.base.name(index % len(self.base))

    def load(self, index: int):
        return self.base.load(index % len(self.base))


@dataclass(frozen=True)
class Pipeline:
    """mmseg's training pipeline, or the evaluation one (normalisation only), see the module docstring; ``scale``
    (long, short) None keeps the training image's size."""

    train: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_size: tuple[int, int] | None = None
    scale: tuple[int, int] | None = None
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip: float = 0.5
    photometric: bool = True

    def __call__(self, sample: tuple[Image.Image, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = sample
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float()
        target = torch.from_numpy(labels.astype(np.int64))
        if self.train:
            scale = self.scale
            if scale is not None:
                ratio = random.uniform(*self.ratio_range)
                scale = (int(scale[0] * ratio), int(scale[1] * ratio))
                pixels, target = rescale(pixels, scale), rescale(target, scale, nearest=True)
            if self.crop_size is not None:
                pixels, target = random_crop(pixels, target, self.crop_size, self.cat_max_ratio)
            if random.random() < self.flip:
                pixels, target = pixels.flip(-1), target.flip(-1)
            if self.photometric:
                pixels = photometric_distortion(pixels)
        mean, std = torch.tensor(self.mean).view(3, 1, 1) * 255, torch.tensor(self.std).view(3, 1, 1) * 255
        pixels = (pixels - mean) / std
        if self.train and self.crop_size is not None:
            pixels, target = pad_to(pixels, target, self.crop_size)
        return pixels, target


def fit_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's ``rescale_size``: the size that fits (long side, short side) ``scale`` keeping the aspect ratio."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def rescale(x: torch.Tensor, scale: tuple[int, int], nearest: bool = False) -> torch.Tensor:
    """Resize (C, H, W) or (H, W) to fit ``scale`` (long side, short side) keeping the aspect ratio, as mmcv's
    ``imrescale``: bilinear (half-pixel centres, no antialiasing) for images, nearest for labels."""
    size = fit_size(*x.shape[-2:], scale)
    batch = x[None] if x.ndim == 3 else x[None, None].float()
    if nearest:
        return F.interpolate(batch, size=size, mode="nearest")[0, 0].long()
    return F.interpolate(batch, size=size, mode="bilinear", align_corners=False)[0].clamp(0, 255)


def random_crop(pixels: torch.Tensor, target: torch.Tensor, crop: tuple[int, int],
                cat_max_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """A random crop of at most ``crop`` (H, W); while one class fills more than ``cat_max_ratio`` of the crop's
    labelled pixels (and there are at least two), drawn again, up to 10 times in all (mmseg's rule)."""
    h, w = target.shape
    ch, cw = min(crop[0], h), min(crop[1], w)

    def draw() -> tuple[int, int]:
        return random.randint(0, h - ch), random.randint(0, w - cw)

    top, left = draw()
    if cat_max_ratio < 1.0:
        for _ in range(MAX_CROP_TRIES - 1):
            window = target[top : top + ch, left : left + cw]
            counts = torch.bincount(window[window != IGNORE_INDEX].flatten())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            top, left = draw()
    return pixels[:, top : top + ch, left : left + cw], target[top : top + ch, left : left + cw]


def photometric_distortion(pixels: torch.Tensor) -> torch.Tensor:
    """mmseg's ``PhotoMetricDistortion`` on 0..255 RGB: brightness ±32, contrast x0.5-1.5 (before or after the
    colour changes), saturation x0.5-1.5 and hue ±18° in HSV, each applied with probability 1/2, clipped to 0..255
    after each step."""
    x = pixels
    if random.randint(0, 1):
        x = (x + random.uniform(-32, 32)).clamp(0, 255)
    contrast_first = random.randint(0, 1)

    def contrast(x: torch.Tensor) -> torch.Tensor:
        return (x * random.uniform(0.5, 1.5)).clamp(0, 255) if random.randint(0, 1) else x

    if contrast_first:
        x = contrast(x)
    saturate, hue = random.randint(0, 1), random.randint(0, 1)
    if saturate or hue:
        hsv = rgb_to_hsv(x / 255.0)
        if saturate:
            hsv[1] = (hsv[1] * random.uniform(0.5, 1.5)).clamp(0, 1)
        if hue:
            hsv[0] = torch.remainder(hsv[0] + random.randint(-18, 18) / 360.0, 1.0)
        x = (hsv_to_rgb(hsv) * 255.0).clamp(0, 255)
    if not contrast_first:
        x = contrast(x)
    return x


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB in 0..1 -> HSV with hue in 0..1."""
    high, _ = rgb.max(0)
    low, _ = rgb.min(0)
    span = high - low
    r, g, b = rgb
    safe = torch.where(span > 0, span, torch.ones_like(span))
    hue = torch.where(high == r, torch.remainder((g - b) / safe, 6.0),
                      torch.where(high == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)) / 6.0  # fmt: skip
    hue = torch.where(span > 0, hue, torch.zeros_like(hue))
    saturation = torch.where(high > 0, span / high.clamp(min=1e-12), torch.zeros_like(high))
    return torch.stack([hue, saturation, high])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = hsv
    sector = hue * 6.0
    k = lambda n: torch.remainder(n + sector, 6.0)  # noqa: E731
    channel = lambda n: value - value * saturation * (torch.minimum(k(n), 4.0 - k(n)).clamp(0, 1))  # noqa: E731
    return torch.stack([channel(5.0), channel(3.0), channel(1.0)])


def pad_to(pixels: torch.Tensor, target: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad bottom/right to ``size``: image with 0 (after normalisation, as mmseg's ``Pad``), label with 255."""
    dh, dw = size[0] - target.shape[0], size[1] - target.shape[1]
    if dh <= 0 and dw <= 0:
        return pixels, target
    dh, dw = max(dh, 0), max(dw, 0)
    return F.pad(pixels, (0, dw, 0, dh)), F.pad(target, (0, dw, 0, dh), value=IGNORE_INDEX)


def segmentation_sample(load, name: str, transform: Pipeline, seed: int | None):
    """``(image, labels, "")`` of ``load()`` through ``transform`` seeded by ``seed``, or ``(None, None, "name:
    reason")`` for an unreadable image (skipped and counted). A label map that does not fit raises its
    ``LabelMapError``: the data itself is wrong, and that cannot be skipped."""
    wrong: list[LabelMapError] = []

    def checked():
        try:
            return load()
        except LabelMapError as err:  # transform_sample would count it as an unreadable image
            wrong.append(err)
            raise

    x, _, message = transform_sample(checked, name, -1, transform, seed)
    if wrong:
        raise wrong[0]
    if x is None:
        return None, None, message
    return x[0], x[1], ""


class SegmentationSamples(torch.utils.data.Dataset):
    """``segmentation_sample`` of each ``(index, seed)`` key of an indexed dataset, seeded like
    ``datasets.TransformedDataset``; a label map's error travels to the training process through the collate."""

    def __init__(self, base, transform: Pipeline) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        try:
            return segmentation_sample(lambda: self.base.load(index), self.base.name(index), self.transform, seed)
        except LabelMapError as err:
            return err, None, ""


@dataclass(frozen=True)
class ShardLabelMaps:
    """A segmentation shard's sample (its image and ``.seg.png``) as ``segmentation_sample`` makes it: the
    ``decode`` of ``shards.ShardStream``. A sample without a label map stops the run naming it."""

    num_classes: int
    reduce_zero_label: bool

    def __call__(self, raw: dict, where: str, transform: Pipeline, seed: int | None):
        image = next((raw[k] for k in IMAGE_KEYS if k in raw), None)
        labels = raw.get(SEGMENTATION_KEY)
        if image is None or labels is None:
            missing = "an image" if image is None else f"a .{SEGMENTATION_KEY} label map"
            raise LabelMapError(f"{where}: the sample has no {missing}; write segmentation shards with `swinkit "
                                "shard --data DIR` from a folder of images/ and annotations/")  # fmt: skip

        def load():
            picture = decode_image(image, where)
            return picture, decode_label_map(labels, f"{where} ({SEGMENTATION_KEY})", picture.size, self.num_classes,
                                             self.reduce_zero_label)  # fmt: skip

        return segmentation_sample(load, where, transform, seed)


def collate_segmentation(batch: list):
    """``(images, label maps, unreadable)`` of equally sized samples, or a ``StreamFailure`` carrying a label map's
    error to the training process."""
    for x, _, _ in batch:
        if isinstance(x, LabelMapError):
            return StreamFailure(str(x))
    good = [(x, y) for x, y, _ in batch if x is not None]
    bad = [message for x, _, message in batch if x is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    return torch.stack([x for x, _ in good]), torch.stack([y for _, y in good]), bad


def segmentation_loader(base, transform: Pipeline, *, batch_size: int, train: bool, rank: int = 0,
                        world_size: int = 1, seed: int = 0, workers: int = 0, pin_memory: bool = False,
                        shuffle: bool = True, samples_per_epoch: int | None = None,
                        reduce_zero_label: bool = False) -> Loader:  # fmt: skip
    """A seeded, exact, resumable loader of (image, label map) batches, like ``loader.map_loader``: of an indexed
    dataset, or streamed from segmentation shards (``ShardSplit``; ``reduce_zero_label`` applies to their label
    maps). ``samples_per_epoch`` (all processes together) fixes a training epoch's length, as an iteration schedule
    needs: the dataset repeated end to end, or the shards read again."""
    if isinstance(base, ShardSplit):
        epoch_batches = samples_per_epoch // (batch_size * world_size) if samples_per_epoch else None
        return stream_loader(base, transform, batch_size=batch_size, train=train, rank=rank, world_size=world_size,
                             seed=seed, workers=workers, pin_memory=pin_memory, shuffle=shuffle,
                             decode=ShardLabelMaps(len(base.classes), reduce_zero_label),
                             collate_fn=collate_segmentation, epoch_batches=epoch_batches)  # fmt: skip
    if samples_per_epoch:
        base = Repeated(base, samples_per_epoch)
    return indexed_loader(SegmentationSamples(base, transform), collate_segmentation, batch_size=batch_size,
                          train=train, rank=rank, world_size=world_size, seed=seed, workers=workers,
                          pin_memory=pin_memory, shuffle=shuffle)  # fmt: skip
