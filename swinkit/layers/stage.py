"""A stage of a hierarchical transformer: optional downsampling, then a sequence of blocks on a (B, H, W, C) map."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Stage(nn.Module):
    """``downsample`` (or identity for the first stage) followed by ``blocks``.

    With gradient checkpointing on, each block's activations are recomputed in the backward pass instead of stored.
    """

    def __init__(self, downsample: nn.Module | None, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x
