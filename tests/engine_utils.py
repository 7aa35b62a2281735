"""Helpers shared by the engine tests: a tiny Swin V2 on a slice of the built-in digits."""

from __future__ import annotations

import os
import subprocess
import sys
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


REPO = Path(__file__).resolve().parents[1]
# Augmentation, mixup and drop path off: runs that must see identical inputs (one process vs several).
NO_AUG = ["data.scale=[1.0, 1.0]", "data.ratio=[1.0, 1.0]", "data.hflip=0.0", "data.mixup=0.0", "data.cutmix=0.0",
          "data.re_prob=0.0", "model.drop_path_rate=0.0"]  # fmt: skip


# upernet_digits at a size that trains in seconds: 32 px scenes, fewer of them, a short iteration schedule.
TINY_UPERNET = ("seg.scene_size=32", "seg.crop_size=[32,32]", "seg.scale=[32,32]", "seg.scenes=48",
                "seg.val_scenes=10", "data.batch_size=4", "sched.iterations=12", "sched.warmup_iterations=3",
                "train.iterations_per_epoch=4", "head.channels=16", "head.auxiliary_channels=8",
                "model.embed_dim=16")  # fmt: skip


def torchrun(*args: str, cwd: Path) -> str:
    """``torchrun --standalone --nproc_per_node 2 -m swinkit ARGS`` (gloo, one thread each); its output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "swinkit", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def capped_python(code: str, *args: str, gib: int = 4) -> subprocess.CompletedProcess:
    """``python -c code args`` in the repository, unable to take more than ``gib`` GiB of address space (torch maps
    about 3): what a test runs when memory that an input could claim is the point."""
    capped = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({gib} << 30, {gib} << 30))\n{code}"
    return subprocess.run([sys.executable, "-c", capped, *args], cwd=REPO, capture_output=True, text=True)


def tiny_config(out: Path, *overrides: str) -> Config:
    """The quick-start recipe shrunk to a tiny model and a few steps, writing to ``out``."""
    return load_config("quickstart", [*TINY, f"train.output={out}", *overrides])


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
