"""PaddlePaddle's ``.pdparams`` file (``paddle.save`` of a state dict: a pickle of numpy arrays), without Paddle.

``read_pdparams`` unpickles with an unpickler that admits numpy array reconstruction and ordered dicts and nothing
else, so no code in a file can run; ``write_pdparams`` writes what ``paddle.load`` reads.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import write_atomic
from ..core.errors import CheckpointError

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
