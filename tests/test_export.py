"""Export: ONNX (torch.export based, dynamic batch) run in onnxruntime, and TorchScript tracing, against eager."""

from __future__ import annotations

import onnxruntime
import onnxscript  # noqa: F401  (torch.onnx.export(dynamo=True) needs it)
import pytest
import torch

import swinkit
from swinkit.layers import relative_position, window

from .conftest import perturb_parameters, tiny_overrides

NAMES = ["swinv2_tiny_window8_256", "swin_tiny_patch4_window7_224"]


def small_model(name: str) -> torch.nn.Module:
    """Two stages (a shifted block with its mask, then a patch merge and a clamped window): a small export graph."""
    torch.manual_seed(0)
    model = swinkit.create_model(name, **{**tiny_overrides(name), "depths": (2, 1), "num_heads": (1, 2)})
    return perturb_parameters(model).eval()


def clear_table_caches() -> None:
    """Start from cold caches, so the export or trace is the first to build the masks and position tables."""
    for cached in (
        window._attention_mask_cpu,
        relative_position.relative_position_index,
        relative_position.log_spaced_coords,
    ):
        cached.cache_clear()


def images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def bias_caches(model: torch.nn.Module) -> list[dict]:
    return [m._bias_cache for m in model.modules() if hasattr(m, "_bias_cache")]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_with_dynamic_batch_matches_eager(name, tmp_path):
    model = small_model(name)
    with torch.no_grad():
        before = model(images(3, seed=5))
    model.eval()  # empties the eval-mode bias caches: whatever is in them afterwards came from the export
    clear_table_caches()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        model,
        (images(2),),
        str(path),
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        input_names=["images"],
        output_names=["logits"],
    )
    # Tracing must leave no trace: no fake tensors in the caches, eager results unchanged.
    assert all(not cache for cache in bias_caches(model))
    with torch.no_grad():
        after = model(images(3, seed=5))
    assert type(after) is torch.Tensor
    assert torch.equal(after, before)

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = images(batch, seed=batch)
        with torch.no_grad():
            expected = model(x)
        (actual,) = session.run(None, {"images": x.numpy()})
        assert actual.shape == (batch, 7)
        error = (torch.from_numpy(actual) - expected).abs().max()
        assert error <= 1e-4 * expected.abs().max(), error


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:.*jit.*deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", NAMES)
def test_jit_trace_matches_eager(name):
    model = small_model(name)
    clear_table_caches()
    x = images(2)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)  # check_trace traces twice: the graph must not depend on cache state
    with torch.no_grad():
        for batch in (2, 3):
            x = images(batch, seed=batch)
            torch.testing.assert_close(traced(x), model(x), atol=1e-5, rtol=1e-5)
