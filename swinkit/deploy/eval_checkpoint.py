"""``swinkit eval``: top-1/top-5 of a checkpoint on a validation set, at the run's precision or an inference one; a
segmentation checkpoint's mIoU, mAcc, aAcc and per-class IoU (``swinkit.engine.segmentation_eval``); a detector's
COCO box and mask AP (``swinkit.engine.coco_eval``)."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch

from ..checkpoints import load_checkpoint
from ..core.atomic import check_output, write_atomic
from ..core.errors import CheckpointError
from ..data import build_loader, build_transform, build_val_dataset
from ..data.build import build_detection_datasets, build_segmentation_datasets
from ..data.detection import DetectionPipeline, detection_loader
from ..data.segmentation import Pipeline, segmentation_loader
from ..data.transforms import mean_std
from ..engine import checkpoint as ckpt
from ..engine.coco_eval import evaluate_detection
from ..engine.config import Config
from ..engine.detection_report import coco_tables
from ..engine.evaluate import evaluate
from ..engine.miou import table
from ..engine.segmentation_eval import evaluate_segmentation
from ..engine.segmentation_report import write_confusion_plot
from ..engine.setup import build_model, check_step_fits, session
from ..hub import local_file
from ..models import MaskRCNN, is_detection, is_segmentation, model_info
from .inference import InferenceModel, inference_precision

log = logging.getLogger(__name__)


def run_eval(
    cfg: Config, checkpoint: str, output: str | None = None, precision: str | None = None, compile: bool = False
) -> dict:
    """Evaluate a checkpoint on the validation set of ``cfg``; write ``eval.json`` and return the metrics.

    Args:
        checkpoint: a swinkit checkpoint directory (``RUN_DIR/checkpoints/best``; its EMA weights are evaluated
            too when present) or a weights file in any layout ``swinkit.checkpoints.load_checkpoint`` reads; local,
            or a URL (``s3://...``: copied into the weights cache first).
        output: directory for ``eval.json``; the checkpoint directory (or the file's directory) by default, which
            for a remote checkpoint is its copy in the cache (the log names it).
        precision: None evaluates as the run validated during training (``train.precision``, autocast), so the
            numbers equal its log; 'fp32', 'bf16', 'int8' or 'auto' run ``swinkit.deploy.inference.InferenceModel``
            (bf16 weights, not autocast; auto: bf16 where the hardware has it natively; int8:
            ``swinkit.deploy.int8``), as does ``compile``.
    """
    with session(cfg) as s:
        if is_detection(cfg.model.name):
            return _run_detection_eval(cfg, s.env, s.device, s.precision, checkpoint, output)
        if is_segmentation(cfg.model.name):
            return _run_segmentation_eval(cfg, s.env, s.device, s.precision, checkpoint, output, precision)
        return _run_eval(cfg, s.env, s.device, s.precision, checkpoint, output, precision, compile)


def load_weights(model, checkpoint: str, label_map: str | None = None) -> tuple[Path | None, Path]:
    """``checkpoint``'s weights into ``model``: a swinkit checkpoint directory or a weights file, local or remote.
    Returns the checkpoint directory (None for a file) and the local path."""
    path = local_file(checkpoint, exclude=(ckpt.STATE_FILE,))  # on s3:// (...): copied into the cache
    ckpt_dir = None if path.is_file() else ckpt.find_checkpoint(path)  # last/, or the .last.old of a cut swap
    if ckpt_dir is None and not path.exists():
        raise CheckpointError(f"{checkpoint} does not exist; give a checkpoint file or a run's checkpoints/best")
    if ckpt_dir is not None:
        ckpt.load_weights(model, ckpt_dir)
    elif path.is_file():
        load_checkpoint(model, str(path), label_map=label_map)
    else:
        raise CheckpointError(f"{path}: not a swinkit checkpoint directory (no {ckpt.MODEL_FILE}) nor a file")
    return ckpt_dir, path


def checkpoint_and_loader(cfg: Config, env, device: torch.device, checkpoint: str):
    """The model of ``cfg`` with ``checkpoint``'s weights on ``device``, and this process's validation loader.

    Returns ``(model, loader, ckpt_dir, path)``: ``ckpt_dir`` is the swinkit checkpoint directory (None for a
    weights file) and ``path`` the local checkpoint path.
    """
    val_base = build_val_dataset(cfg.data)
    model = build_model(cfg, num_classes=len(val_base.classes))
    check_step_fits(model, cfg.data.eval_batch_size or cfg.data.batch_size, model.img_size, device, training=False)
    ckpt_dir, path = load_weights(model, checkpoint, cfg.model.label_map)
    model.to(device)
    loader = build_loader(
        val_base,
        build_transform(cfg.data, model.img_size[0], False, model.model_info),
        data=cfg.data,
        batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        train=False,
        rank=env.rank,
        world_size=env.world_size,
    )
    return model, loader, ckpt_dir, path


def _run_eval(
    cfg: Config, env, device: torch.device, train_precision: str, checkpoint: str, output: str | None,
    precision: str | None, compile: bool,
) -> dict:  # fmt: skip
    model, loader, ckpt_dir, path = checkpoint_and_loader(cfg, env, device, checkpoint)
    out_dir = Path(output) if output else (ckpt_dir or path.parent)
    if env.is_main and out_dir.is_dir():  # a read-only directory is refused before the evaluation, not after it
        check_output(out_dir / "eval.json", (".json",), "the evaluation")
    ema = ckpt_dir is not None and ckpt.has_ema(ckpt_dir)
    # int8 replaces the model's linear layers in place: the EMA weights load into an fp32 copy.
    ema_model = copy.deepcopy(model) if ema and precision == "int8" else model
    if precision is None and not compile:
        runner, autocast_precision = model, train_precision  # as the run validated during training
    else:
        precision = inference_precision(precision or train_precision, device)
        runner, autocast_precision = InferenceModel(model, precision, compile=compile), "fp32"
    result = evaluate(runner, loader, device, autocast_precision)
    if precision is not None:
        result["precision"] = precision
    if ema:
        ckpt.load_weights(ema_model, ckpt_dir, ema=True)  # into the model the runner wraps, in its dtype
        if ema_model is not model:
            runner = InferenceModel(ema_model, precision)
        ema_result = evaluate(runner, loader, device, autocast_precision)
        result.update({f"ema_{k}": v for k, v in ema_result.items() if k != "n"})
    if env.is_main:
        text = json.dumps(result, indent=2) + "\n"
        write_atomic(out_dir / "eval.json", lambda tmp: Path(tmp).write_text(text))
        line = f"eval {checkpoint}: top-1 {result['top1']:.2f}  top-5 {result['top5']:.2f}  loss {result['loss']:.4f}"
        if "ema_top1" in result:
            line += f"  |  EMA top-1 {result['ema_top1']:.2f}  top-5 {result['ema_top5']:.2f}"
        log.info("%s  (n=%d) -> %s", line, result["n"], out_dir / "eval.json")
    return result


def _run_segmentation_eval(cfg: Config, env, device: torch.device, train_precision: str, checkpoint: str,
                           output: str | None, precision: str | None) -> dict:  # fmt: skip
    """mmseg's scores of a segmentation checkpoint on the run's validation split (``seg.*``: whole or sliding
    inference, test-time ratios and flip); writes ``eval.json`` (per-class IoU, confusion matrix) and
    ``confusion.png`` and prints the table."""
    (val_base,) = build_segmentation_datasets(cfg.data, cfg.seg, ("val",))
    classes = list(val_base.classes)
    model = build_model(cfg, num_classes=len(classes))
    ckpt_dir, path = load_weights(model, checkpoint)
    model.to(device)
    out_dir = Path(output) if output else (ckpt_dir or path.parent)
    if env.is_main and out_dir.is_dir():
        check_output(out_dir / "eval.json", (".json",), "the evaluation")
    mean, std = mean_std(cfg.data, model.model_info)
    loader = segmentation_loader(val_base, Pipeline(train=False, mean=mean, std=std), rank=env.rank,
                                 batch_size=cfg.data.eval_batch_size or 1, train=False, world_size=env.world_size,
                                 reduce_zero_label=cfg.seg.reduce_zero_label)  # fmt: skip
    if precision is None:
        runner, autocast_precision = model, train_precision
    else:
        precision = inference_precision(precision, device)
        runner, autocast_precision = InferenceModel(model, precision), "fp32"
    result = evaluate_segmentation(runner, loader, device, autocast_precision, len(classes), cfg.seg, classes)
    if precision is not None:
        result["precision"] = precision
    if env.is_main:
        text = json.dumps(result, indent=2) + "\n"
        write_atomic(out_dir / "eval.json", lambda tmp: Path(tmp).write_text(text))
        write_confusion_plot(result, out_dir / "confusion.png", f"{Path(checkpoint).name} ({cfg.name})")
        log.info("eval %s (n=%d):\n%s\n-> %s, %s", checkpoint, result["n"], table(result), out_dir / "eval.json",
                 out_dir / "confusion.png")  # fmt: skip
    return result


def _run_detection_eval(cfg: Config, env, device: torch.device, precision: str, checkpoint: str,
                        output: str | None) -> dict:  # fmt: skip
    """COCO scores of a detector on the run's validation split, at the run's precision: writes ``eval.json`` (the
    twelve numbers and the per-class AP, box and mask), ``detections.bbox.json`` / ``detections.segm.json`` (COCO's
    result format, what was scored) and prints the table."""
    masks = issubclass(model_info(cfg.model.name).cls, MaskRCNN)
    (val_base,) = build_detection_datasets(cfg.data, cfg.seg, cfg.det, masks, ("val",))
    model = build_model(cfg, num_classes=len(val_base.classes))
    ckpt_dir, path = load_weights(model, checkpoint)
    model.to(device)
    out_dir = Path(output) if output else (ckpt_dir or path.parent)
    if env.is_main and out_dir.is_dir():
        check_output(out_dir / "eval.json", (".json",), "the evaluation")
    loader = detection_loader(val_base, DetectionPipeline(train=False), batch_size=cfg.data.eval_batch_size or 1,
                              train=False, rank=env.rank, world_size=env.world_size, masks=masks)  # fmt: skip
    result = evaluate_detection(model, loader, device, precision, list(val_base.classes), val_base.category_ids)
    detections = result.pop("detections", None)
    if env.is_main:
        for kind, entries in detections.items():
            text = json.dumps(entries) + "\n"
            write_atomic(out_dir / f"detections.{kind}.json", lambda tmp, t=text: Path(tmp).write_text(t))
        text = json.dumps(result, indent=2) + "\n"
        write_atomic(out_dir / "eval.json", lambda tmp: Path(tmp).write_text(text))
        log.info("eval %s (n=%d):\n%s-> %s", checkpoint, result["n"], coco_tables(result), out_dir / "eval.json")
    return result
