"""UperNet: HF transformers' ``UperNetForSemanticSegmentation`` gives the same logits on the same weights, the mmseg
and HF layouts go both ways, and the dense-task window rule is the one those weights were trained with."""

from __future__ import annotations

import pytest
import torch

from swinkit.checkpoints import load_checkpoint, save_checkpoint, segmentation
from swinkit.core.errors import CheckpointError, ConfigError
from swinkit.models import create_model
from swinkit.models.upernet import AdaptiveAvgPool, UperNet, resize
from swinkit.tools.peers import perturb_parameters

transformers = pytest.importorskip("transformers")

WIDTHS = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
HEADS = dict(channels=64, auxiliary_channels=32, num_classes=11, drop_path_rate=0.0)


def small_upernet(backbone: str = "swin_tiny_patch4_window7_224", **kwargs) -> UperNet:
    model = create_model("upernet_swin_tiny_patch4_window7_512", backbone=backbone,
                         backbone_args={**WIDTHS, **kwargs}, **HEADS)  # fmt: skip
    return perturb_parameters(model, seed=3, std=0.05).eval()


def hf_upernet(family: str, window: int) -> torch.nn.Module:
    config_cls = transformers.Swinv2Config if family == "swinv2" else transformers.SwinConfig
    backbone = config_cls(image_size=224, patch_size=4, embed_dim=WIDTHS["embed_dim"], depths=list(WIDTHS["depths"]),
                          num_heads=list(WIDTHS["num_heads"]), window_size=window, drop_path_rate=0.0,
                          out_features=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip
    config = transformers.UperNetConfig(backbone_config=backbone, hidden_size=HEADS["channels"],
                                        pool_scales=[1, 2, 3, 6], use_auxiliary_head=True,
                                        auxiliary_channels=HEADS["auxiliary_channels"], auxiliary_num_convs=1,
                                        auxiliary_concat_input=False, num_labels=HEADS["num_classes"])  # fmt: skip
    return transformers.UperNetForSemanticSegmentation(config).eval()


def images(height: int, width: int) -> torch.Tensor:
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def hf_from_file(ours: UperNet, folder) -> torch.nn.Module:
    """HF's model loaded by ``from_pretrained`` from the file ``save_checkpoint(format='hf')`` writes: the path a user
    takes to hand swinkit's weights to transformers."""
    hf_upernet(ours.backbone.family, ours.backbone.window_size[0]).config.save_pretrained(folder)
    save_checkpoint(ours, folder / "model.safetensors", format="hf")
    return transformers.UperNetForSemanticSegmentation.from_pretrained(folder).eval()


@pytest.mark.parametrize("height,width", [(128, 160), (100, 132), (56, 56)])
def test_hf_upernet_swin_gives_swinkit_logits_on_the_same_weights(tmp_path, height, width):
    """Sizes that pad every stage (128x160: windows of 7 over 32x40 maps), odd merges (100x132) and maps smaller
    than the window (56x56: a 2x2 last stage, never clamped under the dense-task rule)."""
    ours = small_upernet()
    peer = hf_from_file(ours, tmp_path)
    x = images(height, width)
    with torch.no_grad():
        expected = peer(pixel_values=x).logits
        got = ours(x)
    assert got.shape == (2, HEADS["num_classes"], height, width)
    assert relative(got, expected) <= 1e-4


def test_hf_upernet_auxiliary_head_matches_in_training_mode(tmp_path):
    ours = small_upernet()
    peer = hf_from_file(ours, tmp_path)
    for module in (ours, peer):  # train mode but BatchNorm on its running statistics, no dropout: deterministic
        module.train()
        for m in module.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout, torch.nn.Dropout2d)):
                m.eval()
    x = images(96, 96)
    with torch.no_grad():
        main, auxiliary = ours(x)
        out = peer(pixel_values=x)
        expected = resize(peer.auxiliary_head(peer.backbone(x).feature_maps), x.shape[2:])  # HF keeps it for its loss
    assert relative(main, out.logits) <= 1e-4
    assert relative(auxiliary, expected) <= 1e-4


@pytest.mark.parametrize("source", ["save_pretrained", "state_dict"])
def test_hf_models_own_weights_load_into_swinkit(tmp_path, source):
    """What transformers writes (``save_pretrained``: the hub's names) and what a live transformers 5 model holds
    (``backbone.swin.``, ``q_proj``) both load, and give HF's logits."""
    peer = perturb_parameters(hf_upernet("swin", 7), seed=5, std=0.05).eval()
    if source == "save_pretrained":
        peer.save_pretrained(tmp_path)
        src = tmp_path / "model.safetensors"
    else:
        src = peer.state_dict()
    ours = small_upernet()
    report = load_checkpoint(ours, src)
    assert report.format == "hf" and not report.missing
    x = images(100, 132)
    with torch.no_grad():
        assert relative(ours(x), peer(pixel_values=x).logits) <= 1e-4


def test_hf_layout_reads_back_into_swinkit_exactly():
    ours = small_upernet()
    hf_state = segmentation.from_swinkit(ours, ours.state_dict(), "hf")
    assert segmentation.detect(hf_state) == "hf"
    converted = segmentation.to_swinkit(hf_state, "hf", "swin").state
    assert converted.keys() == ours.state_dict().keys()
    assert all(torch.equal(converted[k], v) for k, v in ours.state_dict().items())


