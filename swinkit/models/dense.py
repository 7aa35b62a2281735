"""The backbone of a dense-task model (UperNet, Mask R-CNN): a registered classifier without its classifier and
final norm, its four stage maps each through a LayerNorm of its own (the official dense backbones' ``norm{i}``),
its windows under the dense-task padding rule of the official segmentation and detection code (``layers.window``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ConfigError
from .base import WINDOW_PADDING, HierarchicalModel
from .registry import create_model


def dense_backbone(name: str, img_size: int | tuple[int, int], drop_path_rate: float, window_padding: str,
                   backbone_args: dict | None) -> HierarchicalModel:  # fmt: skip
    """``name`` built without classifier and final norm, its windows padded by ``window_padding`` ('visible': the
    official dense rule; 'masked': swinkit's classification rule; CSWin takes neither)."""
    model = create_model(name, num_classes=0, img_size=img_size, drop_path_rate=drop_path_rate,
                         **(backbone_args or {}))  # fmt: skip
    if not isinstance(model, HierarchicalModel):
        raise ConfigError(f"{name!r} is not a hierarchical backbone (Swin V1/V2 or CSWin)")
    if model.family != "cswin":
        model.set_window_padding(window_padding)
    elif window_padding not in WINDOW_PADDING:
        raise ConfigError(f"window_padding must be one of {', '.join(WINDOW_PADDING)}, got {window_padding!r}")
    model.prune_intermediate_layers(len(model.layers), prune_norm=True)
    return model


def output_norms(backbone: HierarchicalModel) -> nn.ModuleList:
    """One LayerNorm per stage map, as wide as it."""
    return nn.ModuleList(nn.LayerNorm(info["num_chs"]) for info in backbone.feature_info)


def stage_maps(backbone: HierarchicalModel, norms: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """The backbone's four stage maps, each through its LayerNorm, (B, C_i, H / 4·2^i, W / 4·2^i)."""
    maps = backbone.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
    return [norm(m).permute(0, 3, 1, 2).contiguous() for norm, m in zip(norms, maps, strict=True)]
