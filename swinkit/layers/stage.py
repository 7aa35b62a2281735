"""A stage of a hierarchical transformer: optional downsampling, then a sequence of blocks on a (B, H, W, C) map."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .mlp import drop_path_rates


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


def build_stages(
    depths: Sequence[int],
    embed_dims: Sequence[int],
    drop_path_rate: float,
    block: Callable[[int, int, int, float], nn.Module],
    downsample: Callable[[int, int], nn.Module],
) -> nn.ModuleList:
    """One ``Stage`` per entry of ``depths``, as every hierarchical model here builds them.

    Stage i starts with ``downsample(embed_dims[i - 1], embed_dims[i])`` (none for the first) and holds ``depths[i]``
    blocks ``block(i, j, embed_dims[i], drop_path)``, with stochastic depth rising linearly to ``drop_path_rate``
    over all blocks.
    """
    rates = drop_path_rates(drop_path_rate, depths)
    stages = []
    for i, (depth, dim) in enumerate(zip(depths, embed_dims, strict=True)):
        blocks = [block(i, j, dim, rates[i][j]) for j in range(depth)]  # before the merge: the official init order
        stages.append(Stage(downsample(embed_dims[i - 1], dim) if i > 0 else None, blocks))
    return nn.ModuleList(stages)
