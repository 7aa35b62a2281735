"""AdamW parameter groups: exactly which parameters decay; layer decay, backbone scale and freezing."""

from __future__ import annotations

import pytest

import swinkit
from swinkit.engine.config import OptimConfig
from swinkit.engine.optim import build_optimizer, freeze_modules, layer_id, param_groups

TINY = dict(img_size=16, patch_size=4, window_size=2, embed_dim=8, depths=(1, 1), num_heads=(1, 2), num_classes=10)


def _decayed(model, cfg: OptimConfig) -> set[str]:
    return {n for g in param_groups(model, cfg) if g["weight_decay"] > 0 for n in g["names"]}


def test_swinv2_exactly_these_parameters_decay():
    """Weights of linear/conv layers decay; biases, norms, q/v biases, logit scales and the CPB MLP do not."""
    model = swinkit.create_model("swinv2_tiny_window8_256", **TINY)
    expected = {"patch_embed.proj.weight", "layers.1.downsample.reduction.weight", "head.fc.weight"}
    for i in (0, 1):
        expected |= {f"layers.{i}.blocks.0.{n}.weight" for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    assert _decayed(model, OptimConfig(weight_decay=0.05)) == expected
    all_names = {n for n, _ in model.named_parameters()}
    no_decay = {n for g in param_groups(model, OptimConfig()) if g["weight_decay"] == 0 for n in g["names"]}
    assert no_decay == all_names - expected
    assert "layers.0.blocks.0.attn.cpb_mlp.0.weight" in no_decay and "layers.0.blocks.0.attn.logit_scale" in no_decay


def test_swin_v1_relative_position_table_does_not_decay():
    model = swinkit.create_model("swin_tiny_patch4_window7_224", **TINY)
    decayed = _decayed(model, OptimConfig())
    assert not any("relative_position_bias_table" in n for n in decayed)
    assert "layers.0.blocks.0.attn.qkv.weight" in decayed


def test_adamw_groups_cover_every_trainable_parameter_once():
    model = swinkit.create_model("swinv2_tiny_window8_256", **TINY)
    opt = build_optimizer(model, OptimConfig(betas=[0.9, 0.95], eps=1e-6))
    assert type(opt).__name__ == "AdamW" and opt.defaults["betas"] == (0.9, 0.95)
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05}


def test_layer_decay_and_backbone_scale():
    model = swinkit.create_model("swinv2_tiny_window8_256", **TINY)
    depths = [1, 1]
    assert layer_id("patch_embed.proj.weight", depths) == 0
    assert layer_id("layers.0.blocks.0.attn.qkv.weight", depths) == 1
    assert layer_id("layers.1.downsample.reduction.weight", depths) == 1
    assert layer_id("layers.1.blocks.0.mlp.fc1.weight", depths) == 2
    assert layer_id("head.fc.weight", depths) == 3
    scales = {n: g["lr_scale"] for g in param_groups(model, OptimConfig(layer_decay=0.5)) for n in g["names"]}
    assert scales["head.fc.weight"] == 1.0
    assert scales["layers.1.blocks.0.mlp.fc1.weight"] == 0.5
    assert scales["patch_embed.proj.weight"] == 0.125
    scales = {n: g["lr_scale"] for g in param_groups(model, OptimConfig(backbone_lr_scale=0.1)) for n in g["names"]}
    assert scales["head.fc.bias"] == 1.0 and scales["norm.weight"] == pytest.approx(0.1)


def test_freeze_removes_parameters_from_the_optimizer():
    model = swinkit.create_model("swinv2_tiny_window8_256", **TINY)
    frozen = freeze_modules(model, ["patch_embed", "layers.0"])
    assert frozen and all(n.startswith(("patch_embed.", "layers.0.")) for n in frozen)
    names = {n for g in param_groups(model, OptimConfig()) for n in g["names"]}
    assert not names & set(frozen) and "layers.1.blocks.0.attn.qkv.weight" in names
    with pytest.raises(ValueError, match="no module 'patch_embedding'"):
        freeze_modules(model, ["patch_embedding"])
