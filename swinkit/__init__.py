"""swinkit: Swin V1, Swin V2 and CSWin models, their checkpoints from every ecosystem, training and SSL."""

from .checkpoints import LoadReport, load_checkpoint, save_checkpoint
from .core.errors import CheckpointError, ConfigError, DataError, SwinkitError
from .models import count_flops, create_model, list_models, model_info

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "LoadReport",
    "SwinkitError",
    "__version__",
    "count_flops",
    "create_model",
    "list_models",
    "load_checkpoint",
    "model_info",
    "save_checkpoint",
]
