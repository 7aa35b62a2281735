"""Optimizer construction: weight-decay groups from ``no_weight_decay()``, layer-wise and backbone lr scales.

Each parameter group carries an ``lr_scale``; the training loop sets ``group["lr"] = lr * group["lr_scale"]`` at
every step, so the schedule stays a pure function of the step.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..core.errors import ConfigError
from .config import OptimConfig


def freeze_modules(model: nn.Module, prefixes: list[str]) -> list[str]:
    """Set ``requires_grad=False`` on every parameter under one of the module-name prefixes; returns their names."""
    frozen = []
    names = [n for n, _ in model.named_modules() if n]
    for prefix in prefixes:
        if prefix not in names:
            raise ConfigError(f"train.freeze: the model has no module {prefix!r}; top-level: {_top_level(model)}")
    for name, param in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def freeze_backbone(model: nn.Module) -> list[str]:
    """A linear probe: ``requires_grad=False`` on everything but the classifier (``head.fc``); returns the names."""
    frozen = []
    for name, param in model.named_parameters():
        if not name.startswith("head.fc."):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def _top_level(model: nn.Module) -> str:
    return ", ".join(n for n, _ in model.named_children())


def layer_id(name: str, depths: list[int]) -> int:
    """Depth index of a parameter for layer-wise lr decay: 0 for the stem, 1.. for blocks, ``sum(depths)+1`` after.

    A stage's patch merging (timm layout: ``layers.i.downsample`` at the start of stage i) shares the id of the last
    block before it, as in SimMIM's fine-tuning recipe.
    """
    if name.startswith(("patch_embed", "absolute_pos_embed", "stage1_conv_embed")):
        return 0
    m = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", name)
    if m:
        stage, block = int(m.group(1)), int(m.group(2))
        return sum(depths[:stage]) + block + 1
    m = re.match(r"layers\.(\d+)\.downsample\.", name)
    if m:
        return sum(depths[: int(m.group(1))])
    return sum(depths) + 1


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Parameter groups: no weight decay for ``model.no_weight_decay()``, lr scales for layer decay and backbone.

    Frozen parameters (``requires_grad=False``) are left out. Each group has ``weight_decay`` and ``lr_scale``.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    depths = [len(stage.blocks) for stage in getattr(model, "layers", [])]
    groups: dict[tuple[float, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        wd = 0.0 if name in skip else cfg.weight_decay
        scale = 1.0
        if cfg.layer_decay is not None and depths:
            scale *= cfg.layer_decay ** (sum(depths) + 1 - layer_id(name, depths))
        if not name.startswith("head."):
            scale *= cfg.backbone_lr_scale
        group = groups.setdefault((wd, scale), {"params": [], "names": [], "weight_decay": wd, "lr_scale": scale})
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
