"""Supervised training, top to bottom: set-up, then for each stage and epoch: train, evaluate, log, checkpoint.

``train(cfg)`` is what ``swinkit train`` calls. Under ``torchrun`` it runs DDP (NCCL on GPUs, gloo on CPU); the
batch size in the config is per process and the learning rate is scaled by the global batch. Only rank 0 prints
and writes. A run directory (``train.output``, by default the first free ``runs/<config name>[-N]``) receives
``config.yaml``, ``metrics.jsonl``, ``curves.png`` and ``checkpoints/{last,best}/``; ``resume=RUN_DIR`` continues
from ``last/`` at the exact step it was written, also in the middle of an epoch.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import models
from ..data import build_datasets, build_loader, build_transform
from . import checkpoint as ckpt
from .config import Config, save_config, to_dict
from .distributed import DistEnv, all_reduce_max, all_reduce_sum, barrier, cleanup, init_distributed
from .ema import ModelEMA
from .evaluate import autocast, evaluate
from .optim import build_optimizer, freeze_backbone, freeze_modules
from .schedule import lr_at, lr_scale_factor

log = logging.getLogger(__name__)

# ModelConfig fields passed to create_model when set.
MODEL_OVERRIDES = (
    "num_classes", "img_size", "window_size", "pretrained_window_sizes", "drop_path_rate", "drop_rate",
    "patch_size", "in_chans", "embed_dim", "depths", "num_heads", "mlp_ratio", "split_size",
)  # fmt: skip


class NonFiniteLossError(RuntimeError):
    """The loss was NaN or infinite for ``train.max_nonfinite`` consecutive steps (fp32/bf16)."""


class RunExistsError(FileExistsError):
    """The output directory already holds a run and ``--resume`` was not given."""


class TooManyBadImagesError(RuntimeError):
    """More than ``data.max_bad_fraction`` of the training images could not be read."""


# --- building blocks ---------------------------------------------------------------------------------------------
def resolve_device(name: str, env: DistEnv | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", env.local_rank if env else 0)
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' is bf16 on CUDA and fp32 on CPU; fp16 on CPU runs as bf16 (CPU kernels for fp16 are slow or absent)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        log.warning("train.precision=fp16 is for GPUs; running bf16 autocast on %s instead", device.type)
        return "bf16"
    return precision


def model_overrides(cfg: Config) -> dict:
    """The constructor arguments the config sets (lists as tuples)."""
    overrides = {}
    for key in MODEL_OVERRIDES:
        value = getattr(cfg.model, key)
        if value is not None:
            overrides[key] = tuple(value) if isinstance(value, list) else value
    return overrides


def build_model(cfg: Config, num_classes: int | None = None, img_size=None, window_size=None) -> nn.Module:
    """``create_model`` with the config's overrides; ``num_classes`` applies when the config leaves it unset."""
    overrides = model_overrides(cfg)
    if num_classes is not None and cfg.model.num_classes is None:
        overrides["num_classes"] = num_classes
    if img_size is not None:
        overrides["img_size"] = img_size
    if window_size is not None:
        overrides["window_size"] = window_size
    return models.create_model(cfg.model.name, **overrides)


def _side(img_size) -> int:
    return img_size if isinstance(img_size, int) else int(img_size[0])


def load_pretrained(model: nn.Module, cfg: Config) -> None:
    from ..checkpoints import load_checkpoint

    report = load_checkpoint(
        model,
        cfg.model.pretrained,
        format=cfg.model.pretrained_format,
        label_map=cfg.model.label_map,
        head=cfg.model.head,
    )
    log.info("loaded pretrained weights from %s: %s", cfg.model.pretrained, report)


def carry_weights(new: nn.Module, old: nn.Module) -> None:
    """Move weights to a model rebuilt for the next progressive stage (window tables are transferred if needed)."""
    try:
        new.load_state_dict(old.state_dict(), strict=True)
    except RuntimeError:
        from ..checkpoints import load_checkpoint

        load_checkpoint(new, old.state_dict())


