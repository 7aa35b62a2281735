"""UperNet checkpoints in the layouts they are published in, both ways.

- ``mmseg``: the official Swin-Transformer-Semantic-Segmentation releases (mmseg 0.x, ``state_dict`` envelope). The
  backbone has the official classification names (``backbone.layers.{i}.downsample`` at the end of stage i, the
  derived ``relative_position_index``) and its four output norms are ``backbone.norm{i}``; ``decode_head.*`` and
  ``auxiliary_head.*`` are mmseg's names, which swinkit's heads share (``swinkit.models.upernet``). mmseg 1.x's own
  trainings name the backbone OpenMMLab's way (``backbone.stages.{i}...attn.w_msa``, ``checkpoints.openmmlab``);
  they are read too. swinkit writes the release's names.
- ``hf``: transformers' ``UperNetForSemanticSegmentation`` with a Swin or Swin V2 backbone
  (``openmmlab/upernet-swin-*``, converted from mmseg's). The backbone has HF's classification names under
  ``backbone.`` (``backbone.swin.`` in the state dict of a live transformers 5 model), the output norms are
  ``backbone.hidden_states_norms.stage{i+1}``, and the heads call BatchNorm ``batch_norm`` and the classifier
  ``classifier``. Files are written with the hub files' names (``backbone.embeddings...``), which every
  transformers version reads. transformers' Swin V2 backbone is not this model (no output norms, windows fixed at
  ``config.image_size``), so HF files of a Swin V2 UperNet are refused with that reason.

The backbone's own renaming is its classification layout's (``checkpoints.microsoft``, ``checkpoints.hf``).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..core.errors import CheckpointError
from . import hf
from .common import Converted, rename
from .dense import backbone_from_swinkit, backbone_to_swinkit

LAYOUTS = ("mmseg", "hf")
_HEADS = ("decode_head.", "auxiliary_head.")
_HF_HEAD_RULES = [(r"\.batch_norm\.", ".bn."), (r"\.classifier\.", ".conv_seg.")]
_HEAD_TO_HF = [(r"\.bn\.", ".batch_norm."), (r"\.conv_seg\.", ".classifier.")]
_HF_NORM = re.compile(r"^hidden_states_norms\.stage(\d+)\.")


def decode_classes(state: dict[str, torch.Tensor]) -> int | None:
    """The class count of a whole UperNet's decode head (any layout), None for a checkpoint without one."""
    for key in ("decode_head.conv_seg.weight", "decode_head.classifier.weight"):
        if key in state:
            return len(state[key])
    return None


def detect(state: dict[str, torch.Tensor]) -> str | None:
    """'swinkit', 'mmseg' or 'hf' for an UperNet state dict, None for anything else (a classification checkpoint)."""
    if "out_norms.0.weight" in state and "decode_head.conv_seg.weight" in state:
        return "swinkit"
    if "decode_head.conv_seg.weight" in state and any(k.startswith(("backbone.layers.", "backbone.stages."))
                                                      for k in state):  # fmt: skip
        return "mmseg"
    if "decode_head.classifier.weight" in state:
        return "hf"
    return None


def _split(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The backbone's entries without their ``backbone.`` prefix, and the heads' entries."""
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    heads = {k: v for k, v in state.items() if k.startswith(_HEADS)}
    other = sorted(set(state) - {f"backbone.{k}" for k in backbone} - set(heads))
    if other:
        raise CheckpointError(f"unexpected entries for an UperNet checkpoint: {', '.join(other[:5])}")
    return backbone, heads


def _take_norms(backbone: dict[str, torch.Tensor], pattern: re.Pattern, first: int) -> dict[str, torch.Tensor]:
    """Moves the output norms (``pattern`` numbering them from ``first``) out of ``backbone`` as ``out_norms.{i}``."""
    norms = {}
    for key in [k for k in backbone if pattern.match(k)]:
        norms[pattern.sub(lambda m: f"out_norms.{int(m[1]) - first}.", key)] = backbone.pop(key)
    return norms


def to_swinkit(state: dict[str, torch.Tensor], layout: str, family: str) -> Converted:
    """``layout``'s names -> swinkit's UperNet names (``backbone.*`` in swinkit's layout, ``out_norms.*``, heads)."""
    backbone, heads = _split(state)
    if layout == "hf":
        norms = _take_norms(backbone, _HF_NORM, 1)
        if not norms:
            raise CheckpointError(
                "this HF UperNet's backbone has no output norms (hidden_states_norms): transformers' Swinv2Backbone "
                "has none and fixes its windows at config.image_size, so its weights do not fit the official "
                "segmentation backbone swinkit builds; swinkit reads HF's UperNet with a Swin (V1) backbone"
            )
        backbone = {k: v for k, v in backbone.items() if not re.match(r"^(?:swin\.|swinv2\.)?layernorm\.", k)}
        converted = hf.to_swinkit(backbone, family)
        heads = rename(heads, _HF_HEAD_RULES)
    else:
        converted, indexed = backbone_to_swinkit(backbone, family)
        norms = {f"out_norms.{k}": v for k, v in indexed.items()}
    out = {f"backbone.{k}": v for k, v in converted.state.items()}
    return Converted({**out, **norms, **heads}, [f"backbone.{k}" for k in converted.dropped])


def from_swinkit(model: nn.Module, state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """swinkit's UperNet names -> ``layout``'s, the exact inverse of ``to_swinkit``."""
    family = model.backbone.family
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    norms = {k: v for k, v in state.items() if k.startswith("out_norms.")}
    heads = {k: v for k, v in state.items() if k.startswith(_HEADS)}
    if layout == "hf":
        converted = hf.from_swinkit(model.backbone, backbone, None)
        prefix = "swinv2." if family == "swinv2" else "swin."
        out = {"backbone." + k.removeprefix(prefix): v for k, v in converted.items()}
        stage = [(r"^out_norms\.(\d+)\.", lambda m: f"backbone.hidden_states_norms.stage{int(m[1]) + 1}.")]
        out.update(rename(norms, stage))
        return {**out, **rename(heads, _HEAD_TO_HF)}
    out = backbone_from_swinkit(backbone, {k.removeprefix("out_norms."): v for k, v in norms.items()}, family)
    return {**out, **heads}
