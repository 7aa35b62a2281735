"""Shared fixtures: seeded weight perturbation (``swinkit.tools.peers``, shared with the benchmark) and tiny registry
models."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import swinkit
from swinkit.models import model_info
from swinkit.tools.peers import perturb_parameters, perturbed_state_dict

__all__ = ["perturb_parameters", "perturbed_state_dict"]

# Small enough that a forward and backward of a batch of two 64 px images takes a fraction of a second, large
# enough that stages 1-2 have shifted 4x4 windows (16x16 and 8x8 maps) and stages 3-4 exercise the window clamp
# (4x4 and 2x2 maps), where a second, shifted block would be unshifted anyway.
TINY_OVERRIDES = dict(
    embed_dim=16,
    depths=(2, 2, 1, 1),
    num_heads=(1, 2, 2, 4),
    window_size=4,
    img_size=64,
    num_classes=7,
    drop_path_rate=0.0,
)

# CSWin at 64 px: maps 16, 8, 4, 2 with stripes 1, 2, 2 wide (both branches, several stripes each), then full attention.
CSWIN_TINY_OVERRIDES = dict(
    embed_dim=16,
    depths=(1, 2, 2, 1),
    num_heads=(2, 2, 4, 4),
    split_size=(1, 2, 2, 2),
    img_size=64,
    num_classes=7,
    drop_path_rate=0.0,
)


def tiny_overrides(name: str) -> dict:
    """Tiny constructor overrides for a registered model; SwinV2-H/G keep their extra norm (stage 3 gets 6 blocks)."""
    if model_info(name).cls.family == "cswin":
        return dict(CSWIN_TINY_OVERRIDES)
    overrides = dict(TINY_OVERRIDES)
    period = model_info(name).defaults.get("extra_norm_period", 0)
    if period:
        overrides["depths"] = (2, 2, period, 2)
    return overrides


@pytest.fixture
def perturb() -> Callable[..., nn.Module]:
    return perturb_parameters


@pytest.fixture
def tiny_model() -> Callable[..., nn.Module]:
    """Factory: ``tiny_model(name, seed=0, **overrides)`` builds a tiny, perturbed registry model."""

    def make(name: str, seed: int = 0, **overrides) -> nn.Module:
        torch.manual_seed(seed)
        model = swinkit.create_model(name, **{**tiny_overrides(name), **overrides})
        return perturb_parameters(model, seed=seed)

    return make


@pytest.fixture(autouse=True)
def _private_weights_cache(tmp_path_factory, monkeypatch):
    """Every test downloads into its own cache, never the user's ~/.cache/swinkit, and never through a mirror or in
    offline mode set in the environment of whoever runs the tests."""
    monkeypatch.setenv("SWINKIT_HOME", str(tmp_path_factory.mktemp("swinkit_home")))
    for name in ("SWINKIT_GITHUB_MIRROR", "SWINKIT_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
