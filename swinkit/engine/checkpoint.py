"""Training checkpoints: ``RUN_DIR/checkpoints/{last,best}/``, each written whole or not at all.

A checkpoint directory holds ``model.safetensors``, ``ema.safetensors`` (with EMA), ``trainer_state.pt`` and
``config.yaml``. ``trainer_state.pt`` holds only tensors, numbers, strings, lists and dicts (optimizer, scaler,
epoch, step, position in the epoch, RNG states), so it loads with ``torch.load(weights_only=True)``.

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
import yaml
from safetensors import SafetensorError, safe_open
from torch import nn

from ..checkpoints import save_checkpoint
from ..checkpoints.io import read_file, save_safetensors
from ..core.atomic import previous_copy, write_dir
from ..core.errors import CheckpointError
from .config import Config, config_from_dict, load_config, save_config, to_yaml

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "config.yaml"


def rng_state() -> dict:
    """The torch, CUDA, numpy and Python RNG states as tensors and numbers (safe for ``weights_only`` loading)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
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
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
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


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """Atomically replace ``dst`` with a copy of checkpoint directory ``src`` (``last/`` -> ``best/``)."""

    def write(tmp: Path) -> None:
        for f in Path(src).iterdir():
            shutil.copy2(f, tmp / f.name)

    return write_dir(dst, write)


def find_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint directory at ``path``, or the ``.<name>.old`` left by a save interrupted mid-swap."""
    path = Path(path)
    for candidate in (path, previous_copy(path)):
        if (candidate / MODEL_FILE).is_file():
            return candidate
    return None


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
    except (SafetensorError, OSError):
        return None
    if not text:
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CheckpointError(f"{path}: the config in its metadata is not valid YAML; the file is corrupt") from err
    return config_from_dict(data, f"the config stored in {path}")


def load_weights(model: nn.Module, ckpt_dir: Path, ema: bool = False) -> None:
    """Load ``model.safetensors`` (or ``ema.safetensors``) from a swinkit checkpoint directory, strictly."""
    path = Path(ckpt_dir) / (EMA_FILE if ema else MODEL_FILE)
    state, _ = read_file(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = "; ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise CheckpointError(
            f"{path} was saved from another architecture than the config now builds ({detail}); resume with the "
            "run's own config (drop the model overrides), or start a new run"
        ) from err


def load_trainer_state(ckpt_dir: Path) -> dict:
    return torch.load(Path(ckpt_dir) / STATE_FILE, map_location="cpu", weights_only=True)
