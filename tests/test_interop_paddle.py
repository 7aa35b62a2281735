"""PaddleClas Swin V2 (``swin_transformer_v2.py``) from a ``.pdparams`` file made by PaddleClas itself.

PaddleClas 2.6.0's Swin V2 cannot run a forward pass, so the fixture (tests/fixtures/make_paddle_fixtures.py swinv2)
holds PaddleClas's real state dict (names, shapes, [in, out] Linear weights, saved buffers) with random weights, and
swinkit is checked against timm's Swin V2 loaded from the same arrays through a conversion written out here by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import swinkit
from swinkit.checkpoints import CheckpointError, detect_format, load_checkpoint
from swinkit.checkpoints.io import read_pdparams

FIXTURES = Path(__file__).parent / "fixtures"
PADDLE_SWINV2 = dict(
    img_size=64, embed_dim=16, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=4, num_classes=10
)
# Every Linear of the layout; Paddle stores them [in, out].
LINEARS = (
    "attn.qkv.weight",
    "attn.proj.weight",
    "attn.cpb_mlp.0.weight",
    "attn.cpb_mlp.2.weight",
    "mlp.fc1.weight",
    "mlp.fc2.weight",
    "downsample.reduction.weight",
    "head.weight",
)


def official_from_paddle(raw: dict) -> dict[str, torch.Tensor]:
    return {k: v.t() if k.endswith(LINEARS) else v for k, v in raw.items() if isinstance(v, torch.Tensor)}


def test_paddleclas_swinv2_matches_timm_on_the_same_arrays():
    raw = read_pdparams(FIXTURES / "swinv2_paddle_tiny.pdparams")
    assert raw["layers.0.blocks.0.attn.qkv.weight"].shape == (16, 48)  # [in, out]
    assert raw["layers.3.blocks.0.attn.proj.weight"].shape == (128, 128)  # square: the shape cannot tell
    assert detect_format(raw) == "paddle"

    model = swinkit.create_model("swinv2_tiny_window8_256", **PADDLE_SWINV2).eval()
    report = load_checkpoint(model, FIXTURES / "swinv2_paddle_tiny.pdparams")
    assert report.format == "paddle" and not report.missing and not report.unexpected
    assert any(k.endswith("relative_coords_table") for k in report.dropped)
    state = model.state_dict()
    assert torch.equal(state["layers.3.blocks.0.attn.proj.weight"], raw["layers.3.blocks.0.attn.proj.weight"].t())
    assert torch.equal(state["layers.1.downsample.reduction.weight"], raw["layers.0.downsample.reduction.weight"].t())

    peer = timm.create_model(
        "swinv2_tiny_window8_256", pretrained=False, img_size=64, window_size=4, embed_dim=16, depths=(2, 2, 1, 1),
        num_heads=(1, 2, 2, 4), num_classes=10,
    ).eval()  # fmt: skip
    from timm.models.swin_transformer_v2 import checkpoint_filter_fn

    peer.load_state_dict(checkpoint_filter_fn(official_from_paddle(raw), peer))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = peer(x), model(x)
    assert ((expected - actual).abs().max() / expected.abs().max()).item() < 1e-5


def test_official_swinv2_weights_are_not_taken_for_paddle():
    official = official_from_paddle(read_pdparams(FIXTURES / "swinv2_paddle_tiny.pdparams"))
    assert detect_format(official) == "microsoft"


def test_paddle_swin_checkpoint_into_cswin_is_a_clear_error():
    model = swinkit.create_model("cswin_tiny_224", embed_dim=16, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2))
    with pytest.raises(CheckpointError, match="Swin one"):
        load_checkpoint(model, FIXTURES / "swinv2_paddle_tiny.pdparams")
