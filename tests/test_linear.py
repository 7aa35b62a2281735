"""The oneDNN route of fp32 CPU inference matmuls: same numbers as F.linear, never on a path that needs gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from swinkit.layers import linear as linear_module
from swinkit.layers.linear import Linear, linear


@pytest.mark.parametrize("shape", [(5, 96), (2, 7, 9, 96)])
def test_onednn_route_matches_f_linear(shape):
    x, weight, bias = torch.randn(shape), torch.randn(48, 96), torch.randn(48)
    with torch.no_grad():
        assert linear_module._onednn_applies(x, weight) == linear_module.USE_ONEDNN
        out = linear(x, weight, bias)
    torch.testing.assert_close(out, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_route_is_taken_only_without_grad():
    x, weight = torch.randn(4, 8), torch.randn(3, 8)
    with torch.no_grad():
        assert linear_module._onednn_applies(x, weight) == linear_module.USE_ONEDNN
    with torch.inference_mode():
        assert linear_module._onednn_applies(x, weight) == linear_module.USE_ONEDNN
    assert not linear_module._onednn_applies(x, weight)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not linear_module._onednn_applies(x, weight)
    with torch.no_grad():
        assert not linear_module._onednn_applies(x.double(), weight.double())


def test_linear_layer_trains_and_keeps_state_dict_keys():
    layer = Linear(8, 3)
    assert set(layer.state_dict()) == {"weight", "bias"}
    layer(torch.randn(2, 8)).sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None
