"""``swinkit predict``: top-k classes of image files with the model's own evaluation preprocessing.

Preprocessing is the run's own evaluation transform for a checkpoint a swinkit run wrote (its stored ``data``
config: what ``swinkit eval`` measured), else the model's ``model_info``: resize to ``img_size / crop_pct`` with its
interpolation, centre crop ``img_size``, normalise with its mean and std. Class names are those stored in a swinkit
training checkpoint (the class folder names), else ImageNet-1k's or ImageNet-22k's (timm's ``ImageNetInfo``) for a
1000- or 21841-class model, else ``class <i>``. Published weights (``weights``) preprocess as their tag says.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch
from PIL import Image, UnidentifiedImageError
from timm.data import ImageNetInfo, create_transform

from ..core.errors import ConfigError
from ..data import build_transform
from ..engine.checkpoint import STATE_FILE, stored_config
from ..hub import local_file
from ..hub.weights import IMAGENET_LABEL_SETS
from .convert import load_model
from .inference import InferenceModel, inference_precision


def class_names(num_classes: int, stored: list[str] | None) -> list[str]:
    if stored is not None and len(stored) == num_classes:
        return list(stored)
    if num_classes in IMAGENET_LABEL_SETS:
        info = ImageNetInfo(IMAGENET_LABEL_SETS[num_classes])
        return [info.index_to_description(i) for i in range(num_classes)]
    return [f"class {i}" for i in range(num_classes)]


def predict(
    name: str | None,
    checkpoint: str | os.PathLike | None,
    images: Sequence[str | os.PathLike],
    *,
    topk: int = 5,
    overrides: dict | None = None,
    weights: bool | str | None = None,
    precision: str = "fp32",
    compile: bool = False,
) -> list[dict]:
    """Classify image files.

    ``overrides`` are constructor arguments for ``create_model``; ``weights`` loads published weights instead of a
    checkpoint (see ``load_model``). ``precision`` ('fp32', 'bf16', 'int8' or 'auto') and ``compile`` are
    ``swinkit.deploy.inference``'s.

    Returns:
        One dict per image, in order: ``{"image", "top": [{"index", "label", "probability"}, ...]}``, or
        ``{"image", "error"}`` for a file that cannot be read as an image (the others are still predicted).
    """
    if topk < 1:
        raise ConfigError(f"--topk {topk}: ask for at least one class")
    if checkpoint is not None:
        checkpoint = local_file(checkpoint, exclude=(STATE_FILE,))  # fetched once: weights and transform
    model, _, stored = load_model(name, checkpoint, overrides=overrides, weights=weights)
    runner = InferenceModel(model, inference_precision(precision, torch.device("cpu")), compile=compile)
    info = model.model_info
    run = stored_config(checkpoint) if checkpoint is not None else None
    if run is not None:  # the run's own evaluation transform: what `swinkit eval` measured
        transform = build_transform(run.data, model.img_size[0], False, info)
    else:
        transform = create_transform(
            input_size=(3, *info.img_size), interpolation=info.interpolation,
            crop_pct=info.crop_pct, mean=info.mean, std=info.std,
        )  # fmt: skip
    names = class_names(model.num_classes, stored)
    results = []
    for path in images:
        try:
            with warnings.catch_warnings():
                # PIL warns above MAX_IMAGE_PIXELS and refuses above twice that: both are refused here.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    rgb = image.convert("RGB")
            x = transform(rgb).unsqueeze(0)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as err:  # fmt: skip
            results.append({"image": str(path), "error": f"not a readable image ({type(err).__name__}: {err})"})
            continue
        probs = runner(x).softmax(-1)[0]
        top = probs.topk(min(topk, probs.numel()))
        results.append({
            "image": str(path),
            "top": [
                {"index": int(i), "label": names[int(i)], "probability": float(p)}
                for p, i in zip(top.values, top.indices, strict=True)
            ],
        })  # fmt: skip
    return results
