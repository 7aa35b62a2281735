"""Learning-rate schedules as pure functions of the optimizer step, so resuming needs no scheduler state.

The official Swin recipe steps the schedule per iteration (``t_in_epochs=False``) with a warmup prefix: a linear
ramp from ``warmup_lr`` to ``lr`` over the warmup steps, then a cosine from ``lr`` to ``min_lr``. The CSWin
(MindSpore) run appends constant phases after the cosine: ``cool``, ``tail`` and ``over``, each with its own length
and rate, and every phase fits inside ``epochs``:

    |-- warmup --|------------- cosine -------------|-- cooldown --|-- cool --|-- tail --|-- over --|
    0                                                                                          epochs
"""

from __future__ import annotations

import math

from ..core.errors import ConfigError
from .config import SchedConfig


def lr_at(step: int, steps_per_epoch: int, cfg: SchedConfig, base_lr: float, scale: float = 1.0) -> float:
    """The learning rate of optimizer step ``step`` (0-based).

    Args:
        steps_per_epoch: optimizer steps per epoch (after gradient accumulation).
        base_lr: the peak rate before scaling.
        scale: the linear-scaling factor (global batch / base batch) applied to every rate of the schedule.
    """
    spe = steps_per_epoch
    warmup = cfg.warmup_iterations if cfg.warmup_iterations is not None else round(cfg.warmup_epochs * spe)
    if cfg.name == "poly":
        return poly_lr(step, cfg.epochs * spe, warmup, cfg, base_lr) * scale
    if cfg.name == "step":
        return step_lr(step, spe, warmup, cfg, base_lr) * scale
    if step < warmup:
        rate = cfg.warmup_lr + step * (base_lr - cfg.warmup_lr) / warmup
        return rate * scale
    if cfg.name == "constant":
        return base_lr * scale
    tail_phases = [
        (cfg.cooldown_epochs, cfg.min_lr),
        (cfg.cool_epochs, cfg.cool_lr),
        (cfg.tail_epochs, cfg.tail_lr),
        (cfg.over_epochs, cfg.over_lr),
    ]
    total = cfg.epochs * spe
    cosine = total - warmup - sum(round(e * spe) for e, _ in tail_phases)
    if cosine < 0:
        raise ConfigError(
            f"sched: warmup and the constant phases ({total - cosine} steps) are longer than the run ({total} steps)"
        )
    t = step - warmup
    if t < cosine:
        return (cfg.min_lr + 0.5 * (base_lr - cfg.min_lr) * (1 + math.cos(math.pi * t / cosine))) * scale
    t -= cosine
    for epochs, rate in tail_phases:
        length = round(epochs * spe)
        if t < length:
            return rate * scale
        t -= length
    # Past the end (e.g. a schedule shortened on resume): the last phase that has a length, else min_lr.
    for epochs, rate in reversed(tail_phases):
        if epochs > 0:
            return rate * scale
    return cfg.min_lr * scale


def lr_scale_factor(lr_base_batch: int | None, global_batch: int, accum_steps: int) -> float:
    """Official linear scaling: rates are given per ``lr_base_batch`` images and scaled to the effective batch."""
    if not lr_base_batch:
        return 1.0
    return global_batch * accum_steps / lr_base_batch


def poly_lr(step: int, total: int, warmup: int, cfg: SchedConfig, base_lr: float) -> float:
    """mmcv's ``PolyLrUpdaterHook`` with its 'linear' warmup, as the mmseg recipes run it: ``(lr - min_lr) * (1 -
    step / total) ** power + min_lr``, multiplied during the ``warmup`` steps by a factor rising linearly from
    ``warmup_ratio`` to 1."""
    rate = (base_lr - cfg.min_lr) * (1 - step / total) ** cfg.power + cfg.min_lr
    if step < warmup:
        rate *= 1 - (1 - step / warmup) * (1 - cfg.warmup_ratio)
    return rate


def step_lr(step: int, steps_per_epoch: int, warmup: int, cfg: SchedConfig, base_lr: float) -> float:
    """mmcv's ``StepLrUpdaterHook`` with its 'linear' warmup, as mmdet's detection schedules run it: ``lr`` times
    ``gamma`` for each milestone epoch already reached, multiplied during the ``warmup`` steps by a factor rising
    linearly from ``warmup_ratio`` to 1."""
    epoch = step // steps_per_epoch
    rate = base_lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if step < warmup:
        rate *= 1 - (1 - step / warmup) * (1 - cfg.warmup_ratio)
    return rate
