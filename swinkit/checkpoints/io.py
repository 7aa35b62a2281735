"""Reading and writing checkpoint files safely.

``.pth``/``.pt``/``.bin`` files are read with ``torch.load(weights_only=True)`` only, so no code in a file can run
(the training configs official releases pickle beside their weights, argparse and yacs objects, are read as inert
data: see ``FOREIGN_CONFIGS``);
``.safetensors`` through safetensors; MindSpore's ``.ckpt`` by ``mindspore_ckpt.read_ckpt`` and PaddlePaddle's
``.pdparams`` by ``pdparams.read_pdparams``, both of swinkit's own and neither able to run code from a file.

Writes are atomic (``swinkit.core.atomic``): an interrupted save never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..core.atomic import write_atomic
from ..core.errors import CheckpointError
from .mindspore_ckpt import read_ckpt
from .pdparams import read_pdparams

# Container keys that hold the weights, in the order the official repositories and timm's saver use them.
CONTAINER_KEYS = ("model", "state_dict", "module")
# Keys of the EMA weights in training containers: timm's CheckpointSaver (used by the official CSWin) and official Swin.
EMA_KEYS = ("state_dict_ema", "model_ema")


class ForeignObject:
    """Stands in for a pickled ``argparse.Namespace``: its fields as a plain dict; no code of its class runs."""

    def __setstate__(self, state: object) -> None:
        self.fields = dict(state) if isinstance(state, dict) else {}


# The training configs that official checkpoints pickle beside their weights (timm's saver, used by the official
# CSWin, stores the run's argparse.Namespace; official Swin training checkpoints its yacs CfgNode), and the inert
# stand-ins they are read as: the unpickler builds these instead, so nothing of the original classes is imported.
FOREIGN_CONFIGS = {"argparse.Namespace": ForeignObject, "yacs.config.CfgNode": OrderedDict}


def read_file(path: str | os.PathLike, suffix: str | None = None) -> tuple[dict, dict[str, str]]:
    """Load a checkpoint file into Python objects without executing code; ``suffix`` is the format to read it as
    (default: its own suffix).

    Returns:
        (the loaded object, safetensors metadata or {}).
    """
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; check the path")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file; give a checkpoint file (or a training checkpoint directory "
                              "where a command takes one)")  # fmt: skip
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): an interrupted download or save; fetch or save it again")
    if suffix == ".pdparams":
        return read_pdparams(path), {}
    if suffix == ".ckpt":
        return read_ckpt(path), {}
    if suffix == ".safetensors" or _is_safetensors(path):
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            return load_file(str(path)), metadata
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({err}); it may be truncated: save or download it again"
            ) from err
    other = other_format(path)
    if other is not None:
        raise CheckpointError(f"{path} is {other}, not a checkpoint. swinkit reads weights from .safetensors, "
                              ".pth/.pt/.bin (torch.save), MindSpore .ckpt and PaddlePaddle .pdparams "
                              "files")  # fmt: skip
    check_zip_sizes(path, path.stat().st_size, path)
    foreign = None
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True), {}
        except pickle.UnpicklingError:
            foreign = _foreign_globals(path)
            if not foreign or not set(foreign) <= set(FOREIGN_CONFIGS):
                raise
            with torch.serialization.safe_globals([(FOREIGN_CONFIGS[name], name) for name in foreign]):
                return torch.load(path, map_location="cpu", weights_only=True), {}
    except pickle.UnpicklingError as err:
        foreign = _foreign_globals(path) if foreign is None else foreign
        if not foreign:  # not a pickle of objects at all: no advice to unpickle it
            raise CheckpointError(f"{path} is not a PyTorch checkpoint or is corrupt ({_first_line(err)}); expected "
                                  "a .pth/.pt/.bin saved by torch.save or a .safetensors file") from err  # fmt: skip
        reason = f"it references {', '.join(foreign)}"
        raise CheckpointError(
            f"{path} holds Python objects other than tensors and plain containers, and swinkit refuses to unpickle "
            f"them because that can run code ({reason}). If you trust the file, load it yourself "
            "with torch.load(..., weights_only=False) and pass the state dict to load_checkpoint."
        ) from err
    except Exception as err:  # the unpickler raises anything from IndexError to RuntimeError on garbage
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint or is corrupt ({type(err).__name__}: {_first_line(err)}); "
            "expected a .pth/.pt/.bin saved by torch.save or a .safetensors file"
        ) from err


WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".pdparams")
_LEGACY_TORCH = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # torch.save's magic number, pickled first (before 1.6)


def check_weight_file(path: str | os.PathLike, suffix: str) -> None:
    """Refuse a file that is not a loadable weight file of the format ``suffix`` names (a download's name): empty,
    an HTML page, gzip-compressed, cut short. For other suffixes only the first three are refused.

    Safetensors headers, zip directories (``torch.save``) and the zip-bomb check are read without loading the
    weights; a pre-1.6 ``torch.save`` file, MindSpore ``.ckpt`` and ``.pdparams`` are read whole, as nothing short of
    that tells a file cut short from a complete one.
    """
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(64)
    if not head:
        raise CheckpointError("it is empty (0 bytes)")
    if head.lstrip()[:1] == b"<":
        raise CheckpointError(f"it is an HTML or XML page ({head.lstrip()[:40]!r}...), not a weight file: a proxy's "
                              "login or error page?")  # fmt: skip
    if head[:2] == b"\x1f\x8b":
        raise CheckpointError("it is gzip-compressed, which no weight file is")
    if suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"not a complete safetensors file ({_first_line(err)})") from err
    elif suffix in (".pth", ".pt", ".bin") and _ends_like_zip(path):
        check_zip_sizes(path, path.stat().st_size, path)
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                raise CheckpointError("a zip archive, but not one torch.save wrote (no data.pkl record)")
    elif suffix in (".pth", ".pt", ".bin") and not head.startswith(_LEGACY_TORCH):
        raise CheckpointError("not a file torch.save wrote (no zip directory at its end: cut short?)")
    elif suffix in WEIGHT_SUFFIXES:
        read_file(path, suffix)


def other_format(path: Path) -> str | None:
    """What a file that is no checkpoint is, where its first bytes or its zip records tell (ONNX, TorchScript,
    torch.export, NumPy, HDF5, an image, text); None otherwise. Read before any unpickling."""
    with path.open("rb") as f:
        head = f.read(16)
    if head[:1] == b"\x08" and head[2:3] == b"\x12" or path.suffix == ".onnx":  # ModelProto: ir_version, producer
        return "an ONNX model (what swinkit export writes, for ONNX Runtime)"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (Keras or TensorFlow weights)"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")):
        return "an image"
    if _ends_like_zip(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except Exception:  # check_zip_sizes names a corrupt archive
            return None
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "a TorchScript model (torch.jit.save: load it with torch.jit.load)"
        if any(n.endswith(("/archive_format", "serialized_exported_program.json")) for n in names):
            return "a torch.export program (torch.export.save: load it with torch.export.load)"
        if names and all(n.endswith(".npy") for n in names):
            return "a NumPy archive (.npz)"
    return None


def _ends_like_zip(path: Path) -> bool:
    """Whether ``path`` ends with a zip directory; a broken one (``is_zipfile`` raises on some) counts, for
    ``check_zip_sizes`` to refuse."""
    try:
        return zipfile.is_zipfile(path)
    except Exception:
        return True


def _foreign_globals(path: Path) -> list[str]:
    """The classes and functions a torch.save file references beyond what ``weights_only`` admits (read from the
    pickle's opcodes; nothing is imported or run)."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a pickle too broken to scan: the refusal above says so
        return []


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or ["no details"])[0][:300]


def check_zip_sizes(source: Path | BinaryIO, size: int, where: object) -> None:
    """``torch.save`` stores its zip records uncompressed, so together they never exceed the file: a record that
    would inflate past it (a zip bomb) is refused before torch decompresses anything. ``source`` is a file's path or
    an open binary stream of ``size`` bytes; ``where`` names it in the error."""
    try:
        if not zipfile.is_zipfile(source):
            return
        with zipfile.ZipFile(source) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except Exception as err:  # zipfile raises BadZipFile, but also NotImplementedError, ValueError ... on garbage
        raise CheckpointError(f"{where} is a corrupt zip archive ({_first_line(err)}); save or fetch it again") from err
    if declared > size:
        raise CheckpointError(
            f"{where} declares {declared} bytes of records in {size} bytes: they are compressed, which torch.save "
            "never does, so this is not a PyTorch checkpoint (or a hostile one); refused"
        )


def _is_safetensors(path: Path) -> bool:
    # A safetensors file starts with an 8-byte little-endian header length followed by a JSON object.
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def container_key(
    obj: Mapping, source: str, ema: bool | None = None, prefer: tuple[str, ...] = CONTAINER_KEYS
) -> str | None:
    """The key of the weights to use in a training container, or None when ``obj`` is itself the state dict.

    Args:
        ema: None takes the EMA weights when the container has them (``state_dict_ema`` or ``model_ema``), else the
            trained ones; True requires the EMA weights; False requires the trained ones.
    """
    ema_keys = [k for k in EMA_KEYS if isinstance(obj.get(k), Mapping)]
    plain_keys = [k for k in prefer if isinstance(obj.get(k), Mapping)]
    if ema is not False and ema_keys:
        return ema_keys[0]
    if ema:
        raise CheckpointError(f"{source} has no EMA weights (none of {', '.join(EMA_KEYS)}); pass ema=None or False")
    if plain_keys:
        return plain_keys[0]
    if ema_keys:
        raise CheckpointError(f"{source} holds only EMA weights ({ema_keys[0]}); pass ema=None or True to load them")
    return None


def extract_state_dict(
    obj: object, source: str, prefer: tuple[str, ...] = CONTAINER_KEYS, ema: bool | None = None
) -> dict[str, torch.Tensor]:
    """Find the weights in a loaded checkpoint: unwrap ``model``/``state_dict`` containers and ``module.`` prefixes.

    Non-tensor entries (epoch, config, ...) are ignored. ``ema`` chooses between the trained and the EMA weights of
    a container that has both, as in ``container_key``: by default the EMA ones.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict")
    key = container_key(obj, source, ema, prefer)
    if key is not None:
        return extract_state_dict(obj[key], source, prefer)
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{source} contains no tensors; top-level keys: {sorted(map(str, obj))[:10]}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def save_safetensors(state: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """Write tensors (made contiguous, on CPU) to a safetensors file atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


TORCH_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def write_tensors(state: dict[str, torch.Tensor], path: str | os.PathLike, container: str | None = None) -> Path:
    """Write tensors atomically, as the suffix of ``path`` says: ``.safetensors``, or ``.pth``/``.pt``/``.bin``
    (``torch.save``, under ``{container: state}`` when given, as the official training code saves)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return save_safetensors(state, path, {"format": "pt"})
    if path.suffix in TORCH_SUFFIXES:
        obj = {container: state} if container else state
        return write_atomic(path, lambda tmp: torch.save(obj, tmp))
    raise CheckpointError(f"cannot tell how to write {path.name}: use a {', '.join(TORCH_SUFFIXES)} file")
