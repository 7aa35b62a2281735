"""Transformer feed-forward network and stochastic depth."""

from __future__ import annotations

import torch
from torch import nn

from .linear import Linear


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout, on the last dimension (fc1 and GELU as one op: ``forward_gelu``)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, approximate_gelu: str = "none") -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate=approximate_gelu)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc1.forward_gelu(x, self.act.approximate)
        return self.drop2(self.fc2(self.drop1(hidden)))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample, rescaling the kept ones by 1 / keep_prob."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def drop_path_rates(drop_path_rate: float, depths: list[int] | tuple[int, ...]) -> list[list[float]]:
    """Linearly increasing stochastic depth over all blocks, split per stage (the official rule)."""
    total = sum(depths)
    rates = [drop_path_rate * i / (total - 1) for i in range(total)] if total > 1 else [0.0] * total
    out, start = [], 0
    for depth in depths:
        out.append(rates[start : start + depth])
        start += depth
    return out
