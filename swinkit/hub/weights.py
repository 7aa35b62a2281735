"""The weights registry: every published checkpoint of a registered model, as a tag with everything needed to use it.

A tag is named as timm names them, ``<model>.<tag>``. The sources:

- ``official`` and ``mindcv``: the projects' own releases (``sources.tsv`` beside this file: URL, class count and the
  published score: ImageNet-1k top-1 of a classifier, single-scale ADE20K mIoU of a segmentation model, COCO val2017
  box/mask AP of a detector). The default tag of a model is its official release whose score the model table quotes
  (``ModelInfo.top1``/``miou``/``box_ap``; e.g. the ImageNet-22k fine-tune for Swin-B, the 3x Mask R-CNN), else its
  first official release.
- ``openmmlab``: mmdetection's own Swin trainings (``mmdet_coco``), in mmdet's layout.
- ``hf``: the Hugging Face Hub repositories of HF transformers' Swin and Swinv2 (``microsoft/swin*``) and its
  UperNet-Swin (``openmmlab/upernet-swin-*``: mmseg's own ADE20K trainings, no published mIoU), also in
  ``sources.tsv``; tags ``hf_<label set>``.
- ``timm``: timm's hub copies, read from the pretrained configs that ship in the installed timm (``timm_<timm tag>``,
  e.g. ``timm_ms_in1k``), with timm's own preprocessing.
- ``torchvision``: torchvision's own trainings (``tv_in1k``), read from its weight enums: URL, the SHA-256 prefix in
  the file name, preprocessing and the accuracy torchvision measured.

Official, HF and MindCV copies of the official weights use the preprocessing of the registered model (``ModelInfo``:
what the official evaluation does). ``register_weights`` adds tags of one's own (a private mirror, a fine-tune).
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.errors import ConfigError
from ..models import list_models, model_info

SOURCES = Path(__file__).with_name("sources.tsv")
IMAGENET_LABEL_SETS = {1000: "imagenet-1k", 21841: "imagenet-22k"}  # by class count, in timm's ImageNetInfo names
LABEL_SETS = {**IMAGENET_LABEL_SETS, 0: "none"}
ORIGINS = ("official", "mindcv", "hf", "openmmlab", "timm", "torchvision", "user")

# torchvision's builders and the registered names with the same architecture (window 7 at 224 px, window 8 at 256).
TORCHVISION_MODELS = {
    "swin_t": "swin_tiny_patch4_window7_224",
    "swin_s": "swin_small_patch4_window7_224",
    "swin_b": "swin_base_patch4_window7_224",
    "swin_v2_t": "swinv2_tiny_window8_256",
    "swin_v2_s": "swinv2_small_window8_256",
    "swin_v2_b": "swinv2_base_window8_256",
}


@dataclass(frozen=True)
class Weights:
    """One published checkpoint of a registered model.

    ``url`` or ``hub_id`` says where it is (a file URL, or a Hugging Face Hub repository read through
    ``huggingface_hub``); ``format`` is its layout for ``load_checkpoint``; ``sha256`` the published SHA-256 or its
    leading hex digits (torchvision names its files with the first 8), empty where the source publishes none.
    ``num_classes`` 0 marks an SSL backbone without a classifier; ``top1`` is the source's published ImageNet-1k
    accuracy, ``miou`` a segmentation model's published single-scale mIoU and ``box_ap``/``mask_ap`` a detector's
    published COCO val2017 AP, None where it publishes none.
    """

    model: str
    tag: str
    origin: str
    format: str
    num_classes: int
    img_size: tuple[int, int]
    interpolation: str
    crop_pct: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    url: str = ""
    hub_id: str = ""
    sha256: str = ""
    top1: float | None = None
    license: str = ""
    miou: float | None = None
    box_ap: float | None = None
    mask_ap: float | None = None

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def label_set(self) -> str:
        return LABEL_SETS.get(self.num_classes, f"{self.num_classes} classes")

    @property
    def source(self) -> str:
        return self.url or f"hf-hub:{self.hub_id}"


_USER: dict[str, Weights] = {}


def _preprocessing(model: str) -> dict:
    info = model_info(model)
    return dict(img_size=info.img_size, interpolation=info.interpolation, crop_pct=info.crop_pct, mean=info.mean,
                std=info.std)  # fmt: skip


def _scores(task: str, score: str) -> dict:
    """The ``score`` column as ``Weights`` fields: top-1, mIoU, or a detector's 'box/mask' AP."""
    if task == "detection":
        box, _, mask = score.partition("/")
        return {"box_ap": float(box) if box else None, "mask_ap": float(mask) if mask else None}
    return {"miou" if task == "segmentation" else "top1": float(score) if score else None}


@functools.cache
def _listed() -> tuple[Weights, ...]:
    """The official, MindCV and HF tags of ``sources.tsv``."""
    found = []
    with SOURCES.open() as f:
        for row in csv.reader((line for line in f if not line.startswith("#")), delimiter="\t"):
            model, tag, origin, source, format, num_classes, score = row
            location = {"hub_id": source} if origin == "hf" else {"url": source}
            found.append(Weights(
                model, tag, origin, format, int(num_classes), **_preprocessing(model), **location,
                license="apache-2.0" if origin in ("hf", "openmmlab") else "mit",
                **_scores(model_info(model).task, score),
            ))  # fmt: skip
    return tuple(found)


