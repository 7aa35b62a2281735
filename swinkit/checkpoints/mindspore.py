"""The layouts of MindSpore's Swin and CSWin ports (MindCV, ModelZoo), read and written without MindSpore.

The ``.ckpt`` file itself is read and written by ``swinkit.checkpoints.mindspore_ckpt``.

Layouts (all with LayerNorm ``gamma``/``beta`` for ``weight``/``bias``; Dense and Conv weights as in PyTorch):

- **MindCV** ``swinv2_*`` (mindcv/models/swintransformerv2.py): the official layout (merging at the END of stage i,
  ``head``) but with separate ``attn.q``/``attn.k``/``attn.v`` Dense layers (k without bias), the position bias MLP in
  ``attn.relative_position_bias.cpb_mlp0``/``cpb_mlp2``, and the derived ``relative_coords_table``,
  ``relative_position_index`` and ``attn_mask`` stored as parameters (dropped, rebuilt). Its numerics differ from
  the official ones: LayerNorm eps 1e-6 (patch embedding, blocks, final norm; patch merging keeps 1e-5) and
  MindSpore's default tanh-approximated GELU; ``load_checkpoint`` switches the model to them (``mindcv_numerics``).
- **ModelZoo** SwinV2 (``swinv2_base_patch4_window12to16_192to256_22kto1k_ft``; its weights come from the official
  ``.pth`` through a pth->ckpt converter that renames LayerNorm parameters only): the official layout with
  ``gamma``/``beta``. Swin V1 ports use the same scheme.
- MindSpore **CSWin** port: the official CSWin names with ``gamma``/``beta``.

``Parameter.name`` depends on the MindSpore version: MindSpore 2.x names the parameters of a ``CellList`` inside a
``CellList`` by position (``0.blocks.1.blocks.0.norm1.gamma`` for ``layers.1.blocks.0.norm1.gamma``), and training
wrappers add ``network.``/``_backbone.`` prefixes. Names are therefore normalised by structure before conversion.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from ..core.errors import CheckpointError
from . import microsoft
from .common import Converted, drop_derived, rename
from .mindspore_ckpt import write_ckpt

FAMILIES = ("swin", "swinv2", "cswin")
SUFFIXES = (".ckpt",)
VARIANTS = ("mindcv", "modelzoo")  # MindCV's names (Swin V2 only; its default) or the official ones + gamma/beta

# MindCV's numerics: the LayerNorm eps of the patch embedding, the blocks and the final norm, and the GELU.
MINDCV_NORM_EPS = 1e-6
MINDCV_GELU = "tanh"

# Training state that MindSpore's TrainOneStepCell and optimizers save beside the weights.
_TRAINING_PREFIXES = (
    "moments.",
    "adam_m.",
    "adam_v.",
    "accum.",
    "learning_rate",
    "global_step",
    "scale_sense",
    "current_iterator_step",
    "last_overflow_iterator_step",
    "epoch_num",
    "step_num",
    "beta1_power",
    "beta2_power",
    "loss_scale",
)
_WRAPPER_PREFIX = re.compile(r"^(?:network\.|_backbone\.|backbone\.|net\.|model\.)+")


# --- layouts ------------------------------------------------------------------------------------------------------


def normalise_names(state: dict) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip training wrappers and optimizer state; restore ``layers.{i}`` where MindSpore named cells by position."""
    out, dropped = {}, []
    for key, value in state.items():
        key = _WRAPPER_PREFIX.sub("", key)
        if not isinstance(value, torch.Tensor) or key.startswith(_TRAINING_PREFIXES):
            dropped.append(key)
            continue
        # MindSpore 2.x: layers.{i}.blocks.{j} of i >= 1 is "0.blocks.{i}.blocks.{j}", of stage 0 "0.blocks.{j}".
        key = re.sub(r"^0\.blocks\.(\d+)\.(blocks|downsample)\.", r"layers.\1.\2.", key)
        key = re.sub(r"^0\.(blocks|downsample)\.", r"layers.0.\1.", key)
        out[key] = value
    return out, dropped


def is_mindcv(state: dict[str, torch.Tensor]) -> bool:
    return any(k.endswith((".attn.q.weight", ".relative_position_bias.cpb_mlp0.weight")) for k in state)


def detect(state: dict[str, torch.Tensor]) -> bool:
    """LayerNorms named ``gamma``/``beta``, or MindCV's separate q/k/v (after MindSpore's naming is normalised)."""
    keys = normalise_names(state)[0]
    return is_mindcv(keys) or any(k.endswith((".gamma", ".beta")) for k in keys)


