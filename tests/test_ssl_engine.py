"""``swinkit pretrain`` end to end on the built-in digits with tiny models: MoBY and SimMIM runs, exact resume, the
kNN monitor, then linear evaluation and fine-tuning from the pretrained online encoder through ``swinkit train``."""

from __future__ import annotations

import json

import pytest
import torch

from swinkit.checkpoints.io import read_file
from swinkit.cli import main
from swinkit.engine.config import ConfigError, load_config
from swinkit.engine.pretrain import pretrain
from swinkit.engine.train import train
from swinkit.ssl import momentum_at
from tests.engine_utils import TINY
from tests.ssl_utils import TINY_MOBY, pretrain_config


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(run_dir, which: str = "last") -> dict[str, torch.Tensor]:
    state, _ = read_file(run_dir / "checkpoints" / which / "model.safetensors")
    return state


@pytest.fixture(scope="module")
def moby_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("moby") / "run"
    result = pretrain(pretrain_config("moby_quickstart", out))
    return out, result


def test_moby_pretrain_logs_knn_and_saves_the_official_layout(moby_run):
    out, result = moby_run
    records = _records(out)
    assert [r["epoch"] for r in records] == [0, 1, 2]  # epoch 0: the encoder at initialisation
    assert all(0 <= r["knn_top1"] <= 100 for r in records)
    assert records[-1]["step"] == 16 and result["step"] == 16  # 64 images / batch 8 = 8 steps per epoch
    assert records[-1]["momentum"] == pytest.approx(momentum_at(16, 16, 0.99))
    state = _weights(out)
    assert {"queue1", "queue2", "queue_ptr"} <= state.keys()
    assert state["queue1"].shape == (8, 16) and int(state["queue_ptr"]) == 0  # 16 steps x 8 keys, wrapped around
    assert {k.split(".")[0] for k in state} == {"encoder", "encoder_k", "projector", "projector_k", "predictor",
                                                "queue1", "queue2", "queue_ptr"}  # fmt: skip
    assert (out / "checkpoints" / "best" / "model.safetensors").is_file() and (out / "curves.png").is_file()


def test_moby_resume_is_exact(moby_run, tmp_path):
    full, _ = moby_run
    out = tmp_path / "run"
    stopped = pretrain(pretrain_config("moby_quickstart", out, "train.stop_after_steps=5"))
    assert stopped["stopped"] and stopped["step"] == 5
    pretrain(load_config(str(out / "config.yaml")), resume=str(out))
    a, b = _weights(full), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_linear_eval_trains_only_the_head_on_the_online_encoder(moby_run, tmp_path):
    pretrained, _ = moby_run
    encoder = {k[len("encoder.") :]: v for k, v in _weights(pretrained).items() if k.startswith("encoder.")}
    out = tmp_path / "linear"
    ckpt = pretrained / "checkpoints" / "last" / "model.safetensors"
    result = train(load_config("moby_linear_eval_quickstart", [*TINY, f"model.pretrained={ckpt}",
                                                               f"train.output={out}"]))  # fmt: skip
    assert result["step"] == 24 and 0 <= result["val_top1"] <= 100
    got = _weights(out)
    for k, v in encoder.items():
        assert torch.equal(got[k], v), k  # frozen
    assert got["head.fc.weight"].shape == (10, 16)


def test_finetune_starts_from_the_online_encoder(moby_run, tmp_path):
    pretrained, _ = moby_run
    encoder = {k[len("encoder.") :]: v for k, v in _weights(pretrained).items() if k.startswith("encoder.")}
    out = tmp_path / "finetune"
    ckpt = pretrained / "checkpoints" / "last" / "model.safetensors"
    frozen_lr = ["optim.lr=0", "sched.warmup_lr=0", "sched.min_lr=0", "train.stop_after_steps=1"]
    train(load_config("quickstart", [*TINY, f"model.pretrained={ckpt}", "model.head=reset", f"train.output={out}",
                                     *frozen_lr]))  # fmt: skip
    got = _weights(out)
    assert all(torch.equal(got[k], v) for k, v in encoder.items())
    # and a real fine-tuning step moves the backbone
    out2 = tmp_path / "finetune2"
    train(load_config("quickstart", [*TINY, f"model.pretrained={ckpt}", "model.head=reset", f"train.output={out2}",
                                     "train.stop_after_steps=2"]))  # fmt: skip
    assert not torch.equal(_weights(out2)["patch_embed.proj.weight"], encoder["patch_embed.proj.weight"])