@functools.cache
def _from_timm() -> tuple[Weights, ...]:
    """timm's hub copies of the registered models, from timm's own pretrained configs."""
    from timm.models import get_pretrained_cfg, list_pretrained

    found = []
    for model in list_models():
        for full in list_pretrained(f"{model}.*"):
            cfg = get_pretrained_cfg(full)
            if not cfg.hf_hub_id:
                continue
            found.append(Weights(
                model, f"timm_{full.partition('.')[2]}", "timm", "timm", cfg.num_classes, tuple(cfg.input_size[1:]),
                cfg.interpolation, cfg.crop_pct, tuple(cfg.mean), tuple(cfg.std), hub_id=cfg.hf_hub_id,
                license=cfg.license or "",
            ))  # fmt: skip
    return tuple(found)


@functools.cache
def _from_torchvision() -> tuple[Weights, ...]:
    """torchvision's Swin weights: URL and hash prefix, preprocessing and accuracy from its weight enums."""
    from torchvision.models import get_model_weights

    found = []
    for builder, model in TORCHVISION_MODELS.items():
        for entry in get_model_weights(builder):
            transform = entry.transforms()
            crop, resize = transform.crop_size[0], transform.resize_size[0]
            stem = Path(entry.url).stem
            found.append(Weights(
                model, "tv_" + entry.name.lower().replace("imagenet1k", "in1k").removesuffix("_v1"), "torchvision",
                "torchvision", len(entry.meta["categories"]), (crop, crop), transform.interpolation.value,
                crop / resize, tuple(transform.mean), tuple(transform.std), url=entry.url,
                sha256=stem.rpartition("-")[2], top1=entry.meta["_metrics"]["ImageNet-1K"]["acc@1"],
                license="bsd-3-clause",
            ))  # fmt: skip
    return tuple(found)


_READERS = {"timm_": _from_timm, "tv_": _from_torchvision}


def register_weights(weights: Weights) -> Weights:
    """Add a tag of one's own (e.g. a fine-tune or a private mirror of a release); it is listed and loads by name."""
    model_info(weights.model)
    if not (weights.url or weights.hub_id) or bool(weights.url) == bool(weights.hub_id):
        raise ConfigError(f"weights {weights.name}: give exactly one of url and hub_id")
    weights = replace(weights, origin="user")
    _USER[weights.name] = weights
    return weights


def list_weights(model: str | None = None, *, origins: tuple[str, ...] = ORIGINS) -> list[Weights]:
    """The tags of ``model`` (all models when None) from the given origins, default tag first per model."""
    readers = {"timm": _from_timm, "torchvision": _from_torchvision}
    found = [w for w in _listed() if w.origin in origins]
    found += [w for origin, read in readers.items() if origin in origins for w in read()]
    found += [w for w in _USER.values() if "user" in origins]
    if model is not None:
        canonical = model_info(model).name
        found = [w for w in found if w.model == canonical]
    order = {name: i for i, name in enumerate(list_models(task=None))}
    defaults = {default_tag(m) for m in {w.model for w in found}}
    return sorted(found, key=lambda w: (order[w.model], w.tag not in defaults, ORIGINS.index(w.origin)))


def default_tag(model: str) -> str | None:
    """The tag ``pretrained=True`` loads: the official release the model table quotes (see the module docstring)."""
    info = model_info(model)
    official = [w for w in _listed() if w.model == info.name and w.origin == "official"]
    scores = (info.top1, info.miou, info.box_ap)
    quoted = [w for w in official if any(v is not None for v in scores) and (w.top1, w.miou, w.box_ap) == scores]
    chosen = (quoted or [w for w in official if w.num_classes] or official or [None])[0]
    return None if chosen is None else chosen.tag


def split_name(name: str) -> tuple[str, str | None]:
    """``"model.tag"`` -> ("model", "tag"); a name without a tag -> (name, None). Model names have no dots."""
    model, _, tag = name.partition(".")
    return model, tag or None


def get_weights(model: str, tag: str | None = None) -> Weights:
    """The ``Weights`` of ``model``'s ``tag`` (``model`` may be ``"model.tag"``; no tag: the default one)."""
    model, named_tag = split_name(model)
    tag = tag or named_tag
    canonical = model_info(model).name
    if tag is None:
        tag = default_tag(canonical)
        if tag is None:
            raise ConfigError(f"{canonical} has no published weights to load with pretrained=True "
                              f"(`swinkit models --pretrained` lists the models that have them)")  # fmt: skip
    name = f"{canonical}.{tag}"
    if name in _USER:
        return _USER[name]
    read = next((r for prefix, r in _READERS.items() if tag.startswith(prefix)), _listed)
    for weights in read():
        if weights.name == name:
            return weights
    known = [w.tag for w in list_weights(canonical)]
    raise ConfigError(
        f"{canonical} has no weights tagged {tag!r}; its tags: {', '.join(known) or 'none'}. A local file or URL "
        "loads with pretrained='PATH_OR_URL'"
    )

