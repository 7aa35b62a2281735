"""``swinkit plan``: the fake-tensor estimate of one training step agrees with the same step measured on real
tensors, its exact rows are the arithmetic of the parameter count, and the CLI says whether it fits."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from swinkit.cli import main
from swinkit.engine.config import load_config
from swinkit.engine.parallel import shard
from swinkit.engine.plan import GIB, measure_step, plan
from swinkit.engine.setup import build_model

# A small Swin V2 at 64 px: big enough that activations dominate, small enough to measure on real tensors quickly.
SMALL = ["model.img_size=64", "model.window_size=4", "model.embed_dim=32", "model.depths=[2, 2, 2]",
         "model.num_heads=[1, 2, 4]", "model.num_classes=10", "data.batch_size=8", "train.precision=fp32"]  # fmt: skip


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_the_estimate_agrees_with_a_measured_step(parallel):
    cfg = load_config("quickstart", SMALL)
    estimate = plan(cfg, 1, parallel)
    if parallel == "fsdp":
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = build_model(cfg)
        if parallel == "fsdp":
            shard(model)
        measured = measure_step(model, cfg, "fp32", parallel)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    tracked = {k: v for k, v in estimate.memory.items() if not (parallel == "ddp" and k == "communication buffers")}
    total, real = sum(tracked.values()), sum(measured.values())
    assert abs(total - real) <= 0.05 * real, (estimate.memory, measured)  # measured: within 1% at this size
    params = sum(p.numel() for p in model.parameters())
    assert estimate.params == params
    assert estimate.memory["optimizer state"] == pytest.approx(8 * params, rel=0.02)  # AdamW: two fp32 moments
    if parallel == "ddp":
        assert estimate.memory["communication buffers"] == 4 * params  # DDP's fp32 gradient buckets


def test_sharding_over_more_gpus_divides_the_states(capsys):
    cfg = load_config("quickstart", SMALL)
    one, eight = plan(cfg, 1, "fsdp"), plan(cfg, 8, "fsdp")
    assert eight.memory["optimizer state"] == pytest.approx(one.memory["optimizer state"] / 8, rel=0.05)
    assert eight.memory["activations"] == pytest.approx(one.memory["activations"], rel=0.05)  # per-GPU batch
    assert main(["plan", *SMALL, "--nproc", "8", "--parallel", "fsdp", "--gpu-memory", "80"]) == 0
    out = capsys.readouterr().out
    assert "fsdp over 8 GPU(s), batch 8 per GPU at 64x64" in out and "fits in 80 GiB per GPU" in out
    assert main(["plan", *SMALL, "--gpu-memory", f"{one.total / GIB / 2:.6f}"]) == 1
    assert "does not fit" in capsys.readouterr().out


def test_a_segmentation_step_is_planned_as_it_trains(capsys):
    # Crops of seg.crop_size, per-pixel labels, the main and auxiliary heads' loss; the built-in scenes' 11 classes.
    from tests.engine_utils import TINY_UPERNET

    cfg = load_config("upernet_digits", [*TINY_UPERNET, "train.precision=fp32"])
    estimate = plan(cfg, 1, "ddp")
    assert (estimate.img_size, estimate.batch) == ((32, 32), 4)
    torch.manual_seed(0)
    model = build_model(cfg, 11, img_size=(32, 32))
    measured = measure_step(model, cfg, "fp32", "ddp", segmentation=True)
    total = sum(v for k, v in estimate.memory.items() if k != "communication buffers")
    assert abs(total - sum(measured.values())) <= 0.05 * sum(measured.values()), (estimate.memory, measured)
    assert estimate.params == sum(p.numel() for p in model.parameters())
    narrow = ["model.embed_dim=16", "model.num_heads=[1,2,4,8]", "head.channels=16", "head.auxiliary_channels=8"]
    assert main(["plan", "-c", "upernet_swin_tiny_512_ade20k", *narrow, "--nproc", "8", "--parallel", "fsdp"]) == 0
    assert "batch 2 per GPU at 512x512, bf16" in capsys.readouterr().out
