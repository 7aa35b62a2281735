"""The oneDNN route of CPU matmuls: same numbers and, in fp32 training, the same gradients as F.linear."""

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


def test_route_takes_fp32_and_bf16_at_inference_and_fp32_only_in_training():
    x, weight = torch.randn(4, 8), torch.randn(3, 8)
    on = linear_module.USE_ONEDNN
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            assert linear_module._onednn_applies(x, weight) == on
            assert linear_module._onednn_applies(x.bfloat16(), weight.bfloat16()) == on
    assert linear_module._onednn_applies(x, weight) == on  # grad mode: OneDNNLinear, with its backward
    assert not linear_module._onednn_applies(x.bfloat16(), weight.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not linear_module._onednn_applies(x, weight)
    with torch.no_grad():
        assert not linear_module._onednn_applies(x.double(), weight.double())
        assert not linear_module._onednn_applies(x, weight.bfloat16())


@pytest.mark.parametrize("shape", [(5, 96), (2, 7, 9, 96)])
@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize("frozen", [(), ("weight",), ("x",)])
def test_onednn_training_route_gives_f_linears_gradients(shape, has_bias, frozen):
    if not linear_module.USE_ONEDNN:
        pytest.skip("this PyTorch build has no oneDNN")
    torch.manual_seed(0)
    leaves = {"x": torch.randn(shape), "weight": torch.randn(48, 96), "bias": torch.randn(48) if has_bias else None}
    grad_out = torch.randn(*shape[:-1], 48).transpose(0, -2)  # a non-contiguous incoming gradient
    results = []
    for function in (linear_module.OneDNNLinear.apply, F.linear):
        inputs = {k: None if v is None else v.clone().requires_grad_(k not in frozen) for k, v in leaves.items()}
        out = function(inputs["x"], inputs["weight"], inputs["bias"])
        out.backward(grad_out.transpose(0, -2))
        results.append((out, {k: None if v is None else v.grad for k, v in inputs.items()}))
    (out, grads), (expected, expected_grads) = results
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        if expected_grads[name] is None:
            assert grad is None, name
        else:
            torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-4)


def test_linear_layer_trains_and_keeps_state_dict_keys():
    layer = Linear(8, 3)
    assert set(layer.state_dict()) == {"weight", "bias"}
    layer(torch.randn(2, 8)).sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None
