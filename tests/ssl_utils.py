"""Helpers shared by the SSL tests: tiny MoBY/SimMIM models and tiny pretraining configs on the built-in digits."""

from __future__ import annotations

from pathlib import Path

import torch

from swinkit.engine.config import Config, load_config
from swinkit.ssl import MoBY, SimMIM, build_moby, build_simmim

# 16 px inputs, patch 4 -> 4x4 tokens, window 2, two one-block stages (num_features 16).
ARCH = dict(img_size=16, patch_size=4, window_size=2, embed_dim=8, depths=(1, 1), num_heads=(1, 2))
HEADS = dict(queue_size=16, proj_dim=8, hidden_dim=32)

TINY_MODEL = [
    "model.img_size=16", "model.patch_size=4", "model.window_size=2", "model.embed_dim=8", "model.depths=[1, 1]",
    "model.num_heads=[1, 2]", "model.drop_path_rate=0.0",
]  # fmt: skip
TINY_RUN = [
    "data.max_train_samples=64", "data.max_val_samples=32", "data.batch_size=8", "data.workers=0",
    "sched.epochs=2", "sched.warmup_epochs=1", "train.threads=1", "train.log_every=1000",
]  # fmt: skip
TINY_MOBY = [*TINY_MODEL, *TINY_RUN, "ssl.queue_size=16", "ssl.proj_dim=8", "ssl.hidden_dim=32"]
TINY_SIMMIM = [*TINY_MODEL, *TINY_RUN, "ssl.mask_patch_size=8"]


def tiny_moby(seed: int = 0, name: str = "swinv2_tiny_window8_256", **kwargs) -> MoBY:
    torch.manual_seed(seed)
    return build_moby(name, drop_path_rate=0.0, backbone_kwargs=ARCH, **{**HEADS, **kwargs})


def tiny_simmim(seed: int = 0, name: str = "swinv2_tiny_window8_256", **kwargs) -> SimMIM:
    torch.manual_seed(seed)
    return build_simmim(name, backbone_kwargs=dict(ARCH, drop_path_rate=0.0), **{"mask_patch_size": 8, **kwargs})


def pretrain_config(recipe: str, out: Path, *overrides: str) -> Config:
    tiny = TINY_MOBY if recipe.startswith("moby") else TINY_SIMMIM
    return load_config(recipe, [*tiny, f"train.output={out}", *overrides])
