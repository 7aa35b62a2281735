"""Backbones for the SSL meta-architectures: any registry model, or a timm model named ``timm:<name>``.

Either is built without a classifier (``num_classes=0``), so ``encoder(images)`` returns the pooled features
(B, num_features) that MoBY's projector and the kNN monitor read.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..core.errors import ConfigError
from ..models import create_model
from ..models.registry import IMAGENET_MEAN, IMAGENET_STD

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class EncoderInfo:
    """What the data pipeline needs to know about an encoder: default input side, normalisation, eval crop."""

    img_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875


def create_encoder(name: str, **overrides) -> nn.Module:
    """A backbone without classifier: a registry name (``swin_tiny_patch4_window7_224``) or ``timm:<name>``.

    timm models are built from scratch (``pretrained=False``); ``overrides`` go to the model's constructor.
    """
    if name.startswith(TIMM_PREFIX):
        import timm

        return timm.create_model(name[len(TIMM_PREFIX) :], pretrained=False, num_classes=0, **overrides)
    return create_model(name, num_classes=0, **overrides)


def encoder_info(encoder: nn.Module, img_size: int | None = None) -> EncoderInfo:
    """The input size (``img_size`` when given), mean, std and eval crop of a swinkit or timm encoder."""
    info = getattr(encoder, "model_info", None)
    if info is not None:  # a swinkit model
        return EncoderInfo(img_size or info.img_size[0], tuple(info.mean), tuple(info.std), info.crop_pct)
    cfg = getattr(encoder, "pretrained_cfg", None) or {}
    side = img_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    return EncoderInfo(
        side, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)), cfg.get("crop_pct", 0.875)
    )


def attention_chunks(encoder: nn.Module, chunks: int) -> None:
    """``set_attention_chunks`` of a swinkit encoder; a timm backbone has no chunked attention."""
    if not hasattr(encoder, "set_attention_chunks"):
        raise ConfigError(
            f"model.attention_chunks needs a swinkit backbone; {type(encoder).__name__} (timm) computes its attention "
            "in one call"
        )
    encoder.set_attention_chunks(chunks)
