"""Training checkpoints: ``RUN_DIR/checkpoints/{last,best}/``, each written whole or not at all.

A checkpoint directory holds ``model.safetensors``, ``ema.safetensors`` (with EMA), ``trainer_state.pt`` and
``config.yaml``. ``trainer_state.pt`` holds only tensors, numbers, strings, lists and dicts (optimizer, scaler,
epoch, step, position in the epoch, RNG states), so it loads with ``torch.load(weights_only=True)``.

A sharded run (``train.parallel=fsdp``) writes ``dcp/`` instead of the weight files: the model, EMA and optimizer
state as ``torch.distributed.checkpoint`` shards, each process writing its own, and ``dcp/SHA256SUMS``. Loading
reshards, so a run resumes at any number of processes; ``consolidated_state`` reads the full weights back in one
process (``swinkit convert``, ``eval``, ``predict`` do), without a process group. Both read through
``swinkit.checkpoints.sharded``, which never runs code from the directory and checks every shard's checksum.

The files go to a temporary directory beside the target, each is fsynced, and the directory is then renamed into
place (``swinkit.core.atomic.write_dir``): the old directory is first moved to ``.<name>.old`` and removed only
after the new one is in place, so a crash at any point leaves either the old or the new checkpoint, and
``find_checkpoint`` finds whichever survived.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from safetensors import SafetensorError, safe_open
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from ..checkpoints import save_checkpoint
from ..checkpoints.io import read_file, save_safetensors
from ..checkpoints.sharded import load_sharded, read_metadata, write_checksums
from ..core import device as devices
from ..core.atomic import commit_dir, previous_copy, raise_storage_error, temporary_dir, write_dir
from ..core.distributed import barrier, broadcast_object, is_main_process
from ..core.errors import CheckpointError, ConfigError
from .config import Config, config_from_dict, load_config, parse_yaml, save_config, to_yaml

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "config.yaml"
SHARDS_DIR = "dcp"  # a sharded run's torch.distributed.checkpoint directory (model, ema, optim)


def rng_state() -> dict:
    """The torch, CUDA, numpy and Python RNG states as tensors and numbers (safe for ``weights_only`` loading)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": devices.rng_states(),  # the accelerator's (the key keeps the name older checkpoints have)
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    devices.set_rng_states(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))


def save_training_checkpoint(
    path: Path,
    cfg: Config,
    model: nn.Module,
    ema: nn.Module | None,
    trainer_state: dict,
    classes: list[str] | None = None,
) -> Path:
    """Write a complete checkpoint directory atomically (call on rank 0 only).

    ``classes`` (the dataset's class folder names, in label order) go into the weight files' metadata as a JSON list
    under ``classes``, for ``swinkit predict``.
    """
    metadata = {"config": to_yaml(cfg)}
    if classes is not None:
        metadata["classes"] = json.dumps(list(classes))

    def write(tmp: Path) -> None:
        if hasattr(model, "load_ssl_checkpoint"):
            # swinkit.ssl meta-architectures keep their own (official) key layout: encoder.*, encoder_k.*, ...
            save_safetensors(model.state_dict(), tmp / MODEL_FILE, {"format": "swinkit", **metadata})
        else:
            save_checkpoint(model, tmp / MODEL_FILE, metadata=metadata)
        if ema is not None:
            save_checkpoint(ema, tmp / EMA_FILE, metadata=metadata)
        torch.save(trainer_state, tmp / STATE_FILE)
        save_config(cfg, tmp / CONFIG_FILE)

    return write_dir(path, write)


def _sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, ema: nn.Module | None) -> dict:
    """What a sharded checkpoint holds, as DCP state dicts: ``model``, ``optim`` and (with EMA) ``ema``."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    if ema is not None:
        state["ema"] = get_model_state_dict(ema)
    return state


def save_sharded_checkpoint(
    path: Path,
    cfg: Config,
    model: nn.Module,
    ema: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict,
) -> Path:
    """Write a sharded checkpoint directory (call on every process): each process writes its shards into one
    temporary directory, and only when all have finished does rank 0 add ``trainer_state.pt`` and ``config.yaml`` and
    swap it in, so a crash at any point leaves the previous checkpoint as it was."""
    tmp = Path(broadcast_object(str(temporary_dir(path)) if is_main_process() else None))
    try:
        dcp.save(_sharded_state(model, optimizer, ema), checkpoint_id=tmp / SHARDS_DIR)
        barrier()
        write_checksums(tmp / SHARDS_DIR, write=is_main_process())
        if is_main_process():
            torch.save(trainer_state, tmp / STATE_FILE)
            save_config(cfg, tmp / CONFIG_FILE)
            commit_dir(tmp, path)
    except BaseException as err:
        if is_main_process():
            shutil.rmtree(tmp, ignore_errors=True)
        for cause in [exc for exc, _ in err.failures.values()] if isinstance(err, CheckpointException) else [err]:
            raise_storage_error(path, cause)  # a full disk in any process: one StorageError, last/ kept
        raise
    barrier()
    return path


def load_sharded_checkpoint(
    ckpt_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: nn.Module | None
) -> None:
    """Load a sharded checkpoint into (sharded or whole) ``model``, ``optimizer`` and ``ema``, resharding for this
    run's processes (call on every process)."""
    state = _sharded_state(model, optimizer, ema)
    load_sharded(state, Path(ckpt_dir) / SHARDS_DIR)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    if ema is not None:
        set_model_state_dict(ema, state["ema"])


