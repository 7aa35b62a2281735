"""The one module that knows about accelerators (CUDA and ROCm, XPU, MPS, Ascend NPU, Gaudi HPU): which device a name
means, its distributed backend, precision, loss scaler, RNG state, pinned memory, synchronisation and memory
counters. Everything else in swinkit is device-generic: no ``torch.cuda`` outside this file (a test greps).

Plug-in devices register themselves with PyTorch when their package is imported (``torch_npu`` for ``npu``,
``habana_frameworks.torch`` for ``hpu``); naming such a device imports its package, and a device that is not there is
a ``ConfigError`` that says so.
"""

from __future__ import annotations

import importlib
import os

import torch

from .errors import ConfigError

PLUGINS = {"npu": "torch_npu", "hpu": "habana_frameworks.torch"}
BACKENDS = {"cpu": "gloo", "cuda": "nccl", "xpu": "xccl", "npu": "hccl", "hpu": "hccl", "mps": "gloo"}


def _module(kind: str):
    """``torch.cuda``, ``torch.xpu``, ``torch.npu``, ... once the plug-in that provides it is imported; or None."""
    if kind in PLUGINS:
        try:
            importlib.import_module(PLUGINS[kind])
        except ImportError:
            return None
    return getattr(torch, kind, None)


def is_available(kind: str) -> bool:
    if kind == "cpu":
        return True
    module = _module(kind)
    return module is not None and bool(module.is_available())


def accelerator() -> str | None:
    """The kind of accelerator this machine has (``torch.accelerator``'s, or an installed NPU), or None."""
    if torch.accelerator.is_available():
        return torch.accelerator.current_accelerator().type
    return next((kind for kind in PLUGINS if is_available(kind)), None)


def resolve(name: str, local_rank: int = 0) -> torch.device:
    """The device ``train.device`` names: ``auto`` (the accelerator, else the CPU), ``cpu``, ``cuda``, ``cuda:1``,
    ``npu``, ... An accelerator without an index is the one of this process's local rank, and becomes the current
    device of its kind.

    Raises:
        ConfigError: the named kind of device is not on this machine.
    """
    kind, _, index = name.partition(":")
    if kind == "auto":
        kind = accelerator() or "cpu"
    if kind == "cpu":
        return torch.device("cpu")
    if not is_available(kind):
        plugin = f" (and {PLUGINS[kind]} installed)" if kind in PLUGINS else ""
        raise ConfigError(f"train.device={name}: this machine has no {kind} device{plugin}; use train.device=auto "
                          "(the accelerator there is, else the CPU) or train.device=cpu")  # fmt: skip
    device = torch.device(kind, int(index) if index else local_rank)
    module = _module(kind)
    if hasattr(module, "set_device") and kind != "mps":
        module.set_device(device)
    return device


def distributed_backend(device: torch.device | str) -> str:
    """The collective library of the device's kind: NCCL (RCCL on ROCm), XCCL, HCCL, gloo on the CPU."""
    kind = torch.device(device).type
    try:
        return torch.distributed.get_default_backend_for_device(kind)
    except (RuntimeError, ValueError, AttributeError):
        return BACKENDS.get(kind, "gloo")


def default_precision(device: torch.device) -> str:
    """``train.precision=auto``: bf16 on an accelerator that computes in it, fp32 elsewhere."""
    if device.type == "cpu":
        return "fp32"
    module = _module(device.type)
    supported = getattr(module, "is_bf16_supported", None)
    return "bf16" if supported is None or supported() else "fp32"


def has_fp16_kernels(device: torch.device) -> bool:
    """fp16 autocast is for accelerators; on the CPU its kernels are slow or absent."""
    return device.type != "cpu"


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device.type, enabled=enabled)


def rng_states() -> list[torch.Tensor]:
    """The RNG state of every device of this machine's accelerator (empty without one)."""
    kind = accelerator()
    module = _module(kind) if kind else None
    if module is None or not hasattr(module, "get_rng_state_all"):
        return []
    return list(module.get_rng_state_all())


def set_rng_states(states: list[torch.Tensor]) -> None:
    """Restore ``rng_states()``; ignored where the machine has another number of devices than the one that saved."""
    kind = accelerator()
    module = _module(kind) if kind else None
    if states and module is not None and len(states) == module.device_count():
        module.set_rng_state_all(states)


def pin_memory(device: torch.device) -> bool:
    """Whether loaders should pin host memory for fast, asynchronous copies to ``device``."""
    return device.type not in ("cpu", "mps")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a timing boundary); nothing on the CPU."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.reset_peak_memory_stats(device)


def total_memory(device: torch.device) -> int | None:
    """The memory of ``device`` in bytes (the machine's RAM for the CPU), or None where the backend does not say."""
    if device.type == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    module = _module(device.type)
    info = getattr(module, "mem_get_info", None)
    return info(device)[1] if info is not None else None


def peak_memory_bytes(device: torch.device) -> int:
    """Peak bytes allocated on ``device`` since ``reset_peak_memory`` (accelerators only)."""
    return torch.accelerator.max_memory_allocated(device)


def has_sync_batchnorm(device: torch.device) -> bool:
    """Whether ``SyncBatchNorm`` has kernels for the device (not on the CPU or MPS)."""
    return device.type not in ("cpu", "mps")
