"""``load_checkpoint`` and ``save_checkpoint``: any supported layout in, swinkit's layout out, and back.

Loading is one pipeline: ``prepare`` reads the file once (or takes a state dict), unwraps training containers and
SSL checkpoints, detects the layout and converts it to swinkit's names; ``load_prepared`` adapts that to a model
(window tables, patch embedding, classifier rows) and loads it. ``load_checkpoint`` is the two in a row;
``swinkit convert`` calls them separately to size the model's classifier from the prepared weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core.errors import CheckpointError, ConfigError
from ..layers import WindowAttentionV1
from ..models.base import FeatureExtractor, HierarchicalModel
from ..models.rcnn import FasterRCNN, MaskRCNN
from ..models.upernet import UperNet
from . import detection, mindspore, segmentation
from . import ssl as ssl_layout
from .common import Converted
from .io import EMA_KEYS, container_key, extract_state_dict, read_file, save_safetensors, write_tensors
from .layouts import FORMATS, NATIVE, detect_format, preview, reader, write
from .transfer import HEAD_KEYS, adapt_to_model

DETECTORS = (FasterRCNN, MaskRCNN)


@dataclass
class LoadReport:
    """What ``load_checkpoint`` did: the layout it read, what it loaded, dropped, adapted and could not match."""

    source: str
    format: str
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source} ({self.format} layout)"]
        if self.dropped:
            lines.append(f"dropped {len(self.dropped)} derived or unused keys: {preview(self.dropped)}")
        lines += [f"adapted {note}" for note in self.adapted]
        if self.missing:
            lines.append(f"missing (left as initialised) {len(self.missing)}: {preview(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected (ignored) {len(self.unexpected)}: {preview(self.unexpected)}")
        return "\n".join(lines)


def _backbone(model: nn.Module) -> HierarchicalModel:
    model = model.model if isinstance(model, FeatureExtractor) else model
    if not isinstance(model, HierarchicalModel):
        raise TypeError(f"load_checkpoint expects a swinkit model, got {type(model).__name__}")
    return model


def _architecture_hint(state: Mapping[str, torch.Tensor], model: HierarchicalModel) -> str:
    """A one-line guess of what a mismatching checkpoint was made for, to name the likely right model."""
    weight = state.get("patch_embed.proj.weight")
    if weight is None:
        return ""
    depths = []
    for i in range(len(model.layers) + 2):
        blocks = {k.split(".")[3] for k in state if k.startswith(f"layers.{i}.blocks.")}
        if not blocks:
            break
        depths.append(len(blocks))
    if any(".attns." in k for k in state):
        kind = "CSWin"
    else:
        kind = "Swin V2" if any(k.endswith("logit_scale") for k in state) else "Swin V1"
    return (
        f" The checkpoint looks like {kind} with embed_dim={weight.shape[0]}, "
        f"depths={tuple(depths)}; the model is {model.family} with embed_dim={model.embed_dims[0]}, "
        f"depths={tuple(len(s.blocks) for s in model.layers)}. Pick the model name that matches the checkpoint."
    )


def load_checkpoint(
    model: nn.Module,
    src: str | os.PathLike | Mapping[str, torch.Tensor] | Contents,
    *,
    format: str = "auto",
    strict: bool = True,
    label_map: str | os.PathLike | Sequence[int] | None = None,
    head: str = "match",
    ema: bool | None = None,
) -> LoadReport:
    """Load weights of any supported layout into a swinkit model.

    Args:
        model: a model from ``create_model`` (``features_only`` ones too).
        src: a .pth/.pt/.bin (read with ``weights_only=True``), .safetensors or PaddlePaddle .pdparams (read with
            an unpickler that admits numpy arrays only) file, or an in-memory state dict. ``model``/``state_dict``
            containers and ``module.`` prefixes are unwrapped. Or the ``Contents`` of one already read.
        format: 'auto' or one of 'swinkit', 'microsoft', 'timm', 'hf', 'torchvision', 'mindspore', 'paddle'; for an
            ``UperNet`` also 'mmseg' (see ``_load_upernet``), for a detector 'mmdet' (see ``_load_detector``).
            Weights in MindCV's Swin V2 layout also switch the model to the numerics MindCV trained them with
            (LayerNorm eps 1e-6, tanh GELU; reported under ``adapted``), as do swinkit files saved from such a model.
        strict: raise if the model has parameters the checkpoint lacks, or the checkpoint has extra weights.
        label_map: a file (line i = source class of target class i, e.g. ImageNet-22k -> 1k) or a list of indices
            selecting rows of the checkpoint's classifier.
        head: 'match' (the default: class counts must agree) or 'reset' (keep the model's freshly initialised
            classifier when they differ, e.g. to fine-tune on another dataset).
        ema: which weights of a training container holding both trained and EMA weights (timm's CheckpointSaver,
            as the official CSWin saves: ``state_dict`` and ``state_dict_ema``). None (the default) takes the EMA
            weights, the ones the official CSWin results are measured with; False the trained ones (e.g. to continue
            training them); True requires EMA weights. A plain state dict is loaded as it is.

    Returns:
        A ``LoadReport``; ``print(report)`` summarises it.

    Raises:
        CheckpointError: unreadable file, unknown layout, wrong architecture, class-count mismatch, or (strict)
            missing/unexpected keys. The message names the problem and the fix.
    """
    dense_layouts = segmentation.LAYOUTS if isinstance(model, UperNet) else detection.LAYOUTS if isinstance(
        model, DETECTORS) else ()  # fmt: skip
    if format not in FORMATS and format not in dense_layouts:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if head not in ("match", "reset"):
        raise ConfigError(f"head must be 'match' or 'reset', got {head!r}")
    if hasattr(model, "load_ssl_checkpoint"):  # swinkit.ssl meta-architectures load part by part through here
        return model.load_ssl_checkpoint(src, format=format, strict=strict, ema=ema)
    if isinstance(model, UperNet):
        return _load_upernet(model, src, format=format, strict=strict, head=head, ema=ema)
    if isinstance(model, DETECTORS):
        return _load_detector(model, src, format=format, strict=strict, head=head, ema=ema)
    backbone = _backbone(model)
    return load_prepared(backbone, prepare(src, backbone.family, format=format, ema=ema), strict=strict,
                         label_map=label_map, head=head)  # fmt: skip


@dataclass
class Prepared:
    """Weights read and converted to swinkit's names, not yet fitted to a model (``prepare``'s result)."""

    source: str
    format: str
    state: dict[str, torch.Tensor]
    dropped: list[str]
    metadata: dict[str, str]
    mindcv: bool  # MindCV's Swin V2 weights (or a swinkit file saved from them): the model takes MindCV's numerics
    ssl: bool  # the encoder of an SSL checkpoint: there is no classifier to match


@dataclass(frozen=True)
class Contents:
    """A checkpoint read once (``read_contents``): what a caller that must look inside before loading (a class
    count, the layout) hands on to ``load_checkpoint``/``prepare`` instead of a path, so the file is not read
    again."""

    source: str
    obj: object
    metadata: dict[str, str]
    state: dict[str, torch.Tensor]


def read_contents(src: str | os.PathLike | Mapping[str, torch.Tensor] | Contents, ema: bool | None = None) -> Contents:
    """A file (read without executing code, see ``load_checkpoint``) or a state dict in memory, unwrapped to its
    state dict (``ema`` as for ``load_checkpoint``); ``Contents`` are returned as they are."""
    if isinstance(src, Contents):
        return src
    if isinstance(src, Mapping):
        return Contents("<state dict>", src, {}, extract_state_dict(src, "<state dict>", ema=ema))
    obj, metadata = read_file(src)
    return Contents(str(src), obj, metadata, extract_state_dict(obj, str(src), ema=ema))


def prepare(
    src: str | os.PathLike | Mapping[str, torch.Tensor] | Contents,
    family: str,
    *,
    format: str = "auto",
    ema: bool | None = None,
) -> Prepared:
    """Read ``src`` once, unwrap it, detect its layout (``format='auto'``) and convert it for a ``family`` model."""
    contents = read_contents(src, ema)
    source, obj, metadata, state = contents.source, contents.obj, contents.metadata, contents.state
    if isinstance(obj, Mapping) and container_key(obj, source, ema) in EMA_KEYS:
        source = f"{source} (EMA weights, {container_key(obj, source, ema)!r})"
    ssl_dropped: list[str] = []
    kind = ssl_layout.detect(state)
    if kind:
        # MoBY/SimMIM pretraining: the backbone is the (online) encoder.
        state, ssl_dropped = ssl_layout.online_encoder(state)
        source = f"{source} ({kind} encoder)"
    if format == "auto":
        format = detect_format(state, metadata)
    mindcv = format == "mindspore" and family == "swinv2" and mindspore.is_mindcv(mindspore.normalise_names(state)[0])
    mindcv = mindcv or (format == NATIVE and metadata.get("numerics") == "mindcv")
    state, dropped = reader(format).to_swinkit(state, family)
    return Prepared(source, format, state, ssl_dropped + dropped, dict(metadata), mindcv, bool(kind))


def _check_fit(source: str, format: str, state: Mapping[str, torch.Tensor], model: HierarchicalModel,
               model_state: Mapping[str, torch.Tensor], strict: bool,
               ignore: tuple[str, ...]) -> tuple[list[str], list[str]]:  # fmt: skip
    """Refuse ``state`` if a tensor differs in shape from ``model_state``'s, or (``strict``) if keys are missing or
    unexpected, other than those in ``ignore``; returns ``(missing, unexpected)``."""
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
        for k, v in state.items()
        if k in model_state and v.shape != model_state[k].shape
    ]
    if mismatched:
        raise CheckpointError(
            f"{source} does not fit this {type(model).__name__}: {len(mismatched)} tensors differ in shape "
            f"({preview(mismatched, 5)}).{_architecture_hint(state, model)}"
        )
    missing = [k for k in model_state if k not in state and k not in ignore]
    unexpected = [k for k in state if k not in model_state]
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{source} ({format} layout) does not match the model: missing {len(missing)} "
            f"[{preview(missing)}], unexpected {len(unexpected)} [{preview(unexpected)}]. "
            f"{_architecture_hint(state, model).strip()} Use strict=False to load the matching part only."
        )
    return missing, unexpected


def load_prepared(
    model: HierarchicalModel,
    prepared: Prepared,
    *,
    strict: bool = True,
    label_map: str | os.PathLike | Sequence[int] | None = None,
    head: str = "match",
) -> LoadReport:
    """Fit prepared weights to ``model`` (see ``load_checkpoint`` for the arguments) and load them."""
    source, format = prepared.source, prepared.format
    head = "reset" if prepared.ssl else head
    dropped = list(prepared.dropped)
    for prefix in model.pruned_prefixes:
        dropped += [k for k in prepared.state if k.startswith(prefix)]
    state = {k: v for k, v in prepared.state.items() if k not in dropped}

    model_state = model.state_dict()
    windows = {
        f"{name}.relative_position_bias_table": module.window_size
        for name, module in model.named_modules()
        if isinstance(module, WindowAttentionV1)
    }
    try:
        state, adapted, head_dropped = adapt_to_model(state, model_state, windows, label_map, head)
    except CheckpointError:
        # The head does not fit; first say whether the rest does: a backbone of another architecture is the thing
        # to fix, and no head setting would load it.
        backbone = {k: v for k, v in state.items() if k not in HEAD_KEYS}
        _check_fit(source, format, adapt_to_model(backbone, model_state, windows, None, head)[0], model, model_state,
                   strict, ignore=HEAD_KEYS)  # fmt: skip
        raise
    dropped += head_dropped
    # With head='reset' a classifier the checkpoint lacks (or had to drop) is expected to stay freshly initialised.
    missing, unexpected = _check_fit(source, format, state, model, model_state, strict,
                                     ignore=HEAD_KEYS if head == "reset" else ())
    model.load_state_dict({k: v for k, v in state.items() if k in model_state}, strict=False)
    if prepared.mindcv:
        adapted += mindspore.mindcv_numerics(model)
    return LoadReport(
        source, format, sorted(k for k in state if k in model_state), dropped, adapted, missing, unexpected
    )


SEGMENTATION_HEAD_KEYS = ("decode_head.conv_seg.weight", "decode_head.conv_seg.bias",
                         "auxiliary_head.conv_seg.weight", "auxiliary_head.conv_seg.bias")  # fmt: skip


def _load_upernet(model: UperNet, src, *, format: str, strict: bool, head: str, ema: bool | None) -> LoadReport:
    """A whole UperNet (swinkit's own, the official mmseg release, HF's ``UperNetForSemanticSegmentation``), or a
    backbone for it (any classification or SSL checkpoint ``load_checkpoint`` reads, loaded into ``model.backbone``;
    the heads stay initialised).

    A whole model's backbone goes through the classification pipeline (window tables adapted as there); its output
    norms and heads must fit exactly, except the per-pixel classifiers under ``head='reset'`` when the class counts
    differ.
    """
    contents = read_contents(src, ema)
    layout = segmentation.detect(contents.state)  # a whole UperNet's layout tells itself; ``format`` the backbone's
    if layout is None:
        prepared = prepare(contents, model.backbone.family, format="auto" if format == "mmseg" else format)
        return load_prepared(model.backbone, prepared, strict=strict, head="reset")
    state, dropped = contents.state, []
    if layout != NATIVE:
        state, dropped = segmentation.to_swinkit(state, layout, model.backbone.family)
    return _load_whole(model, "backbone.", Converted(state, dropped), contents, layout, strict, head,
                       SEGMENTATION_HEAD_KEYS, [])  # fmt: skip


def _load_detector(model: nn.Module, src, *, format: str, strict: bool, head: str, ema: bool | None) -> LoadReport:
    """A whole Faster/Mask R-CNN (swinkit's own, torchvision's, the official mmdet releases:
    ``swinkit.checkpoints.detection``), or a backbone for it (any classification or SSL checkpoint, loaded into
    ``model.backbone.body``; the rest stays initialised). As ``_load_upernet``; the box and mask predictors are the
    class-sized tensors ``head='reset'`` leaves initialised."""
    contents = read_contents(src, ema)
    layout = detection.detect(contents.state)
    body = model.backbone.body
    if layout is None:
        prepared = prepare(contents, body.family, format="auto" if format in detection.LAYOUTS else format)
        return load_prepared(body, prepared, strict=strict, head="reset")
    notes: list[str] = []
    if layout == "mmdet":
        converted, notes = detection.mmdet_to_swinkit(contents.state, body.family)
    elif layout == "torchvision":  # another backbone's detector: its heads only
        other = sorted(k for k in contents.state if k.startswith("backbone.body."))
        own = model.state_dict()
        unfit = sorted(k for k, v in contents.state.items()
                       if k in own and not k.startswith("backbone.body.") and v.shape != own[k].shape
                       and not (head == "reset" and k in detection.PREDICTORS))  # fmt: skip
        state = {k: v for k, v in contents.state.items() if k not in other and k not in unfit}
        converted = Converted(state, [*unfit, *other])
        notes.append(f"not taken: {len(other)} tensors of another backbone (backbone.body.*), {len(unfit)} of "
                     f"another shape ({preview(unfit)})")  # fmt: skip
    else:
        converted = Converted(contents.state, [])
    return _load_whole(model, "backbone.body.", converted, contents, layout, strict, head, detection.PREDICTORS,
                       notes)  # fmt: skip


def _load_whole(model: nn.Module, prefix: str, converted: Converted, contents: Contents, layout: str, strict: bool,
                head: str, head_keys: tuple[str, ...], notes: list[str]) -> LoadReport:  # fmt: skip
    """A dense model's state dict in swinkit's names: its backbone (the entries under ``prefix``) through the
    classification pipeline into ``model``'s backbone, the rest exactly, except the class-sized ``head_keys`` under
    ``head='reset'`` when the class counts differ."""
    state, dropped = converted
    body = model.get_submodule(prefix.rstrip("."))
    body_state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    prepared = Prepared(contents.source, layout, body_state, [k.removeprefix(prefix) for k in dropped],
                        contents.metadata, mindcv=False, ssl=False)  # fmt: skip
    report = load_prepared(body, prepared, strict=strict and bool(body_state), head="reset")
    if not body_state:
        report.missing = list(body.state_dict())
    rest = {k: v for k, v in state.items() if not k.startswith(prefix)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    report.adapted += notes
    if head == "reset":
        resized = [k for k in head_keys if k in rest and k in own and rest[k].shape != own[k].shape]
        rest = {k: v for k, v in rest.items() if k not in resized}
        report.adapted += [f"{k} left initialised ({model.num_classes} classes)" for k in resized[:1]]
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in rest.items() if k in own and v.shape != own[k].shape]  # fmt: skip
    if mismatched:
        hint = " (pass head='reset' to train new classifiers)" if all(m.split(":")[0] in head_keys
                                                                      for m in mismatched) else ""  # fmt: skip
        raise CheckpointError(f"{contents.source} does not fit this {type(model).__name__}: "
                              f"{preview(mismatched, 4)}{hint}")  # fmt: skip
    ignore = head_keys if head == "reset" else ()
    missing = [k for k in own if k not in rest and k not in ignore]
    unexpected = [k for k in rest if k not in own]
    if strict and (missing or unexpected or report.missing):
        missing_all = [prefix + k for k in report.missing] + missing
        raise CheckpointError(f"{contents.source} ({layout} layout) does not match the model: missing "
                              f"{len(missing_all)} [{preview(missing_all)}], unexpected {len(unexpected)} "
                              f"[{preview(unexpected)}]. Use strict=False to load the matching part only.")  # fmt: skip
    model.load_state_dict({k: v for k, v in rest.items() if k in own}, strict=False)
    report.loaded = [prefix + k for k in report.loaded] + sorted(k for k in rest if k in own)
    report.missing = [prefix + k for k in report.missing] + missing
    report.unexpected = [prefix + k for k in report.unexpected] + unexpected
    return report


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    format: str = "swinkit",
    metadata: Mapping[str, str] | None = None,
    layout: str | None = None,
) -> Path:
    """Write the model's weights atomically, in swinkit's layout or another ecosystem's.

    Args:
        format: 'swinkit' (a .safetensors file with swinkit metadata), or 'timm', 'microsoft', 'hf', 'torchvision'
            (.safetensors or .pth/.pt/.bin by the suffix of ``path``), 'mindspore' (a .ckpt file) or 'paddle' (a
            .pdparams file); see ``swinkit.checkpoints.layouts``. ``load_checkpoint`` reads every one of them back
            exactly.
        metadata: extra safetensors metadata (swinkit format only).
        layout: for 'mindspore', 'mindcv' (Swin V2's default) or 'modelzoo' (official names, gamma/beta).

    An ``UperNet`` is written as 'swinkit', 'mmseg' (the official release's layout, a .pth file holding
    ``{"state_dict": ...}``) or 'hf' (``UperNetForSemanticSegmentation``'s names, .safetensors or .pth); a
    detector as 'swinkit', 'torchvision' (its state dict as it is, .pth) or 'mmdet' (the official release's layout,
    ``{"state_dict": ...}``), see ``swinkit.checkpoints.detection``.
    """
    if isinstance(model, UperNet | FasterRCNN | MaskRCNN):
        return _save_dense(model, path, format, metadata)
    model = _backbone(model)
    if format != NATIVE:
        return write(model, path, format, layout)
    info = getattr(model, "model_info", None)
    meta = {"format": "swinkit", "family": model.family, **({"model": info.name} if info else {})}
    if mindspore.has_mindcv_numerics(model):
        meta["numerics"] = "mindcv"
    meta.update(metadata or {})
    return save_safetensors(model.state_dict(), path, meta)


def _save_dense(model: nn.Module, path: str | os.PathLike, format: str, metadata: Mapping[str, str] | None) -> Path:
    """An UperNet or a detector: swinkit's safetensors (with its backbone's name), or its task's layouts."""
    if format == NATIVE:
        info = getattr(model, "model_info", None)
        meta = {"format": NATIVE, "family": model.family, "backbone": model.backbone_name,
                **({"model": info.name} if info else {}), **(metadata or {})}  # fmt: skip
        return save_safetensors(model.state_dict(), path, meta)
    if isinstance(model, UperNet):
        if format not in segmentation.LAYOUTS:
            raise ConfigError(f"an UperNet is written as {NATIVE}, {', '.join(segmentation.LAYOUTS)}; got {format!r}")
        state = segmentation.from_swinkit(model, model.state_dict(), format)
        return write_tensors(state, path, container="state_dict" if format == "mmseg" else None)
    if format not in detection.LAYOUTS:
        raise ConfigError(f"a detector is written as {NATIVE}, {', '.join(detection.LAYOUTS)}; got {format!r}")
    if format == "torchvision":
        return write_tensors(model.state_dict(), path)
    state = detection.swinkit_to_mmdet(model.state_dict(), model.backbone.body.family)
    return write_tensors(state, path, container="state_dict")
