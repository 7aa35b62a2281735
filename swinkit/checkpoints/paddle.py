"""PaddleClas layouts: ``cswin_transformer.py`` (CSWin), read from ``.pdparams`` files.

``io.read_file`` reads a ``.pdparams`` file (a pickle of numpy arrays) with an unpickler that admits numpy arrays and
ordered dicts only. The CSWin layout differs from swinkit's in its names (``patch_embedding.patch_embed``,
``stages.{i}.blocks``, ``get_v``), in placing the merge at the END of stage i (``stages.{i}.merge``, before stage
i + 1) and in storing every ``Linear`` weight as [in, out]: all of them are transposed, the square ``proj`` ones too,
which a shape check alone would miss. Convolution weights are stored as in PyTorch.
"""

from __future__ import annotations

import torch

from .common import Converted, rename
from .io import CheckpointError

_CSWIN_RULES = [
    (r"^patch_embedding\.patch_embed\.", "patch_embed.proj."),
    (r"^patch_embedding\.norm\.", "patch_embed.norm."),
    (r"^stages\.(\d+)\.merge\.", lambda m: f"layers.{int(m[1]) + 1}.downsample."),
    (r"^stages\.(\d+)\.blocks\.", r"layers.\1.blocks."),
    (r"\.attns\.(\d+)\.get_v\.", r".attns.\1.lepe."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
]


def detect(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("patch_embedding.", "stages.")) for k in state)


def to_swinkit(state: dict[str, torch.Tensor], family: str) -> Converted:
    if family != "cswin":
        raise CheckpointError(
            f"swinkit reads PaddleClas checkpoints of CSWin only, and this model is {family}: convert the weights "
            "to another layout (e.g. the official one) first"
        )
    dropped = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    state = {k: v for k, v in state.items() if k not in dropped}
    # Every 2-D tensor of the layout is a Linear weight (LayerNorms are 1-D, convolutions 4-D).
    state = {k: v.t().contiguous() if v.ndim == 2 and k.endswith(".weight") else v for k, v in state.items()}
    return Converted(rename(state, _CSWIN_RULES), dropped)