def test_simmim_pretrain_runs(tmp_path):
    out = tmp_path / "simmim"
    result = pretrain(pretrain_config("simmim_quickstart", out, "ssl.knn_every=2"))
    records = _records(out)
    assert [r["epoch"] for r in records] == [0, 1, 2] and "knn_top1" not in records[1]
    assert all(r["train_loss"] > 0 for r in records[1:]) and "knn_top1" in result
    state = _weights(out)
    assert "mask_token" in state and "decoder.0.weight" in state


def test_pretrain_cli_and_resume(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["pretrain", "-c", "moby_quickstart", "--output", str(out), *TINY_MOBY, "ssl.knn_every=0",
                 "train.stop_after_steps=3"]) == 0  # fmt: skip
    assert main(["pretrain", "--resume", str(out), "sched.epochs=1"]) == 0
    assert _records(out)[-1]["step"] == 8
    assert main(["pretrain", "-c", "moby_quickstart", "--output", str(out), *TINY_MOBY]) == 2  # the run exists
    assert "already holds a run" in capsys.readouterr().err


def test_queue_must_be_a_multiple_of_the_global_batch(tmp_path, capsys):
    with pytest.raises(ConfigError, match="not a multiple of the global batch 8"):
        pretrain(pretrain_config("moby_quickstart", tmp_path / "run", "ssl.queue_size=12"))
    assert main(["pretrain", "-c", "moby_quickstart", *TINY_MOBY, "ssl.queue_size=12"]) == 2


@pytest.mark.parametrize("recipe", ["moby_swin_tiny", "moby_deit_small", "simmim_swinv2_base_192"])
def test_imagenet_recipes_build_their_models(recipe):
    from swinkit.engine.pretrain import build_ssl_model

    cfg = load_config(recipe)
    with torch.device("meta"):
        model = build_ssl_model(cfg)
    if cfg.ssl.method == "moby":
        assert model.queue1.shape == (256, 4096) and model.projector.linear_hidden[1].out_features == 4096
        online = max(m.drop_prob for m in model.encoder.modules() if hasattr(m, "drop_prob"))
        target = max((m.drop_prob for m in model.encoder_k.modules() if hasattr(m, "drop_prob")), default=0.0)
        assert (online, target) == (pytest.approx(0.2), 0.0)
        assert model.num_features == (768 if recipe == "moby_swin_tiny" else 384)
    else:
        assert model.stride == 32 and model.mask_patch_size == 32 and model.norm_target_window == 47


