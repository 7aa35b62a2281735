"""Reading and writing checkpoint files safely.

``.pth``/``.pt``/``.bin`` files are read with ``torch.load(weights_only=True)`` only, so no code in a file can run;
``.safetensors`` through safetensors. Writes go to a temporary file in the target directory and are renamed into
place, so an interrupted save never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

# Container keys that hold the weights, in the order the official repositories and timm's saver use them.
CONTAINER_KEYS = ("model", "state_dict", "module")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says which and how to fix it."""


def read_file(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """Load a checkpoint file into Python objects without executing code.

    Returns:
        (the loaded object, safetensors metadata or {}).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors" or _is_safetensors(path):
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            return load_file(str(path)), metadata
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({err}); it may be truncated: save or download it again"
            ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True), {}
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds Python objects other than tensors and plain containers, and swinkit refuses to unpickle "
            f"them because that can run code ({str(err).splitlines()[0]}). If you trust the file, load it yourself "
            "with torch.load(..., weights_only=False) and pass the state dict to load_checkpoint."
        ) from err
    except Exception as err:  # the unpickler raises anything from IndexError to RuntimeError on garbage
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint or is corrupt ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "expected a .pth/.pt/.bin saved by torch.save or a .safetensors file"
        ) from err


def _is_safetensors(path: Path) -> bool:
    # A safetensors file starts with an 8-byte little-endian header length followed by a JSON object.
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def extract_state_dict(obj: object, source: str, prefer: tuple[str, ...] = CONTAINER_KEYS) -> dict[str, torch.Tensor]:
    """Find the weights in a loaded checkpoint: unwrap ``model``/``state_dict`` containers and ``module.`` prefixes.

    Non-tensor entries (epoch, config, ...) are ignored.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict")
    for key in prefer:
        if isinstance(obj.get(key), Mapping):
            return extract_state_dict(obj[key], source, prefer)
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{source} contains no tensors; top-level keys: {sorted(map(str, obj))[:10]}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def write_atomic(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_safetensors(state: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """Write tensors (made contiguous, on CPU) to a safetensors file atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
