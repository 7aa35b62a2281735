"""Fitting a state dict to a model of another window size, resolution, patch size or class count.

- Swin V2 needs nothing here: its continuous position bias is rebuilt for any window from the MLP weights (the
  model must be built with the ``pretrained_window_sizes`` the checkpoint was trained with).
- Swin V1's ``relative_position_bias_table`` is resized bicubically, as the official fine-tuning code does.
- A patch-embedding kernel of another size is resampled with the pseudo-inverse resize of FlexiViT (timm's
  ``resample_patch_embed``), which keeps the embedding of resized patches.
- The classifier: a 21841-class head can be cut to 1000 classes by a label map (line i = 22k index of 1k class i);
  any other class-count mismatch is an error unless the caller asks for a fresh head.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.errors import CheckpointError

HEAD_KEYS = ("head.fc.weight", "head.fc.bias")

# Label maps shipped with swinkit, usable by name: the official ImageNet-22k (21841 classes) -> 1k map.
BUILTIN_LABEL_MAPS = {"imagenet22k_to_1k": Path(__file__).parent / "maps" / "imagenet22k_to_1k.txt"}


def read_label_map(label_map: str | os.PathLike | Sequence[int]) -> list[int]:
    """A label map as a list of source class indices: a built-in name, a file (one integer per line) or a sequence."""
    if isinstance(label_map, (str, os.PathLike)):
        path = BUILTIN_LABEL_MAPS.get(str(label_map), Path(label_map))
        if not path.is_file():
            raise CheckpointError(f"label map {path}: no such file")
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        try:
            return [int(line) for line in lines]
        except ValueError as err:
            raise CheckpointError(
                f"label map {path} must hold one integer class index per line (line i = source index of target "
                f"class i): {err}"
            ) from err
    return [int(i) for i in label_map]


def resize_bias_table(table: torch.Tensor, new_window: tuple[int, int]) -> torch.Tensor:
    """(L, heads) table of a square window -> ((2*wh-1)*(2*ww-1), heads), bicubic as the official code does."""
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0]:
        raise CheckpointError(f"cannot resize a relative position bias table of {table.shape[0]} rows: not square")
    new_shape = (2 * new_window[0] - 1, 2 * new_window[1] - 1)
    grid = table.T.reshape(1, table.shape[1], side, side).float()
    resized = F.interpolate(grid, size=new_shape, mode="bicubic", align_corners=False)
    return resized.reshape(table.shape[1], -1).T.to(table.dtype)


def resample_patch_embed(weight: torch.Tensor, new_size: tuple[int, int]) -> torch.Tensor:
    """(out, in, kh, kw) kernel -> (out, in, *new_size) by the pseudo-inverse of bicubic resizing (FlexiViT)."""
    old_size = tuple(weight.shape[-2:])
    old_numel = old_size[0] * old_size[1]
    basis = torch.eye(old_numel, dtype=torch.float64).reshape(old_numel, 1, *old_size)
    resize = F.interpolate(basis, size=new_size, mode="bicubic", antialias=True, align_corners=False)
    resize = resize.reshape(old_numel, -1)  # R: row i is the resized i-th basis patch, so x_new = R^T x
    # Keep every patch's embedding: <R^T x, w_new> = <x, w> for all x  =>  R w_new = w  =>  w_new = pinv(R) w.
    pinv = torch.linalg.pinv(resize)  # (new_numel, old_numel)
    flat = weight.double().reshape(-1, old_numel)
    return (flat @ pinv.T).reshape(*weight.shape[:2], *new_size).to(weight.dtype)


def adapt_to_model(
    state: dict[str, torch.Tensor],
    model_state: dict[str, torch.Tensor],
    window_sizes: dict[str, tuple[int, int]],
    label_map: str | os.PathLike | Sequence[int] | None,
    head: str,
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Resize what can be resized and settle the head.

    Args:
        state: checkpoint in swinkit's layout.
        model_state: the target model's state dict (for shapes).
        window_sizes: table key -> the model's window for each V1 relative position bias table.
        label_map: source class index per target class, or None.
        head: 'match' (class counts must agree) or 'reset' (keep the model's fresh head when they differ).

    Returns:
        (adapted state, notes on what was adapted, keys dropped on purpose).
    """
    state = dict(state)
    notes, dropped = [], []
    for key, window in window_sizes.items():
        if key in state and state[key].shape != model_state[key].shape:
            old = state[key].shape
            state[key] = resize_bias_table(state[key], window)
            notes.append(f"{key}: bias table resized {tuple(old)} -> {tuple(state[key].shape)}")
    key = "patch_embed.proj.weight"
    if key in state and key in model_state and state[key].shape[-2:] != model_state[key].shape[-2:]:
        old = state[key].shape
        state[key] = resample_patch_embed(state[key], tuple(model_state[key].shape[-2:]))
        notes.append(f"{key}: kernel resampled {tuple(old[-2:])} -> {tuple(state[key].shape[-2:])}")

    if "head.fc.weight" not in state:
        return state, notes, dropped
    source_classes = state["head.fc.weight"].shape[0]
    if "head.fc.weight" not in model_state:
        dropped += [k for k in HEAD_KEYS if state.pop(k, None) is not None]
        notes.append(f"head: the model has no classifier; the checkpoint's {source_classes}-class head is unused")
        return state, notes, dropped
    target_classes = model_state["head.fc.weight"].shape[0]
    if label_map is not None:
        indices = read_label_map(label_map)
        if len(indices) != target_classes:
            raise CheckpointError(
                f"the label map has {len(indices)} entries but the model has {target_classes} classes: build the "
                f"model with num_classes={len(indices)}"
            )
        if not indices or min(indices) < 0 or max(indices) >= source_classes:
            raise CheckpointError(
                f"the label map indexes classes up to {max(indices, default=-1)} but the checkpoint's head has "
                f"{source_classes} classes: is it the right map for this checkpoint?"
            )
        index = torch.tensor(indices)
        for k in HEAD_KEYS:
            if k in state:
                state[k] = state[k][index]
        notes.append(f"head: {source_classes} -> {target_classes} classes through the label map")
    elif source_classes != target_classes:
        if head != "reset":
            raise CheckpointError(
                f"the checkpoint's head has {source_classes} classes but the model has {target_classes}. Either "
                f"create the model with num_classes={source_classes}, pass head='reset' (config: model.head=reset) "
                "to train a fresh head on the loaded backbone, or pass a label map to select classes (ImageNet-22k "
                "-> 1k: label_map='imagenet22k_to_1k', config: model.label_map=imagenet22k_to_1k)"
            )
        dropped += [k for k in HEAD_KEYS if state.pop(k, None) is not None]
        notes.append(f"head: checkpoint has {source_classes} classes, model {target_classes}; head reset")
    return state, notes, dropped
