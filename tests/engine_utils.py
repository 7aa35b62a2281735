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
# Sliding 32 px windows every 24 px over the image at its own size and the mirrored pass: how many forwards an image
# takes depends on its size.
SLIDING = dict(inference="slide", slide_crop=[32, 32], slide_stride=[24, 24], tta_flip=True, scale=None)


def tiny_upernet(num_classes: int = 5, **head) -> torch.nn.Module:
    """A small UperNet (Swin-T's four stages, 16 channels, window 4) with random non-trivial weights, the same in every
    process, in eval mode."""
    from swinkit.models import create_model
    from swinkit.tools.peers import perturb_parameters

    torch.manual_seed(0)
    model = create_model("upernet_swin_tiny_patch4_window7_512", num_classes=num_classes, channels=16,
                         auxiliary_channels=8, backbone_args=dict(embed_dim=16, window_size=4, depths=(2, 2, 2, 2),
                         num_heads=(1, 2, 4, 8)), **head)  # fmt: skip
    return perturb_parameters(model, seed=2).eval()


def uneven_batches() -> list[tuple[torch.Tensor, torch.Tensor, list[int]]]:
    """Three one-image evaluation batches of different sizes, as a segmentation loader yields them."""
    g = torch.Generator().manual_seed(4)
    sizes = [(40, 56), (64, 64), (72, 40)]
    return [(torch.randn(1, 3, h, w, generator=g), torch.randint(0, 5, (1, h, w), generator=g), [i])
            for i, (h, w) in enumerate(sizes)]  # fmt: skip


def torchrun(*args: str, cwd: Path) -> str:
    """``torchrun --standalone --nproc_per_node 2 -m swinkit ARGS`` (gloo, one thread each); its output."""
    return torchrun_program("-m", "swinkit", *args, cwd=cwd)


def torchrun_program(*program: str, cwd: Path) -> str:
    """``torchrun --standalone --nproc_per_node 2 PROGRAM`` (a script and its arguments, or ``-m module ...``; gloo,
    one thread each); its output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *program]
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
