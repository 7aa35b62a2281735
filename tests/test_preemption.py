"""Real signals to real runs: SIGTERM (a scheduler) and Ctrl-C (SIGINT to the whole process group, as a terminal
sends it) stop ``swinkit train`` mid-epoch, one process and two under torchrun (DDP and FSDP), after saving
``last/`` at that step; the resumed run ends at the uninterrupted run's weights, bit for bit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import swinkit.engine.checkpoint as ckpt
from swinkit.checkpoints.io import read_file
from tests.engine_utils import REPO, TINY

pytestmark = pytest.mark.slow

EPOCHS = ["sched.epochs=3"]
# 12 steps an epoch (two processes of half the batch): a save at the first step of the second epoch, and the signal
# sent once it is on disk stops the run a step or two later, well inside that epoch. (With 6 steps of 25 ms, a Ctrl-C
# through torchrun once landed after the epoch's last step.)
LAUNCHERS = {"single": ([], 12, 13), "ddp": (["train.parallel=ddp", "data.batch_size=4"], 12, 13),
             "fsdp": (["train.parallel=fsdp", "data.batch_size=4"], 12, 13)}  # fmt: skip


def _command(launcher: str, *args: str) -> list[str]:
    if launcher == "single":
        return [sys.executable, "-m", "swinkit", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "swinkit",
            *args]  # fmt: skip


def _run(launcher: str, *args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen(_command(launcher, *args), cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def _train(launcher: str, out: Path, *extra: str) -> list[str]:
    _, _, save_at = LAUNCHERS[launcher]
    return ["train", "--output", str(out), *TINY, *EPOCHS, *LAUNCHERS[launcher][0], f"train.save_every_steps={save_at}",
            *extra]  # fmt: skip


def _weights(run: Path) -> dict[str, torch.Tensor]:
    last = run / "checkpoints" / "last"
    return ckpt.consolidated_state(last) if ckpt.is_sharded_checkpoint(last) else read_file(last / ckpt.MODEL_FILE)[0]


def _saved_step(run: Path) -> int:
    try:
        return ckpt.load_trainer_state(run / "checkpoints" / "last")["progress"]["step"]
    except Exception:  # not there yet, or mid-swap
        return -1


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    root = tmp_path_factory.mktemp("whole")
    weights = {}
    for launcher in LAUNCHERS:
        proc = _run(launcher, *_train(launcher, root / launcher), cwd=root)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        weights[launcher] = _weights(root / launcher)
    return weights


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_signal_mid_epoch_saves_the_step_and_the_resume_ends_bit_identical(uninterrupted, tmp_path, launcher, sig):
    run = tmp_path / "run"
    _, epoch_steps, save_at = LAUNCHERS[launcher]
    proc = _run(launcher, *_train(launcher, run), cwd=tmp_path)
    deadline = time.monotonic() + 300
    while _saved_step(run) != save_at and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the signal"
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C: the terminal signals every process of the foreground group
    else:
        proc.send_signal(sig)  # a scheduler stops the job's process; torchrun passes it on to its workers
    _, err = proc.communicate(timeout=300)
    line = r"swinkit train: stopped at step (\d+) of (\d+); resume with: swinkit train --resume (\S+)"
    stopped = re.search(line, err)
    assert stopped, err[-3000:]
    step = int(stopped[1])
    assert save_at < step < 2 * epoch_steps, err[-3000:]
    assert int(stopped[2]) == 3 * epoch_steps and stopped[3] == str(run)
    assert "Traceback" not in err.split("swinkit train: stopped")[0][-2000:], err[-3000:]  # swinkit's part: no trace
    if launcher == "single":
        assert proc.returncode == 128 + sig  # what schedulers requeue on
    assert _saved_step(run) == step
    # The resume says where it goes on, and ends where the uninterrupted run ended.
    resumed = _run(launcher, "train", "--resume", str(run), cwd=tmp_path)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert f"resuming {run} at epoch 2, step {step}" in err
    ours, whole = _weights(run), uninterrupted[launcher]
    differ = {k: (ours[k] - whole[k]).abs().max().item() for k in ours if not torch.equal(ours[k], whole[k])}
    assert ours.keys() == whole.keys() and not differ, (step, differ)


def test_a_second_ctrl_c_stops_at_once_and_leaves_last_whole(tmp_path):
    """The first Ctrl-C asks for a save at the end of the step; one more, later, stops at once: whatever it cut, the
    previous ``last/`` (or the new one) is whole and resumes."""
    run = tmp_path / "run"
    proc = _run("single", *_train("single", run), cwd=tmp_path)
    save_at = LAUNCHERS["single"][2]
    while _saved_step(run) != save_at and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(2.5)  # past the window in which a repeat counts as the same Ctrl-C
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and err.rstrip().splitlines()[-1].startswith("swinkit train: ")
    assert "Traceback" not in err
    assert _saved_step(run) >= save_at
    resumed = _run("single", "train", "--resume", str(run), cwd=tmp_path)
    assert resumed.wait(timeout=600) == 0
