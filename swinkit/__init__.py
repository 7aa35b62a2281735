"""swinkit: Swin V1, Swin V2 and CSWin models, their checkpoints from every ecosystem, training and SSL.

The top-level names are imported on first use (PEP 562), so that ``import swinkit`` and ``swinkit --help`` do not
pay for torch until a name that needs it is touched.
"""

from __future__ import annotations

import importlib

from .core.errors import CheckpointError, ConfigError, DataError, DownloadError, SwinkitError

__version__ = "0.1.0"

_LAZY = {
    "LoadReport": "checkpoints",
    "load_checkpoint": "checkpoints",
    "save_checkpoint": "checkpoints",
    "Weights": "hub",
    "create_model": "hub",
    "get_weights": "hub",
    "list_weights": "hub",
    "model_info": "hub",
    "register_in_timm": "hub",
    "register_weights": "hub",
    "count_flops": "models",
    "list_models": "models",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'swinkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DownloadError",
    "LoadReport",
    "SwinkitError",
    "Weights",
    "__version__",
    "count_flops",
    "create_model",
    "get_weights",
    "list_models",
    "list_weights",
    "load_checkpoint",
    "model_info",
    "register_in_timm",
    "register_weights",
    "save_checkpoint",
]
