"""What evaluation and training both set up: device, precision, autocast, seeds, process-wide switches, the model.

``session(cfg)`` joins the process group torchrun describes, picks the device and precision and applies the
``train.threads``/``train.deterministic`` switches for the duration of a command, restoring them afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import models
from ..checkpoints import load_checkpoint
from ..core import device as devices
from ..core.distributed import DistEnv, broadcast_object, cleanup, init_distributed, is_main_process, launch_env
from ..core.errors import ConfigError, DownloadError, SwinkitError
from ..hub import locate
from .config import Config

log = logging.getLogger(__name__)

# ModelConfig fields passed to create_model when set.
MODEL_OVERRIDES = (
    "num_classes", "img_size", "window_size", "pretrained_window_sizes", "drop_path_rate", "drop_rate",
    "patch_size", "in_chans", "embed_dim", "depths", "num_heads", "mlp_ratio", "split_size",
)  # fmt: skip
DENSE_OWN = ("num_classes", "img_size", "drop_path_rate")  # a dense model's; the other model keys are its backbone's
DENSE_HEAD_KEYS = {
    "segmentation": ("channels", "pool_scales", "dropout", "auxiliary", "auxiliary_channels", "auxiliary_index"),
    "detection": ("fpn_channels", "anchor_sizes", "representation_size", "mask_channels", "rpn_batch_size_per_image",
                  "box_batch_size_per_image"),
}  # fmt: skip


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' is bf16 on an accelerator that computes in it and fp32 on the CPU; fp16 on the CPU runs as bf16 (its
    fp16 kernels are slow or absent)."""
    if precision == "auto":
        return devices.default_precision(device)
    if precision == "fp16" and not devices.has_fp16_kernels(device):
        log.warning("train.precision=fp16 is for accelerators; running bf16 autocast on %s instead", device.type)
        return "bf16"
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` ('fp32': none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Session:
    """Where a command runs: its process group, device and precision."""

    env: DistEnv
    device: torch.device
    precision: str


@contextlib.contextmanager
def session(cfg: Config) -> Iterator[Session]:
    """Join the process group, apply ``train.threads`` and ``train.deterministic``; undo all three on exit."""
    device = devices.resolve(cfg.train.device, launch_env().local_rank)
    env = init_distributed(device, single=cfg.train.parallel == "fsdp")
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True)
        yield Session(env, device, resolve_precision(cfg.train.precision, device))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        cleanup()


def model_overrides(cfg: Config) -> dict:
    """The constructor arguments the config sets (lists as tuples). A dense model (segmentation, detection) takes
    its own (classes, size, drop path, ``model.backbone``, ``model.window_padding`` and its ``head.*``; a detector
    also its test scale ``det.test_scale`` and its normalisation ``data.mean``/``data.std``) and hands the rest to
    its backbone as ``backbone_args``."""
    overrides = {}
    for key in MODEL_OVERRIDES:
        value = getattr(cfg.model, key)
        if value is not None:
            overrides[key] = tuple(value) if isinstance(value, list) else value
    task = models.model_task(cfg.model.name)
    if task == "classification":
        return overrides
    own = {k: overrides.pop(k) for k in DENSE_OWN if k in overrides}
    own.update({k: v for k in ("backbone", "window_padding") if (v := getattr(cfg.model, k)) is not None})
    if task == "detection":
        own["max_size"], own["min_size"] = cfg.det.test_scale
        own.update({f"image_{k}": tuple(v) for k in ("mean", "std") if (v := getattr(cfg.data, k)) is not None})
    for key in DENSE_HEAD_KEYS[task]:
        value = getattr(cfg.head, key)
        if value is not None:
            own[key] = tuple(value) if isinstance(value, list) else value
    return {**own, **({"backbone_args": overrides} if overrides else {})}


def build_model(cfg: Config, num_classes: int | None = None, img_size=None, window_size=None) -> nn.Module:
    """``create_model`` with the config's overrides; ``num_classes`` applies when the config leaves it unset."""
    overrides = model_overrides(cfg)
    if num_classes is not None and cfg.model.num_classes is None:
        overrides["num_classes"] = num_classes
    if img_size is not None:
        overrides["img_size"] = img_size
    if window_size is not None:
        overrides["window_size"] = window_size
    return models.create_model(cfg.model.name, **overrides)


def check_step_fits(backbone: nn.Module, batch: int, img_size: int | tuple[int, int], device: torch.device,
                    training: bool) -> None:  # fmt: skip
    """Refuse, before anything is allocated, a step whose activations cannot fit in ``device`` however they are
    computed: a lower bound (the input and a few copies of the first stage's tokens in 16-bit: 8 a training block
    keeps for its backward, 5 an inference one holds) against the device's whole memory. ``swinkit plan`` gives the
    full estimate.

    Raises:
        ConfigError: the lower bound exceeds the device's memory (names the number).
    """
    total = devices.total_memory(device)
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    first = backbone.feature_info[0]
    tokens = batch * math.ceil(h / first["reduction"]) * math.ceil(w / first["reduction"])
    floor = batch * h * w * 4 + tokens * first["num_chs"] * 2 * (8 if training else 5)
    if total is not None and floor > total:
        step = "training" if training else "inference"
        raise ConfigError(
            f"one {step} step of {batch} image(s) of {h}x{w} px needs at least {floor / 2**30:.1f} GiB "
            f"of activations, more than the {total / 2**30:.1f} GiB this {device.type} has; lower model.img_size "
            "(or the stage's), data.batch_size, or see `swinkit plan` for the full estimate"
        )


def apply_activation_memory(model: nn.Module, cfg: Config) -> None:
    """``model.grad_checkpointing`` and ``model.attention_chunks``: what the step keeps for the backward pass."""
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.model.attention_chunks > 1:
        model.set_attention_chunks(cfg.model.attention_chunks)


def load_pretrained(model: nn.Module, cfg: Config) -> None:
    """Load ``model.pretrained`` (a file, an http(s) URL or a published tag, fetched into the cache; any layout, with
    the config's label map and head policy) and log the report.

    Under torchrun the first process fetches while the others wait, then all read the cached file; a failed fetch
    raises the same error in every process instead of leaving the others waiting."""
    failure, located = None, None
    if is_main_process():
        try:
            located = locate(cfg.model.name, cfg.model.pretrained)
        except SwinkitError as err:
            failure = err
    message = broadcast_object(None if failure is None else str(failure))
    if failure is not None:
        raise failure
    if message is not None:
        raise DownloadError(message)
    path, format, _ = located or locate(cfg.model.name, cfg.model.pretrained)
    format = format if cfg.model.pretrained_format == "auto" else cfg.model.pretrained_format
    report = load_checkpoint(model, path, format=format, label_map=cfg.model.label_map, head=cfg.model.head)
    log.info("loaded pretrained weights from %s: %s", cfg.model.pretrained, report)
