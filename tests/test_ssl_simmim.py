"""SimMIM: masking, the loss on masked pixels only, the mask token, target normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from swinkit.ssl import SimMIM, norm_targets
from tests.ssl_utils import tiny_simmim


def _images(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _pixel_mask(model: SimMIM, mask: torch.Tensor) -> torch.Tensor:
    p = model.patch_size
    return mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).bool()  # (B, 1, H, W)


def test_random_mask_masks_whole_mask_patches_at_the_ratio():
    model = tiny_simmim(mask_patch_size=8, mask_ratio=0.6)  # 16 px: 2x2 mask patches of 2x2 tokens
    torch.manual_seed(0)
    mask = model.random_mask(5, 16, 16)
    assert mask.shape == (5, 4, 4)
    blocks = mask.view(5, 2, 2, 2, 2)  # (B, gh, s, gw, s): constant inside a mask patch
    assert torch.equal(blocks.amin(dim=(2, 4)), blocks.amax(dim=(2, 4)))
    assert (blocks.amax(dim=(2, 4)).flatten(1).sum(1) == math.ceil(4 * 0.6)).all()


def test_loss_counts_only_masked_pixels():
    model = tiny_simmim()
    images = _images()
    mask = model.random_mask(2, 16, 16)
    with torch.no_grad():
        reconstruction = model.reconstruct(images, mask)
        loss = model.loss(reconstruction, images, mask)
        masked = _pixel_mask(model, mask).expand_as(images)
        noise = torch.randn_like(images) * 5
        other_unmasked = torch.where(masked, images, images + noise)
        other_masked = torch.where(masked, images + noise, images)
        assert model.loss(reconstruction, other_unmasked, mask) == loss
        assert model.loss(reconstruction, other_masked, mask) != loss
        expected = (reconstruction - images).abs()[masked].mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_masked_patches_are_replaced_by_the_mask_token():
    """The encoder never sees masked pixels: changing them leaves the reconstruction unchanged."""
    model = tiny_simmim().eval()
    images = _images()
    mask = model.random_mask(2, 16, 16)
    masked = _pixel_mask(model, mask).expand_as(images)
    with torch.no_grad():
        a = model.reconstruct(images, mask)
        b = model.reconstruct(torch.where(masked, torch.randn_like(images), images), mask)
        c = model.reconstruct(torch.where(masked, images, torch.randn_like(images)), mask)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_forward_backward_reaches_every_parameter():
    model = tiny_simmim(name="swin_tiny_patch4_window7_224")
    loss = model(_images())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    assert model.decoder[0].out_channels == model.stride**2 * 3 and model.stride == 8
    assert {"mask_token", "decoder.0.bias"} <= model.no_weight_decay()


def test_norm_targets_match_a_direct_computation():
    x = torch.randn(1, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    out = norm_targets(x, 3)
    patch = x[0, 0, 2:5, 2:5]  # the full 3x3 neighbourhood of pixel (3, 3)
    expected = (x[0, 0, 3, 3] - patch.mean()) / (patch.var(unbiased=True) + 1e-6) ** 0.5
    torch.testing.assert_close(out[0, 0, 3, 3], expected, rtol=1e-4, atol=1e-5)


def test_simmim_rejects_other_backbones_and_bad_mask_sizes():
    from swinkit import create_model

    with pytest.raises(ValueError, match="Swin V1 or V2"):
        SimMIM(create_model("cswin_tiny_224", num_classes=0, embed_dim=16, depths=(1, 1, 1, 1),
                            num_heads=(2, 2, 2, 2)))  # fmt: skip
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny_simmim(mask_patch_size=6)
