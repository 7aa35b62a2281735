"""swinkit: Swin V1, Swin V2 and CSWin models, their checkpoints from every ecosystem, training and SSL."""

from .models import create_model, list_models, model_info

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "model_info"]
