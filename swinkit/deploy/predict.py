"""``swinkit predict``: top-k classes of image files with the model's own evaluation preprocessing.

Preprocessing is ``swinkit.deploy.preprocess.evaluation_transform``: the run's own evaluation transform for a
checkpoint a swinkit run wrote, else the model's (published weights: their tag's). Class names are those stored in a
swinkit training checkpoint (the class folder names), else ImageNet-1k's or ImageNet-22k's (timm's ``ImageNetInfo``)
for a 1000- or 21841-class model, else ``class <i>``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from timm.data import ImageNetInfo

from ..core.errors import ConfigError
from ..data.transforms import mean_std
from ..engine.checkpoint import STATE_FILE, stored_config
from ..engine.config import SegConfig
from ..engine.setup import check_step_fits
from ..hub import local_file
from ..hub.weights import IMAGENET_LABEL_SETS
from ..models.rcnn import FasterRCNN, MaskRCNN
from ..models.upernet import UperNet
from .convert import load_model
from .detect_images import DEFAULT_THRESHOLD, detect_images
from .inference import InferenceModel, inference_precision
from .preprocess import IMAGE_ERRORS, evaluation_transform, read_rgb, unreadable
from .segment_images import segment_images


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
    output: str | os.PathLike = "predictions",
    threshold: float = DEFAULT_THRESHOLD,
) -> list[dict]:
    """Classify image files, segment them with a segmentation model (``swinkit.deploy.segment_images``: a label
    map and an overlay per image written into ``output``), or detect objects with a detector
    (``swinkit.deploy.detect_images``: the detections scoring ``threshold`` or more, drawn into ``output``).

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
    if isinstance(model, UperNet):
        run = stored_config(checkpoint) if checkpoint is not None else None
        seg, data = (run.seg, run.data) if run is not None else (SegConfig(), None)
        mean, std = mean_std(data, model.model_info)
        names = class_names(model.num_classes, stored)
        return segment_images(model, images, output, names, mean, std, seg)
    if isinstance(model, FasterRCNN | MaskRCNN):
        return detect_images(model, images, output, class_names(model.num_classes, stored), threshold)
    check_step_fits(model, 1, model.img_size, torch.device("cpu"), training=False)
    runner = InferenceModel(model, inference_precision(precision, torch.device("cpu")), compile=compile)
    transform = evaluation_transform(model, checkpoint)
    names = class_names(model.num_classes, stored)
    results = []
    for path in images:
        try:
            x = transform(read_rgb(path)).unsqueeze(0)
        except IMAGE_ERRORS as err:
            results.append(unreadable(path, err))
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
