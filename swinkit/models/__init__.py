"""Model families and the registry. Importing a family module registers its builders."""

from . import swin, swin_v2
from .base import FeatureExtractor, HierarchicalModel
from .registry import ModelInfo, create_model, list_models, model_info
from .swin import SwinTransformer
from .swin_v2 import SwinTransformerV2

__all__ = [
    "FeatureExtractor",
    "HierarchicalModel",
    "ModelInfo",
    "SwinTransformer",
    "SwinTransformerV2",
    "create_model",
    "list_models",
    "model_info",
    "swin",
    "swin_v2",
]
