"""Relative position biases inside a window: Swin V1's learned table and Swin V2's continuous (log-spaced CPB) bias."""

from __future__ import annotations

import math

import torch

from .window import geometry_cache


@geometry_cache
def relative_position_index(window: tuple[int, int], table_window: tuple[int, int] | None = None) -> torch.Tensor:
    """Index (N, N) of each (query, key) offset into a (2*Th-1)*(2*Tw-1) table, N = wh * ww.

    ``table_window`` defaults to ``window``; a smaller ``window`` (a clamped one) indexes the centre of a table
    built for a larger window, which is exactly the sub-table of the offsets it can see.
    """
    th, tw = table_window or window
    coords = torch.stack(torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 2)
    return (relative[..., 0] + th - 1) * (2 * tw - 1) + (relative[..., 1] + tw - 1)


@geometry_cache
def log_spaced_coords(window: tuple[int, int], pretrained_window: tuple[int, int]) -> torch.Tensor:
    """Swin V2's normalised log-spaced coordinate table, (2*wh-1, 2*ww-1, 2), h first.

    Offsets are divided by ``pretrained_window - 1`` when a pretrained window is given (so a model transferred to a
    larger window sees the offsets it was trained on, extrapolated), else by ``window - 1``; then scaled to [-8, 8]
    and mapped through sign(x) * log2(1 + |x|) / log2(8). A side of length 1 has only offset 0 and is left as is,
    where the official code divides by zero.
    """
    axes = []
    for size, pretrained in zip(window, pretrained_window, strict=True):
        span = pretrained - 1 if pretrained > 0 else size - 1
        axes.append(torch.arange(-(size - 1), size, dtype=torch.float32) / max(span, 1))
    table = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
