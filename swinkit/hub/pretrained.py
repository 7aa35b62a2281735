"""``create_model(name, pretrained=...)``: a registered model with published weights, or with a file or URL, loaded.

``pretrained`` is ``True`` (the model's default tag, or the tag in ``name="model.tag"``), a tag (``"in22k"``), a
tag of another model (``"swinv2_base_window12_192.in22k"``: a fine-tune starting point, adapted by
``load_checkpoint`` as files are), a local file, an ``http(s)://`` URL or a file on another fsspec file system
(``s3://``, ``gs://``, ``hf://``; fetched into the cache like a tag).

The classifier follows timm's rule: without ``num_classes``, the model takes the class count of the weights of its
own tag or file (a tag of another model keeps the registered count); with another count the classifier is freshly
initialised, except that ImageNet-22k weights (21841 classes) go into a 1000-class model through the official
``imagenet22k_to_1k`` label map. Everything loads through ``load_checkpoint``'s pipeline with the source's layout.
A segmentation model (``upernet_*``) or a detector (``maskrcnn_*``) takes a whole model's weights the same way (its
decode head or box classifier gives the class count), or a classifier's into its backbone
(``pretrained="swin_tiny_patch4_window7_224.in1k"``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from torch import nn

from ..checkpoints.detection import object_classes
from ..checkpoints.load import load_checkpoint, load_prepared, prepare, read_contents
from ..checkpoints.segmentation import decode_classes
from ..core import remote
from ..core.errors import CheckpointError, ConfigError
from ..models import FeatureExtractor, base_pretrained_cfg, model_info
from ..models import create_model as build
from .download import fetch_hub, fetch_remote, fetch_url
from .weights import Weights, default_tag, get_weights, split_name

log = logging.getLogger(__name__)

IMAGENET22K, IMAGENET1K = 21841, 1000


def fetch(weights: Weights, *, progress: bool = True) -> Path:
    """The local file of a tag: from the cache, or downloaded into it."""
    if weights.hub_id:
        return fetch_hub(weights.hub_id)
    return fetch_url(weights.url, sha256=weights.sha256, progress=progress)


def resolve(model: str, pretrained: bool | str) -> Weights | str:
    """What ``pretrained`` names for ``model``: the ``Weights`` of a tag, or a file path or URL (a str)."""
    model, tag = split_name(model)
    if pretrained is True:
        return get_weights(model, tag)
    if not isinstance(pretrained, (str, os.PathLike)) or not str(pretrained):
        raise ConfigError(f"pretrained must be True, a tag, a file or a URL, got {pretrained!r}")
    text = str(pretrained)
    if "://" in text:
        from fsspec.registry import known_implementations

        scheme = text.split("://", 1)[0]
        if scheme not in ("http", "https", *known_implementations):
            raise ConfigError(f"pretrained={text!r}: {scheme}:// is no file system fsspec knows; give a local file, "
                              "an http(s):// or s3:// (gs://, hf://, ...) URL, or a tag")  # fmt: skip
        return text
    if Path(text).exists() or os.sep in text or "/" in text:
        if not Path(text).is_file():
            what = "is not a file" if Path(text).exists() else "does not exist"
            raise CheckpointError(f"{text} {what}; give a checkpoint file, a URL or a tag")
        return text
    other, other_tag = split_name(text)
    if other_tag is not None:
        try:
            model_info(other)
        except ConfigError:
            raise CheckpointError(f"pretrained={text!r} is neither a file nor a tag (`swinkit models --pretrained` "
                                  "lists the tags)") from None  # fmt: skip
        return get_weights(other, other_tag)
    return get_weights(model, text)


def locate(model: str, pretrained: bool | str, *, progress: bool = True) -> tuple[Path, str, Weights | None]:
    """The local file ``pretrained`` names for ``model`` (downloaded if needed), its layout and its tag if any."""
    source = resolve(model, pretrained)
    if isinstance(source, Weights):
        return fetch(source, progress=progress), source.format, source
    return local_file(source, progress=progress), "auto", None


def local_file(location: str | os.PathLike, *, progress: bool = True, exclude: tuple[str, ...] = ()) -> Path:
    """A local path for ``location``: an http(s) URL, or a file or a training checkpoint directory on another file
    system (``s3://``, ``gs://``, ...), fetched into the cache (without a directory's files named in ``exclude``);
    the local path itself otherwise."""
    text = str(location)
    if text.startswith(("http://", "https://")):
        return fetch_url(text, progress=progress)
    if remote.is_remote(text):
        return fetch_remote(text, progress=progress, exclude=exclude)
    return Path(remote.local(text))


def create_model(
    name: str,
    pretrained: bool | str = False,
    *,
    features_only: bool = False,
    out_indices: int | Sequence[int] = (0, 1, 2, 3),
    feature_cls: str | None = None,
    output_fmt: str = "NCHW",
    label_map: str | os.PathLike | Sequence[int] | None = None,
    progress: bool = True,
    **overrides,
) -> nn.Module:
    """Build a registered model, with published weights when ``pretrained`` says so (see the module docstring).

    Args:
        name: a registered name or alias, or ``"model.tag"`` (timm's naming; the tag is what ``pretrained=True``
            loads, and without ``pretrained`` it sets the default class count).
        pretrained: False, True, a tag, ``"model.tag"``, a local file or an http(s) URL.
        features_only, out_indices, feature_cls, output_fmt: as ``swinkit.models.create_model`` (timm's): stage maps
            instead of logits.
        label_map: rows of the checkpoint's classifier to keep (a built-in name, a file or indices).
        progress: show a progress bar while downloading.
        **overrides: constructor arguments, e.g. ``num_classes``, ``img_size``, ``drop_path_rate``.

    The model keeps its load report as ``model.load_report``; a tag's preprocessing and provenance are in
    ``model.model_info`` and ``model.pretrained_cfg``. As in timm, a model built without weights still carries the
    ``pretrained_cfg`` of its tag (the one named, else the default one), so ``timm.data.resolve_data_config`` gives
    the preprocessing its published weights expect; a model with no published weights carries its registered one.
    """
    model_name, tag = split_name(name)
    features = dict(features_only=features_only, out_indices=out_indices, feature_cls=feature_cls,
                    output_fmt=output_fmt)  # fmt: skip
    if not pretrained:
        recorded = tag or default_tag(model_name)  # the tag whose record the model carries, as in timm
        weights = get_weights(model_name, recorded) if recorded else None
        if tag is not None:
            overrides.setdefault("num_classes", weights.num_classes or model_info(model_name).num_classes)
        model = build(model_name, **overrides)
        if weights is not None:
            model.pretrained_cfg = pretrained_cfg(weights)
        return _features(model, features)
    path, format, weights = locate(name, pretrained, progress=progress)
    info = model_info(model_name)
    if info.task != "classification":
        return _pretrained_dense(model_name, path, format, weights, features, overrides)
    prepared = prepare(path, info.cls.family, format=format)
    head = prepared.state.get("head.fc.weight")
    stored_classes = 0 if head is None else len(head)
    own = weights is None or weights.model == info.name
    overrides.setdefault("num_classes", stored_classes if own and stored_classes else info.num_classes)
    model = build(model_name, **overrides)
    if label_map is None and stored_classes == IMAGENET22K and model.num_classes == IMAGENET1K:
        label_map = "imagenet22k_to_1k"
    head_policy = "match" if label_map is not None or stored_classes in (0, model.num_classes) else "reset"
    model.load_report = load_prepared(model, prepared, label_map=label_map, head=head_policy)
    log.info("%s: %s", weights.name if weights else path, model.load_report)
    if weights is not None and own:
        model.model_info = replace(
            model.model_info, crop_pct=weights.crop_pct, interpolation=weights.interpolation, mean=weights.mean,
            std=weights.std, top1=weights.top1, source=weights.source,
        )  # fmt: skip
        model.pretrained_cfg = pretrained_cfg(weights)
    return _features(model, features)


def _pretrained_dense(name: str, path: Path, format: str, weights: Weights | None, features: dict,
                      overrides: dict) -> nn.Module:  # fmt: skip
    """A segmentation model or a detector with a whole model's weights (its classifier sets the class count unless
    ``num_classes`` says otherwise: then the classifiers start afresh), or a backbone's (the heads start afresh)."""
    task = model_info(name).task
    if features["features_only"]:
        raise ConfigError(f"{name} is a {task} model; features_only is for a backbone (build the backbone, e.g. "
                          "swin_tiny_patch4_window7_224, with features_only=True)")  # fmt: skip
    contents = read_contents(path)
    stored = decode_classes(contents.state) if task == "segmentation" else object_classes(contents.state)
    own = weights is None or weights.model == name
    overrides.setdefault("num_classes", stored if own and stored else model_info(name).num_classes)
    model = build(name, **overrides)
    head = "match" if stored in (None, model.num_classes) else "reset"
    model.load_report = load_checkpoint(model, contents, format=format, head=head)
    log.info("%s: %s", weights.name if weights else path, model.load_report)
    if weights is not None and own:
        model.model_info = replace(model.model_info, mean=weights.mean, std=weights.std, miou=weights.miou,
                                   box_ap=weights.box_ap, mask_ap=weights.mask_ap, source=weights.source)  # fmt: skip
        model.pretrained_cfg = pretrained_cfg(weights)
    return model


def _features(model: nn.Module, features: dict) -> nn.Module:
    if not features.pop("features_only"):
        return model
    return FeatureExtractor(model, features.pop("out_indices"), **features)


def pretrained_cfg(weights: Weights) -> dict:
    """A tag's record in timm's ``pretrained_cfg`` keys (plus swinkit's provenance)."""
    base = base_pretrained_cfg(model_info(weights.model))
    stride = base["min_input_size"][-1]
    return {
        **base,
        "tag": weights.tag, "source": weights.source, "origin": weights.origin, "format": weights.format,
        "url": weights.url, "hf_hub_id": weights.hub_id or None,
        "pool_size": (-(-weights.img_size[0] // stride), -(-weights.img_size[1] // stride)),
        "num_classes": weights.num_classes, "label_set": weights.label_set, "input_size": (3, *weights.img_size),
        "interpolation": weights.interpolation, "crop_pct": weights.crop_pct, "mean": weights.mean,
        "std": weights.std, "top1": weights.top1, "license": weights.license,
    }  # fmt: skip
