"""Sharded checkpoints (``torch.distributed.checkpoint`` directories), read without running code from them.

torch's own reader unpickles ``.metadata`` with ``pickle.load`` and the non-tensor entries (an optimizer's
hyperparameters) with ``torch.load(weights_only=False)``, so a crafted directory runs code in whoever loads it. Here:

* ``.metadata`` is at most ``MAX_METADATA_BYTES`` and is unpickled by ``_MetadataUnpickler``, which builds only the
  classes DCP metadata is made of (its dataclasses, ``torch.Size``, dtypes, layouts, memory formats, paths) and
  refuses every other global;
* the metadata is checked against the directory before anything is allocated: every entry names a regular file
  directly inside it (no path, no symbolic link) and a byte range inside that file, every tensor's chunks tile it
  and fit their entries, and the tensors together declare no more bytes than the shard files hold;
* every entry is read as bytes of that range and unpickled with ``weights_only=True``, after the zip check
  ``swinkit.checkpoints.io`` applies to ``.pth`` files (no record inflates past the entry);
* ``SHA256SUMS`` (``sha256sum``'s format, written at save by ``write_checksums``) is checked before loading, so a
  flipped byte in a shard is refused instead of loaded. A directory saved before swinkit wrote it loads with a
  warning.

Every failure is a ``CheckpointError`` naming the directory.
"""

from __future__ import annotations

import io
import logging
import math
import os
import pathlib
import pickle
import re
import stat
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader, _StorageInfo
from torch.distributed.checkpoint.planner import LoadItemType

from ..core.digest import sha256_file
from ..core.distributed import all_gather_objects
from ..core.errors import CheckpointError, SwinkitError
from ..core.remote import reason
from .io import check_zip_sizes

log = logging.getLogger(__name__)

METADATA_FILE = ".metadata"
CHECKSUMS_FILE = "SHA256SUMS"
MAX_METADATA_BYTES = 256 << 20
_SHARD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

# What DCP metadata pickles reference (torch 2.4-2.14), and nothing else.
_ALLOWED = {
    ("torch.distributed.checkpoint.metadata", name): getattr(dcp_metadata, name)
    for name in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                 "TensorProperties", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")  # fmt: skip
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): _StorageInfo,
    ("torch", "Size"): torch.Size,
    ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
    ("pathlib", "PosixPath"): pathlib.PurePosixPath,  # StorageMeta.checkpoint_id: kept as a name, never opened
    ("pathlib", "PurePosixPath"): pathlib.PurePosixPath,
    ("pathlib", "WindowsPath"): pathlib.PureWindowsPath,
    ("pathlib", "PureWindowsPath"): pathlib.PureWindowsPath,
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"it references {module}.{name}, which DCP metadata is not made of")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds persistent references, which DCP metadata does not")


def _regular_size(path: Path) -> int | None:
    """The size of ``path`` if it is a regular file itself (not a symbolic link, FIFO or device), else None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def read_metadata(directory: str | os.PathLike) -> dcp_metadata.Metadata:
    """The checked metadata of the DCP directory ``directory`` (see the module docstring).

    Raises:
        CheckpointError: no, oversized, unreadable or hostile metadata, or metadata the shard files do not back.
    """
    directory = Path(directory)
    path = directory / METADATA_FILE
    size = _regular_size(path)
    if size is None:
        raise CheckpointError(f"{directory}: no {METADATA_FILE} file; not a complete sharded checkpoint")
    if size > MAX_METADATA_BYTES:
        raise CheckpointError(f"{path}: {size} bytes, more than the {MAX_METADATA_BYTES >> 20} MiB any checkpoint's "
                              "metadata takes; refused")  # fmt: skip
    try:
        with path.open("rb") as f:
            metadata = _MetadataUnpickler(io.BytesIO(f.read(MAX_METADATA_BYTES + 1))).load()
    except Exception as err:  # the unpickler raises anything from EOFError to TypeError on garbage
        raise CheckpointError(f"{path} is not DCP metadata swinkit can read ({reason(err)}); refused without "
                              "running anything in it. Save the checkpoint again") from err  # fmt: skip
    try:
        _check_metadata(metadata, directory)
    except CheckpointError:
        raise
    except Exception as err:  # DCP's classes built with fields missing or of other types
        raise CheckpointError(f"{path}: not the metadata of a sharded checkpoint ({reason(err)}); the checkpoint "
                              "is corrupt or hostile. Save it again") from err  # fmt: skip
    return metadata


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_shape(value: object, rank: int | None = None) -> bool:
    return (isinstance(value, torch.Size) and all(_is_int(d) and d >= 0 for d in value)
            and (rank is None or len(value) == rank))  # fmt: skip


def _bad(directory: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{directory / METADATA_FILE}: {what}; the checkpoint is corrupt or hostile. Save it again")


def _check_metadata(metadata: object, directory: Path) -> None:
    """Refuse metadata whose structure is not DCP's or that declares more than the shard files hold."""
    if not (isinstance(metadata, dcp_metadata.Metadata) and isinstance(metadata.state_dict_metadata, dict)
            and isinstance(metadata.storage_data, dict)):  # fmt: skip
        raise _bad(directory, "not a DCP Metadata object with state_dict_metadata and storage_data tables")
    files = _check_storage(metadata.storage_data, directory)
    declared = _check_tensors(metadata, directory)
    if declared > sum(files.values()):
        raise _bad(directory, f"its tensors declare {declared} bytes, more than the {sum(files.values())} bytes of "
                              "its shard files")  # fmt: skip


