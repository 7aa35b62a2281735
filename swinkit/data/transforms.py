"""Train and eval transforms through timm's ``create_transform`` (the official Swin/CSWin augmentation recipe), and
MoBY's two-view BYOL augmentation."""

from __future__ import annotations

import torch
from PIL import Image, ImageFilter, ImageOps
from timm.data import auto_augment, create_transform
from timm.data.transforms import str_to_interp_mode
from torchvision import transforms as T


def posterize(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize, with "keep 0 bits" a black image as it always was: the official recipes' RandAugment
    (``rand-m9-mstd0.5-inc1``, TF/UDA's increasing scale) reaches 0 bits at magnitude 10, which Pillow 11 and later
    refuse with a ValueError, stopping the run a few thousand images in."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def mean_std(data, info) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation a run uses: the data config's ``mean``/``std`` where it sets them, else the model's
    (``info``: a ``ModelInfo`` or anything with ``mean``/``std``). ``data`` may be None (no run config)."""
    mean = data.mean if data is not None and data.mean else info.mean
    std = data.std if data is not None and data.std else info.std
    return tuple(mean), tuple(std)


for _name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
    auto_augment.NAME_TO_OP[_name] = posterize  # read when an augmentation op is built


def build_transform(data, img_size: int, train: bool, info) -> object:
    """RandAugment, random erasing, random-resized crop and flip for training; resize + centre crop for eval.

    Args:
        data: the ``data`` section of a config (``swinkit.engine.config.DataConfig``, or anything with its fields).
        img_size: the square input side.
        info: the model's ``ModelInfo``; gives the mean/std and crop_pct unless the data config sets them.
    """
    mean, std = mean_std(data, info)
    if train:
        return create_transform(
            img_size,
            is_training=True,
            scale=tuple(data.scale),
            ratio=tuple(data.ratio),
            hflip=data.hflip,
            color_jitter=data.color_jitter,
            auto_augment=data.auto_augment,
            interpolation=data.interpolation,
            mean=mean,
            std=std,
            re_prob=data.re_prob,
            re_mode=data.re_mode,
            re_count=data.re_count,
        )
    interpolation = "bicubic" if data.interpolation == "random" else data.interpolation
    crop_pct = data.crop_pct if data.crop_pct is not None else info.crop_pct
    return create_transform(
        img_size, is_training=False, interpolation=interpolation, mean=mean, std=std, crop_pct=crop_pct
    )


class GaussianBlur:
    """PIL Gaussian blur with a radius drawn uniformly from ``sigma`` (BYOL/MoBY: (0.1, 2.0) at 224 px)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = sigma

    def __call__(self, img):
        radius = self.sigma[0] + float(torch.rand(())) * (self.sigma[1] - self.sigma[0])
        return img.filter(ImageFilter.GaussianBlur(radius=radius))


class Solarize:
    def __call__(self, img):
        return ImageOps.solarize(img)


class TwoViews:
    """Two differently augmented views of one image, stacked: (2, C, H, W)."""

    def __init__(self, view1, view2) -> None:
        self.view1, self.view2 = view1, view2

    def __call__(self, img):
        return torch.stack([self.view1(img), self.view2(img)])


def build_two_view_transform(data, ssl, img_size: int, info) -> TwoViews:
    """MoBY's asymmetric BYOL augmentation: random-resized crop, flip, colour jitter, grayscale, then Gaussian blur
    (p = ``ssl.blur_prob`` per view: 1.0 and 0.1) and solarize (0 and 0.2) before normalising.

    Args:
        data, ssl: the ``data`` and ``ssl`` sections of a config (``DataConfig``, ``SSLConfig``).
        info: anything with ``mean``/``std`` (the encoder's), unless the data config sets them.
    """
    mean, std = mean_std(data, info)
    interp = str_to_interp_mode("bicubic" if data.interpolation == "random" else data.interpolation)

    def view(i: int) -> T.Compose:
        crop = T.RandomResizedCrop(img_size, scale=tuple(data.scale), ratio=tuple(data.ratio), interpolation=interp)
        steps = [
            crop,
            T.RandomHorizontalFlip(data.hflip),
        ]
        if data.color_jitter:
            s = data.color_jitter
            steps.append(T.RandomApply([T.ColorJitter(s, s, s / 2, s / 4)], p=ssl.color_jitter_prob))
        steps += [
            T.RandomGrayscale(ssl.grayscale_prob),
            T.RandomApply([GaussianBlur(tuple(ssl.blur_sigma))], p=ssl.blur_prob[i]),
            T.RandomApply([Solarize()], p=ssl.solarize_prob[i]),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
        return T.Compose(steps)

    return TwoViews(view(0), view(1))
