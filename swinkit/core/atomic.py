"""Files and directories written whole or not at all, and durable once written.

Everything goes to a temporary name beside the target, is flushed to disk (``fsync`` of each file and of the
directory that holds it), and is then renamed into place; the parent directory is synced after the rename so the
new name survives a power cut. A crash at any point leaves the old file or the new one, never a mixture.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import StorageError

TMP_SUFFIX = ".tmp"


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a directory's contents to disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0))
    try:
        os.fsync(fd)
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
        _raise_storage_error(path, err)
        raise
    return path


def write_dir(final: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` on a fresh temporary directory beside ``final``, sync it, then move it onto ``final``.

    An existing ``final`` is first renamed to ``.<name>.old`` and removed only once the new directory is in place, so
    a crash between the two renames leaves ``.<name>.old`` for ``old_or_current`` to find.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=TMP_SUFFIX, dir=final.parent))
    try:
        write(tmp)
        umask = _umask()
        for f in tmp.iterdir():
            f.chmod(0o666 & ~umask)
            fsync_path(f)
        tmp.chmod(0o777 & ~umask)
        fsync_path(tmp)
        _swap_in(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_storage_error(final, err)
        raise
    return final


def _raise_storage_error(path: Path, err: BaseException) -> None:
    """Turn a failed write (disk full, no permission, read-only file system) into one clear error."""
    if isinstance(err, StorageError) or not isinstance(err, OSError) or err.errno not in _STORAGE_ERRNOS:
        return
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MB free there"
    except OSError:
        free = "free space unknown"
    error = StorageError(
        f"could not write {path}: {os.strerror(err.errno)} ({free}); nothing was replaced, the previous file is kept. "
        "Free some space or choose another location, then run the command again"
    )
    error.errno = err.errno
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
