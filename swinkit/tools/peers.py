"""Peers of swinkit's models in timm, torchvision and HF transformers, and the seeded weight perturbation that gives
every comparison non-trivial weights. Shared by ``swinkit benchmark`` and the parity tests."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# swinkit name -> torchvision builder name, for the architectures torchvision has.
TORCHVISION_NAMES = {
    "swinv2_tiny_window8_256": "swin_v2_t",
    "swinv2_small_window8_256": "swin_v2_s",
    "swinv2_base_window8_256": "swin_v2_b",
    "swin_tiny_patch4_window7_224": "swin_t",
    "swin_small_patch4_window7_224": "swin_s",
    "swin_base_patch4_window7_224": "swin_b",
}


def perturbed_state_dict(model: nn.Module, seed: int = 0, std: float = 0.1) -> dict[str, torch.Tensor]:
    """The model's state dict with seeded Gaussian noise added to every parameter and to BatchNorm's running means,
    and its running variances scaled by exp(noise) (other buffers are copied as they are).

    Swin V2 zero-initialises the res-post-norms (norm1/norm2), which makes every residual branch the identity and
    hides attention and MLP numerics (and gradients) behind a zero; V1 and V2 start with zero biases, and fresh
    BatchNorm statistics are (0, 1). Noise on everything gives non-trivial weights that still reproduce exactly for
    a given seed.
    """
    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    state = {}
    for name, value in model.state_dict().items():
        noisy = name in params or name.endswith((".running_mean", ".running_var"))
        if noisy:
            noise = torch.randn(value.shape, generator=generator, dtype=value.dtype).to(value.device) * std
            value = value * noise.exp() if name.endswith(".running_var") else value + noise
        state[name] = value.clone()
    return state


def perturb_parameters(model: nn.Module, seed: int = 0, std: float = 0.1) -> nn.Module:
    """Load ``perturbed_state_dict`` into the model, in place; returns the model."""
    model.load_state_dict(perturbed_state_dict(model, seed=seed, std=std))
    return model



def timm_peer(name: str, model: nn.Module) -> nn.Module | None:
    """timm's model of the same name and class count (none for CSWin or names timm lacks)."""
    import timm

    if model.family == "cswin" or name not in timm.list_models():
        return None
    return timm.create_model(name, pretrained=False, num_classes=model.num_classes, drop_path_rate=0.0)


def torchvision_peer(name: str, model: nn.Module) -> nn.Module | None:
    """torchvision's builder of the same architecture, if it has one."""
    import torchvision

    builder = TORCHVISION_NAMES.get(name)
    return None if builder is None else getattr(torchvision.models, builder)(num_classes=model.num_classes)


def hf_peer(name: str, model: nn.Module) -> nn.Module | None:
    """HF transformers' Swin/Swinv2 classifier with the swinkit model's width, depths, heads, window and size."""
    import transformers

    if model.family not in ("swin", "swinv2"):
        return None
    stages = model.layers
    kwargs = dict(
        image_size=model.img_size[0], embed_dim=model.embed_dims[0], depths=[len(s.blocks) for s in stages],
        num_heads=[s.blocks[0].attn.num_heads for s in stages], window_size=model.window_size[0],
        num_labels=model.num_classes, drop_path_rate=0.0,
    )  # fmt: skip
    if model.family == "swinv2":
        kwargs["pretrained_window_sizes"] = [p[0] for p in model.pretrained_window_sizes]
        return transformers.Swinv2ForImageClassification(transformers.Swinv2Config(**kwargs))
    return transformers.SwinForImageClassification(transformers.SwinConfig(**kwargs))


class HFLogits(nn.Module):
    """HF models return an output object; the benchmark wants a tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


PEERS: dict[str, tuple[Callable[[str, nn.Module], nn.Module | None], str]] = {
    "timm": (timm_peer, "timm"),
    "torchvision": (torchvision_peer, "torchvision"),
    "hf": (hf_peer, "hf"),
}
