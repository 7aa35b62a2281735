"""Shared fixtures: seeded weight perturbation and tiny registry models."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import swinkit
from swinkit.models import model_info

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


def perturbed_state_dict(model: nn.Module, seed: int = 0, std: float = 0.1) -> dict[str, torch.Tensor]:
    """The model's state dict with seeded Gaussian noise added to every parameter (buffers are copied as they are).

    Swin V2 zero-initialises the res-post-norms (norm1/norm2), which makes every residual branch the identity and
    hides attention and MLP numerics (and gradients) behind a zero; V1 and V2 start with zero biases. Noise on
    everything gives non-trivial weights that still reproduce exactly for a given seed.
    """
    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    state = {}
    for name, value in model.state_dict().items():
        if name in params:
            noise = torch.randn(value.shape, generator=generator, dtype=value.dtype).to(value.device)
            value = value + noise * std
        state[name] = value.clone()
    return state


def perturb_parameters(model: nn.Module, seed: int = 0, std: float = 0.1) -> nn.Module:
    """Load ``perturbed_state_dict`` into the model, in place; returns the model."""
    model.load_state_dict(perturbed_state_dict(model, seed=seed, std=std))
    return model


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
