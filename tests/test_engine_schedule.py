"""Learning-rate schedules against reference values: timm's cosine scheduler and the CSWin phase table."""

from __future__ import annotations

import math

import pytest
from timm.scheduler import CosineLRScheduler

from swinkit.engine.config import SchedConfig
from swinkit.engine.schedule import lr_at, lr_scale_factor

SPE = 10  # steps per epoch


def test_cosine_matches_timm_per_iteration():
    """The official Swin set-up: CosineLRScheduler(t_initial=(E-W)*n, warmup_prefix=True, t_in_epochs=False)."""
    cfg = SchedConfig(epochs=12, warmup_epochs=2, warmup_lr=5e-7, min_lr=5e-6)
    base = 5e-4
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    ref = CosineLRScheduler(opt, t_initial=(12 - 2) * SPE, lr_min=5e-6, warmup_lr_init=5e-7, warmup_t=2 * SPE,
                            cycle_limit=1, t_in_epochs=False, warmup_prefix=True)  # fmt: skip
    for step in range(12 * SPE):
        ref.step_update(step)
        assert lr_at(step, SPE, cfg, base) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 1e-6),  # warmup starts at warmup_lr
        (10, 1e-6 + 0.5 * (1e-3 - 1e-6)),  # halfway through the 2-epoch warmup
        (20, 1e-3),  # cosine starts at the peak
        (20 + 25, 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 25 / 50))),  # cosine midpoint
        (69, 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 49 / 50))),  # last cosine step
        (70, 1e-5),  # cool: 2 epochs at cool_lr
        (89, 1e-5),
        (90, 1e-6),  # tail: 1 epoch at tail_lr
        (99, 1e-6),
        (100, 1e-7),  # over: 1 epoch at over_lr, to the end
        (109, 1e-7),
    ],
)
def test_cswin_phases(step, expected):
    """Warmup 2, cosine 5 (what the other phases leave of 11 epochs), cool 2, tail 1, over 1."""
    cfg = SchedConfig(epochs=11, warmup_epochs=2, warmup_lr=1e-6, min_lr=1e-5, cool_epochs=2, cool_lr=1e-5,
                      tail_epochs=1, tail_lr=1e-6, over_epochs=1, over_lr=1e-7)  # fmt: skip
    assert lr_at(step, SPE, cfg, 1e-3) == pytest.approx(expected, rel=1e-12)


def test_cswin_seed_phases_keep_a_280_epoch_cosine():
    """The three CSWin phases (seed README) all have warmup 20 + cosine 280 before their constant tails."""
    for cool, tail, over, epochs in [(20, 0, 0, 320), (80, 0, 0, 380), (80, 60, 60, 500)]:
        cfg = SchedConfig(epochs=epochs, warmup_epochs=20, warmup_lr=1e-6, min_lr=1e-5, cool_epochs=cool,
                          cool_lr=1e-5, tail_epochs=tail, tail_lr=1e-6, over_epochs=over, over_lr=1e-7)  # fmt: skip
        assert lr_at(20, 1, cfg, 1e-3) == pytest.approx(1e-3)
        assert lr_at(20 + 140, 1, cfg, 1e-3) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
        assert lr_at(300, 1, cfg, 1e-3) == pytest.approx(1e-5)  # cool starts at epoch 300
    assert lr_at(499, 1, cfg, 1e-3) == pytest.approx(1e-7)
    assert lr_at(380, 1, cfg, 1e-3) == pytest.approx(1e-6)


def test_cooldown_and_scaling():
    cfg = SchedConfig(epochs=10, warmup_epochs=0, min_lr=1e-5, cooldown_epochs=2)
    assert lr_at(0, SPE, cfg, 1e-3) == pytest.approx(1e-3)
    assert lr_at(80, SPE, cfg, 1e-3) == pytest.approx(1e-5)
    assert lr_at(80, SPE, cfg, 1e-3, scale=2.0) == pytest.approx(2e-5)
    assert lr_scale_factor(512, 1024, 1) == 2.0
    assert lr_scale_factor(512, 128, 2) == 0.5
    assert lr_scale_factor(None, 1024, 4) == 1.0


def test_constant_and_too_long_phases():
    assert lr_at(50, SPE, SchedConfig(name="constant", epochs=10, warmup_epochs=1), 1e-3) == 1e-3
    with pytest.raises(ValueError, match="longer than the run"):
        lr_at(50, SPE, SchedConfig(epochs=10, warmup_epochs=5, cool_epochs=6), 1e-3)
