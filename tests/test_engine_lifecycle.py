"""A run never loses work: kills at the named points, concurrent runs, failed resumes, odd batches with mixup."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import swinkit.core.atomic as atomic
import swinkit.engine.checkpoint as ckpt
import swinkit.engine.run_dir as runs
from swinkit.checkpoints.io import read_file
from swinkit.cli import main
from swinkit.core.errors import CheckpointError, RunFinishedError, RunLockedError
from swinkit.deploy import load_model
from swinkit.deploy.eval_checkpoint import run_eval
from swinkit.engine.plot import plot_metrics
from swinkit.engine.train import train
from tests.engine_utils import TINY, tiny_config

REPO = Path(__file__).resolve().parents[1]


def _epochs(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() if p.is_file() else b"<dir>" for p in run_dir.rglob("*")}


def _kill_at_commit(monkeypatch, n: int) -> None:
    """Raise KeyboardInterrupt (a kill) when the n-th checkpoint directory is about to be committed."""
    commits = [0]
    real = ckpt.write_dir

    def write_dir(final, write):
        commits[0] += 1
        if commits[0] == n:
            raise KeyboardInterrupt(f"killed before committing {final}")
        return real(final, write)

    monkeypatch.setattr(ckpt, "write_dir", write_dir)


def test_last_never_claims_a_best_that_is_not_written(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _kill_at_commit(monkeypatch, 2)  # between the two directories the first (improving) epoch commits
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(out, "sched.epochs=1"))
    monkeypatch.undo()
    last = ckpt.find_checkpoint(out / "checkpoints" / "last")
    if last is not None:
        best_epoch = ckpt.load_trainer_state(last)["progress"]["best_epoch"]
        best = ckpt.find_checkpoint(out / "checkpoints" / "best")
        assert best is not None and ckpt.load_trainer_state(best)["progress"]["epoch"] == best_epoch
    assert ckpt.find_checkpoint(out / "checkpoints" / "best") is not None  # best/ is committed first
    assert not (out / "metrics.jsonl").exists()  # no log line before the checkpoints it describes


def test_a_failed_resume_leaves_the_run_directory_as_it_was(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(out, "sched.epochs=1"))
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match="another architecture"):
        train(tiny_config(out, "sched.epochs=2", "model.embed_dim=16"), resume=str(out))
    assert _snapshot(out) == before
    assert main(["train", "--resume", str(out), "sched.epochs=2", "model.depths=[1, 2]"]) == 2
    assert "drop the model overrides" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_resuming_a_finished_run_says_so_and_how_to_extend_it(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(out, "sched.epochs=1"))
    with pytest.raises(RunFinishedError, match=r"trained 1 of 1 epochs.*sched\.epochs=2"):
        train(tiny_config(out, "sched.epochs=1"), resume=str(out))
    assert main(["train", "--resume", str(out)]) == 2
    assert "has finished" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "sched.epochs=2"]) == 0 and _epochs(out) == [1, 2]


def _lock_holder(run_dir: Path) -> subprocess.Popen:
    """Another process that holds ``run_dir``'s lock (as a run does) until it is killed."""
    code = ("import sys, time; from pathlib import Path; from swinkit.engine.run_dir import locked\n"
            "with locked(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], env=env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_live_lock_stops_a_second_run_and_a_stale_one_is_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    holder = _lock_holder(out)
    try:
        with pytest.raises(RunLockedError, match=f"in use by process .*:{holder.pid}"):
            train(tiny_config(out, "sched.epochs=1"))
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing else written
    finally:
        holder.kill()  # SIGKILL: its lock file stays, naming it; the kernel has released the lock itself
        holder.wait()
    assert (out / ".lock").read_text().split()[1] == str(holder.pid)
    with caplog.at_level(logging.WARNING):
        assert train(tiny_config(out, "sched.epochs=1"))["epoch"] == 1
    assert any(f"{holder.pid}, which no longer runs" in r.getMessage() for r in caplog.records)
    assert not (out / ".lock").exists()  # released at the end


def _race_for_the_lock(run_dir: Path, start, results) -> None:
    start.wait()
    try:
        with runs.locked(run_dir):
            taken = time.monotonic()
            time.sleep(0.3)
            results.put((taken, time.monotonic()))
    except RunLockedError:
        results.put(None)


@pytest.mark.parametrize("left", ["stale", "empty", "none"])
def test_processes_racing_for_one_lock_never_both_hold_it(tmp_path, left):
    """Six processes start at once, over a lock a dead process left, an empty one (written between create and
    write), or none: in every trial no two hold it at the same time (the old create-then-write lock let two
    through)."""
    context = multiprocessing.get_context("fork")
    for trial in range(8):
        run_dir = tmp_path / f"{left}{trial}"
        run_dir.mkdir()
        if left != "none":
            (run_dir / ".lock").write_text(f"{socket.gethostname()} 999999999\n" if left == "stale" else "")
        start, results = context.Barrier(6), context.Queue()
        racers = [context.Process(target=_race_for_the_lock, args=(run_dir, start, results)) for _ in range(6)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(60)
        held = sorted(h for h in (results.get(timeout=5) for _ in racers) if h is not None)
        assert held and all(a[1] <= b[0] for a, b in zip(held, held[1:], strict=False)), (trial, held)


@pytest.mark.slow
def test_two_concurrent_runs_into_one_directory(tmp_path):
    """A real second process: while `swinkit train` runs, another run into its directory stops at once."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "swinkit", "train", "--output", str(out), *TINY, "sched.epochs=200"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".lock").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (out / ".lock").exists(), "the first run never took the lock"
        with pytest.raises(RunLockedError, match=str(first.pid)):
            train(tiny_config(out, "sched.epochs=1"))
    finally:
        first.kill()
        first.wait()


def test_checkpoint_files_and_directories_are_synced_before_the_rename(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    train(tiny_config(tmp_path / "run", "train.stop_after_steps=1"))
    monkeypatch.undo()
    synced_files = [path for kind, path in events if kind == "fsync"]
    renames = [i for i, (kind, src) in enumerate(events) if kind == "replace" and src.endswith(".tmp")]
    assert len(renames) >= 4  # config.yaml, the checkpoint directory and its config.yaml, ...
    for i in renames:
        src = events[i][1]
        before = {path for kind, path in events[:i] if kind == "fsync"}
        inside = [p for p in synced_files if str(Path(p).parent) == src]
        assert src in before, f"{src} renamed before it was synced"
        assert all(p in before for p in inside), f"files in {src} renamed before they were synced"
    assert any(Path(p).name == "model.safetensors" for p in synced_files)


def test_interrupted_saves_are_cleaned_and_old_copies_are_read(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(out, "sched.epochs=1"))
    checkpoints = out / "checkpoints"
    (checkpoints / ".last.abc123.tmp").mkdir()
    (checkpoints / ".last.abc123.tmp" / "model.safetensors").write_bytes(b"half")
    (checkpoints / ".model.safetensors.x1.tmp").write_bytes(b"half")
    # A kill between the two renames of a swap: only .last.old is left.
    os.replace(checkpoints / "last", atomic.previous_copy(checkpoints / "last"))
    assert run_eval(tiny_config(out), str(checkpoints / "last"))["n"] == 33
    overrides = dict(img_size=16, patch_size=4, window_size=2, embed_dim=8, depths=(1, 1), num_heads=(1, 2))
    model, report, classes = load_model("swinv2_tiny_window8_256", checkpoints / "last", overrides=overrides)
    assert report.loaded and classes == [str(i) for i in range(10)]
    train(tiny_config(out, "sched.epochs=2"), resume=str(out))
    assert not [p for p in checkpoints.iterdir() if p.name.endswith(".tmp")]


def test_a_truncated_metrics_line_is_ignored_and_no_epoch_is_written_twice(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(tiny_config(out, "sched.epochs=1"))
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 2, "step": 2')  # killed mid-append
    assert [r["epoch"] for r in runs.read_metrics(out)] == [1]
    assert plot_metrics(out).stat().st_size > 0
    # Killed while committing epoch 2's checkpoint: a resumed run must not log epoch 2 twice.
    _kill_at_commit(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(out, "sched.epochs=3"), resume=str(out))
    monkeypatch.undo()
    # Killed after epoch 2's checkpoint, before its line: the resumed run restores the line from the checkpoint.
    real_append = runs.append_metrics

    def killed_append(run_dir, record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt("killed before appending")
        real_append(run_dir, record)

    monkeypatch.setattr(runs, "append_metrics", killed_append)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(out, "sched.epochs=3"), resume=str(out))
    monkeypatch.undo()
    train(tiny_config(out, "sched.epochs=3"), resume=str(out))
    assert _epochs(out) == [1, 2, 3]


def test_hostile_metrics_lines_are_left_out_of_the_plot(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(out, "sched.epochs=1"))
    with (out / "metrics.jsonl").open("a") as f:
        f.write("[" * 200_000 + "\n")  # deeper than the JSON reader recurses
        f.write('{"epoch": NaN, "train_loss": 1.0}\n{"epoch": 2, "train_loss": [1, 2], "val_top1": {"a": NaN}}\n')
    assert [r["epoch"] for r in runs.read_metrics(out)] == [1, 2]
    assert main(["plot", str(out)]) == 0


FULL_DISK = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")  # torch.save's


def test_a_full_disk_during_a_checkpoint_save_is_one_error_and_keeps_last(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    train(tiny_config(out, "sched.epochs=1"))
    before = (out / "checkpoints" / "last" / ckpt.MODEL_FILE).read_bytes()

    def full(obj, path, *args, **kwargs):
        raise FULL_DISK

    monkeypatch.setattr(ckpt.torch, "save", full)
    assert main(["train", "--resume", str(out), "sched.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not write" in err and "a full disk?" in err
    assert "previous file is kept" in err
    assert (out / "checkpoints" / "last" / ckpt.MODEL_FILE).read_bytes() == before
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_a_read_only_run_directory_is_one_error_before_any_work(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    train(tiny_config(out, "sched.epochs=1"))
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(runs.LOCK_FILE):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args)

    monkeypatch.setattr(runs.os, "open", read_only)
    assert main(["train", "--resume", str(out), "sched.epochs=2"]) == 2
    assert "cannot write the run's lock" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # what a read-only mount answers, even to root
    last = out / "checkpoints" / "last"
    assert main(["eval", "--checkpoint", str(last)]) == 2
    assert "is not writable; choose another --output" in capsys.readouterr().err
    assert not (last / "eval.json").exists()


@pytest.mark.parametrize("batch", [1, 3])
def test_odd_batches_with_mixup_train_on_every_sample(tmp_path, batch):
    from swinkit.engine import train as train_module

    sizes = []
    build = train_module.build_model

    def recording(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(lambda m, a: sizes.append(len(a[0])) if m.training else None)
        return model

    mp = pytest.MonkeyPatch()
    mp.setattr(train_module, "build_model", recording)
    try:
        out = tmp_path / "run"
        result = train(tiny_config(out, f"data.batch_size={batch}", "data.max_train_samples=12", "sched.epochs=1",
                                   "data.mixup=0.8", "data.cutmix=1.0"))  # fmt: skip
    finally:
        mp.undo()
    assert result["step"] == 12 // batch and set(sizes) == {batch}
    assert result["train_loss"] > 0 and torch.isfinite(torch.tensor(result["train_loss"]))
    state, _ = read_file(out / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in state.values())


@pytest.mark.slow
def test_two_processes_share_the_default_run_directory(tmp_path):
    """Without --output, every rank trains into the directory rank 0 picked (rank 0's lock is not another run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "swinkit",
           "train", *TINY, "sched.epochs=1", "data.batch_size=4"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["quickstart"]
    assert _epochs(tmp_path / "runs" / "quickstart") == [1]