def carry_optimizer(new: torch.optim.Optimizer, old: torch.optim.Optimizer) -> None:
    """Carry AdamW moments to the next stage's optimizer when every parameter kept its shape (V2 does)."""
    shapes = [[p.shape for p in g["params"]] for g in new.param_groups]
    if shapes == [[p.shape for p in g["params"]] for g in old.param_groups]:
        new.load_state_dict(old.state_dict())
    else:
        log.warning("parameter shapes changed with the stage; the optimizer state starts afresh")


def build_criterion(cfg: Config, mixup_on: bool) -> nn.Module:
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_on:
        return SoftTargetCrossEntropy()  # label smoothing is folded into the mixed targets
    if cfg.data.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(cfg.data.label_smoothing)
    return nn.CrossEntropyLoss()


def build_mixup(cfg: Config, num_classes: int):
    from timm.data import Mixup

    d = cfg.data
    if d.mixup <= 0 and d.cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=d.mixup,
        cutmix_alpha=d.cutmix,
        prob=d.mixup_prob,
        switch_prob=d.switch_prob,
        mode=d.mixup_mode,
        label_smoothing=d.label_smoothing,
        num_classes=num_classes,
    )


@dataclass
class Stage:
    start: int
    end: int
    img_size: int | None
    window_size: int | None


def stage_plan(cfg: Config) -> list[Stage]:
    if not cfg.train.stages:
        return [Stage(0, cfg.sched.epochs, None, None)]
    plan, start = [], 0
    for s in cfg.train.stages:
        plan.append(Stage(start, start + s.epochs, s.img_size, s.window_size))
        start += s.epochs
    return plan


@dataclass
class Progress:
    """Where the run is; saved in ``trainer_state.pt`` so a resumed run continues at the same sample."""

    epoch: int = 0
    step: int = 0  # optimizer steps done
    batch_in_epoch: int = 0  # micro-batches of the current epoch done (by this process)
    best_top1: float = -1.0
    best_epoch: int = -1
    loss_sum: float = 0.0
    loss_count: int = 0
    images: int = 0
    bad: list[str] = field(default_factory=list)
    nonfinite: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def epoch_record(progress, epoch: int, lr: float, img_per_s: float, device: torch.device) -> dict:
    """The first fields of an epoch's ``metrics.jsonl`` line, with the loss and unreadable images summed over
    processes."""
    sums = all_reduce_sum(torch.tensor([progress.loss_sum, progress.loss_count, len(progress.bad)],
                                       dtype=torch.float64, device=device))  # fmt: skip
    return {
        "epoch": epoch + 1,
        "step": progress.step,
        "train_loss": (sums[0] / sums[1].clamp(min=1)).item(),
        "lr": lr,
        "img_per_s": img_per_s,
        "bad_images": int(sums[2].item()),
    }


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler, clip_grad: float | None) -> None:
    """Clip the global gradient norm (when asked), step through the loss scaler, and clear the gradients."""
    if clip_grad:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def skip_nonfinite_step(progress, optimizer: torch.optim.Optimizer, epoch: int) -> int:
    """Drop a step whose loss was NaN/inf; returns how many steps in a row have been dropped."""
    optimizer.zero_grad(set_to_none=True)
    progress.nonfinite += 1
    log.warning("non-finite loss at step %d (epoch %d); step skipped", progress.step, epoch + 1)
    return progress.nonfinite


def close_epoch(progress, record: dict, metric: str, epoch: int) -> bool:
    """Track the best ``record[metric]`` (when the epoch measured it) and reset the per-epoch counters; True if it
    improved."""
    improved = metric in record and record[metric] > progress.best_top1
    if improved:
        progress.best_top1, progress.best_epoch = record[metric], epoch + 1
    progress.epoch, progress.batch_in_epoch = epoch + 1, 0
    progress.loss_sum, progress.loss_count, progress.bad = 0.0, 0, []
    return improved


def epoch_line(record: dict, epochs: int, global_batch: int) -> str:
    """The start of an epoch's log line: epoch, step, loss, learning rate and throughput."""
    return (f"epoch {record['epoch']}/{epochs}  step {record['step']}  loss {record['train_loss']:.4f}"
            f"  lr {record['lr']:.3g}  {record['img_per_s']:.0f} img/s (global batch {global_batch})")  # fmt: skip