def is_sharded_checkpoint(ckpt_dir: str | Path) -> bool:
    return (Path(ckpt_dir) / SHARDS_DIR / ".metadata").is_file()


def consolidated_state(ckpt_dir: str | Path, ema: bool = False) -> dict[str, torch.Tensor]:
    """The full weights (or EMA weights) of a sharded checkpoint, read in this process alone."""
    shards = Path(ckpt_dir) / SHARDS_DIR
    prefix = "ema." if ema else "model."
    metadata = read_metadata(shards)
    template = {
        key.removeprefix(prefix): torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in metadata.state_dict_metadata.items()
        if key.startswith(prefix) and isinstance(meta, TensorStorageMetadata)
    }
    if not template:
        raise CheckpointError(f"{shards} holds no {'EMA ' if ema else ''}weights")
    load_sharded({prefix[:-1]: template}, shards, no_dist=True, metadata=metadata)
    return template


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """Atomically replace ``dst`` with a copy of checkpoint directory ``src`` (``last/`` -> ``best/``)."""

    def write(tmp: Path) -> None:
        for f in Path(src).iterdir():
            if f.is_dir():
                shutil.copytree(f, tmp / f.name)
            else:
                shutil.copy2(f, tmp / f.name)

    return write_dir(dst, write)


def find_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint directory at ``path``, or the ``.<name>.old`` left by a save interrupted mid-swap."""
    path = Path(path)
    for candidate in (path, previous_copy(path)):
        if (candidate / MODEL_FILE).is_file() or is_sharded_checkpoint(candidate):
            return candidate
    return None


def checkpoint_weights(ckpt_dir: Path, ema: bool = False) -> Path | dict[str, torch.Tensor]:
    """What holds a checkpoint directory's weights: its weight file, or a sharded checkpoint's consolidated state."""
    if is_sharded_checkpoint(ckpt_dir):
        return consolidated_state(ckpt_dir, ema=ema)
    return Path(ckpt_dir) / (EMA_FILE if ema else MODEL_FILE)


def has_ema(ckpt_dir: Path) -> bool:
    """Whether a checkpoint directory holds EMA weights (``ema.safetensors``, or EMA shards)."""
    if is_sharded_checkpoint(ckpt_dir):
        metadata = read_metadata(Path(ckpt_dir) / SHARDS_DIR)
        return any(key.startswith("ema.") for key in metadata.state_dict_metadata)
    return (Path(ckpt_dir) / EMA_FILE).is_file()


def stored_classes(ckpt_dir: Path) -> list[str] | None:
    """The class names a sharded checkpoint keeps in its trainer state (weight files keep theirs in metadata)."""
    return load_trainer_state(ckpt_dir).get("classes") if is_sharded_checkpoint(ckpt_dir) else None


def stored_config(path: str | Path) -> Config | None:
    """The config a swinkit run stored with a checkpoint: a training checkpoint directory's ``config.yaml``, or for a
    weight file its own safetensors metadata (every weight file a run writes carries it). None for files from
    elsewhere (a ``config.yaml`` that merely lies beside a foreign file is not taken for one)."""
    path = Path(path)
    if not path.is_file():
        found = find_checkpoint(path)
        return load_config(str(found / CONFIG_FILE)) if found and (found / CONFIG_FILE).is_file() else None
    if path.suffix != ".safetensors":
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("config")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); it may be truncated: save or "
                              "download it again") from err  # fmt: skip
    if not text:
        return None
    try:
        data = parse_yaml(text, f"the config stored in {path}")
    except ConfigError as err:
        raise CheckpointError(f"{err}; the file is corrupt or hostile") from err
    return config_from_dict(data, f"the config stored in {path}")


def load_weights(model: nn.Module, ckpt_dir: Path, ema: bool = False) -> None:
    """Load ``model.safetensors`` (or ``ema.safetensors``, or a sharded checkpoint's consolidated weights) from a
    swinkit checkpoint directory into an unsharded model, strictly."""
    source = checkpoint_weights(ckpt_dir, ema)
    state = source if isinstance(source, dict) else read_file(source)[0]
    path = Path(ckpt_dir) / SHARDS_DIR if isinstance(source, dict) else source
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = "; ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise CheckpointError(
            f"{path} was saved from another architecture than the config now builds ({detail}); resume with the "
            "run's own config (drop the model overrides), or start a new run"
        ) from err


def load_trainer_state(ckpt_dir: Path) -> dict:
    state = read_file(Path(ckpt_dir) / STATE_FILE)[0]
    if not isinstance(state, dict):
        raise CheckpointError(f"{Path(ckpt_dir) / STATE_FILE} holds a {type(state).__name__}, not a trainer state")
    return state
