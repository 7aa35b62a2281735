"""``swinkit train / eval / configs / plot`` end to end on a tiny model, and config errors at the command line."""

from __future__ import annotations

import json

import pytest

from swinkit.checkpoints.io import read_file
from swinkit.cli import main
from swinkit.engine.config import ConfigError, list_configs
from swinkit.engine.train import train
from tests.engine_utils import TINY, tiny_config

NO_AUG = ["data.scale=[1.0, 1.0]", "data.ratio=[1.0, 1.0]", "data.hflip=0.0", "model.drop_path_rate=0.0"]


def test_configs_lists_shipped_recipes(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in list_configs())


def test_train_resume_eval_plot(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--output", str(run), *TINY, "sched.epochs=1"]) == 0
    # --resume without --config continues with the run's own config; overrides extend it.
    assert main(["train", "--resume", str(run), "sched.epochs=2"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    best = run / "checkpoints" / "best"
    assert main(["eval", "--checkpoint", str(best)]) == 0
    result = json.loads((best / "eval.json").read_text())
    assert set(result) >= {"top1", "top5", "n", "loss"}
    assert result["top1"] == max(r["val_top1"] for r in records)
    (run / "curves.png").unlink()
    assert main(["plot", str(run)]) == 0 and (run / "curves.png").stat().st_size > 0


@pytest.mark.parametrize(
    "override, expected",
    [("optim.weight_decy=0.1", "'optim.weight_decay'"), ("optim.lr=fast", "optim.lr: expected float")],
)
def test_config_errors_are_one_line(tmp_path, capsys, override, expected):
    assert main(["train", "--output", str(tmp_path / "run"), override]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_gradient_accumulation_matches_the_large_batch(tmp_path):
    train(tiny_config(tmp_path / "big", *NO_AUG, "data.batch_size=16", "sched.epochs=1"))
    train(tiny_config(tmp_path / "accum", *NO_AUG, "data.batch_size=8", "optim.accum_steps=2", "sched.epochs=1"))
    a, _ = read_file(tmp_path / "big/checkpoints/last/model.safetensors")
    b, _ = read_file(tmp_path / "accum/checkpoints/last/model.safetensors")
    for k in a:
        assert (a[k] - b[k]).abs().max() <= 1e-5, k


def test_bf16_autocast_runs(tmp_path):
    result = train(tiny_config(tmp_path / "run", "train.precision=bf16", "sched.epochs=1"))
    assert result["step"] == 12 and result["val_top1"] >= 0


def test_default_run_dir_never_reuses_a_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    overrides = [*TINY, "sched.epochs=1"]
    assert main(["train", *overrides]) == 0
    assert main(["train", *overrides]) == 0
    assert (tmp_path / "runs/quickstart/checkpoints/last").is_dir()
    assert (tmp_path / "runs/quickstart-2/checkpoints/last").is_dir()
    # An explicit --output holding a run is refused rather than overwritten.
    assert main(["train", "--output", "runs/quickstart", *overrides]) == 2
    assert "runs/quickstart already holds a run; continue it with --resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    "overrides, expected",
    [(["data.max_train_samples=8", "data.batch_size=16"], "make no full step"), (["data.batch_size=0"], ">= 1"),
     (["sched.epochs=0"], "sched.epochs"), (["train.device=tpu"], "not a device")],
)  # fmt: skip
def test_train_mistakes_are_one_line_with_exit_2(tmp_path, capsys, overrides, expected):
    assert main(["train", "--output", str(tmp_path / "run"), *TINY, *overrides]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing left behind


def test_a_head_larger_than_the_datas_classes_is_refused_unless_asked_for(tmp_path, capsys):
    """The seed configs say num_classes: 1000; on the 10 digits that trained silently to nothing."""
    assert main(["train", "--output", str(tmp_path / "run"), *TINY, "model.num_classes=1000"]) == 2
    err = capsys.readouterr().err
    assert "model.num_classes=1000 but the training data has 10 classes; set model.num_classes=10" in err
    assert "model.allow_unused_classes=true" in err and not (tmp_path / "run").exists()
    assert main(["train", "--output", str(tmp_path / "run"), *TINY, "model.num_classes=12",
                 "model.allow_unused_classes=true", "sched.epochs=1"]) == 0  # fmt: skip


def test_help_describes_every_kind_of_data(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(kind in text for kind in ("ImageNet-layout folder", "shard directory", "Hugging Face dataset", "s3://"))


def test_swinkit_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("SWINKIT_DEBUG", "1")
    with pytest.raises(ConfigError, match="make no full step"):
        main(["train", "--output", str(tmp_path / "run"), *TINY, "data.max_train_samples=8", "data.batch_size=16"])


@pytest.mark.parametrize("command", ["configs", "models"])
def test_output_into_a_closed_pipe_exits_quietly(command):
    """`swinkit models | head -2`: unbuffered, so the rows after the reader has gone fail to write."""
    import subprocess
    import sys

    shell = f"{sys.executable} -u -m swinkit {command} | head -2; exit ${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", shell], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.count("\n") == 2
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
