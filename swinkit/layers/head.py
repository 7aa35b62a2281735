"""Classifier head: global average pool over a channels-last map, dropout, linear layer."""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ConfigError
from .linear import Linear


class ClassifierHead(nn.Module):
    """(B, H, W, C) -> (B, num_classes), or the pooled (B, C) with ``pre_logits``. ``num_classes=0`` gives no fc.

    ``global_pool`` is timm's: 'avg' (the default) averages the map, '' leaves it (timm's pruned models, whose
    head then passes the (B, H, W, C) map through).
    """

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.global_pool = "avg"
        self.drop = nn.Dropout(drop_rate)
        self.fc = Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg", ""):
            raise ConfigError(f"global_pool={global_pool!r}: swinkit's heads pool with 'avg' or not at all ('')")
        self.num_classes = num_classes
        self.global_pool = self.global_pool if global_pool is None else global_pool
        self.fc = Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.fc.weight, std=0.02)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=(1, 2)) if self.global_pool == "avg" else x)
        return x if pre_logits else self.fc(x)
