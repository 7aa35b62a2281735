"""Published weights by name: the tag registry, the downloader and its cache, and ``create_model(pretrained=...)``."""

from dataclasses import replace

from ..models import ModelInfo
from ..models import model_info as registered_info
from .download import cache_dir, fetch_hub, fetch_remote, fetch_url
from .pretrained import create_model, fetch, local_file, locate, pretrained_cfg, resolve
from .timm_registry import register_in_timm
from .weights import Weights, default_tag, get_weights, list_weights, register_weights, split_name


def model_info(name: str) -> ModelInfo:
    """The registry entry of a model name (``"model.tag"`` too), with its published weights in ``weights``."""
    info = registered_info(split_name(name)[0])
    return replace(info, weights=tuple(list_weights(info.name)))


__all__ = [
    "Weights",
    "cache_dir",
    "create_model",
    "default_tag",
    "fetch",
    "fetch_hub",
    "fetch_remote",
    "fetch_url",
    "get_weights",
    "list_weights",
    "local_file",
    "locate",
    "model_info",
    "pretrained_cfg",
    "register_in_timm",
    "register_weights",
    "resolve",
    "split_name",
]
