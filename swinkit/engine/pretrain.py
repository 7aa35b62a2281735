"""Self-supervised pretraining, top to bottom: set-up, then for each epoch: train, kNN monitor, log, checkpoint.

``pretrain(cfg)`` is what ``swinkit pretrain`` calls. ``ssl.method`` picks the meta-architecture from
``swinkit.ssl`` (MoBY on two augmented views, SimMIM on masked images) around ``model.name`` (a registry model, or
``timm:<name>`` for MoBY). Everything else is the supervised engine's: the config, run directory, per-iteration
learning-rate schedule, optimizer groups, AMP, DDP, atomic ``checkpoints/{last,best}/``, exact resume
(``--resume RUN_DIR``), ``metrics.jsonl`` and ``curves.png``. ``best/`` is the epoch with the best kNN top-1.

The checkpoint's ``model.safetensors`` holds the whole meta-architecture in the official key layout
(``encoder.*``, ``encoder_k.*``, ``projector.*``, ... ``queue1``); ``swinkit train model.pretrained=<that file>``
starts from its online encoder.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn
from tqdm import tqdm

from ..data import build_datasets, build_loader, build_transform, build_two_view_transform
from ..ssl import MoBY, SimMIM, build_moby, build_simmim, encoder_info, momentum_at
from . import checkpoint as ckpt
from .config import Config, ConfigError, save_config
from .distributed import DistEnv, all_reduce_max, barrier, cleanup, init_distributed
from .evaluate import autocast
from .knn import knn_accuracy
from .optim import build_optimizer
from .schedule import lr_at, lr_scale_factor
from .train import (
    NonFiniteLossError,
    Progress,
    _append_jsonl,
    _count_bad,
    _save_last,
    _saved,
    close_epoch,
    epoch_line,
    epoch_record,
    model_overrides,
    optimizer_step,
    resolve_device,
    resolve_precision,
    resolve_run_dir,
    seed_everything,
    skip_nonfinite_step,
)

log = logging.getLogger(__name__)


def build_ssl_model(cfg: Config) -> MoBY | SimMIM:
    """The meta-architecture of ``cfg.ssl.method`` around ``cfg.model.name`` with the config's model overrides."""
    overrides = model_overrides(cfg)
    overrides.pop("num_classes", None)  # encoders have no classifier
    drop_path = overrides.pop("drop_path_rate", None)
    s = cfg.ssl
    if s.method == "moby":
        return build_moby(
            cfg.model.name, drop_path_rate=drop_path, target_drop_path_rate=s.target_drop_path_rate,
            backbone_kwargs=overrides, momentum=s.momentum, temperature=s.temperature, queue_size=s.queue_size,
            proj_dim=s.proj_dim, hidden_dim=s.hidden_dim, proj_layers=s.proj_layers, pred_layers=s.pred_layers,
        )  # fmt: skip
    if drop_path is not None:
        overrides["drop_path_rate"] = drop_path
    return build_simmim(
        cfg.model.name, backbone_kwargs=overrides, mask_ratio=s.mask_ratio, mask_patch_size=s.mask_patch_size,
        norm_target_window=s.norm_target_window,
    )  # fmt: skip


def pretrain(cfg: Config, resume: str | None = None) -> dict:
    """Pretrain (or continue pretraining) a run; returns the final record (the last line of ``metrics.jsonl``).

    Raises:
        ConfigError: settings pretraining does not support, or a queue that is not a multiple of the global batch.
        RunExistsError: the output directory already holds a run and ``resume`` is not given.
        NonFiniteLossError: the loss stayed non-finite (fp32/bf16); ``last/`` keeps the last good state.
    """
    env = init_distributed(cfg.train.device)
    try:
        return _pretrain(cfg, env, resume)
    finally:
        cleanup()


