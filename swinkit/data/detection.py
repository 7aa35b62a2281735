"""The detection pipeline (mmdet's Swin recipe, or large-scale jitter) and its loader.

Samples are ``(PIL image, target)`` of a detection dataset (``swinkit.data.coco``); the pipeline gives ``(image,
target)`` with the image a (3, H, W) float tensor of RGB in 0..1 (the detector normalises it, as torchvision's do)
and the target's boxes and masks moved with it. Each sample is seeded like every swinkit transform
(``datasets.transform_sample``), and its target carries that ``seed`` for the objective
(``swinkit.engine.objectives.Detection``).

Training, as the official Swin Mask R-CNN configs (mmdet's ``AutoAugment`` of two policies, drawn with equal odds):

1. resize to fit (``max_size``, s) for a shorter side s drawn from ``shorter_sides`` (480-800 by 32, longer side at
   most 1333), keeping the aspect ratio;
2. (``crop_policy``) resize to fit (``max_size``, s) for s from ``crop_shorter_sides`` (400, 500, 600), crop a
   random window of ``crop_size`` (384-600 px each side, mmdet's ``absolute_range``), then resize as 1.

then flip horizontally with probability ``flip``. Boxes are clipped to a crop; those left without area go, with
their masks. ``lsj`` replaces all of it by large-scale jitter (torchvision's references): resize by a factor of
``lsj_range`` of the fit to ``lsj_size`` square, crop a random ``lsj_size`` window, flip; the batch pads it.

Evaluation keeps the image at its size: the model resizes it to its test scale and maps its detections back.
Resizing is bilinear (half-pixel centres, no antialiasing) for images, nearest for masks, at mmcv's sizes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .coco import AnnotationError, check_size, checked_target
from .datasets import decode_image, transform_sample
from .loader import Loader, indexed_loader
from .segmentation import Repeated, fit_size
from .shards import DETECTION_KEY, IMAGE_KEYS, ShardSplit, stream_loader


@dataclass(frozen=True)
class DetectionPipeline:
    """See the module docstring; ``train=False`` converts the image only."""

    train: bool
    shorter_sides: tuple[int, ...] = tuple(range(480, 801, 32))
    max_size: int = 1333
    crop_policy: bool = True
    crop_shorter_sides: tuple[int, ...] = (400, 500, 600)
    crop_size: tuple[int, int] = (384, 600)
    lsj: bool = False
    lsj_size: int = 1024
    lsj_range: tuple[float, float] = (0.1, 2.0)
    flip: float = 0.5

    def __call__(self, sample: tuple[Image.Image, dict]) -> tuple[torch.Tensor, dict]:
        image, target = sample
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float()
        target = dict(target)
        if self.train:
            if self.lsj:
                pixels, target = self._large_scale_jitter(pixels, target)
            elif self.crop_policy and random.random() < 0.5:
                pixels, target = resize(pixels, target, (self.max_size, random.choice(self.crop_shorter_sides)))
                pixels, target = random_crop(pixels, target, self.crop_size)
                pixels, target = resize(pixels, target, (self.max_size, random.choice(self.shorter_sides)))
            else:
                pixels, target = resize(pixels, target, (self.max_size, random.choice(self.shorter_sides)))
            if random.random() < self.flip:
                pixels, target = hflip(pixels, target)
        return pixels / 255.0, target

    def _large_scale_jitter(self, pixels: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        h, w = pixels.shape[-2:]
        factor = min(self.lsj_size / h, self.lsj_size / w) * random.uniform(*self.lsj_range)
        pixels, target = resize_to(pixels, target, (max(int(h * factor), 1), max(int(w * factor), 1)))
        side = self.lsj_size
        return crop(pixels, target, *_random_window(pixels.shape[-2:], (side, side)))


def resize(pixels: torch.Tensor, target: dict, scale: tuple[int, int]) -> tuple[torch.Tensor, dict]:
    """Resize to fit ``scale`` (long, short) keeping the aspect ratio (``fit_size``)."""
    return resize_to(pixels, target, fit_size(*pixels.shape[-2:], scale))


def resize_to(pixels: torch.Tensor, target: dict, size: tuple[int, int]) -> tuple[torch.Tensor, dict]:
    """Resize to ``size`` (H, W): the image bilinearly, masks nearest, boxes by the same factors."""
    h, w = pixels.shape[-2:]
    if (h, w) == tuple(size):
        return pixels, target
    out = F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False)[0].clamp(0, 255)
    scale = torch.tensor([size[1] / w, size[0] / h, size[1] / w, size[0] / h])
    target = {**target, "boxes": target["boxes"] * scale}
    if "masks" in target:
        masks = target["masks"]
        target["masks"] = (F.interpolate(masks[None].float(), size=size, mode="nearest")[0].to(torch.uint8)
                           if len(masks) else masks.new_zeros(0, *size))  # fmt: skip
    return out, target


def _random_window(size: tuple[int, int], crop_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random window of at most ``crop_size`` inside ``size``."""
    h, w = size
    ch, cw = min(crop_size[0], h), min(crop_size[1], w)
    return random.randint(0, h - ch), random.randint(0, w - cw), ch, cw


