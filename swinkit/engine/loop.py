"""The training loop of every swinkit run, top to bottom: set-up, then for each stage and epoch: micro-steps, one
optimizer step, schedule, EMA, logging, periodic save, epoch close, evaluation.

What differs between supervised training, linear probing, MoBY and SimMIM is an ``Objective`` (the model, its loss
on a batch and what to measure at the end of an epoch), which a ``Recipe`` builds for each stage: ``train.py`` and
``pretrain.py`` are such recipes. Progressive-resolution stages are the outer loop: each stage rebuilds the
objective at its image size and carries the weights, optimizer moments and EMA over.

Under ``torchrun`` the model runs in DDP, or sharded with FSDP2 (``train.parallel=fsdp``, see ``parallel.py``; then
every process writes its shards of each checkpoint); the batch size in the config is per process and the learning
rate is scaled by the global batch. Only rank 0 prints and writes the rest. ``resume=RUN_DIR`` continues from
``checkpoints/last`` at the exact step it was written, also in the middle of an epoch (a sharded run at any number
of processes); ``config.yaml`` is written only once the weights and trainer state have loaded, so a resume that
fails leaves the run directory as it was.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..core import device as devices
from ..core.distributed import all_reduce_min, all_reduce_sum, barrier, broadcast_object
from ..core.errors import ConfigError, NonFiniteLossError, RunFinishedError, TooManyBadImagesError
from ..core.signals import StopSignals
from ..data import Loader
from . import checkpoint as ckpt
from . import parallel
from . import run_dir as runs
from .config import Config, check_schedule, resolve_iterations, save_config, to_dict
from .ema import ModelEMA
from .optim import build_optimizer, freeze_modules
from .schedule import lr_at, lr_scale_factor
from .setup import Session, apply_activation_memory, load_pretrained, seed_everything, session

log = logging.getLogger(__name__)


class Objective(Protocol):
    """What a stage trains, as the loop sees it (dinov2's meta-architecture split).

    ``model`` is optimised and saved as ``model.safetensors``; ``loss`` runs one micro-batch through ``net`` (the
    model, or its DDP wrapper) and returns a scalar; ``epoch_metrics`` adds the fields of an epoch's record
    (evaluation when it is due: validation top-1, the kNN monitor, ...); ``metric`` names the field that chooses
    ``best/``; ``write_reports`` writes what the record cannot hold (segmentation: the per-class table and the
    confusion matrix) into the run directory, on the main process.
    """

    model: nn.Module
    train_loader: Loader
    metric: str
    classes: list[str] | None
    full_batches: bool  # every process's batch must be complete (MoBY gathers equal key batches into its queues)

    def train_epoch(self, epoch: int) -> None: ...
    def loss(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor: ...
    def initial_metrics(self) -> dict: ...
    def epoch_metrics(self, epoch: int, step: int, last_epoch: bool, ema: nn.Module | None) -> dict: ...
    def summary(self, record: dict) -> str: ...
    def write_reports(self, run_dir: Path, record: dict) -> None: ...


class Recipe(Protocol):
    """Builds a run: its datasets once, then an objective for each stage."""

    command: str  # the swinkit command that runs it ("train", "pretrain"), named in how to resume
    counts_iterations: bool  # its epochs may be train.iterations_per_epoch steps (it repeats its training set)
    kind: str  # named in the run's first log line, e.g. "swinv2_tiny_window8_256" or "moby swin_tiny_..."
    train_size: int  # training images

    def check(self, cfg: Config, session: Session) -> None: ...
    def build(self, stage: Stage, session: Session) -> Objective: ...


@dataclass
class Stage:
    start: int
    end: int
    img_size: int | None
    window_size: int | None


def steps_per_epoch(cfg: Config, train_size: int, world_size: int) -> int:
    """Optimizer steps in an epoch: ``train.iterations_per_epoch`` (an iteration schedule, whose recipe repeats the
    training set to that many), or each process's full batches, grouped by ``optim.accum_steps``."""
    if cfg.train.iterations_per_epoch:
        return cfg.train.iterations_per_epoch
    return (train_size // world_size // cfg.data.batch_size) // cfg.optim.accum_steps


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
    best_top1: float = -1.0  # the best value of the objective's metric so far
    best_epoch: int = -1
    loss_sum: float = 0.0
    loss_count: int = 0
    images: int = 0
    bad: list[str] = field(default_factory=list)
    nonfinite: int = 0


@dataclass
class Trainer:
    """The optimisation state of a stage: what is saved beside the weights and carried into the next stage."""

    objective: Objective
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None


def fit(cfg: Config, resume: str | None, recipe: Recipe) -> dict:
    """Train (or continue) a run; returns the final record (the last line of ``metrics.jsonl``) with ``best_top1``,
    ``best_epoch`` and ``run_dir``, or ``{"epoch", "step", "stopped": True, "run_dir"}`` after
    ``train.stop_after_steps``.

    Raises:
        RunExistsError: the output directory already holds a run and ``resume`` is not given.
        RunLockedError: another process trains into the run directory.
        RunFinishedError: ``resume`` of a run that has trained all its epochs.
        NonFiniteLossError: the loss stayed non-finite (fp32/bf16); ``last/`` keeps the last good state.
        TooManyBadImagesError: more than ``data.max_bad_fraction`` of the training images are unreadable.
    """
    if cfg.sched.iterations is not None and not recipe.counts_iterations:
        raise ConfigError(f"sched.iterations: `swinkit {recipe.command}` of {recipe.kind} counts its schedule in "
                          "passes over the data; set sched.epochs (iteration schedules are for segmentation runs)")
    cfg = resolve_iterations(cfg)
    check_schedule(cfg)
    if cfg.train.stages:
        cfg = replace(cfg, sched=replace(cfg.sched, epochs=sum(s.epochs for s in cfg.train.stages)))
    with session(cfg) as s:
        output = cfg.train.output
        if not (output or resume):
            # Rank 0 picks the first free runs/<name>[-N]; the others must not see its lock and move on to the next.
            output = broadcast_object(str(runs.default_run_dir(cfg.name)) if s.env.is_main else None)
        run_dir, resume_dir = runs.resolve_run_dir(output, resume)
        with _owned(run_dir, s), StopSignals() as signals:
            return _fit(cfg, s, run_dir, resume_dir, recipe, signals)


@contextlib.contextmanager
def _owned(run_dir: Path, s: Session) -> Iterator[None]:
    """Rank 0 holds the run directory's lock; a fresh directory that a failed start leaves empty is removed."""
    existed = run_dir.exists()
    try:
        if s.env.is_main:
            with runs.locked(run_dir):
                yield
        else:
            yield
    finally:
        if s.env.is_main and not existed:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if empty


@contextlib.contextmanager
def _isolated_rng(seed: int) -> Iterator[None]:
    """Seed ``seed`` inside, and give every RNG back its state afterwards: building a stage's model (the same
    initial weights in every process) never draws from the training stream, so resumes stay exact."""
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    seed_everything(seed)
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


def _fit(cfg: Config, s: Session, run_dir: Path, resume_dir: Path | None, recipe: Recipe,
         signals: StopSignals) -> dict:  # fmt: skip
    # ---- set-up -------------------------------------------------------------------------------------------------
    env, device, precision = s.env, s.device, s.precision
    ckpt_dir = run_dir / "checkpoints"
    recipe.check(cfg, s)
    parallel.check_precision(cfg.train.parallel, precision)
    batch, accum = cfg.data.batch_size, cfg.optim.accum_steps
    global_batch = batch * env.world_size
    lr_scale = lr_scale_factor(cfg.optim.lr_base_batch, global_batch, accum)
    epoch_steps = steps_per_epoch(cfg, recipe.train_size, env.world_size)
    if epoch_steps == 0:
        raise ConfigError(
            f"{recipe.train_size} training images make no full step of {global_batch * accum} (batch x processes x "
            "accum_steps); lower data.batch_size"
        )
    micro_per_epoch = epoch_steps * accum
    progress = Progress()
    trainer_state = ckpt.load_trainer_state(resume_dir) if resume_dir else None
    if trainer_state:
        saved = trainer_state["progress"]
        progress = Progress(**{**saved, "bad": list(saved["bad"])})
        if progress.epoch >= cfg.sched.epochs:
            raise RunFinishedError(
                f"{run_dir} has finished: it trained {progress.epoch} of {cfg.sched.epochs} epochs. To train it "
                f"longer, resume with a larger sched.epochs (e.g. --resume {run_dir} sched.epochs="
                f"{progress.epoch + max(1, cfg.sched.epochs)})"
            )
        if trainer_state["world_size"] != env.world_size:
            log.warning("resuming a %d-process run with %d processes", trainer_state["world_size"], env.world_size)
    seed_everything(cfg.train.seed + env.rank)
    if env.is_main:
        log.info(
            "run %s | %s on %s (%s), %d process(es) | batch %d x %d = %d global%s | %d train images | "
            "%d epochs x %d steps | lr %.3g (x%.3g scaling)",
            run_dir, recipe.kind, device, precision, env.world_size, batch, env.world_size, global_batch,
            f" x {accum} accum" if accum > 1 else "", recipe.train_size, cfg.sched.epochs, epoch_steps,
            cfg.optim.lr * lr_scale, lr_scale,
        )  # fmt: skip
        if trainer_state:
            log.info("resuming %s at epoch %d, step %d", run_dir, progress.epoch + 1, progress.step)

    record: dict = {}
    previous: Trainer | None = None
    tb = None
    plan = stage_plan(cfg)
    for stage_index, stage in enumerate(plan):
        if progress.epoch >= stage.end:
            continue
        if len(plan) > 1 and env.is_main:
            log.info("stage %d/%d: epochs %d-%d at %s px, window %s", stage_index + 1, len(plan), stage.start + 1,
                     stage.end, stage.img_size, stage.window_size or "default")  # fmt: skip
        # ---- the objective, optimizer, scaler and EMA of this stage ---------------------------------------------
        with _isolated_rng(cfg.train.seed + stage_index):
            objective = recipe.build(stage, s)
        trainer = _build_trainer(cfg, s, objective, previous, trainer_state, resume_dir)
        if previous is None:
            if env.is_main:
                run_dir.mkdir(parents=True, exist_ok=True)
                save_config(_saved(cfg), run_dir / "config.yaml")  # only now that everything has loaded
                if trainer_state:
                    runs.reconcile_metrics(run_dir, progress.epoch, trainer_state.get("record"))
                tb = _tensorboard(cfg, run_dir)
            barrier()
            if not trainer_state and progress.step == 0:
                start = objective.initial_metrics()
                if start and env.is_main:
                    start = {"epoch": 0, "step": 0, **start}
                    log.info("epoch 0 (initialisation)  %s", objective.summary(start).strip())
                    runs.append_metrics(run_dir, start)
            if trainer_state:
                # Restore the RNGs last, after everything that draws from them while building.
                if env.is_main:
                    ckpt.set_rng_state(trainer_state["rng"])
                else:
                    seed_everything(cfg.train.seed + env.rank + 1_000 * progress.step)
        model, net, optimizer, scaler, ema = (objective.model, trainer.net, trainer.optimizer, trainer.scaler,
                                              trainer.ema)  # fmt: skip
        signals.armed = True  # from here on a stop signal saves last/ at the end of the step it arrives in
        stopped = f"of {epoch_steps * cfg.sched.epochs}; resume with: swinkit {recipe.command} --resume {run_dir}"

        for epoch in range(max(stage.start, progress.epoch), stage.end):
            # ---- one epoch of training ----------------------------------------------------------------------------
            progress.epoch = epoch
            objective.train_loader.set_epoch(epoch, start=progress.batch_in_epoch * batch)
            net.train()
            objective.train_epoch(epoch)
            t0, seen, lr = time.perf_counter(), 0, 0.0
            bar = tqdm(
                objective.train_loader, total=micro_per_epoch - progress.batch_in_epoch, disable=not env.is_main,
                desc=f"epoch {epoch + 1}/{cfg.sched.epochs}", dynamic_ncols=True, leave=False,
            )  # fmt: skip
            window_loss = torch.zeros((), dtype=torch.float64)
            window_samples, window_finite = 0, True
            for images, targets, bad in bar:
                if progress.batch_in_epoch >= micro_per_epoch:
                    break  # a remainder that does not fill an accumulation window
                micro = progress.batch_in_epoch % accum
                if micro == 0:
                    lr = lr_at(progress.step, epoch_steps, cfg.sched, cfg.optim.lr, lr_scale)
                    for group in optimizer.param_groups:
                        group["lr"] = lr * group["lr_scale"]
                progress.batch_in_epoch += 1
                if bad:
                    _count_bad(progress, bad, recipe.train_size, cfg.data.max_bad_fraction)
                last_micro = micro == accum - 1
                # Every process joins every forward (DDP reduces gradients across them), so a batch that unreadable
                # images left empty on any process (or short, where the objective needs full batches) is skipped by all.
                needed = batch if objective.full_batches else 1
                if all_reduce_min(torch.tensor(int(len(images) >= needed), device=device)).item():
                    sync = parallel.no_gradient_sync(net) if not last_micro else contextlib.nullcontext()
                    with sync:
                        loss = objective.loss(net, images, targets, progress.step)
                        scaler.scale(loss / accum).backward()
                    window_finite &= bool(torch.isfinite(loss))
                    window_loss += loss.detach().double().cpu()
                    window_samples += len(images)
                    seen += len(images)
                else:
                    log.warning("micro-batch %d of epoch %d skipped: a process's batch lost unreadable images",
                                progress.batch_in_epoch, epoch + 1)  # fmt: skip
                if not last_micro:
                    continue

                # ---- one optimizer step (every accum micro-batches) -------------------------------------------------
                flags = [float(not window_finite), float(window_samples), float(signals.received is not None)]
                nonfinite, samples, signalled = all_reduce_sum(torch.tensor(flags, device=device)).tolist()
                window_finite, window_samples = True, 0
                if samples == 0:
                    optimizer.zero_grad(set_to_none=True)
                    continue  # no step without a sample
                if nonfinite and precision != "fp16":
                    window_loss.zero_()
                    if _skip_nonfinite_step(progress, optimizer, epoch) >= cfg.train.max_nonfinite:
                        raise NonFiniteLossError(
                            f"training stopped: the loss was NaN/inf for {progress.nonfinite} consecutive steps "
                            f"(epoch {epoch + 1}, step {progress.step}, lr {lr:.3g}, precision {precision}). "
                            f"The last good checkpoint is {ckpt_dir / 'last'}. Lower optim.lr, keep optim.clip_grad "
                            "on, or check the data."
                        )
                    continue
                progress.nonfinite = 0
                _optimizer_step(model, optimizer, scaler, cfg.optim.clip_grad)
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
                due = cfg.train.save_every_steps and progress.step % cfg.train.save_every_steps == 0
                if stop or signalled or due:
                    _save(cfg, s, ckpt_dir / "last", trainer, progress, record)
                if signalled:  # every process agreed through the all-reduce; last/ holds this exact step
                    bar.close()
                    if tb is not None:
                        tb.close()
                    raise signals.interrupted(f"stopped at step {progress.step} {stopped}")
                if stop:
                    bar.close()
                    log.info("stopped after step %d as train.stop_after_steps asks; resume with --resume %s",
                             progress.step, run_dir)  # fmt: skip
                    if tb is not None:
                        tb.close()
                    return {"epoch": epoch, "step": progress.step, "stopped": True, "run_dir": str(run_dir)}
            bar.close()
            elapsed = time.perf_counter() - t0

            # ---- end of epoch: evaluate, checkpoint, log ------------------------------------------------------------
            record = _epoch_record(progress, epoch, lr, seen * env.world_size / max(elapsed, 1e-9), device)
            record.update(objective.epoch_metrics(epoch, progress.step, epoch + 1 == cfg.sched.epochs,
                                                  ema and ema.module))
            improved = _close_epoch(progress, record, objective.metric, epoch)
            # best/ first, then last/ from it: last/ never records a best epoch that best/ does not hold.
            if improved:
                _save(cfg, s, ckpt_dir / "best", trainer, progress, record)
                if env.is_main:
                    ckpt.copy_checkpoint(ckpt_dir / "best", ckpt_dir / "last")
                barrier()
            else:
                _save(cfg, s, ckpt_dir / "last", trainer, progress, record)
            if env.is_main:
                line = _epoch_line(record, cfg.sched.epochs, global_batch) + objective.summary(record)
                if record["bad_images"]:
                    line += f"  skipped {record['bad_images']} unreadable image(s)"
                log.info(line)
                runs.append_metrics(run_dir, record)
                objective.write_reports(run_dir, record)
                if tb is not None:
                    for k, v in record.items():
                        tb.add_scalar(f"epoch/{k}", v, epoch + 1)
            barrier()
            # A signal during the evaluation: last/ holds the end of this epoch (after the last one, the run is done).
            flag = torch.tensor(float(signals.received is not None), device=device)
            if all_reduce_sum(flag).item() and epoch + 1 < cfg.sched.epochs:
                if tb is not None:
                    tb.close()
                raise signals.interrupted(f"stopped at step {progress.step} (the end of epoch {epoch + 1}) {stopped}")
        previous = trainer

    # ---- the end ----------------------------------------------------------------------------------------------------
    if env.is_main:
        from .plot import plot_metrics

        if (run_dir / runs.METRICS_FILE).is_file():
            plot_metrics(run_dir)
        if progress.best_epoch > 0:
            log.info("done: best %s %.2f at epoch %d -> %s | last epoch -> %s", objective.metric, progress.best_top1,
                     progress.best_epoch, ckpt_dir / "best", ckpt_dir / "last")  # fmt: skip
        else:
            log.info("done: no evaluation; the weights are in %s", ckpt_dir / "last" / ckpt.MODEL_FILE)
        if tb is not None:
            tb.close()
    return {**record, "best_top1": progress.best_top1, "best_epoch": progress.best_epoch, "run_dir": str(run_dir)}


# --- the pieces, in the order the loop uses them ------------------------------------------------------------------
def _build_trainer(cfg: Config, s: Session, objective: Objective, previous: Trainer | None, trainer_state: dict | None,
                   resume_dir: Path | None) -> Trainer:  # fmt: skip
    """Weights (resumed, carried from the previous stage, or pretrained), EMA, DDP or FSDP, then the optimizer and
    scaler (a sharded checkpoint loads last, into the sharded model and its optimizer)."""
    model = objective.model
    fsdp = cfg.train.parallel == "fsdp"
    sharded_resume = trainer_state is not None and previous is None and ckpt.is_sharded_checkpoint(resume_dir)
    if trainer_state is not None and previous is None and sharded_resume != fsdp:
        saved = "fsdp" if sharded_resume else "ddp"
        raise ConfigError(f"{resume_dir} was written by a train.parallel={saved} run; resume it with "
                          f"train.parallel={saved}")  # fmt: skip
    if previous is not None:
        carry_weights(model, previous.objective.model)
    elif trainer_state and not sharded_resume:
        ckpt.load_weights(model, resume_dir)
    elif not trainer_state and cfg.model.pretrained:
        load_pretrained(model, cfg)
    if cfg.train.freeze:
        frozen = freeze_modules(model, cfg.train.freeze)
        log.info("froze %d parameter tensors under %s", len(frozen), ", ".join(cfg.train.freeze))
    apply_activation_memory(model, cfg)
    model.to(s.device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEMA(model, cfg.train.ema_decay, cfg.train.ema_warmup) if cfg.train.ema else None
    if ema is not None and previous is not None and previous.ema is not None:
        carry_weights(ema.module, previous.ema.module)
        ema.updates = previous.ema.updates
    options = dict(reshard_after_forward=cfg.train.fsdp_reshard_after_forward, precision=s.precision)
    net = parallel.wrap(model, cfg.train.parallel, s.env.world_size, s.device, compile=cfg.train.compile, **options)
    if fsdp and ema is not None:
        parallel.shard(ema.module, **options)  # sharded like the model, so each process averages its own shard
    optimizer = build_optimizer(model, cfg.optim)
    scaler = devices.grad_scaler(s.device, enabled=s.precision == "fp16")
    if trainer_state and previous is None:
        if sharded_resume:
            ckpt.load_sharded_checkpoint(resume_dir, model, optimizer, ema.module if ema is not None else None)
        else:
            optimizer.load_state_dict(trainer_state["optimizer"])
            if ema is not None and (resume_dir / ckpt.EMA_FILE).is_file():
                ckpt.load_weights(ema.module, resume_dir, ema=True)
        if trainer_state["scaler"]:
            scaler.load_state_dict(trainer_state["scaler"])
        if ema is not None:
            ema.updates = trainer_state["ema_updates"]
    elif previous is not None:
        carry_optimizer(optimizer, previous.optimizer)
    return Trainer(objective, net, optimizer, scaler, ema)


def carry_weights(new: nn.Module, old: nn.Module) -> None:
    """Move weights to a model rebuilt for the next progressive stage (window tables are transferred if needed);
    ``old`` may be sharded, ``new`` is not yet."""
    state = parallel.full_state_dict(old)
    try:
        new.load_state_dict(state, strict=True)
    except RuntimeError:
        from ..checkpoints import load_checkpoint

        load_checkpoint(new, state)


def carry_optimizer(new: torch.optim.Optimizer, old: torch.optim.Optimizer) -> None:
    """Carry AdamW moments to the next stage's optimizer when every parameter kept its shape (V2 does)."""
    shapes = [[p.shape for p in g["params"]] for g in new.param_groups]
    if shapes == [[p.shape for p in g["params"]] for g in old.param_groups]:
        new.load_state_dict(old.state_dict())
    else:
        log.warning("parameter shapes changed with the stage; the optimizer state starts afresh")


def _tensorboard(cfg: Config, run_dir: Path):
    if not cfg.train.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("train.tensorboard=true but tensorboard is not installed (pip install tensorboard); logging to "
                    "metrics.jsonl only")  # fmt: skip
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _count_bad(progress: Progress, bad: list[str], total: int, max_fraction: float) -> None:
    for msg in bad:
        log.warning("skipping unreadable image %s", msg)
    progress.bad.extend(bad)
    if len(progress.bad) > max_fraction * total:
        raise TooManyBadImagesError(
            f"{len(progress.bad)} of {total} training images are unreadable (more than {max_fraction:.0%}); "
            f"first: {'; '.join(progress.bad[:5])}"
        )


def _skip_nonfinite_step(progress: Progress, optimizer: torch.optim.Optimizer, epoch: int) -> int:
    """Drop a step whose loss was NaN/inf; returns how many steps in a row have been dropped."""
    optimizer.zero_grad(set_to_none=True)
    progress.nonfinite += 1
    log.warning("non-finite loss at step %d (epoch %d); step skipped", progress.step, epoch + 1)
    return progress.nonfinite


def _optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler, clip_grad: float | None) -> None:
    """Clip the global gradient norm (when asked), step through the loss scaler, and clear the gradients."""
    if clip_grad:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _epoch_record(progress: Progress, epoch: int, lr: float, img_per_s: float, device: torch.device) -> dict:
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


def _close_epoch(progress: Progress, record: dict, metric: str, epoch: int) -> bool:
    """Track the best ``record[metric]`` (when the epoch measured it) and reset the per-epoch counters; True if it
    improved."""
    improved = metric in record and record[metric] > progress.best_top1
    if improved:
        progress.best_top1, progress.best_epoch = record[metric], epoch + 1
    progress.epoch, progress.batch_in_epoch = epoch + 1, 0
    progress.loss_sum, progress.loss_count, progress.bad = 0.0, 0, []
    return improved


def _epoch_line(record: dict, epochs: int, global_batch: int) -> str:
    """The start of an epoch's log line: epoch, step, loss, learning rate and throughput."""
    return (f"epoch {record['epoch']}/{epochs}  step {record['step']}  loss {record['train_loss']:.4f}"
            f"  lr {record['lr']:.3g}  {record['img_per_s']:.0f} img/s (global batch {global_batch})")  # fmt: skip


def _saved(cfg: Config) -> Config:
    """The config as stored with the run: ``stop_after_steps`` controls one invocation, so a resume drops it."""
    return replace(cfg, train=replace(cfg.train, stop_after_steps=None))


def _save(cfg: Config, s: Session, path: Path, trainer: Trainer, progress: Progress, record: dict) -> None:
    """Write a training checkpoint to ``path`` (rank 0; every process for a sharded one), with ``record`` (the last
    epoch's) for the metrics file."""
    cfg = _saved(cfg)
    ema, model = trainer.ema, trainer.objective.model
    state = {
        "progress": asdict(progress),
        "scaler": trainer.scaler.state_dict(),
        "ema_updates": ema.updates if ema is not None else 0,
        "rng": ckpt.rng_state(),
        "world_size": s.env.world_size,
        "config": to_dict(cfg),
        "record": record,
    }
    if parallel.is_sharded(model):
        state["classes"] = trainer.objective.classes
        ckpt.save_sharded_checkpoint(path, cfg, model, ema.module if ema else None, trainer.optimizer, state)
        return
    if s.env.is_main:
        state["optimizer"] = trainer.optimizer.state_dict()
        ckpt.save_training_checkpoint(path, cfg, model, ema.module if ema else None, state, trainer.objective.classes)
    barrier()
