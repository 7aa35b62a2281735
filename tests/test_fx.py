"""torch.fx symbolic tracing and timm's intermediate-feature API, on tiny Swin V1, V2 and CSWin.

Traced graphs must equal the eager model forward and backward, at a size whose stages pad and shift and at one whose
last stage clamps its window, and a graph traced at one size must run at others; torchvision's and timm's
``create_feature_extractor`` must take the models; ``forward_intermediates``
and ``prune_intermediate_layers`` must give what timm's give on the same weights, over the index forms timm accepts.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torchvision.models.feature_extraction import create_feature_extractor

from swinkit.checkpoints import load_checkpoint
from swinkit.core.errors import ConfigError
from swinkit.models import create_model
from swinkit.tools.peers import perturb_parameters

TINY = {
    "swin_tiny_patch4_window7_224": dict(window_size=4, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4)),
    "swinv2_tiny_window8_256": dict(window_size=4, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4)),
    "cswin_tiny_224": dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(2, 2, 4, 4)),
}  # fmt: skip
TIMM_SWINS = ("swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256")


def _model(name: str, img_size: int, **overrides):
    torch.manual_seed(0)
    model = create_model(name, img_size=img_size, drop_path_rate=0.0, num_classes=5, **TINY[name], **overrides)
    return perturb_parameters(model, seed=1)


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


# 64 px: maps of 16, 8, 4, 2 (the last stage clamps its window to the map); 72 px: 18, 9, 5, 3 (every stage pads).
@pytest.mark.parametrize("img_size", [64, 72])
@pytest.mark.parametrize("name", sorted(TINY))
def test_a_traced_graph_equals_the_model_forward_and_backward(name, img_size):
    model = _model(name, img_size).train()
    graph = torch.fx.symbolic_trace(model)
    x = torch.randn(3, 3, img_size, img_size)  # another batch size than any used to build the model

    def run(module):
        model.zero_grad()
        out = module(x)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    eager_out, eager_grads = run(model)
    traced_out, traced_grads = run(graph)  # the graph holds the model's own parameters
    assert _relative(traced_out, eager_out) < 1e-6
    assert traced_grads.keys() == eager_grads.keys() and len(eager_grads) > 20
    # The graph's linears are F.linear (MKL), the eager model's oneDNN's: the same sums in another order.
    assert max(_relative(traced_grads[n], g) for n, g in eager_grads.items() if g.abs().max() > 0) < 1e-4
    model.eval()
    graph = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        assert _relative(graph(x), model(x)) < 1e-6


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_graph_traced_once_runs_at_every_size_eager_takes(name):
    """Traced at the model's 64 px, run at 128 px (as timm-consuming tools do for a 224 model), at sizes whose
    stages pad and clamp differently, and at 64: eager's output each time, through torch.fx, torchvision's and
    timm's feature extraction."""
    model = _model(name, 64).eval()
    graph = torch.fx.symbolic_trace(model)
    nodes = {f"layers.{i}": f"stage{i}" for i in range(4)}
    extractors = [create_feature_extractor(model, return_nodes=nodes),
                  timm.models.create_feature_extractor(model, return_nodes=nodes)]  # fmt: skip
    with torch.no_grad():
        for size in (128, 72, 40, 64):
            x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
            assert _relative(graph(x), model(x)) < 1e-6, size
            expected = model.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
            for extractor in extractors:
                maps = list(extractor(x).values())
                assert all(_relative(a, b) < 1e-6 for a, b in zip(maps, expected, strict=True)), size


@pytest.mark.parametrize("name", sorted(TINY))
def test_create_feature_extractor_and_features_only_trace(name):
    model = _model(name, 64).eval()
    nodes = {f"layers.{i}": f"stage{i}" for i in range(4)}
    extractor = create_feature_extractor(model, return_nodes=nodes)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = extractor(x)
        expected = model.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
        assert list(maps) == list(nodes.values())
        for got, want in zip(maps.values(), expected, strict=True):
            assert _relative(got, want) < 1e-6
        backbone = create_model(name, img_size=64, features_only=True, out_indices=(1, 3), **TINY[name]).eval()
        traced = torch.fx.symbolic_trace(backbone)
        assert all(_relative(a, b) < 1e-6 for a, b in zip(traced(x), backbone(x), strict=True))