def _check_storage(storage: dict, directory: Path) -> dict[str, int]:
    """The size of every shard file the entries name; each must be a regular file directly inside ``directory``,
    and each entry a byte range inside its file."""

    def bad(what: str) -> CheckpointError:
        return _bad(directory, what)

    files: dict[str, int] = {}
    for index, info in storage.items():
        if not (isinstance(index, dcp_metadata.MetadataIndex) and isinstance(info, _StorageInfo)):
            raise bad("a storage_data entry is not an index and a file range")
        name = info.relative_path
        if not (isinstance(name, str) and _SHARD_NAME.match(name) and name != METADATA_FILE):
            raise bad(f"entry {str(index.fqn)[:100]!r} names {str(name)[:100]!r}, not a shard file directly inside "
                      "the directory")  # fmt: skip
        if getattr(info, "transform_descriptors", None):
            raise bad(f"entry {index.fqn[:100]!r} is stored through transforms, which swinkit never writes")
        if name not in files:
            size = _regular_size(directory / name)
            if size is None:
                raise CheckpointError(f"{directory}: shard file {name} is missing (or not a regular file); copy the "
                                      "whole checkpoint directory")  # fmt: skip
            files[name] = size
        if not (_is_int(info.offset) and _is_int(info.length) and info.offset >= 0 and info.length >= 0
                and info.offset + info.length <= files[name]):  # fmt: skip
            raise CheckpointError(f"{directory / name}: entry {index.fqn[:100]!r} lies past the end of the file "
                                  f"({files[name]} bytes): the shard is truncated. Copy or save it again")  # fmt: skip
    return files


def _check_tensors(metadata: dcp_metadata.Metadata, directory: Path) -> int:
    """The bytes the tensors declare; each tensor's chunks must lie inside its shape, tile it, and fit their
    entries."""

    def bad(what: str) -> CheckpointError:
        return _bad(directory, what)

    declared = 0
    for fqn, entry in metadata.state_dict_metadata.items():
        if not isinstance(fqn, str):
            raise bad("a state_dict_metadata key is not a string")
        if isinstance(entry, dcp_metadata.BytesStorageMetadata):
            if dcp_metadata.MetadataIndex(fqn) not in metadata.storage_data:
                raise bad(f"entry {fqn[:100]!r} has no stored bytes")
            continue
        if not isinstance(entry, dcp_metadata.TensorStorageMetadata):
            raise bad(f"entry {fqn[:100]!r} is neither a tensor nor bytes")
        dtype = getattr(entry.properties, "dtype", None)
        if not (isinstance(dtype, torch.dtype) and _is_shape(entry.size) and isinstance(entry.chunks, list)):
            raise bad(f"tensor {fqn[:100]!r} has no dtype, shape or chunk list")
        covered = 0
        for chunk in entry.chunks:
            if not (isinstance(chunk, dcp_metadata.ChunkStorageMetadata) and _is_shape(chunk.offsets, len(entry.size))
                    and _is_shape(chunk.sizes, len(entry.size))
                    and all(o + s <= d for o, s, d in zip(chunk.offsets, chunk.sizes, entry.size, strict=True))):
                raise bad(f"tensor {fqn[:100]!r} has a chunk outside its shape {list(entry.size)}")  # fmt: skip
            stored = metadata.storage_data.get(dcp_metadata.MetadataIndex(fqn, chunk.offsets))
            nbytes = math.prod(chunk.sizes) * dtype.itemsize
            if stored is None or nbytes > stored.length:
                raise bad(f"tensor {fqn[:100]!r} declares a chunk of {nbytes} bytes that its shard entry does not hold")
            covered += math.prod(chunk.sizes)
            declared += nbytes
        if covered != math.prod(entry.size):
            raise bad(f"the chunks of tensor {fqn[:100]!r} cover {covered} of its {math.prod(entry.size)} elements")
    return declared