@pytest.mark.slow
def test_two_process_pretrain(tmp_path):
    """torchrun with 2 gloo processes: the global batch, queue and the exact kNN monitor."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    single = tmp_path / "single"
    pretrain(pretrain_config("moby_quickstart", single, "sched.epochs=1", "data.max_train_samples=24"))
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "swinkit",
           "pretrain", "-c", "moby_quickstart", "--output", str(out), *TINY_MOBY, "data.batch_size=4",
           "sched.epochs=1", "data.max_train_samples=24"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "batch 4 x 2 = 8 global" in proc.stderr + proc.stdout
    records = _records(out)
    assert records[0]["knn_top1"] == _records(single)[0]["knn_top1"]  # the same initial encoder, all images
    assert records[-1]["step"] == 3 and int(_weights(out)["queue_ptr"]) == 8  # 3 steps x 8 gathered keys


@pytest.mark.parametrize("drop_path", [False, True])
def test_linear_probe_backbone_mode(tmp_path, monkeypatch, drop_path):
    """The frozen backbone trains in eval mode (no drop path) unless linear_probe_drop_path asks for the official
    train mode; the classifier is the only trained tensor either way."""
    import swinkit.engine.train as engine_train

    seen, models = [], []
    build = engine_train.build_model

    def recording_build(*args, **kwargs):
        model = build(*args, **kwargs)
        model.layers[0].register_forward_pre_hook(lambda m, _: seen.append((m.training, torch.is_grad_enabled())))
        models.append(model)
        return model

    monkeypatch.setattr(engine_train, "build_model", recording_build)
    train(load_config("moby_linear_eval_quickstart", [*TINY, "model.drop_path_rate=0.5", f"train.output={tmp_path}",
                                                      f"train.linear_probe_drop_path={drop_path}",
                                                      "train.stop_after_steps=2"]))  # fmt: skip
    training_calls = [mode for mode, grad in seen if grad]
    assert training_calls == [drop_path, drop_path]
    assert [n for n, p in models[0].named_parameters() if p.requires_grad] == ["head.fc.weight", "head.fc.bias"]


@pytest.mark.parametrize("setting", ["deterministic", "tensorboard", "channels_last", "grad_checkpointing",
                                     "stop_after_steps", "save_every_steps"])  # fmt: skip
def test_train_settings_have_their_effect_under_pretrain(tmp_path, monkeypatch, caplog, setting):
    """Every ``train.*`` setting means in ``swinkit pretrain`` what it means in ``swinkit train``."""
    import logging

    import swinkit.engine.checkpoint as ckpt
    import swinkit.engine.pretrain as pretrain_module
    import swinkit.layers.stage as stage_module

    seen, saves, checkpoints = [], [], [0]
    build = pretrain_module.build_ssl_model

    def recording_build(cfg):
        model = build(cfg)
        model.encoder.patch_embed.register_forward_pre_hook(
            lambda m, a: seen.append((torch.are_deterministic_algorithms_enabled(),
                                      a[0].is_contiguous(memory_format=torch.channels_last)))  # fmt: skip
        )
        return model

    def counted_checkpoint(fn, *args, **kwargs):
        checkpoints[0] += 1
        return fn(*args)

    real_save = ckpt.save_training_checkpoint

    def recording_save(path, cfg, model, ema, state, classes=None):
        saves.append((path.name, state["progress"]["step"]))
        return real_save(path, cfg, model, ema, state, classes)

    monkeypatch.setattr(pretrain_module, "build_ssl_model", recording_build)
    monkeypatch.setattr(stage_module, "checkpoint", counted_checkpoint)
    monkeypatch.setattr(ckpt, "save_training_checkpoint", recording_save)
    value = {"stop_after_steps": "3", "save_every_steps": "3"}.get(setting, "true")
    key = "model.grad_checkpointing" if setting == "grad_checkpointing" else f"train.{setting}"
    cfg = pretrain_config("simmim_quickstart", tmp_path / "run", "sched.epochs=1", "ssl.knn_every=0", f"{key}={value}")
    with caplog.at_level(logging.WARNING):
        result = pretrain(cfg)
    if setting == "deterministic":
        assert seen and all(det for det, _ in seen) and not torch.are_deterministic_algorithms_enabled()
    elif setting == "tensorboard":
        logged = any("tensorboard is not installed" in r.getMessage() for r in caplog.records)
        assert logged or (tmp_path / "run" / "tensorboard").is_dir()
    elif setting == "channels_last":
        assert seen and all(cl for _, cl in seen)
    elif setting == "grad_checkpointing":
        assert checkpoints[0] == 8 * 2  # 8 steps x 2 one-block stages
    elif setting == "stop_after_steps":
        assert result["stopped"] and result["step"] == 3 and saves == [("last", 3)]
    else:
        assert [s for name, s in saves if name == "last"] == [3, 6, 8]


@pytest.mark.parametrize("override", ["train.ema=true", "train.linear_probe=true",
                                      "train.stages=[{epochs: 1, img_size: 16}]"])  # fmt: skip
def test_pretrain_refuses_what_it_cannot_do(tmp_path, override):
    with pytest.raises(ConfigError, match="swinkit pretrain does not support"):
        pretrain(pretrain_config("simmim_quickstart", tmp_path / "run", override))
    with pytest.raises(ConfigError, match=r"optim\.accum_steps \(MoBY\)"):
        pretrain(pretrain_config("moby_quickstart", tmp_path / "run", "optim.accum_steps=2"))
