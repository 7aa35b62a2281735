"""Train and eval transforms through timm's ``create_transform`` (the official Swin/CSWin augmentation recipe)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from timm.data import create_transform

if TYPE_CHECKING:
    from ..engine.config import DataConfig


def build_transform(data: DataConfig, img_size: int, train: bool, info) -> object:
    """RandAugment, random erasing, random-resized crop and flip for training; resize + centre crop for eval.

    Args:
        img_size: the square input side.
        info: the model's ``ModelInfo``; gives the mean/std and crop_pct unless the data config sets them.
    """
    mean = tuple(data.mean) if data.mean else tuple(info.mean)
    std = tuple(data.std) if data.std else tuple(info.std)
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