def random_crop(pixels: torch.Tensor, target: dict, crop_range: tuple[int, int]) -> tuple[torch.Tensor, dict]:
    """mmdet's ``RandomCrop(crop_type='absolute_range', allow_negative_crop=True)``: a window whose sides are drawn
    from ``crop_range`` (at most the image's), at a random place."""
    h, w = pixels.shape[-2:]
    ch = random.randint(min(h, crop_range[0]), min(h, crop_range[1]))
    cw = random.randint(min(w, crop_range[0]), min(w, crop_range[1]))
    top, left = random.randint(0, h - ch), random.randint(0, w - cw)
    return crop(pixels, target, top, left, ch, cw)


def crop(pixels: torch.Tensor, target: dict, top: int, left: int, height: int,
         width: int) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """The window's pixels; boxes shifted and clipped to it, those left without area dropped with their masks."""
    pixels = pixels[:, top : top + height, left : left + width]
    boxes = target["boxes"] - torch.tensor([left, top, left, top], dtype=target["boxes"].dtype)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    target = {**target, "boxes": boxes[keep], "labels": target["labels"][keep]}
    if "masks" in target:
        target["masks"] = target["masks"][keep][:, top : top + height, left : left + width]
    return pixels, target


def hflip(pixels: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    width = pixels.shape[-1]
    boxes = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([width, 0, width, 0])
    target = {**target, "boxes": boxes}
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return pixels.flip(-1), target


def _seeded(sample: tuple, seed: int | None) -> tuple:
    """``transform_sample``'s ``(x, _, message)`` as ``(image, target, "")`` with the target carrying ``seed``, or
    ``(None, None, message)``."""
    x, _, message = sample
    if x is None:
        return None, None, message
    image, target = x
    if seed is not None:
        target["seed"] = seed
    return image, target, ""


class DetectionSamples(torch.utils.data.Dataset):
    """The pipeline's ``(image, target, "")`` of each ``(index, seed)`` key of a detection dataset, or ``(None, None,
    "name: reason")`` for an image that cannot be read (skipped and counted by the loop)."""

    def __init__(self, base, pipeline: DetectionPipeline) -> None:
        self.base, self.pipeline = base, pipeline

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        return _seeded(transform_sample(lambda: self.base.load(index), self.base.name(index), -1, self.pipeline,
                                        seed), seed)  # fmt: skip


@dataclass(frozen=True)
class ShardDetections:
    """A detection shard's sample (its image and ``.det.json``) as ``DetectionSamples`` makes it: the ``decode`` of
    ``shards.ShardStream``. The annotations are checked as a COCO file's (``swinkit.data.coco``); one that cannot
    be trained on is left out and named in a warning; a sample without its annotations, or with ones that are not
    COCO's, is skipped and counted like an unreadable image."""

    category_ids: tuple[int, ...]
    masks: bool

    def __call__(self, raw: dict, where: str, transform: DetectionPipeline, seed: int | None):
        data = next((raw[k] for k in IMAGE_KEYS if k in raw), None)

        def load():
            if data is None or DETECTION_KEY not in raw:
                raise AnnotationError(f"the sample has no {'image' if data is None else '.' + DETECTION_KEY}; write "
                                      "detection shards with `swinkit shard --data DIR` from COCO's layout")
            image, anns = _sample_annotations(raw[DETECTION_KEY])
            picture = decode_image(data, where)
            check_size(picture, image, where)
            label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
            return picture, checked_target(image, anns, label_of, self.masks, where)

        return _seeded(transform_sample(load, where, -1, transform, seed), seed)


def _sample_annotations(text: bytes) -> tuple[dict, list[dict]]:
    """A ``.det.json`` member's image entry and annotations, their structure checked."""
    try:
        sample = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise AnnotationError(f".{DETECTION_KEY} is not JSON ({err})") from err
    image = sample.get("image") if isinstance(sample, dict) else None
    anns = sample.get("annotations") if isinstance(sample, dict) else None
    fields_ok = isinstance(image, dict) and all(isinstance(image.get(k), int) and not isinstance(image.get(k), bool)
                                                for k in ("id", "width", "height"))  # fmt: skip
    if not (fields_ok and image["width"] > 0 and image["height"] > 0 and isinstance(anns, list)
            and all(isinstance(a, dict) for a in anns)):  # fmt: skip
        raise AnnotationError(f".{DETECTION_KEY} needs an 'image' entry (integer id, width, height) and an "
                              "'annotations' list")  # fmt: skip
    return image, anns


def collate_detection(batch: list) -> tuple[list[torch.Tensor], list[dict], list[str]]:
    """Images of any sizes and their targets as lists (torchvision's detectors batch them), and the unreadable
    samples' descriptions."""
    good = [(x, t) for x, t, _ in batch if x is not None]
    return [x for x, _ in good], [t for _, t in good], [message for x, _, message in batch if x is None]


def detection_loader(base, pipeline: DetectionPipeline, *, batch_size: int, train: bool, rank: int = 0,
                     world_size: int = 1, seed: int = 0, workers: int = 0, pin_memory: bool = False,
                     shuffle: bool = True, samples_per_epoch: int | None = None,
                     masks: bool = True) -> Loader:  # fmt: skip
    """A seeded, exact, resumable loader of detection batches: of an indexed dataset (``loader.indexed_loader``),
    or streamed from detection shards (``ShardSplit``; ``masks``: decode the masks a Mask R-CNN trains on).
    ``samples_per_epoch`` (all processes together) fixes a training epoch's length, as an iteration schedule
    needs: the dataset repeated end to end, or the shards read again."""
    if isinstance(base, ShardSplit):
        epoch_batches = samples_per_epoch // (batch_size * world_size) if samples_per_epoch else None
        return stream_loader(base, pipeline, batch_size=batch_size, train=train, rank=rank, world_size=world_size,
                             seed=seed, workers=workers, pin_memory=pin_memory, shuffle=shuffle,
                             decode=ShardDetections(base.category_ids, masks), collate_fn=collate_detection,
                             epoch_batches=epoch_batches)  # fmt: skip
    if samples_per_epoch:
        base = Repeated(base, samples_per_epoch)
    return indexed_loader(DetectionSamples(base, pipeline), collate_detection, batch_size=batch_size, train=train,
                          rank=rank, world_size=world_size, seed=seed, workers=workers, pin_memory=pin_memory,
                          shuffle=shuffle)  # fmt: skip