def _pair(name: str):
    """A tiny timm model and swinkit's with the same perturbed weights. Window 2, so that no stage's map is smaller
    than its window: where one is, timm builds the bias table for the clamped window and swinkit reads the centre of
    the configured one (see ``SwinTransformer``)."""
    kwargs = {**TINY[name], "window_size": 2}
    theirs = timm.create_model(name, img_size=64, num_classes=5, **kwargs)
    perturb_parameters(theirs, seed=2)
    ours = create_model(name, img_size=64, num_classes=5, **kwargs)
    load_checkpoint(ours, theirs.state_dict(), format="timm")
    return ours.eval(), theirs.eval()


INDEX_FORMS = [None, 1, 3, [-1], [0, 2], (1, 3), [-3, -1], [2, 0]]


@pytest.mark.parametrize("name", TIMM_SWINS)
def test_forward_intermediates_are_timms_for_every_index_form(name):
    ours, theirs = _pair(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for indices in INDEX_FORMS:
            for kwargs in ({}, {"norm": True}, {"stop_early": True}, {"intermediates_only": True}):
                mine = ours.forward_intermediates(x, indices=indices, **kwargs)
                timms = theirs.forward_intermediates(x, indices=indices, **kwargs)
                if not kwargs.get("intermediates_only"):
                    assert _relative(mine[0], timms[0]) < 1e-5, (indices, kwargs)
                    mine, timms = mine[1], timms[1]
                assert len(mine) == len(timms), (indices, kwargs)
                assert all(_relative(a, b) < 1e-5 for a, b in zip(mine, timms, strict=True)), (indices, kwargs)
            nhwc = ours.forward_intermediates(x, indices=indices, output_fmt="NHWC", intermediates_only=True)
            nchw = ours.forward_intermediates(x, indices=indices, intermediates_only=True)
            assert all(torch.equal(a.permute(0, 3, 1, 2), b) for a, b in zip(nhwc, nchw, strict=True))
    for bad in (0, 5, [4], [-5], []):
        with pytest.raises(ConfigError, match="out of range"):
            ours.forward_intermediates(x, indices=bad)


@pytest.mark.parametrize("indices", [1, [1], (0, 2), [-2]])
@pytest.mark.parametrize("name", TIMM_SWINS)
def test_pruned_models_agree_with_timms_pruned_models(name, indices):
    ours, theirs = _pair(name)
    assert ours.prune_intermediate_layers(indices) == theirs.prune_intermediate_layers(indices)
    assert len(ours.layers) == len(theirs.layers)
    assert (ours.num_features, ours.head_hidden_size) == (theirs.num_features, theirs.head_hidden_size)
    assert isinstance(ours.norm, torch.nn.Identity) == isinstance(theirs.norm, torch.nn.Identity)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        final, maps = ours.forward_intermediates(x, indices=indices)
        timm_final, timm_maps = theirs.forward_intermediates(x, indices=indices)
        assert _relative(final, timm_final) < 1e-5
        assert all(_relative(a, b) < 1e-5 for a, b in zip(maps, timm_maps, strict=True)) and len(maps) == len(timm_maps)
        assert ours(x).shape == theirs(x).shape  # the classifier went: pooled features


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_index_form_takes_its_stages_of_the_full_list(name):
    model = _model(name, 64).eval()
    x = torch.randn(2, 3, 64, 64)
    forms = [(None, [0, 1, 2, 3]), (1, [3]), (3, [1, 2, 3]), ((-1,), [3]), ([0, 2], [0, 2]), ([-3, -1], [1, 3]),
             ([2, 0], [0, 2])]  # fmt: skip
    with torch.no_grad():
        every = model.forward_intermediates(x, intermediates_only=True)
        for indices, stages in forms:
            for fmt in ("NCHW", "NHWC"):
                maps = model.forward_intermediates(x, indices=indices, output_fmt=fmt, stop_early=True,
                                                   intermediates_only=True)  # fmt: skip
                expected = [every[i] if fmt == "NCHW" else every[i].permute(0, 2, 3, 1) for i in stages]
                assert len(maps) == len(expected)
                assert all(torch.equal(a, b) for a, b in zip(maps, expected, strict=True))
        final, _ = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.equal(final.permute(0, 3, 1, 2), every[1])  # stopped at stage 1: not normalised, as timm
