"""Counting the multiply-accumulates of a forward pass, without running it: every tensor lives on the meta device."""

from __future__ import annotations

from itertools import chain

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from ..layers import to_2tuple


def count_flops(model: nn.Module, img_size: int | tuple[int, int] | None = None, batch_size: int = 1) -> int:
    """Multiply-accumulate operations (MACs) of one forward pass, the number papers and model zoos list as "FLOPs".

    CSWin-T at 224 px, for example, is 4.3 G here as in its README. Matrix products, convolutions and attention
    are counted (by ``torch.utils.flop_counter``, which counts 2 FLOPs per MAC; the result is halved); norms,
    activations and softmax are not, as in fvcore's and the papers' tables.

    The model runs on the meta device with meta copies of its parameters and buffers, so counting a large model at
    a large size takes well under a second and no memory; the model itself is left as it was.

    Args:
        model: a swinkit model (or any module taking a (B, C, H, W) image).
        img_size: input size; by default the model's ``img_size``.
        batch_size: images per forward pass.
    """
    backbone = getattr(model, "model", model)  # a FeatureExtractor's backbone carries the metadata
    h, w = to_2tuple(img_size if img_size is not None else backbone.img_size)
    in_chans = next(m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    named = chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
    tensors = {name: torch.empty_like(t, device="meta") for name, t in named}
    x = torch.empty(batch_size, in_chans, h, w, device="meta")
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            functional_call(model, tensors, (x,))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
