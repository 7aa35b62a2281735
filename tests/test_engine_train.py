"""The training loop on a tiny Swin V2: outputs, exact resume, non-finite losses, crash-safe checkpoints."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import swinkit.core.atomic as atomic
import swinkit.engine.checkpoint as ckpt
import swinkit.engine.train as train_mod
from swinkit.checkpoints.io import read_file
from swinkit.deploy.eval_checkpoint import run_eval
from swinkit.engine.config import load_config
from swinkit.engine.train import NonFiniteLossError, RunExistsError, train
from tests.engine_utils import state_dicts_equal, tiny_config

# Augmentation, mixup, drop path and EMA on, so a resume must restore every RNG and the sampler position.
RANDOM_BITS = ("data.mixup=0.8", "data.cutmix=1.0", "data.re_prob=0.25", "model.drop_path_rate=0.1",
               "train.ema=true", "train.ema_decay=0.9", "data.hflip=0.5")  # fmt: skip


def _state(run_dir):
    last = run_dir / "checkpoints" / "last"
    model, _ = read_file(last / "model.safetensors")
    ema, _ = read_file(last / "ema.safetensors")
    return model, ema, ckpt.load_trainer_state(last)


def _assert_nested_equal(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_nested_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_nested_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_run_writes_metrics_curves_checkpoints_and_eval_reads_back(tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(out))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("step", "train_loss", "lr", "img_per_s", "val_top1", "val_top5", "val_loss"):
        assert key in records[-1]
    assert (out / "curves.png").stat().st_size > 0 and (out / "config.yaml").is_file()
    for kind in ("last", "best"):
        for name in ("model.safetensors", "trainer_state.pt", "config.yaml"):
            assert (out / "checkpoints" / kind / name).is_file()
    best = out / "checkpoints" / "best"
    evaluated = run_eval(tiny_config(out), str(best))
    assert evaluated["top1"] == result["best_top1"] and evaluated["n"] == 33
    assert json.loads((best / "eval.json").read_text())["top1"] == evaluated["top1"]
    # A plain weights file (any layout load_checkpoint reads) evaluates the same.
    as_file = run_eval(tiny_config(out), str(best / "model.safetensors"), output=str(tmp_path / "file_eval"))
    assert as_file["top1"] == evaluated["top1"] and as_file["n"] == 33
    with pytest.raises(RunExistsError, match="--resume"):
        train(tiny_config(out))


@pytest.mark.slow
def test_quickstart_recipe_learns(tmp_path):
    """The real quick-start model and data for 3 of its 30 epochs: well past chance (10%) already."""
    cfg = load_config("quickstart", [f"train.output={tmp_path / 'qs'}", "sched.epochs=3", "sched.warmup_epochs=1"])
    assert train(cfg)["val_top1"] > 40


def test_trainer_state_loads_with_weights_only(tmp_path):
    train(tiny_config(tmp_path / "run", "sched.epochs=1"))
    state = torch.load(tmp_path / "run/checkpoints/last/trainer_state.pt", weights_only=True)
    assert state["progress"]["epoch"] == 1 and state["progress"]["step"] == 12
    assert {"optimizer", "scaler", "rng", "config"} <= state.keys()


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [7, 12], ids=["mid-epoch", "epoch-end"])
def test_resume_is_bit_identical(tmp_path, stop_at):
    full, parts = tmp_path / "full", tmp_path / "parts"
    train(tiny_config(full, *RANDOM_BITS))
    stopped = train(tiny_config(parts, *RANDOM_BITS, f"train.stop_after_steps={stop_at}"))
    assert stopped["stopped"] and stopped["step"] == stop_at
    train(tiny_config(parts, *RANDOM_BITS), resume=str(parts))
    model_a, ema_a, state_a = _state(full)
    model_b, ema_b, state_b = _state(parts)
    assert state_dicts_equal(model_a, model_b)
    assert state_dicts_equal(ema_a, ema_b)
    _assert_nested_equal(state_a["optimizer"], state_b["optimizer"], "optimizer")
    assert state_a["progress"]["step"] == state_b["progress"]["step"] == 24
    metrics_a = (full / "metrics.jsonl").read_text().splitlines()
    metrics_b = (parts / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics_a[-1])["val_top1"] == json.loads(metrics_b[-1])["val_top1"]


def test_nonfinite_loss_stops_and_keeps_last(tmp_path, monkeypatch, caplog):
    """NaN logits from the 2nd epoch on: three skipped steps, then a clear error; last/ is epoch 1 and loads."""
    build = train_mod.build_model
    forwards = [0]

    def nan_after_first_epoch(module, args, output):
        if module.training:
            forwards[0] += 1
            if forwards[0] > 12:
                return output * float("nan")
        return output

    def build_with_nan(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_hook(nan_after_first_epoch)
        return model

    monkeypatch.setattr(train_mod, "build_model", build_with_nan)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING), pytest.raises(NonFiniteLossError, match="3 consecutive steps") as err:
        train(tiny_config(out, "sched.epochs=3"))
    assert str(out / "checkpoints" / "last") in str(err.value)
    assert sum("non-finite loss" in r.getMessage() for r in caplog.records) == 3
    model, _ = read_file(out / "checkpoints/last/model.safetensors")
    assert all(torch.isfinite(v).all() for v in model.values())
    assert ckpt.load_trainer_state(out / "checkpoints/last")["progress"]["epoch"] == 1
    monkeypatch.setattr(train_mod, "build_model", build)
    assert run_eval(tiny_config(out), str(out / "checkpoints/last"))["n"] == 33


def test_crash_while_writing_keeps_previous_last(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(tiny_config(out, "sched.epochs=1"))
    last = out / "checkpoints" / "last"
    before = {p.name: p.read_bytes() for p in last.iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing trainer_state.pt")

    monkeypatch.setattr(ckpt.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(out, "sched.epochs=2"), resume=str(out))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in last.iterdir()} == before
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")] == []
    result = train(tiny_config(out, "sched.epochs=2"), resume=str(out))
    assert result["epoch"] == 2


def test_crash_between_renames_leaves_a_loadable_old_copy(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(tiny_config(out, "sched.epochs=1"))
    real_replace = atomic.os.replace

    def crash_before_new_last(src, dst):
        # last/ has just been moved to .last.old; die before the new directory takes its name.
        if str(dst).endswith("/checkpoints/last"):
            raise KeyboardInterrupt("killed between the renames")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crash_before_new_last)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(out, "sched.epochs=2"), resume=str(out))
    monkeypatch.undo()
    found = ckpt.find_checkpoint(out / "checkpoints" / "last")
    assert found is not None and found.name == ".last.old"
    assert train(tiny_config(out, "sched.epochs=2"), resume=str(out))["epoch"] == 2


@pytest.mark.slow
def test_progressive_stages_rebuild_and_carry_weights(tmp_path):
    out = tmp_path / "run"
    stages = "train.stages=[{epochs: 1, img_size: 16}, {epochs: 1, img_size: 32, window_size: 4}]"
    result = train(tiny_config(out, stages, "train.ema=true", "train.stop_after_steps=13"))
    assert result["step"] == 13  # one step into the 32 px stage
    after_stage1, _ = read_file(out / "checkpoints/best/model.safetensors")  # written at the end of stage 1
    in_stage2, _ = read_file(out / "checkpoints/last/model.safetensors")
    assert after_stage1.keys() == in_stage2.keys()
    moved = [k for k in in_stage2 if not torch.equal(in_stage2[k], after_stage1[k])]
    assert moved and all((in_stage2[k] - after_stage1[k]).abs().max() < 0.05 for k in in_stage2)  # carried over
    result = train(tiny_config(out, stages, "train.ema=true"), resume=str(out))
    assert result["epoch"] == 2 and result["step"] == 24
