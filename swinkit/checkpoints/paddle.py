"""PaddleClas layouts (``swin_transformer.py``, ``swin_transformer_v2.py``, ``cswin_transformer.py``) of ``.pdparams``.

``read_pdparams`` reads a ``.pdparams`` file (a pickle of numpy arrays) with an unpickler that admits numpy arrays and
ordered dicts only; ``write_pdparams`` writes one as ``paddle.save`` does. Paddle stores every ``Linear`` weight as
[in, out]: all of them are transposed, the square ``proj`` ones too, which a shape check alone would miss.
Convolution weights are stored as in PyTorch.

- CSWin differs from swinkit's layout in its names (``patch_embedding.patch_embed``, ``stages.{i}.blocks``,
  ``get_v``) and in placing the merge at the END of stage i (``stages.{i}.merge``, before stage i + 1).
- Swin V2 (and V1) use the official names (``layers.{i}.blocks.{j}.attn.qkv``, ``q_bias``, ``cpb_mlp.{0,2}``,
  merging at the END of stage i, ``head``) and save the derived ``relative_coords_table`` and
  ``relative_position_index`` buffers; only the [in, out] Linear weights tell them from official checkpoints.
  (PaddleClas 2.6.0's ``swin_transformer_v2.py`` cannot run as released: its PatchEmbed, PatchMerging and block
  forwards name undefined variables. tests/fixtures/make_paddle_fixtures.py runs it with those forwards repaired.)
  PaddleClas 2.6.0's V1 blocks shift windows even in a stage whose map is no larger than the window, where the
  official code (and swinkit) does not: the same weights give other logits there, in PaddleClas only.

``from_official`` is the inverse, for ``writers``: the official layout (``writers.to_official``) in PaddleClas's names
with every Linear weight stored [in, out]. It writes no derived buffers: PaddleClas's ``set_state_dict`` warns
"Skip loading" for each missing one and keeps the tables its constructor computed for its own window geometry.
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
from . import microsoft
from .common import Converted, rename

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

_CSWIN_RULES = [
    (r"^patch_embedding\.patch_embed\.", "patch_embed.proj."),
    (r"^patch_embedding\.norm\.", "patch_embed.norm."),
    (r"^stages\.(\d+)\.merge\.", lambda m: f"layers.{int(m[1]) + 1}.downsample."),
    (r"^stages\.(\d+)\.blocks\.", r"layers.\1.blocks."),
    (r"\.attns\.(\d+)\.get_v\.", r".attns.\1.lepe."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
]
# The official CSWin names (``writers.to_official``) -> PaddleClas's; LePE's ``get_v`` and ``head`` are shared.
_OFFICIAL_CSWIN_TO_PADDLE = [
    (r"^stage1_conv_embed\.0\.", "patch_embedding.patch_embed."),
    (r"^stage1_conv_embed\.2\.", "patch_embedding.norm."),
    (r"^stage(\d+)\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}."),
    (r"^merge(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.merge."),
]


def detect(state: dict[str, torch.Tensor]) -> bool:
    if any(k.startswith(("patch_embedding.", "stages.")) for k in state):
        return True
    # Official Swin names, but the fused qkv weight stored [C, 3C] rather than [3C, C].
    return any(
        k.endswith(".attn.qkv.weight") and v.ndim == 2 and v.shape[1] == 3 * v.shape[0] != 0
        for k, v in state.items()
        if isinstance(v, torch.Tensor)
    )


def to_swinkit(state: dict[str, torch.Tensor], family: str) -> Converted:
    dropped = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    state = {k: v for k, v in state.items() if k not in dropped}
    if family == "cswin" and not any(k.startswith(("patch_embedding.", "stages.")) for k in state):
        raise CheckpointError("this PaddleClas checkpoint is a Swin one, and the model is CSWin: pick a Swin model")
    if family != "cswin" and any(k.startswith(("patch_embedding.", "stages.")) for k in state):
        raise CheckpointError(
            f"this is a PaddleClas CSWin checkpoint, and the model is {family}: pick a cswin_* model "
            "(swinkit reads PaddleClas checkpoints of CSWin only for CSWin models)"
        )
    state = transpose_linear_weights(state)
    if family == "cswin":
        return Converted(rename(state, _CSWIN_RULES), dropped)
    converted = microsoft.to_swinkit(state, family)
    return Converted(converted.state, dropped + converted.dropped)


def from_official(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """Official-layout weights (``writers.to_official``) -> PaddleClas's names and [in, out] Linear weights."""
    if family == "cswin":
        state = rename(state, _OFFICIAL_CSWIN_TO_PADDLE)
    return transpose_linear_weights(state)


def transpose_linear_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Swap PyTorch's [out, in] and Paddle's [in, out] Linear weights: its own inverse.

    Every 2-D ``.weight`` of these layouts is a Linear weight (LayerNorms are 1-D, convolutions 4-D; V1's bias table
    and V2's position index are 2-D but not named ``weight``).
    """
    return {k: v.t().contiguous() if v.ndim == 2 and k.endswith(".weight") else v for k, v in state.items()}


# --- the .pdparams file ------------------------------------------------------------------------------------------
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