# --- checksums ------------------------------------------------------------------------------------------------------
def _hash_share(directory: Path, names: list[str]) -> dict[str, str]:
    """This process's share of ``names`` hashed (the processes split the files between them)."""
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if (
        torch.distributed.is_initialized()) else (0, 1)  # fmt: skip
    return {name: sha256_file(directory / name) for name in names[rank::world]}


def write_checksums(directory: str | os.PathLike, write: bool) -> None:
    """Hash every file of the DCP directory ``directory`` (call on every process once all have saved; each hashes
    its share) and, where ``write``, record them in ``directory/SHA256SUMS``."""
    directory = Path(directory)
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != CHECKSUMS_FILE)
    sums: dict[str, str] = {}
    for share in all_gather_objects(_hash_share(directory, names)):
        sums.update(share)
    if write:
        text = "".join(f"{sums[name]}  {name}\n" for name in names)
        (directory / CHECKSUMS_FILE).write_text(text)


def _read_checksums(directory: Path) -> dict[str, str] | None:
    path = directory / CHECKSUMS_FILE
    size = _regular_size(path)
    if size is None:
        return None
    if size > 1 << 20:
        raise CheckpointError(f"{path}: {size} bytes is no checksum list; refused")
    sums = {}
    for number, line in enumerate(path.read_bytes().decode("utf-8", "replace").splitlines(), 1):
        digest, _, name = line.partition("  ")
        if not (re.fullmatch(r"[0-9a-f]{64}", digest) and (_SHARD_NAME.match(name) or name == METADATA_FILE)):
            raise CheckpointError(f"{path}: line {number} is not '<sha256>  <file name>'; the list is corrupt")
        sums[name] = digest
    return sums


def verify_checksums(directory: str | os.PathLike) -> None:
    """Refuse a DCP directory whose files differ from the checksums recorded when it was saved (call on every
    process: each hashes its share, and all raise the same error)."""
    directory = Path(directory)
    sums = _read_checksums(directory)
    if sums is None:
        log.warning("%s: no %s (saved before swinkit recorded shard checksums): a corrupt shard cannot be told from a "
                    "good one. Save it again to add them", directory, CHECKSUMS_FILE)  # fmt: skip
        return
    names = sorted(sums)
    missing = [n for n in names if _regular_size(directory / n) is None]
    bad = [] if missing else [
        name for share in all_gather_objects(_hash_share(directory, names))
        for name, digest in share.items() if digest != sums[name]
    ]  # fmt: skip
    if missing or bad:
        what = f"{missing[0]} is missing" if missing else f"{bad[0]} has changed since it was saved (SHA-256 mismatch)"
        raise CheckpointError(f"{directory}: {what}; the checkpoint is corrupt. Copy it again, or resume from another "
                              "checkpoint")  # fmt: skip
    listed = set(sums) | {CHECKSUMS_FILE}
    unlisted = [p.name for p in directory.iterdir() if p.name not in listed]
    if unlisted:
        raise CheckpointError(f"{directory}: {unlisted[0]} was not part of the checkpoint when it was saved; remove "
                              "it or copy the checkpoint again")  # fmt: skip


