"""Writing a swinkit model's weights in the layout of another ecosystem, so a model trained here can go back.

Every writer is the inverse of the reader of the same name: ``load_checkpoint`` of a written file gives back exactly
the weights that were saved. The layouts are described in the reader modules (``microsoft``, ``hf``,
``torchvision``, ``mindspore``, ``paddle``); what a writer adds:

- ``microsoft``: ``{"model": state}`` as the official training code saves it; derived buffers are not written (the
  official ``load_pretrained`` deletes them and rebuilds them anyway).
- ``torchvision``: the persistent ``relative_position_index`` (and V2's ``relative_coords_table``) are written for
  each block's window, so ``load_state_dict(strict=True)`` of torchvision's model accepts the file.
- ``hf``: the names of HF hub files (``attention.self.query`` ...), which every transformers version reads.
- ``mindspore``: a ``.ckpt`` in MindCV's layout for Swin V2 (``layout="mindcv"``, the default for V2) or in the
  ModelZoo layout (``layout="modelzoo"``: the official names with LayerNorm ``gamma``/``beta``, what the seed's
  pth->ckpt converter produced; the only one for Swin V1 and CSWin).
- ``paddle``: a ``.pdparams`` as ``paddle.save`` writes it, in the layout of PaddleClas's ``swin_transformer.py``,
  ``swin_transformer_v2.py`` or ``cswin_transformer.py`` (Linear weights [in, out]), for ``paddle.load`` and
  ``set_state_dict``. Derived buffers are not written: ``set_state_dict`` tolerates their absence (a "Skip loading"
  warning each) and keeps the ones PaddleClas's constructor computed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from ..core.atomic import write_atomic
from ..core.errors import CheckpointError
from ..layers import WindowAttentionV1, WindowAttentionV2
from ..layers.relative_position import log_spaced_coords, relative_position_index
from . import mindspore, paddle
from .common import rename
from .io import save_safetensors

WRITE_FORMATS = ("swinkit", "timm", "microsoft", "hf", "torchvision", "mindspore", "paddle")

_CSWIN_TO_OFFICIAL = [
    (r"^patch_embed\.proj\.", "stage1_conv_embed.0."),
    (r"^patch_embed\.norm\.", "stage1_conv_embed.2."),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.", lambda m: f"stage{int(m[1]) + 1}.{m[2]}."),
    (r"^layers\.(\d+)\.downsample\.", r"merge\1."),
    (r"\.attns\.(\d+)\.lepe\.", r".attns.\1.get_v."),
    (r"^head\.fc\.", "head."),
]

_OFFICIAL_TO_HF = [
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^patch_embed\.norm\.", "embeddings.norm."),
    (r"^layers\.", "encoder.layers."),
    (r"^norm\.", "layernorm."),
    (r"\.attn\.proj\.", ".attention.output.dense."),
    (r"\.attn\.cpb_mlp\.", ".attention.self.continuous_position_bias_mlp."),
    (r"\.attn\.", ".attention.self."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
]

_TO_TORCHVISION = [
    (r"^patch_embed\.proj\.", "features.0.0."),
    (r"^patch_embed\.norm\.", "features.0.2."),
    (r"^layers\.(\d+)\.blocks\.", lambda m: f"features.{2 * int(m[1]) + 1}."),
    (r"^layers\.(\d+)\.downsample\.", lambda m: f"features.{2 * int(m[1])}."),
    (r"\.mlp\.fc1\.", ".mlp.0."),
    (r"\.mlp\.fc2\.", ".mlp.3."),
    (r"^head\.fc\.", "head."),
]


def to_official(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    if family == "cswin":
        return rename(state, _CSWIN_TO_OFFICIAL)
    out = {}
    for key, value in state.items():
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", key)
        out[re.sub(r"^head\.fc\.", "head.", key)] = value
    return out


def _to_hf(official: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    prefix = "swinv2." if family == "swinv2" else "swin."
    out = {}
    for key, value in rename(official, _OFFICIAL_TO_HF).items():
        if key.startswith("head."):
            out["classifier." + key.removeprefix("head.")] = value
            continue
        m = re.match(r"(.*\.attention\.self\.)(qkv\.weight|qkv\.bias|q_bias|v_bias)$", key)
        if m and m[2].startswith("qkv"):
            kind = m[2].split(".")[1]
            for name, part in zip(("query", "key", "value"), value.chunk(3), strict=True):
                out[f"{prefix}{m[1]}{name}.{kind}"] = part
        elif m:
            out[f"{prefix}{m[1]}{'query' if m[2] == 'q_bias' else 'value'}.bias"] = value
        else:
            out[prefix + key] = value
    return out


def _to_torchvision(model: nn.Module, state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in rename(state, _TO_TORCHVISION).items():
        if key.endswith(".attn.q_bias"):
            prefix = key.removesuffix("q_bias")
            v_bias = state[_swinkit_key(key, "v_bias")]
            out[prefix + "qkv.bias"] = torch.cat([value, torch.zeros_like(value), v_bias])
        elif not key.endswith(".attn.v_bias"):
            out[key] = value
    # torchvision's derived tables are persistent buffers: write them for each block's window.
    for name, module in model.named_modules():
        if not isinstance(module, (WindowAttentionV1, WindowAttentionV2)):
            continue
        prefix = rename({name + ".x": None}, _TO_TORCHVISION).popitem()[0].removesuffix("x")
        window = tuple(module.window_size)
        out[prefix + "relative_position_index"] = relative_position_index(window).flatten().clone()
        if isinstance(module, WindowAttentionV2):
            out[prefix + "relative_coords_table"] = log_spaced_coords(window, (0, 0)).unsqueeze(0).clone()
    return out


def _swinkit_key(torchvision_key: str, leaf: str) -> str:
    """``features.{2i+1}.{j}.attn.q_bias`` -> ``layers.{i}.blocks.{j}.attn.<leaf>``."""
    m = re.match(r"features\.(\d+)\.(\d+)\.attn\.", torchvision_key)
    return f"layers.{(int(m[1]) - 1) // 2}.blocks.{m[2]}.attn.{leaf}"


def to_format(model: nn.Module, format: str, layout: str | None = None) -> dict[str, torch.Tensor]:
    """The model's weights in the key layout of ``format`` (see ``WRITE_FORMATS``)."""
    family = model.family
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if format not in WRITE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(WRITE_FORMATS)}, got {format!r}")
    unsupported = {("cswin", "timm"), ("cswin", "hf"), ("cswin", "torchvision")}
    if (family, format) in unsupported:
        raise CheckpointError(f"{format} has no CSWin models; write CSWin as swinkit, microsoft, mindspore or paddle")
    if format in ("swinkit", "timm"):
        out = state
    elif format == "microsoft":
        out = to_official(state, family)
    elif format == "hf":
        out = _to_hf(to_official(state, family), family)
    elif format == "torchvision":
        out = _to_torchvision(model, state, family)
    elif format == "paddle":
        out = paddle.from_official(to_official(state, family), family)
    else:
        layout = layout or ("mindcv" if family == "swinv2" else "modelzoo")
        if layout not in ("mindcv", "modelzoo"):
            raise ValueError(f"layout must be 'mindcv' or 'modelzoo', got {layout!r}")
        if layout == "mindcv" and family != "swinv2":
            raise CheckpointError(f"MindCV's layout is Swin V2's; write {family} with layout='modelzoo'")
        out = mindspore.from_official(to_official(state, family), layout)
    # Split views share storage, which safetensors refuses and torch.save would write whole: give each its own.
    return {k: v.clone() for k, v in out.items()}


def write(model: nn.Module, path: str | os.PathLike, format: str, layout: str | None = None) -> Path:
    """Write ``to_format(model, format)`` to ``path``.

    The suffix says how: .ckpt (MindSpore), .pdparams (PaddlePaddle), .safetensors or .pth/.pt/.bin.
    """
    path = Path(path)
    state = to_format(model, format, layout)
    if format == "mindspore":
        if path.suffix != ".ckpt":
            raise ValueError(f"a MindSpore checkpoint is a .ckpt file, got {path.name}")
        return mindspore.write_ckpt(state, path)
    if format == "paddle":
        if path.suffix != ".pdparams":
            raise ValueError(f"a PaddlePaddle checkpoint is a .pdparams file, got {path.name}")
        return paddle.write_pdparams(state, path)
    if path.suffix == ".safetensors":
        return save_safetensors(state, path, {"format": "pt"})
    if path.suffix in (".pth", ".pt", ".bin"):
        obj = {"model": state} if format == "microsoft" else state
        return write_atomic(path, lambda tmp: torch.save(obj, tmp))
    raise ValueError(f"cannot tell how to write {path.name}: use a .safetensors, .pth, .pt or .bin file")
