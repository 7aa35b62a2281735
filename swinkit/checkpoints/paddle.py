"""PaddleClas layouts (``swin_transformer.py``, ``swin_transformer_v2.py``, ``cswin_transformer.py``) of ``.pdparams``.

The ``.pdparams`` file itself is read and written by ``swinkit.checkpoints.pdparams``. Paddle stores every ``Linear``
weight as [in, out]: all of them are transposed, the square ``proj`` ones too, which a shape check alone would miss.
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

``from_swinkit`` is the inverse: the official layout (``microsoft.to_official``) in PaddleClas's names with every
Linear weight stored [in, out]. It writes no derived buffers: PaddleClas's ``set_state_dict`` warns
"Skip loading" for each missing one and keeps the tables its constructor computed for its own window geometry.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..core.errors import CheckpointError
from . import microsoft
from .common import Converted, qkv_stored_in_by_out, rename
from .pdparams import write_pdparams

FAMILIES = ("swin", "swinv2", "cswin")
VARIANTS: tuple[str, ...] = ()
SUFFIXES = (".pdparams",)



_CSWIN_RULES = [
    (r"^patch_embedding\.patch_embed\.", "patch_embed.proj."),
    (r"^patch_embedding\.norm\.", "patch_embed.norm."),
    (r"^stages\.(\d+)\.merge\.", lambda m: f"layers.{int(m[1]) + 1}.downsample."),
    (r"^stages\.(\d+)\.blocks\.", r"layers.\1.blocks."),
    (r"\.attns\.(\d+)\.get_v\.", r".attns.\1.lepe."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
]
# The official CSWin names (``microsoft.to_official``) -> PaddleClas's; LePE's ``get_v`` and ``head`` are shared.
_OFFICIAL_CSWIN_TO_PADDLE = [
    (r"^stage1_conv_embed\.0\.", "patch_embedding.patch_embed."),
    (r"^stage1_conv_embed\.2\.", "patch_embedding.norm."),
    (r"^stage(\d+)\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}."),
    (r"^merge(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.merge."),
]


def detect(state: dict[str, torch.Tensor]) -> bool:
    """CSWin: PaddleClas's own names (its ``stages.`` have no OpenMMLab ``w_msa``); Swin: the official names with the
    fused qkv weight stored [C, 3C]."""
    stages = any(k.startswith("stages.") for k in state) and not any(".w_msa." in k for k in state)
    if stages or any(k.startswith("patch_embedding.") for k in state):
        return True
    return "layers.0.downsample.norm.weight" in state and qkv_stored_in_by_out(state)


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


def from_swinkit(model: nn.Module, state: dict[str, torch.Tensor], variant: str | None) -> dict[str, torch.Tensor]:
    """swinkit's layout -> PaddleClas's names (through the official ones) and [in, out] Linear weights."""
    state = microsoft.to_official(state, model.family)
    if model.family == "cswin":
        state = rename(state, _OFFICIAL_CSWIN_TO_PADDLE)
    return transpose_linear_weights(state)


def write(state: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    if Path(path).suffix != ".pdparams":
        raise CheckpointError(f"a PaddlePaddle checkpoint is a .pdparams file, got {Path(path).name}")
    return write_pdparams(state, path)


def transpose_linear_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Swap PyTorch's [out, in] and Paddle's [in, out] Linear weights: its own inverse.

    Every 2-D ``.weight`` of these layouts is a Linear weight (LayerNorms are 1-D, convolutions 4-D; V1's bias table
    and V2's position index are 2-D but not named ``weight``).
    """
    return {k: v.t().contiguous() if v.ndim == 2 and k.endswith(".weight") else v for k, v in state.items()}
