"""Reading and writing checkpoint files safely.

``.pth``/``.pt``/``.bin`` files are read with ``torch.load(weights_only=True)`` only, so no code in a file can run;
``.safetensors`` through safetensors; MindSpore's ``.ckpt`` (a protobuf container of raw arrays) by a protobuf
reader of swinkit's own; PaddlePaddle's ``.pdparams`` (a pickle of numpy arrays) with an unpickler that
admits numpy array reconstruction and ordered dicts and nothing else, and written as ``paddle.save`` writes them.

Writes go to a temporary file in the target directory and are renamed into
place, so an interrupted save never leaves a half-written file under the final name.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

# Container keys that hold the weights, in the order the official repositories and timm's saver use them.
CONTAINER_KEYS = ("model", "state_dict", "module")
# Keys of the EMA weights in training containers: timm's CheckpointSaver (used by the official CSWin) and official Swin.
EMA_KEYS = ("state_dict_ema", "model_ema")

# The globals a .pdparams pickle may name: what numpy needs to rebuild arrays (numpy 1 and 2 module paths), and
# OrderedDict. Anything else (a function, a class with a __reduce__ payload) is refused before it is called.
_PDPARAMS_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}
# The table of Paddle parameter names that ``paddle.save`` adds to a state dict.
PDPARAMS_NAME_TABLE = "StructuredToParameterName@@"


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
    if path.suffix == ".pdparams":
        return read_pdparams(path), {}
    if path.suffix == ".ckpt":
        from .mindspore import read_ckpt

        return read_ckpt(path), {}
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


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, source: Path) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in _PDPARAMS_GLOBALS:
            raise CheckpointError(
                f"{self.source} asks to load the Python global {module}.{name}; a .pdparams file holds only numpy "
                "arrays, and swinkit refuses anything else because unpickling it could run code. If you trust the "
                "file, load it with paddle.load and pass the arrays (as torch tensors) to load_checkpoint."
            )
        return super().find_class(module, name)


def read_pdparams(path: str | os.PathLike) -> dict:
    """A PaddlePaddle ``.pdparams`` file (``paddle.save`` of a state dict) as a dict of torch tensors.

    The pickle is read by an unpickler that only admits numpy array reconstruction and ``OrderedDict``, so no code in
    the file can run; arrays become CPU tensors and other entries (Paddle's name tables) are kept as they are.
    """
    path = Path(path)
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), path).load()
    except CheckpointError:
        raise
    except Exception as err:  # truncated or not a pickle at all
        raise CheckpointError(f"{path} is not a readable .pdparams file ({type(err).__name__}: {err})") from err
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a PaddlePaddle state dict")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for k, v in obj.items()}


def write_pdparams(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write tensors as ``paddle.save`` writes a state dict, atomically, for ``paddle.load`` and ``read_pdparams``.

    The file is a pickle (protocol 4) of numpy arrays by name, plus the name table ``paddle.load`` looks for (each
    parameter named by its key). Arrays are pickled with the ``numpy.ndarray`` and ``numpy.dtype`` globals only, which
    numpy 1 and numpy 2 both read.
    """
    arrays = {k: v.detach().to("cpu").contiguous().numpy() for k, v in state.items()}
    saved = {**arrays, PDPARAMS_NAME_TABLE: {k: k for k in arrays}}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            _PortableArrayPickler(f, protocol=4).dump(saved)

    return write_atomic(path, write)


def _reduce_array(array: np.ndarray) -> tuple:
    # numpy's own reduction calls numpy._core.multiarray._reconstruct under numpy 2, a module numpy 1 (which
    # PaddleClas 2.6 pins) does not have. An empty numpy.ndarray given the same state is the same array in both.
    return np.ndarray, ((0,),), array.__reduce__()[2]


class _PortableArrayPickler(pickle.Pickler):
    dispatch_table = {**copyreg.dispatch_table, np.ndarray: _reduce_array}


def _is_safetensors(path: Path) -> bool:
    # A safetensors file starts with an 8-byte little-endian header length followed by a JSON object.
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def container_key(
    obj: Mapping, source: str, ema: bool | None = None, prefer: tuple[str, ...] = CONTAINER_KEYS
) -> str | None:
    """The key of the weights to use in a training container, or None when ``obj`` is itself the state dict.

    Args:
        ema: None takes the EMA weights when the container has them (``state_dict_ema`` or ``model_ema``), else the
            trained ones; True requires the EMA weights; False requires the trained ones.
    """
    ema_keys = [k for k in EMA_KEYS if isinstance(obj.get(k), Mapping)]
    plain_keys = [k for k in prefer if isinstance(obj.get(k), Mapping)]
    if ema is not False and ema_keys:
        return ema_keys[0]
    if ema:
        raise CheckpointError(f"{source} has no EMA weights (none of {', '.join(EMA_KEYS)}); pass ema=None or False")
    if plain_keys:
        return plain_keys[0]
    if ema_keys:
        raise CheckpointError(f"{source} holds only EMA weights ({ema_keys[0]}); pass ema=None or True to load them")
    return None


def extract_state_dict(
    obj: object, source: str, prefer: tuple[str, ...] = CONTAINER_KEYS, ema: bool | None = None
) -> dict[str, torch.Tensor]:
    """Find the weights in a loaded checkpoint: unwrap ``model``/``state_dict`` containers and ``module.`` prefixes.

    Non-tensor entries (epoch, config, ...) are ignored. ``ema`` chooses between the trained and the EMA weights of
    a container that has both, as in ``container_key``: by default the EMA ones.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict")
    key = container_key(obj, source, ema, prefer)
    if key is not None:
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
