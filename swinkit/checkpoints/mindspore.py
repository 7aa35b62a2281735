"""MindSpore ``.ckpt`` files, read and written without MindSpore, and the layouts of MindCV, ModelZoo and CSWin ports.

The file is a protobuf ``Checkpoint`` (mindspore/train/checkpoint.proto, proto2)::

    message Checkpoint { message Value { required string tag = 1; oneof value { TensorProto tensor = 2;
                                                                         MapTensorProto maptensor = 3; } }
                         repeated Value value = 1; }
    message TensorProto { repeated int64 dims = 1; required string tensor_type = 2; required bytes tensor_content = 3; }

MindSpore writes one serialised ``Checkpoint`` per parameter and concatenates them (protobuf concatenation merges
repeated fields); a parameter over 512 MiB is split into consecutive values with the same tag, whose contents are
joined. A scalar has ``dims == [0]``; strings (``append_dict`` entries) have type ``str`` and UTF-32 content.
``save_checkpoint(..., crc_check=True)`` appends ``b"crc_num"`` and 10 bytes. Encrypted files cannot be read.

Layouts (all with LayerNorm ``gamma``/``beta`` for ``weight``/``bias``; Dense and Conv weights as in PyTorch):

- **MindCV** ``swinv2_*`` (mindcv/models/swintransformerv2.py): the official layout (merging at the END of stage i,
  ``head``) but with separate ``attn.q``/``attn.k``/``attn.v`` Dense layers (k without bias), the position bias MLP in
  ``attn.relative_position_bias.cpb_mlp0``/``cpb_mlp2``, and the derived ``relative_coords_table``,
  ``relative_position_index`` and ``attn_mask`` stored as parameters (dropped, rebuilt). Its numerics differ from
  the official ones: LayerNorm eps 1e-6 (patch embedding, blocks, final norm; patch merging keeps 1e-5) and
  MindSpore's default tanh-approximated GELU; ``load_checkpoint`` switches the model to them (``mindcv_numerics``).
- **ModelZoo** SwinV2 (``swinv2_base_patch4_window12to16_192to256_22kto1k_ft``; its weights come from the official
  ``.pth`` through a pth->ckpt converter that renames LayerNorm parameters only): the official layout with
  ``gamma``/``beta``. Swin V1 ports use the same scheme.
- MindSpore **CSWin** port: the official CSWin names with ``gamma``/``beta``.

``Parameter.name`` depends on the MindSpore version: MindSpore 2.x names the parameters of a ``CellList`` inside a
``CellList`` by position (``0.blocks.1.blocks.0.norm1.gamma`` for ``layers.1.blocks.0.norm1.gamma``), and training
wrappers add ``network.``/``_backbone.`` prefixes. Names are therefore normalised by structure before conversion.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.atomic import write_atomic
from ..core.errors import CheckpointError
from . import microsoft
from .common import Converted, drop_derived, rename

# tensor_type strings of mindspore.train.serialization and their dtypes.
_DTYPES = {
    "Float16": torch.float16,
    "Float32": torch.float32,
    "Float64": torch.float64,
    "BFloat16": torch.bfloat16,
    "Int8": torch.int8,
    "UInt8": torch.uint8,
    "Int16": torch.int16,
    "UInt16": torch.uint16,
    "Int32": torch.int32,
    "UInt32": torch.uint32,
    "Int64": torch.int64,
    "UInt64": torch.uint64,
    "Bool": torch.bool,
}
_TYPE_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_SLICE_BYTES = 512 * 1024 * 1024  # MindSpore splits larger parameters into several values
_CRC_TRAILER = b"crc_num"

# MindCV's numerics: the LayerNorm eps of the patch embedding, the blocks and the final norm, and the GELU.
MINDCV_NORM_EPS = 1e-6
MINDCV_GELU = "tanh"

# Training state that MindSpore's TrainOneStepCell and optimizers save beside the weights.
_TRAINING_PREFIXES = (
    "moments.",
    "adam_m.",
    "adam_v.",
    "accum.",
    "learning_rate",
    "global_step",
    "scale_sense",
    "current_iterator_step",
    "last_overflow_iterator_step",
    "epoch_num",
    "step_num",
    "beta1_power",
    "beta2_power",
    "loss_scale",
)
_WRAPPER_PREFIX = re.compile(r"^(?:network\.|_backbone\.|backbone\.|net\.|model\.)+")


# --- protobuf wire format -----------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: memoryview, source: str) -> None:
        self.data, self.pos, self.source = data, 0, source

    def varint(self) -> int:
        result = shift = 0
        while True:
            if self.pos >= len(self.data):
                raise CheckpointError(f"{self.source}: the .ckpt file ends inside a field; it is truncated")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise CheckpointError(f"{self.source}: malformed varint; this is not a MindSpore .ckpt file")

    def fields(self, end: int):
        """Yield (field number, wire type, value) up to ``end``; LEN values are memoryview slices."""
        while self.pos < end:
            key = self.varint()
            number, wire = key >> 3, key & 7
            if wire == 0:
                value = self.varint()
            elif wire == 2:
                length = self.varint()
                if self.pos + length > end:
                    raise CheckpointError(
                        f"{self.source}: a field runs past the end of the .ckpt file ({length} bytes); it is truncated"
                    )
                value = self.data[self.pos : self.pos + length]
                self.pos += length
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
                value = self.data[self.pos : self.pos + size]
                self.pos += size
            else:
                raise CheckpointError(f"{self.source}: unexpected protobuf wire type {wire}; not a MindSpore .ckpt")
            if number == 0:
                raise CheckpointError(f"{self.source}: field number 0; this is not a MindSpore .ckpt file")
            yield number, wire, value


def _parse_tensor(data: memoryview, source: str) -> tuple[list[int], str, memoryview]:
    dims, dtype, content = [], None, None
    reader = _Reader(data, source)
    for number, wire, value in reader.fields(len(data)):
        if number == 1 and wire == 0:
            dims.append(value)
        elif number == 1 and wire == 2:  # packed
            packed = _Reader(value, source)
            while packed.pos < len(value):
                dims.append(packed.varint())
        elif number == 2 and wire == 2:
            dtype = bytes(value).decode("utf-8", errors="replace")
        elif number == 3 and wire == 2:
            content = value
    if dtype is None or content is None:
        raise CheckpointError(f"{source}: a tensor lacks its type or content; the .ckpt file is corrupt")
    return dims, dtype, content


def _to_value(tag: str, dims: list[int], dtype: str, content: bytes, source: str):
    if dtype == "str":
        return np.frombuffer(content, dtype=f"<U{len(content) // 4}")[0].item() if content else ""
    if dtype not in _DTYPES:
        raise CheckpointError(f"{source}: parameter {tag!r} has tensor type {dtype!r}, which swinkit cannot read")
    torch_dtype = _DTYPES[dtype]
    itemsize = torch.empty((), dtype=torch_dtype).element_size()
    shape = [] if dims == [0] and len(content) == itemsize else dims
    count = int(np.prod(shape)) if shape else 1
    if count * itemsize != len(content):
        raise CheckpointError(
            f"{source}: parameter {tag!r} of shape {tuple(shape)} ({dtype}) should hold {count * itemsize} bytes but "
            f"holds {len(content)}; the .ckpt file is corrupt or truncated"
        )
    if not count:
        return torch.empty(shape, dtype=torch_dtype)
    return torch.frombuffer(bytearray(content), dtype=torch_dtype).reshape(shape)


def read_ckpt(path: str | os.PathLike) -> dict[str, torch.Tensor | str]:
    """A MindSpore ``.ckpt`` file as {parameter name: tensor} (strings from ``append_dict`` are kept as str)."""
    path = Path(path)
    source = str(path)
    data = path.read_bytes()
    if len(data) >= 17 and data[-17:-10] == _CRC_TRAILER:
        data = data[:-17]
    if not data:
        raise CheckpointError(f"{source} is empty; not a MindSpore .ckpt file")
    reader = _Reader(memoryview(data), source)
    out: dict[str, torch.Tensor | str] = {}
    chunks: list[bytes] = []
    previous = None
    for number, wire, value in reader.fields(len(data)):
        if number != 1 or wire != 2:
            raise CheckpointError(f"{source} is not a MindSpore .ckpt file (unexpected top-level field {number})")
        tag, tensor = None, None
        for sub_number, sub_wire, sub_value in _Reader(value, source).fields(len(value)):
            if sub_number == 1 and sub_wire == 2:
                tag = bytes(sub_value).decode("utf-8")
            elif sub_number == 2 and sub_wire == 2:
                tensor = sub_value
        if tag is None:
            raise CheckpointError(f"{source}: a value has no name; the .ckpt file is corrupt")
        if tensor is None:
            continue  # a MapTensor (embedding tables of recommendation models): nothing a vision model has
        dims, dtype, content = _parse_tensor(tensor, source)
        if previous is not None and previous[0] != tag:
            out[previous[0]] = _to_value(previous[0], previous[1], previous[2], b"".join(chunks), source)
            chunks = []
        chunks.append(bytes(content))
        previous = (tag, dims, dtype)
    if previous is None:
        raise CheckpointError(f"{source} holds no parameters; not a MindSpore .ckpt file")
    out[previous[0]] = _to_value(previous[0], previous[1], previous[2], b"".join(chunks), source)
    return out


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _encode_value(tag: str, tensor: torch.Tensor) -> list[bytes]:
    tensor = tensor.detach().to("cpu").contiguous()
    if tensor.dtype not in _TYPE_NAMES:
        raise CheckpointError(f"cannot write {tag!r} of dtype {tensor.dtype} to a MindSpore .ckpt")
    dims = b"".join(_varint(1 << 3 | 0) + _varint(d) for d in (tensor.shape or (0,)))
    type_field = _field(2, _TYPE_NAMES[tensor.dtype].encode())
    content = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
    slices = [content[i : i + _SLICE_BYTES] for i in range(0, len(content), _SLICE_BYTES)] or [b""]
    name = _field(1, tag.encode("utf-8"))
    # One Checkpoint message per slice: Checkpoint.value (1) = Value{tag (1), tensor (2) = TensorProto}.
    return [_field(1, name + _field(2, dims + type_field + _field(3, part))) for part in slices]


def write_ckpt(state: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write tensors as a MindSpore ``.ckpt`` (readable by ``mindspore.load_checkpoint``), atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            for tag, tensor in state.items():
                for message in _encode_value(tag, tensor):
                    f.write(message)

    return write_atomic(path, write)


# --- layouts ------------------------------------------------------------------------------------------------------


def normalise_names(state: dict) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip training wrappers and optimizer state; restore ``layers.{i}`` where MindSpore named cells by position."""
    out, dropped = {}, []
    for key, value in state.items():
        key = _WRAPPER_PREFIX.sub("", key)
        if not isinstance(value, torch.Tensor) or key.startswith(_TRAINING_PREFIXES):
            dropped.append(key)
            continue
        # MindSpore 2.x: layers.{i}.blocks.{j} of i >= 1 is "0.blocks.{i}.blocks.{j}", of stage 0 "0.blocks.{j}".
        key = re.sub(r"^0\.blocks\.(\d+)\.(blocks|downsample)\.", r"layers.\1.\2.", key)
        key = re.sub(r"^0\.(blocks|downsample)\.", r"layers.0.\1.", key)
        out[key] = value
    return out, dropped


