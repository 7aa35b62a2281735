"""HF transformers' layout: ``Swin{,v2}ForImageClassification`` and the bare ``Swin{,v2}Model`` (V1 and V2).

Differences from swinkit's (timm's) layout:

- Everything but ``classifier`` (swinkit's ``head.fc``) sits under ``swin.``/``swinv2.``, a prefix the bare models
  lack. ``embeddings.patch_embeddings.projection`` and ``embeddings.norm`` are the patch embedding,
  ``encoder.layers`` the stages, ``layernorm`` the final norm.
- Patch merging sits at the END of stage i (``encoder.layers.{i}.downsample``), as in the official code.
- q, k and v are separate linears that swinkit fuses into ``attn.qkv``: ``attention.self.{query,key,value}`` in V2 and
  in V1 files (the hub's, or any written by ``save_pretrained``), ``attention.{q,k,v}_proj`` in the state dict of a
  live V1 model under transformers >= 5. V2's key has no bias, and its query and value biases are swinkit's
  ``q_bias``/``v_bias``. The output projection is ``attention.output.dense`` or ``attention.o_proj``.
- ``layernorm_before``/``layernorm_after`` are ``norm1``/``norm2``; in V2 they are still applied after attention and
  MLP (res-post-norm), whatever the names say. The MLP is ``intermediate.dense``/``output.dense`` (V1 under
  transformers >= 5: ``mlp.fc1``/``mlp.fc2``, as in swinkit).
- V2's position bias MLP is ``continuous_position_bias_mlp``; V1's table is
  ``attention.self.relative_position_bias_table`` (``attention.relative_position_bias.relative_position_bias_table``
  under transformers >= 5). ``relative_position_index`` is saved by V1 models of transformers 4.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from . import microsoft
from .common import Converted, drop_derived, rename
from .io import TORCH_SUFFIXES, write_tensors

FAMILIES = ("swin", "swinv2")
VARIANTS: tuple[str, ...] = ()
SUFFIXES = TORCH_SUFFIXES

# HF names -> the official layout; microsoft.to_swinkit then moves the patch merging and the head.
_RULES = [
    (r"^(?:swin|swinv2)\.", ""),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embeddings\.norm\.", "patch_embed.norm."),
    (r"^encoder\.layers\.", "layers."),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head."),
    (r"\.attention\.self\.(query|key|value)\.", r".attn.\1."),
    (r"\.attention\.q_proj\.", ".attn.query."),
    (r"\.attention\.k_proj\.", ".attn.key."),
    (r"\.attention\.v_proj\.", ".attn.value."),
    (r"\.attention\.(?:output\.dense|o_proj)\.", ".attn.proj."),
    (r"\.attention\.(?:self|relative_position_bias)\.", ".attn."),
    (r"\.continuous_position_bias_mlp\.", ".cpb_mlp."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"(\.blocks\.\d+)\.intermediate\.dense\.", r"\1.mlp.fc1."),
    (r"(\.blocks\.\d+)\.output\.dense\.", r"\1.mlp.fc2."),
]

_BLOCK_KEY = re.compile(r"^(?:swin\.|swinv2\.)?encoder\.layers\.\d+\.blocks\.\d+\.layernorm_before\.weight$")


def detect(state: dict[str, torch.Tensor]) -> bool:
    """HF's block names (``encoder.layers.{i}.blocks.{j}.layernorm_before``), with or without the model prefix."""
    return any(_BLOCK_KEY.match(k) for k in state)


def _fuse_qkv(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """``attn.{query,key,value}.*`` -> ``attn.qkv.weight``, and ``attn.qkv.bias`` (V1) or ``q_bias``/``v_bias`` (V2)."""
    out = dict(state)
    for prefix in [k.removesuffix("query.weight") for k in state if k.endswith(".attn.query.weight")]:
        out[prefix + "qkv.weight"] = torch.cat([out.pop(f"{prefix}{n}.weight") for n in ("query", "key", "value")])
        if prefix + "query.bias" not in out:
            continue
        if family == "swinv2":
            out[prefix + "q_bias"] = out.pop(prefix + "query.bias")
            out[prefix + "v_bias"] = out.pop(prefix + "value.bias")
        else:
            out[prefix + "qkv.bias"] = torch.cat([out.pop(f"{prefix}{n}.bias") for n in ("query", "key", "value")])
    return out


def to_swinkit(state: dict[str, torch.Tensor], family: str) -> Converted:
    kept, dropped = drop_derived(state)
    official = _fuse_qkv(rename(kept, _RULES), family)
    return Converted(microsoft.to_swinkit(official, family).state, dropped)


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


def from_swinkit(model: nn.Module, state: dict[str, torch.Tensor], variant: str | None) -> dict[str, torch.Tensor]:
    """swinkit's layout -> the names of HF hub files (``attention.self.query`` ...), which every transformers version
    reads."""
    family = model.family
    official = microsoft.to_official(state, family)
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


write = write_tensors