_MINDCV_RULES = [
    (r"\.attn\.relative_position_bias\.cpb_mlp0\.", ".attn.cpb_mlp.0."),
    (r"\.attn\.relative_position_bias\.cpb_mlp2\.", ".attn.cpb_mlp.2."),
    (r"\.attn\.relative_position_bias\.", ".attn."),
]


def _fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(state)
    for prefix in [k.removesuffix("q.weight") for k in state if k.endswith(".attn.q.weight")]:
        out[prefix + "qkv.weight"] = torch.cat([out.pop(f"{prefix}{n}.weight") for n in "qkv"])
        out.pop(prefix + "k.bias", None)  # MindCV's k has no bias; a zero one from another port means nothing
        if prefix + "q.bias" in out:
            out[prefix + "q_bias"] = out.pop(prefix + "q.bias")
            out[prefix + "v_bias"] = out.pop(prefix + "v.bias")
    return out


def to_swinkit(state: dict[str, torch.Tensor], family: str) -> Converted:
    state, dropped = normalise_names(state)
    state = {re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", k)): v for k, v in state.items()}
    kept, derived = drop_derived(state)
    if is_mindcv(kept):
        kept = _fuse_qkv(rename(kept, _MINDCV_RULES))
    converted = microsoft.to_swinkit(kept, family)
    return Converted(converted.state, dropped + derived + converted.dropped)


# Official-layout LayerNorm parameters: every norm of Swin, and CSWin's stem norm.
_NORM_KEY = re.compile(r"(?:(?:^|\.)norm\d*|^stage1_conv_embed\.2)\.(weight|bias)$")


def from_official(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """Official-layout weights -> MindSpore names: 'mindcv' (Swin V2 only) or 'modelzoo' (official + gamma/beta)."""
    out = {}
    for key, value in state.items():
        key = _NORM_KEY.sub(lambda m: m[0][: -len(m[1])] + ("gamma" if m[1] == "weight" else "beta"), key)
        if layout == "mindcv":
            m = re.match(r"(.*\.attn\.)(qkv\.weight|q_bias|v_bias|cpb_mlp\.([02])\.(weight|bias))$", key)
            if m and m[2] == "qkv.weight":
                for name, part in zip("qkv", value.chunk(3), strict=True):
                    out[f"{m[1]}{name}.weight"] = part
                continue
            if m and m[2] in ("q_bias", "v_bias"):
                key = f"{m[1]}{m[2][0]}.bias"
            elif m:
                key = f"{m[1]}relative_position_bias.cpb_mlp{m[3]}.{m[4]}"
        out[key] = value
    return out


def from_swinkit(model: nn.Module, state: dict[str, torch.Tensor], variant: str | None) -> dict[str, torch.Tensor]:
    """swinkit's layout -> MindCV's (``variant='mindcv'``, Swin V2's default) or ModelZoo's (``'modelzoo'``)."""
    variant = variant or ("mindcv" if model.family == "swinv2" else "modelzoo")
    if variant == "mindcv" and model.family != "swinv2":
        raise CheckpointError(f"MindCV's layout is Swin V2's; write {model.family} with layout='modelzoo'")
    return from_official(microsoft.to_official(state, model.family), variant)


def write(state: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    if Path(path).suffix != ".ckpt":
        raise CheckpointError(f"a MindSpore checkpoint is a .ckpt file, got {Path(path).name}")
    return write_ckpt(state, path)


def mindcv_numerics(model: nn.Module) -> list[str]:
    """Switch a Swin V2 model to MindCV's numerics in place: LayerNorm eps 1e-6 and tanh GELU.

    The patch-merging norms keep eps 1e-5, as in MindCV. Returns notes on what changed (empty if nothing did).
    """
    changed = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm) and ".downsample." not in f".{name}." and module.eps != MINDCV_NORM_EPS:
            module.eps = MINDCV_NORM_EPS
            changed.add(f"LayerNorm eps -> {MINDCV_NORM_EPS:g} (patch merging keeps its eps)")
        if isinstance(module, nn.GELU) and module.approximate != MINDCV_GELU:
            module.approximate = MINDCV_GELU
            changed.add(f"GELU -> approximate={MINDCV_GELU!r}")
    return [f"numerics: {note}, as MindCV trained it" for note in sorted(changed)]


def has_mindcv_numerics(model: nn.Module) -> bool:
    """Whether a model's GELU is the tanh approximation and its final norm has MindCV's eps."""
    gelus = [m.approximate for m in model.modules() if isinstance(m, nn.GELU)]
    norm = getattr(model, "norm", None)
    return bool(gelus) and all(g == MINDCV_GELU for g in gelus) and getattr(norm, "eps", None) == MINDCV_NORM_EPS