def _pretrain(cfg: Config, env: DistEnv, resume: str | None) -> dict:
    # ---- set-up -------------------------------------------------------------------------------------------------
    unsupported = {
        "optim.accum_steps": cfg.optim.accum_steps != 1, "train.ema": cfg.train.ema, "train.stages": cfg.train.stages,
        "train.freeze": cfg.train.freeze, "train.linear_probe": cfg.train.linear_probe,
    }  # fmt: skip
    if any(unsupported.values()):
        raise ConfigError(f"swinkit pretrain does not support {', '.join(k for k, v in unsupported.items() if v)}")
    device = resolve_device(cfg.train.device, env)
    precision = resolve_precision(cfg.train.precision, device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    run_dir, resume_dir = resolve_run_dir(cfg, resume)
    ckpt_dir = run_dir / "checkpoints"

    train_base, val_base = build_datasets(
        cfg.data.dataset, cfg.data.root, cfg.data.max_train_samples, cfg.data.max_val_samples
    )
    batch = cfg.data.batch_size
    global_batch = batch * env.world_size
    steps_per_epoch = len(train_base) // env.world_size // batch
    total_steps = steps_per_epoch * cfg.sched.epochs
    if steps_per_epoch == 0:
        raise ConfigError(f"{len(train_base)} training images make no full step of {global_batch}; lower batch_size")
    moby = cfg.ssl.method == "moby"
    if moby and cfg.ssl.queue_size % global_batch:
        raise ConfigError(
            f"ssl.queue_size={cfg.ssl.queue_size} is not a multiple of the global batch {global_batch} "
            f"(data.batch_size {batch} x {env.world_size} processes)"
        )
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(_saved(cfg), run_dir / "config.yaml")
    barrier()
    seed_everything(cfg.train.seed + env.rank)
    lr_scale = lr_scale_factor(cfg.optim.lr_base_batch, global_batch, 1)
    progress = Progress()
    trainer_state = ckpt.load_trainer_state(resume_dir) if resume_dir else None
    if trainer_state:
        saved = trainer_state["progress"]
        progress = Progress(**{**saved, "bad": list(saved["bad"])})

    # ---- model, optimizer, data ---------------------------------------------------------------------------------
    seed_everything(cfg.train.seed)  # the same initial weights and queues in every process (DDP syncs no buffers)
    model = build_ssl_model(cfg)
    seed_everything(cfg.train.seed + env.rank)
    if trainer_state:
        ckpt.load_weights(model, resume_dir)
    elif cfg.model.pretrained:
        from ..checkpoints import load_checkpoint

        report = load_checkpoint(model, cfg.model.pretrained, format=cfg.model.pretrained_format)
        log.info("loaded %s", report)
    model.to(device)
    if moby and env.enabled and device.type == "cuda":
        model.convert_sync_batchnorm()  # SyncBatchNorm has no CPU kernels; CPU runs keep per-process statistics
    optimizer = build_optimizer(model, cfg.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if trainer_state:
        optimizer.load_state_dict(trainer_state["optimizer"])
        if trainer_state["scaler"]:
            scaler.load_state_dict(trainer_state["scaler"])
    net = model
    if env.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    info = encoder_info(model.encoder, cfg.model.img_size)
    if moby:
        train_transform = build_two_view_transform(cfg.data, cfg.ssl, info.img_size, info)
    else:
        train_transform = build_transform(cfg.data, info.img_size, True, info)
    loader_args = dict(rank=env.rank, world_size=env.world_size, workers=cfg.data.workers,
                       pin_memory=device.type == "cuda")  # fmt: skip
    train_loader = build_loader(train_base, train_transform, batch_size=batch, train=True, seed=cfg.train.seed,
                                **loader_args)  # fmt: skip
    eval_transform = build_transform(cfg.data, info.img_size, False, info)
    eval_batch = cfg.data.eval_batch_size or batch
    bank_loader = build_loader(train_base, eval_transform, batch_size=eval_batch, train=False, **loader_args)
    val_loader = build_loader(val_base, eval_transform, batch_size=eval_batch, train=False, **loader_args)

    def knn() -> float:
        return knn_accuracy(model.encoder, bank_loader, val_loader, device, precision, cfg.ssl.knn_k,
                            cfg.ssl.knn_temperature)  # fmt: skip

    if env.is_main:
        log.info(
            "run %s | %s %s on %s (%s), %d process(es) | batch %d x %d = %d global | %d train / %d val images | "
            "%d epochs x %d steps | lr %.3g (x%.3g scaling)",
            run_dir, cfg.ssl.method, cfg.model.name, device, precision, env.world_size, batch, env.world_size,
            global_batch, len(train_base), len(val_base), cfg.sched.epochs, steps_per_epoch,
            cfg.optim.lr * lr_scale, lr_scale,
        )  # fmt: skip
    if cfg.ssl.knn_every and progress.step == 0 and progress.batch_in_epoch == 0:
        # The encoder at initialisation: the baseline the kNN curve is read against.
        start = {"epoch": 0, "step": 0, "knn_top1": knn()}
        if env.is_main:
            log.info("epoch 0 (initialisation)  kNN top-1 %.2f", start["knn_top1"])
            _append_jsonl(run_dir / "metrics.jsonl", start)
    if trainer_state:
        if env.is_main:
            ckpt.set_rng_state(trainer_state["rng"])  # restored last, after everything that draws from the RNGs
        else:
            seed_everything(cfg.train.seed + env.rank + 1_000 * progress.step)

    record: dict = {}
    for epoch in range(progress.epoch, cfg.sched.epochs):
        # ---- one epoch of pretraining ---------------------------------------------------------------------------
        progress.epoch = epoch
        train_loader.sampler.set_epoch(epoch, start=progress.batch_in_epoch * batch)
        net.train()
        t0, seen, lr = time.perf_counter(), 0, 0.0
        bar = tqdm(
            train_loader, total=steps_per_epoch - progress.batch_in_epoch, disable=not env.is_main,
            desc=f"epoch {epoch + 1}/{cfg.sched.epochs}", dynamic_ncols=True, leave=False,
        )  # fmt: skip
        for images, _, bad in bar:
            if progress.batch_in_epoch >= steps_per_epoch:
                break
            lr = lr_at(progress.step, steps_per_epoch, cfg.sched, cfg.optim.lr, lr_scale)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            progress.batch_in_epoch += 1
            if bad:
                _count_bad(progress, bad, len(train_base), cfg.data.max_bad_fraction)
            # A batch short of unreadable images on any process would unbalance MoBY's gathered keys: skip it.
            short = all_reduce_max(torch.tensor(float(len(images) != batch), device=device)).item() > 0
            if short:
                log.warning("step %d skipped: a process's batch lost unreadable images", progress.step)
                continue
            images = images.to(device, non_blocking=True)
            with autocast(device, precision):
                if moby:
                    loss = net(images[:, 0], images[:, 1], momentum=momentum_at(progress.step, total_steps,
                                                                                cfg.ssl.momentum))  # fmt: skip
                else:
                    loss = net(images)
            scaler.scale(loss).backward()
            seen += len(images)

            # ---- optimizer step ---------------------------------------------------------------------------------
            finite = all_reduce_max(torch.tensor(0.0 if torch.isfinite(loss) else 1.0, device=device)).item() == 0
            if not finite and precision != "fp16":
                if skip_nonfinite_step(progress, optimizer, epoch) >= cfg.train.max_nonfinite:
                    raise NonFiniteLossError(
                        f"pretraining stopped: the loss was NaN/inf for {progress.nonfinite} consecutive steps "
                        f"(epoch {epoch + 1}, step {progress.step}, lr {lr:.3g}). The last good checkpoint is "
                        f"{ckpt_dir / 'last'}. Lower optim.lr or keep optim.clip_grad on."
                    )
                continue
            progress.nonfinite = 0
            optimizer_step(model, optimizer, scaler, cfg.optim.clip_grad)
            progress.step += 1
            progress.loss_sum += loss.item()
            progress.loss_count += 1
            if env.is_main and progress.step % cfg.train.log_every == 0:
                rate = seen * env.world_size / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{progress.loss_sum / progress.loss_count:.4f}", lr=f"{lr:.2e}",
                                img_s=f"{rate:.0f}")  # fmt: skip
            stop = cfg.train.stop_after_steps is not None and progress.step >= cfg.train.stop_after_steps
            if stop or (cfg.train.save_every_steps and progress.step % cfg.train.save_every_steps == 0):
                _save_last(cfg, env, ckpt_dir, model, None, optimizer, scaler, progress)
            if stop:
                bar.close()
                log.info("stopped after step %d as train.stop_after_steps asks; resume with --resume %s",
                         progress.step, run_dir)  # fmt: skip
                return {"epoch": epoch, "step": progress.step, "stopped": True, "run_dir": str(run_dir)}
        bar.close()
        elapsed = time.perf_counter() - t0

        # ---- end of epoch: kNN monitor, log, checkpoint -------------------------------------------------------------
        record = epoch_record(progress, epoch, lr, seen * env.world_size / max(elapsed, 1e-9), device)
        if moby:
            record["momentum"] = momentum_at(progress.step, total_steps, cfg.ssl.momentum)
        last_epoch = epoch + 1 == cfg.sched.epochs
        if cfg.ssl.knn_every and ((epoch + 1) % cfg.ssl.knn_every == 0 or last_epoch):
            record["knn_top1"] = knn()
        improved = close_epoch(progress, record, "knn_top1", epoch)
        if env.is_main:
            line = epoch_line(record, cfg.sched.epochs, global_batch)
            if "knn_top1" in record:
                line += f"  kNN top-1 {record['knn_top1']:.2f}"
            log.info(line)
            _append_jsonl(run_dir / "metrics.jsonl", record)
        _save_last(cfg, env, ckpt_dir, model, None, optimizer, scaler, progress)
        if improved and env.is_main:
            ckpt.copy_checkpoint(ckpt_dir / "last", ckpt_dir / "best")
        barrier()

    # ---- the end ----------------------------------------------------------------------------------------------------
    if env.is_main:
        from .plot import plot_metrics

        if (run_dir / "metrics.jsonl").is_file():
            plot_metrics(run_dir)
        log.info("done: %s; the online encoder for `swinkit train model.pretrained=...` is in %s",
                 f"best kNN top-1 {progress.best_top1:.2f}% at epoch {progress.best_epoch}" if progress.best_epoch > 0
                 else "no kNN evaluation", ckpt_dir / "last" / ckpt.MODEL_FILE)  # fmt: skip
    return {**record, "best_top1": progress.best_top1, "best_epoch": progress.best_epoch, "run_dir": str(run_dir)}
