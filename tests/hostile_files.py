"""Hostile and broken checkpoint files, read by every reader in a process with an address-space cap.

``python -m tests.hostile_files OUT_DIR`` writes the known hostile files and a few hundred seeded mutants of a small
valid file of each format, reads each with ``swinkit.checkpoints.io.read_file`` and prints one JSON object: what
escaped other than ``CheckpointError`` (nothing, if the readers are sound) and the process's peak resident memory.
``tests/test_hostile_files.py`` runs it in a subprocess, so a reader that allocates without bound cannot take the
test machine down.
"""

from __future__ import annotations

import json
import pickle
import random
import resource
import struct
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from swinkit.checkpoints import mindspore_ckpt
from swinkit.checkpoints.io import read_file
from swinkit.checkpoints.pdparams import write_pdparams
from swinkit.core.errors import CheckpointError

ADDRESS_SPACE_CAP = 5 * 2**30  # torch alone maps about 3 GiB of address space
MUTANTS_PER_FORMAT = 100


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"layers.0.weight": torch.randn(4, 6, generator=g), "layers.0.bias": torch.randn(4, generator=g),
            "head.fc.weight": torch.randn(3, 4, generator=g).half(), "steps": torch.arange(5)}  # fmt: skip


def _ckpt_value(tag: bytes, dims: list[int], dtype: bytes, content: bytes) -> bytes:
    field, varint = mindspore_ckpt._field, mindspore_ckpt._varint
    tensor = b"".join(varint(1 << 3) + varint(d) for d in dims) + field(2, dtype) + field(3, content)
    return field(1, field(1, tag) + field(2, tensor))


class _ShortArray:
    """Pickles as a numpy array declaring ``shape`` with only four bytes of data."""

    def __init__(self, shape: tuple[int, ...], dtype: str = "float32", raw: bytes = b"\0" * 4) -> None:
        self.shape, self.dtype, self.raw = shape, dtype, raw

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return _reconstruct, (np.ndarray, (0,), b"b"), (1, self.shape, np.dtype(self.dtype), False, self.raw)


def hostile(out: Path) -> list[Path]:
    """The files issue 12 lists, each of which once escaped or took gigabytes."""
    files = []
    for suffix in (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".pdparams"):
        files.append(out / f"empty{suffix}")
        files[-1].write_bytes(b"")
    ckpts = {
        "dims_2e32": _ckpt_value(b"w", [2**32, 2**32], b"Float32", b"\0" * 4),
        "dims_zero_huge": _ckpt_value(b"w", [0, 2**40, 2**40], b"Float32", b""),
        "dims_max": _ckpt_value(b"w", [2**64 - 1, 2**64 - 1], b"Float32", b"\0" * 4),
        "name_not_utf8": _ckpt_value(b"\xff\xfe\xfa", [1], b"Float32", b"\0" * 4),
        "short_str": _ckpt_value(b"arch", [0], b"str", b"ab"),
    }
    for name, data in ckpts.items():
        files.append(out / f"{name}.ckpt")
        files[-1].write_bytes(data)
    pdparams = {
        "object_array": {"w": np.array([1, "x"], dtype=object)},
        "void_array": {"w": np.zeros(3, dtype="V8")},
        "bytes_array": {"w": np.array([b"ab", b"cd"], dtype="S2")},
        "declares_1p7gb": {"w": _ShortArray((20000, 60000))},
    }
    for name, obj in pdparams.items():
        files.append(out / f"{name}.pdparams")
        files[-1].write_bytes(pickle.dumps(obj, protocol=4))
    # A zip that torch would inflate: a 1 GiB record of zeros, deflated to about 1 MB.
    bomb = out / "zip_bomb.pth"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as record:
            chunk = bytes(2**20)
            for _ in range(1024):
                record.write(chunk)
        archive.writestr("archive/data.pkl", pickle.dumps({"w": 0}))
    files.append(bomb)
    return files


def valid(out: Path) -> list[Path]:
    state = _state()
    files = [out / "valid.safetensors", out / "valid.pth", out / "valid_legacy.pth", out / "valid.ckpt",
             out / "valid.pdparams"]  # fmt: skip
    save_file(state, files[0])
    torch.save(state, files[1])
    torch.save(state, files[2], _use_new_zipfile_serialization=False)
    mindspore_ckpt.write_ckpt(state, files[3])
    write_pdparams(state, files[4])
    return files


def mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:  # flip a few bytes
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # truncate
        del data[rng.randrange(len(data)) :]
    elif kind == 2:  # cut a chunk out
        start = rng.randrange(len(data))
        del data[start : start + rng.randint(1, 64)]
    elif kind == 3:  # insert garbage
        start = rng.randrange(len(data))
        data[start:start] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:  # overwrite an 8-byte word with a large little-endian integer (lengths, sizes, offsets)
        start = rng.randrange(max(len(data) - 8, 1))
        data[start : start + 8] = struct.pack("<Q", rng.choice([2**31, 2**32 + 7, 2**40, 2**63 - 1, 2**64 - 1]))
    return bytes(data)


def _peak_rss_mb() -> float:
    """This process's resident high-water mark. Not ``getrusage``'s ``ru_maxrss``: Linux carries that over from the
    parent across fork and exec, so under a large test runner it reports the runner's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _read(path: Path) -> str | None:
    """None if the reader accepted the file or refused it with a CheckpointError, else what escaped."""
    try:
        read_file(path)
    except CheckpointError:
        return None
    except Exception as err:  # an escape: what the test reports
        return f"{path.name}: {type(err).__name__}: {str(err)[:200]}"
    return None


def main(out: Path) -> dict:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    baseline = _peak_rss_mb()
    refused, escaped = [], []
    for path in hostile(out):
        try:
            read_file(path)
        except CheckpointError:
            refused.append(path.name)
        except Exception as err:  # an escape
            escaped.append(f"{path.name}: {type(err).__name__}: {str(err)[:200]}")
    accepted_valid = []
    mutants = 0
    rng = random.Random(12)
    for path in valid(out):
        read_file(path)
        accepted_valid.append(path.name)
        data = path.read_bytes()
        for i in range(MUTANTS_PER_FORMAT):
            mutant = out / f"mutant{i}{path.suffix}"
            mutant.write_bytes(mutate(data, rng))
            mutants += 1
            problem = _read(mutant)
            if problem:
                escaped.append(f"mutant of {path.name}: {problem}")
    return {
        "refused": refused, "escaped": escaped, "valid": accepted_valid, "mutants": mutants,
        "baseline_rss_mb": baseline, "peak_rss_mb": _peak_rss_mb(),
        "seconds": time.perf_counter() - start,
    }  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