def is_mindcv(state: dict[str, torch.Tensor]) -> bool:
    return any(k.endswith((".attn.q.weight", ".relative_position_bias.cpb_mlp0.weight")) for k in state)


def detect(state: dict[str, torch.Tensor]) -> bool:
    keys = normalise_names(state)[0]
    return is_mindcv(keys) or any(k.endswith((".gamma", ".beta")) for k in keys)


_MINDCV_RULES = [
    (r"\.attn\.relative_position_bias\.cpb_mlp0\.", ".attn.cpb_mlp.0."),
    (r"\.attn\.relative_position_bias\.cpb_mlp2\.", ".attn.cpb_mlp.2."),
    (r"\.attn\.relative_position_bias\.", ".attn."),
]


def _fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(state)
    for prefix in [k.removesuffix("q.weight") for k in state if k.endswith(".attn.q.weight")]:
        out[prefix + "qkv.weight"] = torch.cat([out.pop(f"{prefix}{n}.weight") for n in "qkv"])
        out.pop(prefix + "k.bias", None)  # MindCV's k has no bias; a zero one from another port means nothing
        if prefix + "q.bias" in out:
            out[prefix + "q_bias"] = out.pop(prefix + "q.bias")
            out[prefix + "v_bias"] = out.pop(prefix + "v.bias")
    return out


