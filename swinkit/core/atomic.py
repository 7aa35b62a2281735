"""Files and directories written whole or not at all, and durable once written.

Everything goes to a temporary name beside the target, is flushed to disk (``fsync`` of each file and of the
directory that holds it), and is then renamed into place; the parent directory is synced after the rename so the
new name survives a power cut. A crash at any point leaves the old file or the new one, never a mixture.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError, StorageError

TMP_SUFFIX = ".tmp"


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a directory's contents to disk.

    Some file systems (network and FUSE mounts among them) cannot sync a directory and say so with EINVAL or
    ENOTSUP: there the rename is as durable as the mount makes it, and the write goes on.
    """
    is_dir = Path(path).is_dir()
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if is_dir else 0))
    try:
        os.fsync(fd)
    except OSError as err:
        if not (is_dir and err.errno in (errno.EINVAL, errno.ENOTSUP)):
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, sync it, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes private files; match anything else written here
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        raise_storage_error(path, err)
        raise
    return path


def write_dir(final: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` on a fresh temporary directory beside ``final``, sync it, then move it onto ``final``.

    An existing ``final`` is first renamed to ``.<name>.old`` and removed only once the new directory is in place, so
    a crash between the two renames leaves ``.<name>.old`` for ``old_or_current`` to find.
    """
    final = Path(final)
    tmp = temporary_dir(final)
    try:
        write(tmp)
        commit_dir(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_storage_error(final, err)
        raise
    return final


def temporary_dir(final: str | os.PathLike) -> Path:
    """A fresh temporary directory beside ``final`` (``.<name>.XXXX.tmp``), for ``commit_dir`` to move into place.
    Several processes may write into it (a sharded checkpoint) before one of them commits it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=TMP_SUFFIX, dir=final.parent))


def commit_dir(tmp: Path, final: str | os.PathLike) -> None:
    """Sync everything under ``tmp`` (files, then directories, deepest first) and swap it in as ``final``."""
    umask = _umask()
    for f in sorted(tmp.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)
        fsync_path(f)
    tmp.chmod(0o777 & ~umask)
    fsync_path(tmp)
    _swap_in(tmp, Path(final))


def raise_storage_error(path: Path, err: BaseException) -> None:
    """Raise one clear ``StorageError`` for ``err`` if it is a failed write of ``path`` (disk full, no permission,
    read-only file system); return otherwise. Writers report it their own way: an ``OSError``, safetensors'
    "... (os error 28)", torch.save's failed ``inline_container``."""
    if isinstance(err, StorageError):
        return
    number = err.errno if isinstance(err, OSError) else None
    if number is None and (found := re.search(r"\(os error (\d+)\)", str(err))):
        number = int(found[1])
    torch_writer = isinstance(err, RuntimeError) and any(w in str(err) for w in ("inline_container", "StreamWriter"))
    if number not in _STORAGE_ERRNOS and not torch_writer:
        return
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MB free there"
    except OSError:
        free = "free space unknown"
    what = os.strerror(number) if number in _STORAGE_ERRNOS else "torch.save could not write it (a full disk?)"
    error = StorageError(
        f"could not write {path}: {what} ({free}); nothing was replaced, the previous file is kept. "
        "Free some space or choose another location, then run the command again"
    )
    error.errno = number if number in _STORAGE_ERRNOS else errno.ENOSPC
    raise error from err


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def _swap_in(tmp: Path, final: Path) -> None:
    old = previous_copy(final)
    if final.exists():
        # An .old left by an earlier interrupted swap is stale only once a complete final/ exists.
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_path(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def previous_copy(final: str | os.PathLike) -> Path:
    """Where ``write_dir`` keeps the previous ``final`` while it swaps the new one in: ``.<name>.old``."""
    final = Path(final)
    return final.parent / f".{final.name}.old"


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete what interrupted ``write_atomic``/``write_dir`` calls left in ``directory``; returns what was removed.

    Call it only while no other process writes there (a run holds its directory's lock).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def check_output(path: str | os.PathLike, suffixes: tuple[str, ...], what: str) -> Path:
    """Refuse, before any work, an output path a command could not write or that names the wrong kind of file.

    The parent directory must exist already (a command never creates directories above the file it was asked to
    write) and be writable, and the suffix must be one of ``suffixes`` (what ``what`` is written as).
    """
    path = Path(path)
    if path.suffix not in suffixes:
        raise ConfigError(f"{path}: {what} is written as {' or '.join(suffixes)}, not {path.suffix or 'no suffix'}; "
                          f"name the output {path.with_suffix(suffixes[0]).name}")  # fmt: skip
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"{path}: the directory {parent} does not exist; create it first (mkdir -p {parent})")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: the directory {parent} is not writable; choose another --output")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give a file name")
    return path
