"""Helpers shared by the engine tests: a tiny Swin V2 on a slice of the built-in digits."""

from __future__ import annotations

from pathlib import Path

import torch

from swinkit.engine.config import Config, load_config

# 16 px inputs, patch 4 -> 4x4 tokens, window 2, two one-block stages: a step takes milliseconds on CPU.
TINY = [
    "model.img_size=16", "model.patch_size=4", "model.window_size=2", "model.embed_dim=8",
    "model.depths=[1, 1]", "model.num_heads=[1, 2]", "model.drop_path_rate=0.0",
    "data.max_train_samples=96", "data.max_val_samples=33", "data.batch_size=8", "data.workers=0",
    "sched.epochs=2", "sched.warmup_epochs=1", "optim.lr=1e-3", "train.threads=1", "train.log_every=1000",
]  # fmt: skip


def tiny_config(out: Path, *overrides: str) -> Config:
    """The quick-start recipe shrunk to a tiny model and a few steps, writing to ``out``."""
    return load_config("quickstart", [*TINY, f"train.output={out}", *overrides])


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
