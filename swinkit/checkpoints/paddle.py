"""PaddleClas layouts: ``cswin_transformer.py`` (CSWin) and ``swin_transformer_v2.py`` (Swin V2), from ``.pdparams``.

``io.read_file`` reads a ``.pdparams`` file (a pickle of numpy arrays) with an unpickler that admits numpy arrays and
ordered dicts only. Paddle stores every ``Linear`` weight as [in, out]: all of them are transposed, the square
``proj`` ones too, which a shape check alone would miss. Convolution weights are stored as in PyTorch.

- CSWin differs from swinkit's layout in its names (``patch_embedding.patch_embed``, ``stages.{i}.blocks``,
  ``get_v``) and in placing the merge at the END of stage i (``stages.{i}.merge``, before stage i + 1).
- Swin V2 (and V1) use the official names (``layers.{i}.blocks.{j}.attn.qkv``, ``q_bias``, ``cpb_mlp.{0,2}``,
  merging at the END of stage i, ``head``) and save the derived ``relative_coords_table`` and
  ``relative_position_index`` buffers; only the [in, out] Linear weights tell them from official checkpoints.
  (PaddleClas 2.6.0's ``swin_transformer_v2.py`` cannot run as released: its PatchEmbed and PatchMerging forwards
  name undefined variables. The test fixture runs it with those two forwards repaired.)
"""

from __future__ import annotations

import torch

from . import microsoft
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
    # Every 2-D ``.weight`` of these layouts is a Linear weight (LayerNorms are 1-D, convolutions 4-D; V1's bias
    # table and V2's position index are 2-D but not named ``weight``).
    state = {k: v.t().contiguous() if v.ndim == 2 and k.endswith(".weight") else v for k, v in state.items()}
    if family == "cswin":
        return Converted(rename(state, _CSWIN_RULES), dropped)
    converted = microsoft.to_swinkit(state, family)
    return Converted(converted.state, dropped + converted.dropped)
