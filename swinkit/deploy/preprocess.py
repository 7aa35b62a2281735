"""What a model sees of an image file: its evaluation preprocessing, and reading the file safely.

The preprocessing is the run's own evaluation transform for a checkpoint a swinkit run wrote (its stored ``data``
config: what ``swinkit eval`` measured), else the model's ``model_info`` (which published weights set from their
tag): resize to ``img_size / crop_pct`` with its interpolation, centre crop ``img_size``, normalise with its mean and
std. ``swinkit predict`` classifies with it and ``swinkit export --calibrate`` calibrates with it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
from PIL import Image, UnidentifiedImageError
from timm.data import create_transform
from torch import nn

from ..data import build_transform
from ..engine.checkpoint import STATE_FILE, stored_config
from ..hub import local_file

# What reading an unreadable, truncated, hostile or oversized image file raises (see ``read_rgb``).
IMAGE_ERRORS = (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError,
                Image.DecompressionBombWarning)  # fmt: skip


def evaluation_transform(
    model: nn.Module, checkpoint: str | os.PathLike | None
) -> Callable[[Image.Image], torch.Tensor]:
    """The transform from an RGB image to ``model``'s input, for ``model`` loaded from ``checkpoint`` (or None)."""
    info = model.model_info
    if checkpoint is not None:
        run = stored_config(local_file(checkpoint, exclude=(STATE_FILE,)))  # a URL's copy in the cache
        if run is not None:
            return build_transform(run.data, model.img_size[0], False, info)
    return create_transform(
        input_size=(3, *info.img_size), interpolation=info.interpolation,
        crop_pct=info.crop_pct, mean=info.mean, std=info.std,
    )  # fmt: skip


def unreadable(path: str | os.PathLike, err: BaseException) -> dict:
    """``swinkit predict``'s result for a file that is not a readable image (one of ``IMAGE_ERRORS``)."""
    return {"image": str(path), "error": f"not a readable image ({type(err).__name__}: {err})"}


def read_rgb(path: str | os.PathLike) -> Image.Image:
    """The image file at ``path`` as RGB; one of ``IMAGE_ERRORS`` for a file that is not a readable image.

    PIL warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that: both are refused here, so a small file
    that decodes to a huge image cannot allocate memory its size does not justify.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            return image.convert("RGB")
