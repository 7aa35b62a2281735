"""``swinkit convert``: any checkpoint layout in, any written layout out, with a report of what happened."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ..checkpoints import WRITE_FORMATS, load_checkpoint, save_checkpoint
from ..checkpoints.common import DERIVED_BUFFERS
from ..checkpoints.detection import object_classes
from ..checkpoints.layouts import preview, suffixes
from ..checkpoints.load import Contents, LoadReport, load_prepared, prepare, read_contents
from ..checkpoints.segmentation import decode_classes
from ..checkpoints.transfer import read_label_map
from ..core.atomic import check_output
from ..core.errors import CheckpointError, ConfigError
from ..core.layout_names import DENSE_LAYOUT_NAMES
from ..engine.checkpoint import STATE_FILE, checkpoint_weights, find_checkpoint, stored_classes, stored_config
from ..engine.setup import model_overrides
from ..hub import create_model as create_pretrained
from ..hub import local_file, locate, split_name
from ..models import create_model, model_info, model_task


def load_model(
    name: str | None,
    checkpoint: str | os.PathLike | None,
    *,
    format: str = "auto",
    label_map: str | os.PathLike | Sequence[int] | None = None,
    overrides: dict | None = None,
    weights: bool | str | None = None,
    progress: bool = True,
) -> tuple[nn.Module, LoadReport | None, list[str] | None]:
    """Build ``name`` with the checkpoint's class count and load it.

    ``checkpoint`` may be a file or a swinkit training checkpoint directory (its ``model.safetensors`` is used).
    ``overrides`` are constructor arguments for ``create_model`` (e.g. a non-default ``window_size``). Without a
    ``name``, the checkpoint must be one a swinkit run wrote: the architecture, overrides included, is rebuilt from
    the config stored with it. ``weights`` instead of a checkpoint loads published weights: True (the default tag
    of ``name``, or the tag in ``name="model.tag"``), a tag, a file or a URL (``swinkit.hub.create_model``).

    Returns:
        (model in eval mode, the load report or None without a checkpoint, class names stored in the checkpoint
        (a swinkit training checkpoint's class folder names) or None).
    """
    if weights:
        if checkpoint is not None:
            raise ConfigError("give either a checkpoint (--checkpoint) or published weights (--pretrained/--weights)")
        if name is None:
            raise ConfigError("--pretrained/--weights need --model: the architecture the weights are for")
        model = create_pretrained(name, pretrained=weights, progress=progress, **(overrides or {}))
        return model.eval(), model.load_report, None
    if checkpoint is not None:
        checkpoint = local_file(checkpoint, exclude=(STATE_FILE,))  # a URL or s3://... file or directory: cached
    run = stored_config(checkpoint) if name is None and checkpoint is not None else None
    if name is None and run is None:
        raise ConfigError(
            f"{checkpoint or 'no checkpoint'}: name the architecture with --model (only a checkpoint a swinkit run "
            "wrote describes its own)"
        )
    if run is not None:
        name, overrides = run.model.name, {**model_overrides(run), **(overrides or {})}
        overrides.pop("num_classes", None)  # the checkpoint's head decides
    if checkpoint is None:
        return create_model(name, **(overrides or {})).eval(), None, None
    source, classes = checkpoint, None
    if not source.is_file():
        found = find_checkpoint(source)  # a training checkpoint directory, or the .last.old of a cut swap
        if found is None:
            what = "holds no training checkpoint" if source.is_dir() else "does not exist"
            raise CheckpointError(f"{source} {what}; give a checkpoint file or a run's checkpoints/best (or last)")
        source, classes = checkpoint_weights(found), stored_classes(found)  # a sharded one is consolidated here
    if model_task(name) != "classification":
        contents = read_contents(source)  # read once: the head's class count, then the weights
        num_classes, stored = dense_head(contents, model_task(name))
        model = create_model(name, **{**(overrides or {}), "num_classes": num_classes})
        report = load_checkpoint(model, contents)
        return model.eval(), report, classes or stored
    prepared = prepare(source, model_info(name).cls.family, format=format)  # read and converted once
    head = prepared.state.get("head.fc.weight")
    num_classes = len(read_label_map(label_map)) if label_map is not None else (0 if head is None else len(head))
    model = create_model(name, **{**(overrides or {}), "num_classes": num_classes})
    report = load_prepared(model, prepared, label_map=label_map)
    if "classes" in prepared.metadata:
        classes = json.loads(prepared.metadata["classes"])
    return model.eval(), report, classes


def dense_head(contents: Contents, task: str) -> tuple[int, list[str] | None]:
    """The class count of a segmentation checkpoint's decode head or a detector's box classifier, and the class
    names a swinkit run stored."""
    num_classes = decode_classes(contents.state) if task == "segmentation" else object_classes(contents.state)
    if num_classes is not None:
        classes = contents.metadata.get("classes")
        return num_classes, json.loads(classes) if classes is not None else None
    head = "segmentation head (decode_head.conv_seg)" if task == "segmentation" else "box classifier (roi_heads)"
    raise CheckpointError(f"{contents.source} holds no {head}; give a {task} model's checkpoint, or load a "
                          "classification checkpoint as the backbone with model.pretrained")  # fmt: skip


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    name: str | None,
    *,
    from_format: str = "auto",
    to_format: str = "swinkit",
    label_map: str | os.PathLike | None = None,
    layout: str | None = None,
    overrides: dict | None = None,
) -> str:
    """Read ``src`` (any layout ``load_checkpoint`` reads) into model ``name``, write it to ``dst`` as ``to_format``.

    ``name`` may be None for a checkpoint a swinkit run wrote (see ``load_model``). ``src`` may also be published
    weights named ``MODEL.TAG`` (fetched into the cache): the model and the layout are then the tag's.

    Returns:
        A summary: what was mapped, dropped (unused keys, training state), rebuilt (derived tables and masks, made
        from the window geometry) and adapted, and what was written.
    """
    if to_format not in (*WRITE_FORMATS, *DENSE_LAYOUT_NAMES):
        raise ConfigError(f"to_format must be one of {', '.join((*WRITE_FORMATS, *DENSE_LAYOUT_NAMES))}, got "
                          f"{to_format!r}")  # fmt: skip
    check_output(dst, suffixes(to_format), f"the {to_format} checkpoint")
    if not Path(src).exists() and "/" not in str(src) and split_name(str(src))[1] is not None:
        src, tag_format, weights = locate(str(src), True)
        name, from_format = name or weights.model, tag_format if from_format == "auto" else from_format
    model, report, _ = load_model(name, src, format=from_format, label_map=label_map, overrides=overrides)
    save_checkpoint(model, dst, format=to_format, layout=layout)
    rebuilt = [k for k in report.dropped if any(d in k for d in DERIVED_BUFFERS)]
    dropped = [k for k in report.dropped if k not in rebuilt]
    lines = [f"read {src} ({report.format} layout) into {model.model_info.name} ({model.num_classes} classes)"]
    lines.append(f"mapped {len(report.loaded)} tensors")
    if dropped:
        lines.append(f"dropped {len(dropped)} (unused or training state): {preview(dropped, 6)}")
    if rebuilt:
        lines.append(f"rebuilt {len(rebuilt)} derived tables/masks from the window geometry: {preview(rebuilt, 6)}")
    lines += [f"adapted {note}" for note in report.adapted]
    lines.append(f"wrote {dst} ({to_format} layout)")
    return "\n".join(lines)