# --- the run -----------------------------------------------------------------------------------------------------
def default_run_dir(name: str) -> Path:
    """``runs/<name>``, or ``runs/<name>-2``, ``-3``, ... when earlier runs hold it, so a repeated command never
    overwrites or refuses; an explicit ``train.output`` that holds a run is refused instead."""
    base = Path("runs") / name
    candidates = itertools.chain([base], (base.with_name(f"{name}-{i}") for i in itertools.count(2)))
    return next(p for p in candidates if ckpt.find_checkpoint(p / "checkpoints" / "last") is None)


def resolve_run_dir(cfg: Config, resume: str | None) -> tuple[Path, Path | None]:
    """The run directory and, when resuming, the checkpoint to resume from.

    Raises:
        FileNotFoundError: ``resume`` holds no checkpoint.
        RunExistsError: the output directory already holds a run and ``resume`` is not given.
    """
    run_dir = Path(resume or cfg.train.output or default_run_dir(cfg.name))
    last = run_dir / "checkpoints" / "last"
    if resume:
        resume_dir = ckpt.find_checkpoint(last)
        if resume_dir is None:
            raise FileNotFoundError(f"--resume {run_dir}: no checkpoint in {last}")
        return run_dir, resume_dir
    if ckpt.find_checkpoint(last) is not None:
        raise RunExistsError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir}, or choose another --output"
        )
    return run_dir, None


def train(cfg: Config, resume: str | None = None) -> dict:
    """Train (or continue) a run; returns the final record (the last line of ``metrics.jsonl``).

    Raises:
        RunExistsError: the output directory already holds a run and ``resume`` is not given.
        NonFiniteLossError: the loss stayed non-finite (fp32/bf16); ``last/`` keeps the last good state.
        TooManyBadImagesError: more than ``data.max_bad_fraction`` of the training images are unreadable.
    """
    env = init_distributed(cfg.train.device)
    try:
        return _train(cfg, env, resume)
    finally:
        cleanup()


