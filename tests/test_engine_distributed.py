"""DDP with torchrun (gloo, 2 CPU processes): the same weights as one process, exact distributed evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from swinkit.checkpoints.io import read_file
from swinkit.deploy.eval_checkpoint import run_eval
from swinkit.engine.train import train
from tests.engine_utils import NO_AUG, TINY, tiny_config, torchrun


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    warm = "sched.warmup_epochs=2"  # as long as the run: a warning every process would otherwise print
    train(tiny_config(single, *NO_AUG, "data.batch_size=16", warm))
    log = torchrun("train", "--config", "quickstart", "--output", str(ddp), *TINY, *NO_AUG, "data.batch_size=8", warm,
                    cwd=tmp_path)  # fmt: skip
    assert log.count("epoch 2/2  step") == 1  # only rank 0 prints
    assert log.count("sched.warmup_epochs=2 is not shorter than the run") == 1  # and warns
    assert "batch 8 x 2 = 16 global" in log
    a, _ = read_file(single / "checkpoints/last/model.safetensors")
    b, _ = read_file(ddp / "checkpoints/last/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=k)
    ra = json.loads((single / "metrics.jsonl").read_text().splitlines()[-1])
    rb = json.loads((ddp / "metrics.jsonl").read_text().splitlines()[-1])
    assert ra["step"] == rb["step"] == 12
    assert ra["train_loss"] == pytest.approx(rb["train_loss"], abs=1e-5)


@pytest.mark.slow
def test_two_process_eval_on_an_odd_val_set_is_exact(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, "sched.epochs=1", "data.max_val_samples=33"))
    best = run / "checkpoints" / "best"
    one = run_eval(tiny_config(run, "data.max_val_samples=33"), str(best), output=str(tmp_path / "one"))
    torchrun("eval", "--config", "quickstart", "--checkpoint", str(best), "--output", str(tmp_path / "two"), *TINY,
              "data.max_val_samples=33", cwd=tmp_path)  # fmt: skip
    two = json.loads((tmp_path / "two" / "eval.json").read_text())
    assert two["n"] == one["n"] == 33
    assert (two["top1"], two["top5"]) == (one["top1"], one["top5"])
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)
