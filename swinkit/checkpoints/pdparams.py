"""PaddlePaddle's ``.pdparams`` file (``paddle.save`` of a state dict: a pickle of numpy arrays), without Paddle.

``read_pdparams`` unpickles with an unpickler that admits numpy array reconstruction and ordered dicts and nothing
else, so no code in a file can run; ``write_pdparams`` writes what ``paddle.load`` reads.
"""

from __future__ import annotations

import collections
import copyreg
import io
import math
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import write_atomic
from ..core.errors import CheckpointError

# The table of Paddle parameter names that ``paddle.save`` adds to a state dict.
PDPARAMS_NAME_TABLE = "StructuredToParameterName@@"


class _Array:
    """Stands in for ``numpy.ndarray`` while unpickling: the array is built from its pickled state only once that is
    checked (a numeric dtype, raw bytes, a shape whose size those bytes hold exactly), so a file can neither declare
    more memory than it contains nor smuggle object, bytes or void arrays in."""

    def __init__(self, *args) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state) -> None:
        # ndarray's pickled state: (version, shape, dtype, is_fortran, raw bytes)
        if not (isinstance(state, tuple) and len(state) == 5):
            raise CheckpointError("an array's pickled state is malformed")
        _, shape, dtype, fortran, raw = state
        if not (isinstance(dtype, np.dtype) and dtype.kind in NUMERIC_KINDS and not dtype.fields):
            raise CheckpointError(f"an array has dtype {dtype!r}; a .pdparams file holds numeric arrays only")
        if not isinstance(raw, bytes | bytearray):
            raise CheckpointError("an array's data is not raw bytes (an object array?); refused")
        if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise CheckpointError(f"an array has the invalid shape {shape!r}")
        if math.prod(shape) * dtype.itemsize != len(raw):
            raise CheckpointError(
                f"an array of shape {shape} ({dtype}) should hold {math.prod(shape) * dtype.itemsize} bytes but holds "
                f"{len(raw)}; the file is corrupt or truncated"
            )
        self.array = np.frombuffer(bytearray(raw), dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _reconstruct(*args) -> _Array:
    return _Array()


# What each admitted global is replaced by: array reconstruction goes through ``_Array``; OrderedDict and numpy's
# dtype (checked by ``_Array``) are the real ones.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _Array,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
NUMERIC_KINDS = "biufc"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, source: Path) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise CheckpointError(
                f"{self.source} asks to load the Python global {module}.{name}; a .pdparams file holds only numpy "
                "arrays, and swinkit refuses anything else because unpickling it could run code. If you trust the "
                "file, load it with paddle.load and pass the arrays (as torch tensors) to load_checkpoint."
            )
        return _SAFE_GLOBALS[(module, name)]


def read_pdparams(path: str | os.PathLike) -> dict:
    """A PaddlePaddle ``.pdparams`` file (``paddle.save`` of a state dict) as a dict of torch tensors.

    The pickle is read by an unpickler that only admits numpy array reconstruction and ``OrderedDict``, so no code in
    the file can run; arrays become CPU tensors and other entries (Paddle's name tables) are kept as they are.
    """
    path = Path(path)
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), path).load()
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}" if not str(err).startswith(str(path)) else str(err)) from err
    except Exception as err:  # truncated or not a pickle at all
        raise CheckpointError(f"{path} is not a readable .pdparams file ({type(err).__name__}: {err})") from err
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a PaddlePaddle state dict")
    out = {}
    for key, value in obj.items():
        if isinstance(value, _Array):
            if value.array is None:
                raise CheckpointError(f"{path}: the array {key!r} has no data; the file is corrupt")
            value = torch.from_numpy(np.ascontiguousarray(value.array))
        out[str(key)] = value
    return out


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