def test_mmseg_layout_round_trip_is_identical():
    ours = small_upernet()
    official = segmentation.from_swinkit(ours, ours.state_dict(), "mmseg")
    assert "backbone.layers.0.downsample.reduction.weight" in official  # merging at the end of stage 0
    assert "backbone.norm3.weight" in official and "decode_head.conv_seg.weight" in official
    assert segmentation.detect(official) == "mmseg"
    back = segmentation.to_swinkit(official, "mmseg", "swin").state
    assert back.keys() == ours.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in ours.state_dict().items())


def test_unexpected_entries_are_refused_by_name():
    ours = small_upernet()
    official = segmentation.from_swinkit(ours, ours.state_dict(), "mmseg")
    official["neck.lateral_convs.0.conv.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="neck.lateral_convs"):
        segmentation.to_swinkit(official, "mmseg", "swin")


def test_eval_returns_logits_at_the_input_size_and_training_adds_the_auxiliary():
    model = small_upernet()
    x = images(70, 90)
    assert model(x).shape == (2, 11, 70, 90)
    model.train()
    main, auxiliary = model(x)
    assert main.shape == auxiliary.shape == (2, 11, 70, 90)
    (main.mean() + auxiliary.mean()).backward()
    assert model.backbone.patch_embed.proj.weight.grad is not None


def test_window_padding_rules_differ_only_where_a_map_is_padded():
    """At maps that are window multiples larger than the window, the dense-task and the classification rule are the
    same computation; where a stage pads, they are not (the padded keys are visible in one and masked in the other)."""
    backbone = create_model("swin_tiny_patch4_window7_224", num_classes=0, **WIDTHS)
    backbone = perturb_parameters(backbone, seed=1, std=0.05).eval()
    with torch.no_grad():
        masked = backbone.forward_intermediates(images(448, 448), intermediates_only=True)  # 112, 56, 28, 14
        padded_masked = backbone.forward_intermediates(images(128, 128), intermediates_only=True)
        backbone.set_window_padding("visible")
        visible = backbone.forward_intermediates(images(448, 448), intermediates_only=True)
        padded_visible = backbone.forward_intermediates(images(128, 128), intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(masked, visible, strict=True))
    assert not torch.allclose(padded_masked[0], padded_visible[0])
    with pytest.raises(ConfigError, match="window_padding"):
        backbone.set_window_padding("zeros")


def test_registry_entries_and_pretrained_cfg():
    model = create_model("upernet_swin_tiny_patch4_window7_512")
    assert model.num_classes == 150 and model.img_size == (512, 512)
    assert model.model_info.miou == 44.51
    assert model.pretrained_cfg["classifier"] == "decode_head.conv_seg"
    assert model.pretrained_cfg["first_conv"] == "backbone.patch_embed.proj"
    with pytest.raises(ConfigError, match="features_only"):
        create_model("upernet_swin_tiny_patch4_window7_512", features_only=True)
    no_decay = model.no_weight_decay()
    assert "backbone.layers.0.blocks.0.attn.relative_position_bias_table" in no_decay
    assert "out_norms.0.weight" in no_decay and "backbone.layers.0.blocks.0.norm1.bias" in no_decay
    assert "decode_head.conv_seg.bias" not in no_decay  # mmseg decays every head parameter


@pytest.mark.parametrize("format,name", [("swinkit", "m.safetensors"), ("mmseg", "m.pth"), ("hf", "m.safetensors")])
def test_save_and_load_every_layout_gives_the_same_model(tmp_path, format, name):
    ours = small_upernet()
    save_checkpoint(ours, tmp_path / name, format=format)
    fresh = small_upernet()
    fresh.load_state_dict(perturb_parameters(small_upernet(), seed=9).state_dict())
    report = load_checkpoint(fresh, tmp_path / name)
    assert report.format == format
    assert not report.missing and not report.unexpected
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in ours.state_dict().items())


def test_a_classification_checkpoint_loads_into_the_backbone(tmp_path):
    classifier = perturb_parameters(create_model("swin_tiny_patch4_window7_224", num_classes=7, **WIDTHS), seed=4)
    save_checkpoint(classifier, tmp_path / "cls.pth", format="microsoft")
    model = small_upernet()
    heads = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    report = load_checkpoint(model, tmp_path / "cls.pth")
    assert report.format == "microsoft"
    expected = {k: v for k, v in classifier.state_dict().items() if not k.startswith(("head.", "norm."))}
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in expected.items())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in heads.items())


def test_class_count_mismatch_needs_head_reset(tmp_path):
    save_checkpoint(small_upernet(), tmp_path / "m.pth", format="mmseg")
    other = create_model("upernet_swin_tiny_patch4_window7_512", backbone_args=WIDTHS, **{**HEADS, "num_classes": 5})
    with pytest.raises(CheckpointError, match="head='reset'"):
        load_checkpoint(other, tmp_path / "m.pth")
    report = load_checkpoint(other, tmp_path / "m.pth", head="reset")
    assert any("conv_seg" in note for note in report.adapted)
    assert other.decode_head.conv_seg.weight.shape[0] == 5


@pytest.mark.parametrize("size", [1, 2, 3, 6])
def test_pyramid_pooling_bins_are_adaptive_average_poolings(size):
    # The PPM pools with averaging matrices (one exported graph for every size); the bins must be PyTorch's, also where
    # the map is smaller than the output and bins overlap.
    g = torch.Generator().manual_seed(size)
    for height, width in [(1, 1), (2, 7), (5, 5), (13, 6), (32, 17)]:
        x = torch.randn(2, 3, height, width, generator=g)
        expected = torch.nn.functional.adaptive_avg_pool2d(x, size)
        assert torch.allclose(AdaptiveAvgPool(size)(x), expected, rtol=0, atol=1e-6), (height, width)
