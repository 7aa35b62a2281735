"""Data parallelism for the loop: DDP (a full copy of the model per process) or FSDP2 (parameters, gradients and
optimizer state sharded over the processes), composed the way torchtitan composes them.

With ``train.parallel=fsdp`` every transformer block is ``fully_shard``ed on its own (so only one block's full
parameters are gathered at a time), then the rest of the model as one unit: the patch embedding, the merges, the norm
and the head together. A meta-architecture whose parts are also called on their own (MoBY's and SimMIM's encoder,
which the kNN monitor runs) names those parts in ``sharding_roots()``, and each becomes a root of its own instead.
``train.fsdp_reshard_after_forward`` frees the gathered parameters after each forward (ZeRO-3) or keeps them for the
backward (ZeRO-2: more memory, fewer all-gathers). With ``train.precision=bf16`` the blocks compute with bf16 copies
of the parameters and reduce gradients in fp32 onto fp32 master weights (FSDP2's ``MixedPrecisionPolicy``).

Under FSDP each forward all-gathers, so every process must run the same number of forwards: evaluation goes through
``evaluation_batches``, which keeps the processes in step batch by batch and pads a process that has fewer batches,
or fewer forwards in a batch (sliding windows and test-time passes depend on the image's size), with forwards of a
one-image dummy.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from ..core.distributed import all_reduce_max
from ..core.errors import ConfigError
from ..layers import Stage

PARALLEL = ("ddp", "fsdp")


def check_precision(parallel: str, precision: str) -> None:
    """FSDP2's mixed precision is bf16 over fp32 master weights; fp16 with loss scaling stays a DDP feature."""
    if parallel == "fsdp" and precision == "fp16":
        raise ConfigError(
            "train.parallel=fsdp trains in fp32 or bf16 (FSDP2's mixed precision keeps fp32 master weights); use "
            "train.precision=bf16, or train.parallel=ddp for fp16 with loss scaling"
        )


def is_sharded(model: nn.Module) -> bool:
    return any(isinstance(m, FSDPModule) for m in model.modules())


def _roots(model: nn.Module) -> list[nn.Module]:
    """The modules sharded as roots: the model, or the parts a meta-architecture calls on their own."""
    return list(model.sharding_roots()) if hasattr(model, "sharding_roots") else [model]


def shard(
    model: nn.Module, *, reshard_after_forward: bool = True, precision: str = "fp32", mesh: DeviceMesh | None = None
) -> nn.Module:
    """``fully_shard`` every block of every stage, then each root (see the module docstring), in place, over ``mesh``
    (default: all processes of the default group)."""
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if precision == "bf16" \
        else MixedPrecisionPolicy()  # fmt: skip
    options = dict(reshard_after_forward=reshard_after_forward, mp_policy=policy, mesh=mesh)
    for stage in [m for m in model.modules() if isinstance(m, Stage)]:
        for block in stage.blocks:
            fully_shard(block, **options)
    roots = _roots(model)
    for root in roots:
        fully_shard(root, **options)
    left = [n for n, p in model.named_parameters() if not any(p is q for r in roots for q in r.parameters())]
    if left:
        raise RuntimeError(f"parameters outside every sharded root: {left[:5]}")
    return model


def compile_parts(model: nn.Module) -> None:
    """``torch.compile`` in place the parts the loop and the monitors call: the model, or a meta-architecture's
    ``sharding_roots()`` (MoBY's encoders, projectors and predictor). Each compiles to one graph (the window
    geometry is cached per input size outside the traced values; ``tests/test_compile.py`` counts the breaks), and
    compiles again only for another input size or for eval mode. State-dict keys do not change."""
    for part in _roots(model):
        part.compile()


def wrap(model: nn.Module, parallel: str, world_size: int, device: torch.device, *, compile: bool = False,
         **shard_options) -> nn.Module:  # fmt: skip
    """What the loop runs batches through: the sharded model itself, a DDP wrapper, or the model (one process);
    ``compile`` compiles its parts first (then shards or wraps them)."""
    if compile:
        compile_parts(model)
    if parallel == "fsdp":
        return shard(model, **shard_options)
    if world_size > 1:
        # No buffer sync in forward (the models' buffers are constant tables). torch 2.14 renamed the switch.
        new_name = "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
        no_sync = {"forward_sync_buffers" if new_name else "broadcast_buffers": False}
        return nn.parallel.DistributedDataParallel(
            model, device_ids=None if device.type == "cpu" else [device.index], **no_sync
        )
    return model


@contextlib.contextmanager
def no_gradient_sync(net: nn.Module) -> Iterator[None]:
    """Accumulate gradients locally (no all-reduce / reduce-scatter) for the micro-batches inside."""
    if isinstance(net, nn.parallel.DistributedDataParallel):
        with net.no_sync():
            yield
        return
    roots = [m for m in _roots(net) if isinstance(m, FSDPModule)]
    for root in roots:
        root.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        for root in roots:
            root.set_requires_gradient_sync(True)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's full (unsharded) state dict on every process, on the CPU; collective under FSDP."""
    if not is_sharded(model):
        return model.state_dict()
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def to_device(batch, device: torch.device):
    """A batch's tensors on ``device``: a tensor, or the tensors inside lists and dicts (a detection batch's images
    and targets); anything else as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, list):
        return [to_device(x, device) for x in batch]
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _most(count: int, device: torch.device) -> int:
    return int(all_reduce_max(torch.tensor(count, device=device)).item())


def _pad_forwards(module: nn.Module, missing: int, example: torch.Tensor | None) -> None:
    """Run ``missing`` forwards of a one-image dummy (``example``'s first image, or zeros of ``module.img_size``)."""
    dummy = example[:1] if example is not None else torch.zeros(1, 3, *module.img_size)
    for _ in range(missing):
        module(dummy)


@torch.no_grad()
def evaluation_batches(module: nn.Module, loader, device: torch.device,
                       forwards: Callable[[torch.Tensor], int] = lambda images: 1,
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """``(images, targets)`` on ``device`` (``to_device``) for each non-empty batch of this process's share of
    ``loader``, with ``module`` in eval mode (its mode is restored after the last batch).

    Under FSDP (see the module docstring) every batch is a round that all processes run together: they agree on the
    most forwards any of them runs in it (``forwards(images)``: how many times the caller calls ``module`` on the
    batch), each pads its own shortfall after the caller is done with the batch, and a process out of batches pads
    whole rounds. Without sharding nothing is exchanged. Call on every process.
    """
    sharded = is_sharded(module)
    rounds = _most(len(loader), device) if sharded else 0
    was_training, example = module.training, None
    module.eval()
    try:
        for images, targets, _ in loader:
            needed = forwards(images) if len(targets) else 0
            most = _most(needed, device) if sharded else needed
            if len(targets):
                example = to_device(images, device)
                yield example, to_device(targets, device)
            _pad_forwards(module, most - needed, example)
        for _ in range(rounds - len(loader)):
            _pad_forwards(module, _most(0, device), example)
    finally:
        module.train(was_training)
