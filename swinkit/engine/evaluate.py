"""Top-1/top-5 evaluation over the whole validation set, exact for any number of processes, and ``swinkit eval``.

Each process evaluates its own round-robin share of the validation set (no padding, no duplicates); correct
counts and the number of samples are summed over processes, so the result equals the single-process one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import load_checkpoint
from ..core import device as devices
from ..core.distributed import all_reduce_sum
from ..core.errors import CheckpointError
from ..data import build_loader, build_transform, build_val_dataset
from ..hub import local_file
from . import checkpoint as ckpt
from .config import Config
from .parallel import forwards_to_run, pad_forwards
from .setup import autocast, build_model, session

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, precision: str = "fp32") -> dict:
    """Returns ``{"top1", "top5", "loss", "n"}`` over every sample of ``loader``'s dataset, summed over processes.

    top-1/top-5 are percentages; loss is the mean cross-entropy; unreadable images are left out of ``n``.
    """
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.int64)  # correct top-1, correct top-5, samples
    loss_sum = torch.zeros(1, dtype=torch.float64)
    total, forwards, example = forwards_to_run(model, len(loader), device), 0, None
    for images, targets, _ in loader:
        if len(targets) == 0:
            continue
        forwards += 1
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        example = images
        with autocast(device, precision):
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").double().cpu()
        topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = topk == targets[:, None]
        counts += torch.tensor([hits[:, 0].sum().item(), hits.any(dim=1).sum().item(), len(targets)])
    pad_forwards(model, total - forwards, example)
    if devices.distributed_backend(device) != "gloo":  # NCCL, XCCL, HCCL reduce device tensors
        counts, loss_sum = counts.to(device), loss_sum.to(device)
    all_reduce_sum(counts)
    all_reduce_sum(loss_sum)
    model.train(was_training)
    c1, c5, n = counts.tolist()
    n_safe = max(n, 1)
    return {"top1": 100.0 * c1 / n_safe, "top5": 100.0 * c5 / n_safe, "loss": loss_sum.item() / n_safe, "n": n}


def run_eval(cfg: Config, checkpoint: str, output: str | None = None) -> dict:
    """Evaluate a checkpoint on the validation set of ``cfg``; write ``eval.json`` and return the metrics.

    Args:
        checkpoint: a swinkit checkpoint directory (``RUN_DIR/checkpoints/best``; its EMA weights are evaluated
            too when present) or a weights file in any layout ``swinkit.checkpoints.load_checkpoint`` reads; local,
            or a URL (``s3://...``: copied into the weights cache first).
        output: directory for ``eval.json``; the checkpoint directory (or the file's directory) by default, which
            for a remote checkpoint is its copy in the cache (the log names it).
    """
    with session(cfg) as s:
        return _run_eval(cfg, s.env, s.device, s.precision, checkpoint, output)


def _run_eval(cfg: Config, env, device: torch.device, precision: str, checkpoint: str, output: str | None) -> dict:
    val_base = build_val_dataset(cfg.data)
    model = build_model(cfg, num_classes=len(val_base.classes))
    path = local_file(checkpoint, exclude=(ckpt.STATE_FILE,))  # on s3:// (...): copied into the cache
    ckpt_dir = None if path.is_file() else ckpt.find_checkpoint(path)  # last/, or the .last.old of a cut swap
    if ckpt_dir is not None:
        ckpt.load_weights(model, ckpt_dir)
    elif path.is_file():
        load_checkpoint(model, str(path), label_map=cfg.model.label_map)
    else:
        raise CheckpointError(f"{path}: not a swinkit checkpoint directory (no {ckpt.MODEL_FILE}) nor a file")
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
    result = evaluate(model, loader, device, precision)
    if ckpt_dir is not None and ckpt.has_ema(ckpt_dir):
        ckpt.load_weights(model, ckpt_dir, ema=True)
        ema = evaluate(model, loader, device, precision)
        result.update({f"ema_{k}": v for k, v in ema.items() if k != "n"})
    if env.is_main:
        out_dir = Path(output) if output else (ckpt_dir or path.parent)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        line = f"eval {checkpoint}: top-1 {result['top1']:.2f}  top-5 {result['top5']:.2f}  loss {result['loss']:.4f}"
        if "ema_top1" in result:
            line += f"  |  EMA top-1 {result['ema_top1']:.2f}  top-5 {result['ema_top5']:.2f}"
        log.info("%s  (n=%d) -> %s", line, result["n"], out_dir / "eval.json")
    return result
