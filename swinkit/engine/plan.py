"""``swinkit plan``: the memory one ``swinkit train`` step needs on each GPU, known before launching.

Nothing is allocated: the model is built on fake tensors (``FakeTensorMode``: shapes and dtypes, no storage), sharded
over a fake process group of ``nproc`` ranks for FSDP (as torchtitan's memory estimator does), and two training steps
(forward, loss, backward, optimizer step; the second is measured, once the optimizer state exists) run under torch's
memory trackers (``FSDPMemTracker``, ``MemTracker``), which count every tensor alive at the peak by kind. DDP keeps a
second fp32 copy of the gradients in its all-reduce buckets, which the tracker does not see: it is added.

The activations are those of the kernels of the machine that plans (on a CPU, its attention kernel), so for a GPU
they are an estimate; the parameters, gradients and optimizer state are exact. ``precision=auto`` plans bf16 (what
it means on a GPU). The tiny-scale test compares the estimate with a step measured on real tensors.

A segmentation config plans its training step as it runs: crops of ``seg.crop_size``, the main and auxiliary heads'
per-pixel loss, with ``model.num_classes`` classes, else the built-in scenes' 11 for ``data.dataset=digit_scenes``,
else the model's registered count (ADE20K's 150); the data is not read. Its BatchNorm is planned as BatchNorm
(SyncBatchNorm keeps the same tensors).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
from torch.distributed._tools.mem_tracker import MemTracker
from torch.distributed.device_mesh import init_device_mesh

from .. import models
from ..core.errors import ConfigError
from ..data.digit_scenes import CLASSES as SCENE_CLASSES
from .config import Config
from .objectives import segmentation_loss
from .optim import build_optimizer
from .parallel import check_precision, is_sharded, shard
from .setup import apply_activation_memory, autocast, build_model

GIB = 2**30
# The trackers' kinds of memory, in the rows of the plan.
ROWS = {
    "parameters": ("Parameter", "Sharded Param", "Unsharded Param", "Buffer"),
    "gradients": ("Gradient", "Sharded Grad", "Unsharded Grad"),
    "optimizer state": ("Optstate", "OptState"),
    "activations": ("Activation", "Temp", "Inputs", "Other"),
    "communication buffers": ("All Gather", "Reduce Scatter"),
}


@dataclass
class Plan:
    """Peak memory per GPU (bytes by kind) of one training step of a config."""

    model: str
    parallel: str
    nproc: int
    batch: int
    img_size: tuple[int, int]
    precision: str
    params: int
    memory: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.memory.values())

    def fits(self, gpu_memory_gib: float) -> bool:
        return self.total <= gpu_memory_gib * GIB

    def __str__(self) -> str:
        h, w = self.img_size
        lines = [f"{self.model} ({self.params / 1e6:.1f}M parameters), {self.parallel} over {self.nproc} GPU(s), "
                 f"batch {self.batch} per GPU at {h}x{w}, {self.precision}; peak memory per GPU:"]  # fmt: skip
        lines += [f"  {name:<22} {size / GIB:8.2f} GiB" for name, size in self.memory.items()]
        lines.append(f"  {'total':<22} {self.total / GIB:8.2f} GiB")
        return "\n".join(lines)


@contextlib.contextmanager
def _fake_group(nproc: int) -> Iterator[None]:
    """A process group of ``nproc`` ranks that exists only in this process (collectives return at once)."""
    from torch.testing._internal.distributed.fake_pg import FakeStore  # registers the "fake" backend

    if dist.is_initialized():
        raise ConfigError("swinkit plan runs on its own, not under torchrun")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=nproc)
    try:
        yield
    finally:
        dist.destroy_process_group()


def plan(cfg: Config, nproc: int, parallel: str | None = None) -> Plan:
    """Plan one training step of ``cfg`` on ``nproc`` GPUs with ``parallel`` (default: the config's)."""
    parallel = parallel or cfg.train.parallel
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: plan for at least one GPU")
    if models.is_detection(cfg.model.name):
        raise ConfigError(f"swinkit plan estimates classification, self-supervised and segmentation steps; "
                          f"{cfg.model.name} is a detector, whose step depends on its images' sizes and proposals: "
                          "measure a few steps instead (swinkit train ... train.stop_after_steps=20)")  # fmt: skip
    precision = "bf16" if cfg.train.precision == "auto" else cfg.train.precision
    check_precision(parallel, precision)
    cfg = replace(cfg, train=replace(cfg.train, parallel=parallel, precision=precision))
    group = _fake_group(nproc) if parallel == "fsdp" else contextlib.nullcontext()
    segmentation = models.is_segmentation(cfg.model.name)
    with group:
        mesh = init_device_mesh("cpu", (nproc,)) if parallel == "fsdp" else None
        # Non-fake inputs are taken: BatchNorm's constructor makes its step counter with torch.tensor(0), a real
        # (meta) tensor, and zeroes it in place; nothing in a plan allocates storage either way.
        with FakeTensorMode(allow_non_fake_inputs=True):
            with torch.device("meta"):
                if segmentation:
                    classes = len(SCENE_CLASSES) if cfg.data.dataset == "digit_scenes" else None
                    model = build_model(cfg, classes, img_size=tuple(cfg.seg.crop_size))
                else:
                    model = build_model(cfg)
            apply_activation_memory(model, cfg)
            if parallel == "fsdp":
                shard(model, reshard_after_forward=cfg.train.fsdp_reshard_after_forward, precision=precision,
                      mesh=mesh)  # fmt: skip
            _materialize(model)
            params = sum(p.numel() for p in model.parameters())  # a sharded parameter counts its full size
            memory = measure_step(model, cfg, precision, parallel, segmentation)
    if parallel == "ddp":
        memory["communication buffers"] = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    return Plan(cfg.model.name, parallel, nproc, cfg.data.batch_size, model.img_size, precision, params, memory)


def _materialize(model: torch.nn.Module) -> None:
    """Meta tensors -> fake CPU tensors of the same shapes, in place. A sharded model moves with ``to_empty``; a
    whole one has each tensor replaced (a fake tensor cannot be swapped into a parameter)."""
    if is_sharded(model):
        model.to_empty(device="cpu")
        return
    made: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None:
                made.setdefault(id(p), torch.nn.Parameter(torch.empty(p.shape, dtype=p.dtype), p.requires_grad))
                module._parameters[name] = made[id(p)]
        for name, b in module._buffers.items():
            if b is not None:
                module._buffers[name] = made.setdefault(id(b), torch.empty(b.shape, dtype=b.dtype))


def measure_step(model: torch.nn.Module, cfg: Config, precision: str, parallel: str,
                 segmentation: bool = False) -> dict[str, int]:  # fmt: skip
    """Peak bytes by kind (the plan's rows) of the second of two training steps of ``model`` on a batch of
    ``cfg`` (a segmentation model's: per-pixel labels and its heads' loss); on fake tensors for a plan, on real
    ones to check it."""
    optimizer = build_optimizer(model, cfg.optim)
    in_chans = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels  # the stem's
    x = torch.randn(cfg.data.batch_size, in_chans, *model.img_size)
    labels = (cfg.data.batch_size, *model.img_size) if segmentation else (cfg.data.batch_size,)
    y = torch.randint(0, max(model.num_classes, 1), labels)
    device = torch.device("cpu")
    tracker = FSDPMemTracker(model, optimizer) if parallel == "fsdp" else MemTracker()
    if parallel == "fsdp":
        tracker.track_inputs((x, y))
    else:
        tracker.track_external(model, optimizer)
    model.train()
    with tracker:
        for step in range(2):
            with autocast(device, precision):
                outputs = model(x)
            if segmentation:
                segmentation_loss(outputs, y, cfg.head.auxiliary_weight).backward()
            else:
                F.cross_entropy(outputs.float(), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step == 0:
                tracker.reset_mod_stats()
    peak = next(iter(tracker.get_tracker_snapshot("peak").values()))
    by_kind = {getattr(kind, "value", kind): size for kind, size in peak.items() if kind != "Total"}
    return {row: sum(by_kind.get(kind, 0) for kind in kinds) for row, kinds in ROWS.items()}