def _train(cfg: Config, env: DistEnv, resume: str | None) -> dict:
    # ---- set-up -------------------------------------------------------------------------------------------------
    if cfg.train.stages:
        cfg = replace(cfg, sched=replace(cfg.sched, epochs=sum(s.epochs for s in cfg.train.stages)))
    device = resolve_device(cfg.train.device, env)
    precision = resolve_precision(cfg.train.precision, device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    run_dir, resume_dir = resolve_run_dir(cfg, resume)
    ckpt_dir = run_dir / "checkpoints"
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(_saved(cfg), run_dir / "config.yaml")
    barrier()
    seed_everything(cfg.train.seed + env.rank)

    train_base, val_base = build_datasets(
        cfg.data.dataset, cfg.data.root, cfg.data.max_train_samples, cfg.data.max_val_samples
    )
    num_classes = cfg.model.num_classes or len(train_base.classes)
    if num_classes < len(train_base.classes):
        raise ValueError(f"model.num_classes={num_classes} but the training set has {len(train_base.classes)} classes")
    batch, accum = cfg.data.batch_size, cfg.optim.accum_steps
    global_batch = batch * env.world_size
    lr_scale = lr_scale_factor(cfg.optim.lr_base_batch, global_batch, accum)
    steps_per_epoch = (len(train_base) // env.world_size // batch) // accum
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(train_base)} training images make no full step of {global_batch * accum} (batch x processes x "
            "accum_steps); lower data.batch_size"
        )
    mixup_fn = build_mixup(cfg, num_classes)
    progress = Progress()
    trainer_state = ckpt.load_trainer_state(resume_dir) if resume_dir else None
    if trainer_state:
        saved = trainer_state["progress"]
        progress = Progress(**{**saved, "bad": list(saved["bad"])})
        if trainer_state["world_size"] != env.world_size:
            log.warning("resuming a %d-process run with %d processes", trainer_state["world_size"], env.world_size)
    if env.is_main:
        log.info(
            "run %s | %s on %s (%s), %d process(es) | batch %d x %d = %d global%s | %d train / %d val images | "
            "%d epochs x %d steps | lr %.3g (x%.3g scaling)",
            run_dir, cfg.model.name, device, precision, env.world_size, batch, env.world_size, global_batch,
            f" x {accum} accum" if accum > 1 else "", len(train_base), len(val_base), cfg.sched.epochs,
            steps_per_epoch, cfg.optim.lr * lr_scale, lr_scale,
        )  # fmt: skip
    tb = None
    if cfg.train.tensorboard and env.is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            log.warning("train.tensorboard=true but tensorboard is not installed; logging to metrics.jsonl only")

    record: dict = {}
    model = prev_model = prev_optimizer = prev_ema = None
    plan = stage_plan(cfg)
    for stage_index, stage in enumerate(plan):
        if progress.epoch >= stage.end:
            continue
        if len(plan) > 1 and env.is_main:
            log.info("stage %d/%d: epochs %d-%d at %s px, window %s", stage_index + 1, len(plan), stage.start + 1,
                     stage.end, stage.img_size, stage.window_size or "default")  # fmt: skip
        # ---- model, EMA, optimizer for this stage -------------------------------------------------------------
        model = build_model(cfg, num_classes, stage.img_size, stage.window_size)
        if prev_model is not None:
            carry_weights(model, prev_model)
        elif trainer_state:
            ckpt.load_weights(model, resume_dir)
        elif cfg.model.pretrained:
            load_pretrained(model, cfg)
        if cfg.train.freeze:
            frozen = freeze_modules(model, cfg.train.freeze)
            log.info("froze %d parameter tensors under %s", len(frozen), ", ".join(cfg.train.freeze))
        if cfg.train.linear_probe:
            frozen = freeze_backbone(model)
            log.info("linear probe: froze %d backbone tensors; training head.fc only", len(frozen))
        if cfg.model.grad_checkpointing:
            model.set_grad_checkpointing(True)
        model.to(device)
        if cfg.train.channels_last:
            model.to(memory_format=torch.channels_last)
        ema = ModelEMA(model, cfg.train.ema_decay, cfg.train.ema_warmup) if cfg.train.ema else None
        optimizer = build_optimizer(model, cfg.optim)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        if trainer_state and prev_model is None:
            optimizer.load_state_dict(trainer_state["optimizer"])
            if trainer_state["scaler"]:
                scaler.load_state_dict(trainer_state["scaler"])
            if ema is not None and (resume_dir / ckpt.EMA_FILE).is_file():
                ckpt.load_weights(ema.module, resume_dir, ema=True)
                ema.updates = trainer_state["ema_updates"]
        elif prev_optimizer is not None:
            carry_optimizer(optimizer, prev_optimizer)
            if ema is not None and prev_ema is not None:
                carry_weights(ema.module, prev_ema.module)
                ema.updates = prev_ema.updates
        net = model
        if env.enabled:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
            )
        img_size = _side(model.model_info.img_size)
        info = model.model_info
        train_loader = build_loader(
            train_base, build_transform(cfg.data, img_size, True, info), batch_size=batch, train=True,
            rank=env.rank, world_size=env.world_size, seed=cfg.train.seed, workers=cfg.data.workers,
            pin_memory=device.type == "cuda",
        )  # fmt: skip
        val_loader = build_loader(
            val_base, build_transform(cfg.data, img_size, False, info), train=False,
            batch_size=cfg.data.eval_batch_size or batch, rank=env.rank, world_size=env.world_size,
            workers=cfg.data.workers, pin_memory=device.type == "cuda",
        )  # fmt: skip
        if trainer_state and prev_model is None:
            # Restore the RNGs last, after everything that draws from them while building.
            if env.is_main:
                ckpt.set_rng_state(trainer_state["rng"])
            else:
                seed_everything(cfg.train.seed + env.rank + 1_000 * progress.step)

        for epoch in range(max(stage.start, progress.epoch), stage.end):
            # ---- one epoch of training ------------------------------------------------------------------------
            progress.epoch = epoch
            mixup_on = mixup_fn is not None and not (0 < cfg.data.mixup_off_epoch <= epoch)
            criterion = build_criterion(cfg, mixup_on)
            sampler = train_loader.sampler
            sampler.set_epoch(epoch, start=progress.batch_in_epoch * batch)
            micro_per_epoch = steps_per_epoch * accum
            net.train()
            if cfg.train.linear_probe and not cfg.train.linear_probe_drop_path:
                for name, child in model.named_children():
                    if name != "head":
                        child.eval()  # the frozen backbone: no drop path
            t0, seen = time.perf_counter(), 0
            bar = tqdm(
                train_loader, total=micro_per_epoch - progress.batch_in_epoch, disable=not env.is_main,
                desc=f"epoch {epoch + 1}/{cfg.sched.epochs}", dynamic_ncols=True, leave=False,
            )  # fmt: skip
            window_loss = torch.zeros((), dtype=torch.float64)
            window_finite = True
            lr = 0.0
            for images, targets, bad in bar:
                if progress.batch_in_epoch >= micro_per_epoch:
                    break  # a remainder that does not fill an accumulation window
                micro = progress.batch_in_epoch % accum
                if micro == 0:
                    lr = lr_at(progress.step, steps_per_epoch, cfg.sched, cfg.optim.lr, lr_scale)
                    for group in optimizer.param_groups:
                        group["lr"] = lr * group["lr_scale"]
                progress.batch_in_epoch += 1
                if bad:
                    _count_bad(progress, bad, len(train_base), cfg.data.max_bad_fraction)
                if mixup_on and len(targets) % 2:
                    images, targets = images[:-1], targets[:-1]  # mixup pairs samples up
                last_micro = micro == accum - 1
                sync = contextlib.nullcontext() if (last_micro or not env.enabled) else net.no_sync()
                if len(targets) > 0:
                    images = images.to(device, non_blocking=True)
                    targets = targets.to(device, non_blocking=True)
                    if mixup_on:
                        images, targets = mixup_fn(images, targets)
                    if cfg.train.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    with sync:
                        with autocast(device, precision):
                            logits = net(images)
                        loss = criterion(logits.float(), targets)  # outside autocast, as the official recipe
                        scaler.scale(loss / accum).backward()
                    window_finite &= bool(torch.isfinite(loss))
                    window_loss += loss.detach().double().cpu()
                    seen += len(images)
                if not last_micro:
                    continue

                # ---- optimizer step (every accum micro-batches) -------------------------------------------------
                finite = all_reduce_max(torch.tensor(0.0 if window_finite else 1.0, device=device)).item() == 0
                window_finite = True
                if not finite and precision != "fp16":
                    window_loss.zero_()
                    if skip_nonfinite_step(progress, optimizer, epoch) >= cfg.train.max_nonfinite:
                        raise NonFiniteLossError(
                            f"training stopped: the loss was NaN/inf for {progress.nonfinite} consecutive steps "
                            f"(epoch {epoch + 1}, step {progress.step}, lr {lr:.3g}, precision {precision}). "
                            f"The last good checkpoint is {ckpt_dir / 'last'}. Lower optim.lr, keep optim.clip_grad "
                            "on, or check the data."
                        )
                    continue
                progress.nonfinite = 0
                optimizer_step(model, optimizer, scaler, cfg.optim.clip_grad)
                if ema is not None:
                    ema.update(model)
                progress.step += 1
                progress.loss_sum += window_loss.item() / accum
                progress.loss_count += 1
                window_loss.zero_()
                if env.is_main and progress.step % cfg.train.log_every == 0:
                    rate = seen * env.world_size / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(loss=f"{progress.loss_sum / progress.loss_count:.4f}", lr=f"{lr:.2e}",
                                    img_s=f"{rate:.0f}")  # fmt: skip
                    if tb is not None:
                        tb.add_scalar("train/loss", progress.loss_sum / progress.loss_count, progress.step)
                        tb.add_scalar("train/lr", lr, progress.step)
                stop = cfg.train.stop_after_steps is not None and progress.step >= cfg.train.stop_after_steps
                if stop or (cfg.train.save_every_steps and progress.step % cfg.train.save_every_steps == 0):
                    _save_last(cfg, env, ckpt_dir, model, ema, optimizer, scaler, progress, train_base.classes)
                if stop:
                    bar.close()
                    log.info("stopped after step %d as train.stop_after_steps asks; resume with --resume %s",
                             progress.step, run_dir)  # fmt: skip
                    return {"epoch": epoch, "step": progress.step, "stopped": True}
            bar.close()
            elapsed = time.perf_counter() - t0

            # ---- end of epoch: evaluate, log, checkpoint ----------------------------------------------------------
            record = epoch_record(progress, epoch, lr, seen * env.world_size / max(elapsed, 1e-9), device)
            last_epoch = epoch + 1 == cfg.sched.epochs
            if (epoch + 1) % cfg.train.eval_every == 0 or last_epoch:
                val = evaluate(model, val_loader, device, precision)
                record.update({"val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"]})
                if ema is not None:
                    val_ema = evaluate(ema.module, val_loader, device, precision)
                    record.update({f"ema_val_{k}": val_ema[k] for k in ("top1", "top5", "loss")})
            improved = close_epoch(progress, record, "val_top1", epoch)
            if env.is_main:
                line = epoch_line(record, cfg.sched.epochs, global_batch)
                if "val_top1" in record:
                    line += f"  val top-1 {record['val_top1']:.2f} top-5 {record['val_top5']:.2f}"
                if "ema_val_top1" in record:
                    line += f"  EMA top-1 {record['ema_val_top1']:.2f}"
                if record["bad_images"]:
                    line += f"  skipped {record['bad_images']} unreadable image(s)"
                log.info(line)
                _append_jsonl(run_dir / "metrics.jsonl", record)
                if tb is not None:
                    for k, v in record.items():
                        tb.add_scalar(f"epoch/{k}", v, epoch + 1)
            _save_last(cfg, env, ckpt_dir, model, ema, optimizer, scaler, progress, train_base.classes)
            if improved and env.is_main:
                ckpt.copy_checkpoint(ckpt_dir / "last", ckpt_dir / "best")
            barrier()
        prev_model, prev_optimizer, prev_ema = model, optimizer, ema

    # ---- the end ----------------------------------------------------------------------------------------------
    if env.is_main:
        from .plot import plot_metrics

        if (run_dir / "metrics.jsonl").is_file():
            plot_metrics(run_dir)
        if "val_top1" in record:
            log.info(
                "done: best val top-1 %.2f%% at epoch %d -> %s | final epoch: val top-1 %.2f%% -> %s",
                progress.best_top1, progress.best_epoch, ckpt_dir / "best", record["val_top1"], ckpt_dir / "last",
            )  # fmt: skip
        if tb is not None:
            tb.close()
    return {**record, "best_top1": progress.best_top1, "best_epoch": progress.best_epoch, "run_dir": str(run_dir)}


def _count_bad(progress: Progress, bad: list[str], total: int, max_fraction: float) -> None:
    for msg in bad:
        log.warning("skipping unreadable image %s", msg)
    progress.bad.extend(bad)
    if len(progress.bad) > max_fraction * total:
        raise TooManyBadImagesError(
            f"{len(progress.bad)} of {total} training images are unreadable (more than {max_fraction:.0%}); "
            f"first: {'; '.join(progress.bad[:5])}"
        )


def _saved(cfg: Config) -> Config:
    """The config as stored with the run: ``stop_after_steps`` controls one invocation, so a resume drops it."""
    return replace(cfg, train=replace(cfg.train, stop_after_steps=None))


def _save_last(cfg, env, ckpt_dir, model, ema, optimizer, scaler, progress: Progress, classes=None) -> None:
    if env.is_main:
        cfg = _saved(cfg)
        state = {
            "progress": asdict(progress),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "ema_updates": ema.updates if ema is not None else 0,
            "rng": ckpt.rng_state(),
            "world_size": env.world_size,
            "config": to_dict(cfg),
        }
        ckpt.save_training_checkpoint(ckpt_dir / "last", cfg, model, ema.module if ema else None, state, classes)
    barrier()
