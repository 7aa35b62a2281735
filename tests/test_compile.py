"""train.compile: one graph per model (no graph breaks) for Swin V1, V2 and CSWin, in training and in eval, and a
compiled run that trains to the eager run's weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import swinkit
from swinkit.engine.checkpoint import checkpoint_weights
from swinkit.engine.train import train
from tests.engine_utils import tiny_config

SMALL = {
    "swin_tiny_patch4_window7_224": dict(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2),
                                         num_heads=(1, 2)),
    "swinv2_tiny_window8_256": dict(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2),
                                    num_heads=(1, 2)),
    "cswin_tiny_224": dict(img_size=64, embed_dim=16, depths=(1, 2, 1, 1), num_heads=(2, 2, 2, 2),
                           split_size=(1, 2, 2, 2)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SMALL))
def test_each_family_traces_to_one_graph_in_training_and_in_eval(name):
    torch._dynamo.reset()
    model = swinkit.create_model(name, num_classes=10, **SMALL[name])
    x = torch.randn(2, 3, *model.img_size)
    for training in (True, False):
        model.train(training)
        explained = torch._dynamo.explain(model)(x)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    # bf16 inference, whose attention kernel is chosen by the CPU's ISA, and int8's bf16 attention path.
    model.eval().bfloat16()
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(x.bfloat16())
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_a_compiled_run_trains_to_the_eager_runs_weights(tmp_path):
    torch._dynamo.reset()
    eager = train(tiny_config(tmp_path / "eager", "sched.epochs=1"))
    compiled = train(tiny_config(tmp_path / "compiled", "sched.epochs=1", "train.compile=true"))
    train(tiny_config(tmp_path / "fsdp", "sched.epochs=1", "train.compile=true", "train.parallel=fsdp"))
    a, b = (load_file(tmp_path / r / "checkpoints" / "last" / "model.safetensors") for r in ("eager", "compiled"))
    assert a.keys() == b.keys()  # no _orig_mod. prefixes: the checkpoint reads like any other
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6  # measured 1.5e-8
    assert compiled["val_top1"] == pytest.approx(eager["val_top1"], abs=100 / 33)  # at most one image of 33 differs
    sharded = checkpoint_weights(tmp_path / "fsdp" / "checkpoints" / "last")  # compiled, then sharded (one process)
    assert sharded.keys() == a.keys() and max((a[k] - sharded[k]).abs().max().item() for k in a) < 1e-6  # 2.3e-8