def to_swinkit(state: dict[str, torch.Tensor], family: str) -> Converted:
    state, dropped = normalise_names(state)
    state = {re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", k)): v for k, v in state.items()}
    kept, derived = drop_derived(state)
    if is_mindcv(kept):
        kept = _fuse_qkv(rename(kept, _MINDCV_RULES))
    converted = microsoft.to_swinkit(kept, family)
    return Converted(converted.state, dropped + derived + converted.dropped)


# Official-layout LayerNorm parameters: every norm of Swin, and CSWin's stem norm.
_NORM_KEY = re.compile(r"(?:(?:^|\.)norm\d*|^stage1_conv_embed\.2)\.(weight|bias)$")


def from_official(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """Official-layout weights -> MindSpore names: 'mindcv' (Swin V2 only) or 'modelzoo' (official + gamma/beta)."""
    out = {}
    for key, value in state.items():
        key = _NORM_KEY.sub(lambda m: m[0][: -len(m[1])] + ("gamma" if m[1] == "weight" else "beta"), key)
        if layout == "mindcv":
            m = re.match(r"(.*\.attn\.)(qkv\.weight|q_bias|v_bias|cpb_mlp\.([02])\.(weight|bias))$", key)
            if m and m[2] == "qkv.weight":
                for name, part in zip("qkv", value.chunk(3), strict=True):
                    out[f"{m[1]}{name}.weight"] = part
                continue
            if m and m[2] in ("q_bias", "v_bias"):
                key = f"{m[1]}{m[2][0]}.bias"
            elif m:
                key = f"{m[1]}relative_position_bias.cpb_mlp{m[3]}.{m[4]}"
        out[key] = value
    return out


def mindcv_numerics(model: nn.Module) -> list[str]:
    """Switch a Swin V2 model to MindCV's numerics in place: LayerNorm eps 1e-6 and tanh GELU.

    The patch-merging norms keep eps 1e-5, as in MindCV. Returns notes on what changed (empty if nothing did).
    """
    changed = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm) and ".downsample." not in f".{name}." and module.eps != MINDCV_NORM_EPS:
            module.eps = MINDCV_NORM_EPS
            changed.add(f"LayerNorm eps -> {MINDCV_NORM_EPS:g} (patch merging keeps its eps)")
        if isinstance(module, nn.GELU) and module.approximate != MINDCV_GELU:
            module.approximate = MINDCV_GELU
            changed.add(f"GELU -> approximate={MINDCV_GELU!r}")
    return [f"numerics: {note}, as MindCV trained it" for note in sorted(changed)]


def has_mindcv_numerics(model: nn.Module) -> bool:
    """Whether a model's GELU is the tanh approximation and its final norm has MindCV's eps."""
    gelus = [m.approximate for m in model.modules() if isinstance(m, nn.GELU)]
    norm = getattr(model, "norm", None)
    return bool(gelus) and all(g == MINDCV_GELU for g in gelus) and getattr(norm, "eps", None) == MINDCV_NORM_EPS
