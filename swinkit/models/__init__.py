"""Model families and the registry. Importing a family module registers its builders."""

from . import cswin, rcnn, swin, swin_v2, upernet
from .base import FeatureExtractor, HierarchicalModel
from .cswin import CSWinTransformer
from .flops import count_flops
from .rcnn import FasterRCNN, MaskRCNN
from .registry import (
    ModelInfo,
    base_pretrained_cfg,
    create_model,
    is_detection,
    is_segmentation,
    list_models,
    model_info,
    model_task,
)
from .swin import SwinTransformer
from .swin_v2 import SwinTransformerV2
from .upernet import UperNet

__all__ = [
    "CSWinTransformer",
    "FasterRCNN",
    "FeatureExtractor",
    "HierarchicalModel",
    "MaskRCNN",
    "ModelInfo",
    "SwinTransformer",
    "SwinTransformerV2",
    "UperNet",
    "base_pretrained_cfg",
    "count_flops",
    "create_model",
    "is_detection",
    "is_segmentation",
    "cswin",
    "list_models",
    "model_info",
    "model_task",
    "rcnn",
    "swin",
    "swin_v2",
    "upernet",
]
