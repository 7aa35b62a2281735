"""timm's model interface on swinkit models: pretrained_cfg (resolve_data_config), head_hidden_size, and timm's
feature-extraction keywords with its FeatureInfo, checked against timm's own models where timm has them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from timm.models import PretrainedCfg

import swinkit
from swinkit.core.errors import ConfigError
from swinkit.data import build_transform
from swinkit.engine.config import DataConfig
from swinkit.models import create_model

TINY = {
    "swin_tiny_patch4_window7_224": dict(img_size=64, window_size=4, embed_dim=16, depths=(1, 1, 2, 1),
                                         num_heads=(1, 2, 2, 4)),
    "swinv2_tiny_window8_256": dict(img_size=64, window_size=4, embed_dim=16, depths=(1, 1, 2, 1),
                                    num_heads=(1, 2, 2, 4)),
    "cswin_tiny_224": dict(img_size=64, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(2, 2, 4, 4)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TINY))
def test_pretrained_cfg_describes_the_registered_preprocessing(name):
    model = create_model(name, **TINY[name])
    cfg, info = model.pretrained_cfg, model.model_info
    assert model.default_cfg is cfg and model.head_hidden_size == model.num_features == 128
    assert cfg["input_size"] == (3, 64, 64) and cfg["num_classes"] == 1000
    assert (cfg["mean"], cfg["std"], cfg["crop_pct"], cfg["interpolation"]) == (info.mean, info.std, info.crop_pct,
                                                                              info.interpolation)  # fmt: skip
    modules = dict(model.named_modules())
    assert isinstance(modules[cfg["first_conv"]], torch.nn.Conv2d) and cfg["classifier"] in modules
    # Every field timm's cfgs carry (timm code reads them by key), with timm's meaning.
    assert {f.name for f in dataclasses.fields(PretrainedCfg)} <= set(cfg)
    with torch.no_grad():
        last = model.forward_features(torch.randn(1, 3, 64, 64))
    assert cfg["pool_size"] == tuple(last.shape[1:3]) and cfg["min_input_size"] == (3, 32, 32)
    assert cfg["fixed_input_size"] is False and cfg["test_input_size"] is None
    # timm's data pipeline reads it: the same evaluation transform as swinkit's own
    resolved = resolve_data_config(model=model)
    assert resolved["input_size"] == (3, 64, 64) and resolved["crop_pct"] == info.crop_pct
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    theirs = create_transform(**resolved)(image)
    ours = build_transform(DataConfig(), 64, False, info)(image)
    assert torch.equal(theirs, ours)


def test_the_top_level_create_model_carries_its_tags_record_as_timm_does():
    model = swinkit.create_model("swinv2_tiny_window8_256", depths=(1, 1, 1, 1))
    assert model.pretrained_cfg["tag"] == "in1k" and model.pretrained_cfg["input_size"] == (3, 256, 256)
    assert model.pretrained_cfg["first_conv"] == "patch_embed.proj"
    named = swinkit.create_model("swinv2_tiny_window8_256.timm_ms_in1k", depths=(1, 1, 1, 1))  # a timm tag
    assert named.pretrained_cfg["tag"] == "timm_ms_in1k"
    ours = swinkit.create_model("swin_tiny_patch4_window7_224")
    theirs = timm.create_model("swin_tiny_patch4_window7_224")
    assert (ours.head_hidden_size, ours.num_features) == (theirs.head_hidden_size, theirs.num_features)
    keys = ("input_size", "first_conv", "classifier", "num_classes")
    assert {k: ours.pretrained_cfg[k] for k in keys} == {k: theirs.pretrained_cfg[k] for k in keys}
    # the same tag: the same record (timm's default tag here is another release, with another crop)
    ours = swinkit.create_model("swin_tiny_patch4_window7_224.timm_ms_in1k").pretrained_cfg
    theirs = timm.create_model("swin_tiny_patch4_window7_224.ms_in1k").pretrained_cfg
    keys += ("crop_pct", "interpolation", "mean", "std")
    assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}


@pytest.mark.parametrize("name", ["swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256"])
@pytest.mark.parametrize("out_indices", [(1, 3), (0, 1, 2, 3), (-1,), 2])
def test_feature_info_is_timms(name, out_indices):
    with torch.device("meta"):
        theirs = timm.create_model(name, features_only=True, out_indices=out_indices)
    ours = swinkit.create_model(name, features_only=True, out_indices=out_indices)
    for method in ("channels", "reduction", "module_name", "get_dicts"):
        assert getattr(ours.feature_info, method)() == getattr(theirs.feature_info, method)(), method
    assert ours.feature_info[0] == theirs.feature_info[0]
    assert ours.pretrained_cfg["input_size"][1:] == ours.model.img_size


@pytest.mark.parametrize("name", sorted(TINY))
def test_features_only_maps_match_their_feature_info_in_both_formats(name):
    nchw = create_model(name, features_only=True, out_indices=(-3, -1), **TINY[name]).eval()
    nhwc = create_model(name, features_only=True, out_indices=(-3, -1), output_fmt="NHWC", **TINY[name]).eval()
    nhwc.load_state_dict(nchw.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps, channels_last = nchw(x), nhwc(x)
    assert nchw.feature_info.channels() == [m.shape[1] for m in maps] == [32, 128]
    assert nchw.feature_info.reduction() == [64 // m.shape[-1] for m in maps] == [8, 32]
    for a, b in zip(maps, channels_last, strict=True):
        assert torch.equal(a, b.permute(0, 3, 1, 2))
    assert create_model(name, features_only=True, feature_cls="getter", **TINY[name]).feature_info.channels() == [
        16, 32, 64, 128]
    with pytest.raises(ConfigError, match="feature_cls='hook'"):
        create_model(name, features_only=True, feature_cls="hook", **TINY[name])
    with pytest.raises(ConfigError, match="output_fmt"):
        create_model(name, features_only=True, output_fmt="NCWH", **TINY[name])


def test_swinkit_models_register_in_timms_registry(monkeypatch):
    names = swinkit.register_in_timm()
    assert len(names) == len(swinkit.list_models()) and "swinkit_cswin_tiny_224" in timm.list_models("swinkit_*")
    tiny = TINY["cswin_tiny_224"]
    backbone = timm.create_model("swinkit_cswin_tiny_224", features_only=True, out_indices=(1, 3), **tiny)
    assert backbone.feature_info.channels() == [32, 128]
    tagged = timm.create_model("swinkit_swinv2_tiny_window8_256.timm_ms_in1k", **TINY["swinv2_tiny_window8_256"])
    assert tagged.pretrained_cfg["tag"] == "timm_ms_in1k"
    calls = []

    def record(name, **kwargs):
        calls.append((name, kwargs))
        return torch.nn.Identity()

    monkeypatch.setattr("swinkit.hub.timm_registry.create_model", record)
    timm.create_model("swinkit_swin_tiny_patch4_window7_224.in1k", pretrained=True, num_classes=10)
    timm.create_model("swinkit_swin_tiny_patch4_window7_224", pretrained=True)
    assert calls == [("swin_tiny_patch4_window7_224", {"pretrained": "in1k", "num_classes": 10}),
                     ("swin_tiny_patch4_window7_224", {"pretrained": True})]  # fmt: skip
    with pytest.raises(ConfigError, match="pretrained_cfg_overlay"):
        timm.create_model("swinkit_cswin_tiny_224", pretrained_cfg_overlay={"crop_pct": 1.0})
    with pytest.raises(ConfigError, match="prefix"):
        swinkit.register_in_timm("swinkit/")