# --- loading --------------------------------------------------------------------------------------------------------
def _entry_object(data: bytes, where: str) -> object:
    """One DCP entry's bytes (a ``torch.save`` zip) as tensors and plain values, never code."""
    check_zip_sizes(io.BytesIO(data), len(data), where)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class _Planner(DefaultLoadPlanner):
    """DCP's planner, but the bytes entries (an optimizer's hyperparameters) are unpickled with ``weights_only=True``
    first; DCP's own ``torch.load`` then reads what that gave, saved again here, not the file's bytes."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        checked = io.BytesIO()
        torch.save(_entry_object(value.getvalue(), read_item.dest_index.fqn), checked)
        checked.seek(0)
        super().load_bytes(read_item, checked)


class _Reader(FileSystemReader):
    """DCP's file system reader over checked metadata; entries are read as bytes and loaded without code."""

    def __init__(self, directory: Path, metadata: dcp_metadata.Metadata) -> None:
        super().__init__(directory)
        self.directory, self.metadata = directory, metadata

    def read_metadata(self) -> dcp_metadata.Metadata:
        return self.metadata

    def read_data(self, plan, planner):
        by_file: dict[str, list] = {}
        for item in plan.items:
            by_file.setdefault(self.storage_data[item.storage_index].relative_path, []).append(item)
        for name, items in by_file.items():
            with (self.directory / name).open("rb") as f:
                for item in sorted(items, key=lambda i: self.storage_data[i.storage_index].offset):
                    info = self.storage_data[item.storage_index]
                    f.seek(info.offset)
                    data = f.read(info.length)
                    where = f"{self.directory / name} ({item.storage_index.fqn})"
                    if len(data) != info.length:
                        raise CheckpointError(f"{where}: the shard is shorter than its metadata says; copy it again")
                    if item.type == LoadItemType.BYTE_IO:
                        planner.load_bytes(item, io.BytesIO(data))
                    else:
                        target = planner.resolve_tensor(item).detach()
                        target.copy_(_stored_tensor(data, where, item, target.shape))
                        planner.commit_tensor(item, target)
        future = torch.futures.Future()
        future.set_result(None)
        return future


def _stored_tensor(data: bytes, where: str, item, shape: torch.Size) -> torch.Tensor:
    """The part of a stored chunk that ``item`` reads, checked to have the target's ``shape``."""
    tensor = _entry_object(data, where)
    if not isinstance(tensor, torch.Tensor):
        raise CheckpointError(f"{where}: holds a {type(tensor).__name__}, not a tensor")
    if tensor.dim() != len(item.storage_offsets):
        raise CheckpointError(f"{where}: holds a {tensor.dim()}-d tensor where its metadata says "
                              f"{len(item.storage_offsets)}-d; the checkpoint is corrupt")  # fmt: skip
    for dim, (start, length) in enumerate(zip(item.storage_offsets, item.lengths, strict=True)):
        tensor = tensor.narrow(dim, start, length)
    if tensor.shape != shape:
        raise CheckpointError(f"{where}: holds a tensor of shape {list(tensor.shape)} where its metadata says "
                              f"{list(shape)}; the checkpoint is corrupt")  # fmt: skip
    return tensor


def load_sharded(state: dict, directory: str | os.PathLike, *, no_dist: bool = False,
                 metadata: dcp_metadata.Metadata | None = None) -> None:  # fmt: skip
    """``torch.distributed.checkpoint.load(state, ...)`` from ``directory``, checked as the module docstring says
    (call on every process, or in one with ``no_dist``); ``metadata`` is ``read_metadata(directory)`` where the
    caller has read it already."""
    directory = Path(directory)
    metadata = read_metadata(directory) if metadata is None else metadata
    verify_checksums(directory)
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, storage_reader=_Reader(directory, metadata), planner=_Planner(), no_dist=no_dist)
    except CheckpointException as err:  # DCP's wrapper of every process's failure
        causes = [exc for exc, _ in err.failures.values()]
        raise next((c for c in causes if isinstance(c, SwinkitError)), None) or CheckpointError(
            f"{directory}: the sharded checkpoint could not be read ({reason(causes[0]) if causes else err}); "
            "it is corrupt or was saved from another model. Copy or save it again"
        ) from err
    except SwinkitError:
        raise
    except Exception as err:
        raise CheckpointError(f"{directory}: the sharded checkpoint could not be read ({reason(err)}); it is "
                              "corrupt or was saved from another model. Copy or save it again") from err
