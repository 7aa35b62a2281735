"""Classifier head: global average pool over a channels-last map, dropout, linear layer."""

from __future__ import annotations

import torch
from torch import nn

from .linear import Linear


class ClassifierHead(nn.Module):
    """(B, H, W, C) -> (B, num_classes), or the pooled (B, C) with ``pre_logits``. ``num_classes=0`` gives no fc."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.drop = nn.Dropout(drop_rate)
        self.fc = Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.fc.weight, std=0.02)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=(1, 2)))
        return x if pre_logits else self.fc(x)
