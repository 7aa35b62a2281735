"""A run directory's life: where it is, who may write it, and its ``metrics.jsonl``.

A run directory (``train.output``, by default the first free ``runs/<config name>[-N]``) holds ``config.yaml``,
``metrics.jsonl``, ``curves.png`` and ``checkpoints/{last,best}/``. While a process trains into it, it holds an
exclusive ``flock`` on ``.lock`` (which names its host and pid): a second process stops at once with an error naming
the first, and a lock left by a process that no longer runs is taken over with a warning. On entry the lock holder
removes what interrupted saves left behind (``checkpoints/.*.tmp``).

``metrics.jsonl`` gets one JSON line per epoch. A line cut short by a kill mid-append is ignored by every reader,
and a resumed run first rewrites the file to the epochs its checkpoint has done, each once, so no epoch is ever
written twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..core import remote
from ..core.atomic import remove_stale_temporaries, write_atomic
from ..core.errors import ConfigError, RunExistsError, RunLockedError, RunNotFoundError, StorageError
from .checkpoint import find_checkpoint

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
METRICS_FILE = "metrics.jsonl"


def default_run_dir(name: str) -> Path:
    """``runs/<name>``, or ``runs/<name>-2``, ``-3``, ... when earlier or live runs hold it, so a repeated command
    never overwrites or refuses; an explicit ``train.output`` that holds a run is refused instead."""
    base = Path("runs") / name
    candidates = itertools.chain([base], (base.with_name(f"{name}-{i}") for i in itertools.count(2)))
    return next(p for p in candidates if find_checkpoint(p / "checkpoints" / "last") is None and lock_owner(p) is None)


def resolve_run_dir(output: str | None, resume: str | None) -> tuple[Path, Path | None]:
    """The run directory (``resume``, else ``output``) and, when resuming, the checkpoint to resume from.

    Raises:
        FileNotFoundError: ``resume`` holds no checkpoint.
        RunExistsError: the output directory already holds a run and ``resume`` is not given.
    """
    if output and remote.is_remote(output):
        raise ConfigError(
            f"train.output={output}: a run directory needs a lock, atomic renames and appends, which object storage "
            "does not offer; train into a local directory (--output runs/NAME) and copy it up when it is done or as "
            f"it goes (e.g. aws s3 sync runs/NAME {output})"
        )
    if resume and remote.is_remote(resume):
        raise ConfigError(f"resume={resume}: a run continues in a local directory; copy it there first (the CLI "
                          f"does: swinkit train --resume {resume} --output runs/NAME)")  # fmt: skip
    run_dir = Path(resume or output)
    last = run_dir / "checkpoints" / "last"
    if resume:
        resume_dir = find_checkpoint(last)
        if resume_dir is None:
            raise RunNotFoundError(
                f"--resume {run_dir}: no checkpoint in {last}; give the directory a run was trained into (--output)"
            )
        return run_dir, resume_dir
    if find_checkpoint(last) is not None:
        raise RunExistsError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir}, or choose another --output"
        )
    return run_dir, None


# --- the lock ------------------------------------------------------------------------------------------------------
def _owner_text(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 256).decode("utf-8", "replace").strip()


def lock_owner(run_dir: str | os.PathLike) -> str | None:
    """``host:pid`` of the process that holds ``run_dir``'s lock, or None when no process holds it."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return ":".join(_owner_text(fd).split()[:2]) or "unknown"
    finally:
        os.close(fd)  # also releases the probe's shared lock
    return None


def _take(path: Path) -> int | None:
    """A descriptor of ``path`` holding its exclusive lock, or None while another process holds it. The file locked
    must still be the one at ``path`` (a holder that is finishing unlinks it), else it is opened again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` for the duration: an exclusive ``flock`` on it, so exactly one process holds it at a
    time and the kernel releases it when its holder dies (a lock left by a process that no longer runs is taken over,
    with a warning naming it).

    Raises:
        RunLockedError: another live process trains into ``run_dir``.
        StorageError: the lock cannot be written (a read-only directory).
    """
    path = run_dir / LOCK_FILE
    fd = None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a `lock_owner` probe holds it for microseconds: look again before refusing
            fd = _take(path)
            if fd is not None:
                break
            time.sleep(0.01)
        else:
            raise RunLockedError(
                f"{run_dir} is in use by process {lock_owner(run_dir) or 'unknown'} (its lock is {path}); wait for it "
                "to finish, stop it, or choose another --output"
            )
        left = _owner_text(fd)
        if left:
            log.warning("%s: taking over the lock of %s, which no longer runs", run_dir, ":".join(left.split()[:2]))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
    except OSError as err:
        if fd is not None:
            os.close(fd)
        raise StorageError(f"{run_dir}: cannot write the run's lock {path} ({os.strerror(err.errno or 0)}); train "
                           "into a writable directory (--output)") from err  # fmt: skip
    try:
        removed = remove_stale_temporaries(run_dir / "checkpoints")
        if removed:
            log.warning("removed %d file(s) left by an interrupted save: %s", len(removed),
                        ", ".join(p.name for p in removed))  # fmt: skip
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still holding it, so no process can lock the file after it is gone
        os.close(fd)


# --- metrics.jsonl -------------------------------------------------------------------------------------------------
def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The complete records of ``metrics.jsonl``: JSON objects with an integer ``epoch``. A line cut short by a kill
    mid-append, or one that is not such an object (nested past what the JSON reader takes, an epoch of NaN), is left
    out."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise RunNotFoundError(f"{path} does not exist: is {run_dir} a swinkit run directory?")
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError, ValueError):
            continue
        if isinstance(record, dict) and type(record.get("epoch")) is int:
            records.append(record)
    return records


def append_metrics(run_dir: Path, record: dict) -> None:
    with (run_dir / METRICS_FILE).open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def reconcile_metrics(run_dir: Path, epochs_done: int, last_record: dict | None) -> None:
    """Make ``metrics.jsonl`` hold each epoch up to ``epochs_done`` once, as a resumed run continues after them.

    Lines of later epochs (written after the checkpoint being resumed), repeated epochs and a truncated last line
    are dropped; the checkpoint's own epoch record is added if the kill came between the save and the append.
    """
    path = run_dir / METRICS_FILE
    records = read_metrics(run_dir) if path.is_file() else []
    kept: dict[int, dict] = {}
    for record in records:
        if record["epoch"] <= epochs_done:
            kept.setdefault(record["epoch"], record)
    if last_record and last_record.get("epoch") == epochs_done:
        kept.setdefault(epochs_done, last_record)
    text = "".join(json.dumps(kept[e]) + "\n" for e in sorted(kept))
    if not (path.is_file() and path.read_text() == text):
        write_atomic(path, lambda tmp: Path(tmp).write_text(text))
