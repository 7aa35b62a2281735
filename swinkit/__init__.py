"""swinkit: Swin V1, Swin V2 and CSWin models, their checkpoints from every ecosystem, training and SSL."""

from .checkpoints import LoadReport, load_checkpoint, save_checkpoint
from .core.errors import CheckpointError, ConfigError, DataError, DownloadError, SwinkitError
from .hub import Weights, create_model, get_weights, list_weights, model_info, register_weights
from .models import count_flops, list_models

__version__ = "0.1.0"

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
    "register_weights",
    "save_checkpoint",
]
