"""OpenMMLab's Swin layout (mmseg 1.x, mmdet): its names both ways, its patch merging's nn.Unfold channel order checked
against a merge computed as mmcv computes it, and mmseg 1.x UperNet files."""

from __future__ import annotations

import torch
from torch import nn

import swinkit
from swinkit.checkpoints import load_checkpoint, save_checkpoint, segmentation
from swinkit.checkpoints.openmmlab import from_official
from swinkit.tools.peers import perturb_parameters
from tests.engine_utils import tiny_upernet

SMALL = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=4)


def test_a_merge_through_nn_unfold_with_the_converted_weights_equals_swinkits_merge():
    # mmcv's PatchMerging: nn.Unfold(2, stride 2) over (B, C, H, W), LayerNorm(4C), Linear(4C, 2C) without bias.
    model = perturb_parameters(swinkit.create_model("swin_tiny_patch4_window7_224", **SMALL), seed=1)
    state = from_official(swinkit.checkpoints.layouts.from_swinkit(model, "microsoft"))
    x = torch.randn(2, 8, 6, 32, generator=torch.Generator().manual_seed(0))  # (B, H, W, C) entering stage 2
    norm, reduction = nn.LayerNorm(128), nn.Linear(128, 64, bias=False)
    norm.weight.data, norm.bias.data = state["stages.1.downsample.norm.weight"], state["stages.1.downsample.norm.bias"]
    reduction.weight.data = state["stages.1.downsample.reduction.weight"]
    unfolded = nn.Unfold(kernel_size=2, stride=2)(x.permute(0, 3, 1, 2)).transpose(1, 2)  # (B, H/2 * W/2, 4C)
    mmcv = reduction(norm(unfolded)).reshape(2, 4, 3, 64)
    with torch.no_grad():
        assert torch.allclose(model.layers[2].downsample(x), mmcv, atol=1e-6)


def test_openmmlab_files_round_trip_and_are_told_by_their_names(tmp_path):
    model = perturb_parameters(swinkit.create_model("swin_tiny_patch4_window7_224", num_classes=7, **SMALL), seed=2)
    save_checkpoint(model, tmp_path / "mm.pth", format="openmmlab")
    saved = torch.load(tmp_path / "mm.pth", weights_only=True)["state_dict"]
    assert "stages.0.blocks.0.attn.w_msa.qkv.weight" in saved and "stages.0.blocks.0.ffn.layers.0.0.weight" in saved
    assert "norm3.weight" in saved and "head.fc.weight" in saved
    again = swinkit.create_model("swin_tiny_patch4_window7_224", num_classes=7, **SMALL)
    report = load_checkpoint(again, tmp_path / "mm.pth")
    assert report.format == "openmmlab" and not report.missing and not report.unexpected
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))


def test_an_mmseg_1x_upernet_file_loads_with_the_same_logits(tmp_path):
    model = tiny_upernet(5)
    official = segmentation.from_swinkit(model, model.state_dict(), "mmseg")
    backbone = {k.removeprefix("backbone."): v for k, v in official.items() if k.startswith("backbone.")}
    renamed = {f"backbone.{k}": v for k, v in from_official(backbone).items()}
    mmseg1 = {**renamed, **{k: v for k, v in official.items() if not k.startswith("backbone.")}}
    assert "backbone.stages.3.blocks.1.attn.w_msa.relative_position_bias_table" in mmseg1
    torch.save({"state_dict": mmseg1, "meta": {"mmseg_version": "1.2.2"}}, tmp_path / "mmseg1.pth")
    loaded = swinkit.create_model("upernet_swin_tiny_patch4_window7_512", num_classes=5, channels=16,
                                  auxiliary_channels=8, backbone_args=SMALL)  # fmt: skip
    report = load_checkpoint(loaded, tmp_path / "mmseg1.pth")
    assert report.format == "mmseg" and not report.missing and not report.unexpected
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))
