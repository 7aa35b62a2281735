"""The model registry: one dict from model name to its builder, defaults and metadata.

Every name is a literal builder function under ``@register_model(...)`` in its family's module, as in timm and
torchvision, so ``grep`` finds it::

    @register_model(defaults=dict(_TINY, window_size=8), img_size=256, top1=81.8, source=_OFFICIAL)
    def swinv2_tiny_window8_256(**kwargs) -> SwinTransformerV2:
        return SwinTransformerV2(**kwargs)

The decorator records the class (the return annotation), the defaults and the metadata; calling the registered
function is ``create_model`` of its name.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from torch import nn

from ..core.errors import ConfigError, UnknownArgumentError, UnknownModelError
from ..layers import to_2tuple
from .base import FeatureExtractor, HierarchicalModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    """What a registered name builds and how its published weights expect their inputs.

    ``defaults`` are keyword arguments for ``cls``; ``img_size`` is (H, W); ``crop_pct`` and ``interpolation``
    describe the evaluation transform (resize to size / crop_pct, centre crop); ``top1`` is the published
    ImageNet-1k accuracy of the reference weights (``miou``: a segmentation model's published ADE20K mIoU; ``box_ap``,
    ``mask_ap``: a detector's published COCO AP) and ``source`` where it comes from; ``task`` is 'classification',
    'segmentation' (``swinkit.models.upernet``) or 'detection' (``swinkit.models.rcnn``).
    ``weights`` lists the published checkpoints (``swinkit.hub.Weights``) when the entry comes from
    ``swinkit.model_info``; the registry itself does not know them.
    """

    name: str
    cls: type[nn.Module]
    defaults: dict = field(default_factory=dict)
    img_size: tuple[int, int] = (224, 224)
    num_classes: int = 1000
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    top1: float | None = None
    miou: float | None = None
    box_ap: float | None = None
    mask_ap: float | None = None
    source: str = ""
    task: str = "classification"
    aliases: tuple[str, ...] = ()
    weights: tuple = ()


_MODELS: dict[str, ModelInfo] = {}
_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_ALIASES: dict[str, str] = {}


def register_model(*, defaults: dict, **metadata) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register the decorated builder under its function name, with the constructor ``defaults`` and ``ModelInfo``
    ``metadata`` (``num_classes`` and ``img_size`` default to the constructor defaults')."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        cls = typing.get_type_hints(builder)["return"]
        signature = inspect.signature(cls).parameters
        metadata.setdefault("num_classes", defaults.get("num_classes", signature["num_classes"].default))
        size = to_2tuple(metadata.pop("img_size", defaults.get("img_size", signature["img_size"].default)))
        info = ModelInfo(name, cls, dict(defaults), img_size=size, **metadata)
        for key in (name, *info.aliases):
            if key in _MODELS or key in _ALIASES:
                raise RuntimeError(f"model name {key!r} is registered twice")
        _MODELS[name] = info
        _BUILDERS[name] = builder
        _ALIASES.update({alias: name for alias in info.aliases})

        @functools.wraps(builder)
        def build(**overrides) -> nn.Module:
            return create_model(name, **overrides)

        return build

    return decorate


def list_models(pattern: str = "*", include_aliases: bool = False, task: str | None = "classification") -> list[str]:
    """Registered model names matching a shell-style pattern (case-insensitive), sorted: the classifiers (timm's
    meaning of a model list), or those of ``task`` ('segmentation', 'detection'), or every one (``task=None``)."""
    names = [n for n, info in _MODELS.items() if task is None or info.task == task]
    if include_aliases:
        names += [alias for alias, n in _ALIASES.items() if task is None or _MODELS[n].task == task]
    pattern = pattern.lower()
    return sorted(n for n in names if fnmatch.fnmatchcase(n.lower(), pattern))


def model_task(name: str) -> str:
    """The task of a registered name or alias: 'classification', 'segmentation' or 'detection'; 'classification'
    for unregistered names (``timm:NAME`` backbones)."""
    return _MODELS.get(_ALIASES.get(name, name), ModelInfo(name, nn.Module)).task


def is_segmentation(name: str) -> bool:
    """Whether ``name`` (or its alias) is a registered segmentation model."""
    return model_task(name) == "segmentation"


def is_detection(name: str) -> bool:
    """Whether ``name`` (or its alias) is a registered detector (Faster/Mask R-CNN)."""
    return model_task(name) == "detection"


def model_info(name: str) -> ModelInfo:
    """The registry entry of a model name or alias; an unknown name raises ValueError with the closest names."""
    canonical = _ALIASES.get(name, name)
    if canonical in _MODELS:
        return _MODELS[canonical]
    lowered = {n.lower(): n for n in (*_MODELS, *_ALIASES)}
    if name.lower() in lowered:
        return model_info(lowered[name.lower()])
    close = difflib.get_close_matches(name, list(_MODELS) + list(_ALIASES), n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise UnknownModelError(f"unknown model {name!r}{hint}. `swinkit models` lists them all")


def create_model(
    name: str, *, features_only: bool = False, out_indices: int | Sequence[int] = (0, 1, 2, 3),
    feature_cls: str | None = None, output_fmt: str = "NCHW", **overrides
) -> nn.Module:
    """Build a registered model; ``model.pretrained_cfg`` holds its preprocessing in timm's keys.

    Args:
        name: a name from ``list_models()`` or one of its aliases (e.g. the seed systems' names).
        features_only: return a ``FeatureExtractor`` producing stage maps instead of logits.
        out_indices, feature_cls, output_fmt: timm's feature-extraction arguments (see ``FeatureExtractor``); the
            stages 0..3 are at strides 4, 8, 16, 32.
        **overrides: constructor arguments replacing the registered defaults, e.g. ``num_classes``, ``img_size``,
            ``window_size``, ``pretrained_window_sizes``, ``drop_path_rate``, ``in_chans``, ``depths``.

    Raises:
        ValueError: the name is unknown.
        TypeError: an override is not an argument of the model.
    """
    info = model_info(name)
    accepted = [p for p in inspect.signature(info.cls).parameters if p != "self"]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        hints = [
            f"{k!r} (did you mean {difflib.get_close_matches(k, accepted, n=1)[0]!r}?)"
            if difflib.get_close_matches(k, accepted, n=1)
            else repr(k)
            for k in unknown
        ]
        raise UnknownArgumentError(
            f"create_model({info.name!r}) got unknown override {', '.join(hints)}; valid: {', '.join(accepted)}"
        )
    model = _BUILDERS[info.name](**{**info.defaults, **overrides})
    model.model_info = replace(info, img_size=model.img_size, num_classes=model.num_classes)
    model.pretrained_cfg = base_pretrained_cfg(model.model_info, model.patch_embed.proj.in_channels,
                                               model.feature_info[-1]["reduction"])  # fmt: skip
    if features_only and not isinstance(model, HierarchicalModel):
        raise ConfigError(f"features_only=True takes a classification backbone; {info.name} is a {model.family} "
                          "model (its backbone is model.backbone)")  # fmt: skip
    if features_only:
        return FeatureExtractor(model, out_indices, feature_cls=feature_cls, output_fmt=output_fmt)
    return model


def base_pretrained_cfg(info: ModelInfo, in_chans: int = 3, stride: int | None = None) -> dict:
    """timm's ``pretrained_cfg`` of a model built without weights: every field of timm's ``PretrainedCfg`` (timm's
    defaults where swinkit has nothing to say), with its registered preprocessing. (Built through
    ``swinkit.create_model``, the model gets its default tag's record instead, as in timm.)

    ``pool_size`` is the last stage's map at ``input_size``. ``fixed_input_size`` is False, unlike timm's Swin:
    swinkit's models run at any size (each stage pads to whole windows); ``min_input_size`` is one token in the last
    stage without padding; ``stride`` is the last stage's (default: the registered architecture's)."""
    from timm.models import PretrainedCfg

    h, w = info.img_size
    if stride is None:
        stride = info.defaults.get("patch_size", 4) * 2 ** (len(info.defaults.get("depths", (0, 0, 0, 0))) - 1)
    return {
        **asdict(PretrainedCfg()),
        "architecture": info.name, "tag": None, "source": info.source, "num_classes": info.num_classes,
        "input_size": (in_chans, h, w), "fixed_input_size": False, "min_input_size": (in_chans, stride, stride),
        "pool_size": (-(-h // stride), -(-w // stride)), "interpolation": info.interpolation,
        "crop_pct": info.crop_pct, "crop_mode": "center", "mean": info.mean, "std": info.std,
        "first_conv": getattr(info.cls, "first_conv", "patch_embed.proj"),
        "classifier": getattr(info.cls, "classifier", "head.fc"), "license": "",
    }  # fmt: skip
