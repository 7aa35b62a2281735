"""MindSpore's ``.ckpt`` file, read and written without MindSpore.

The file is a protobuf ``Checkpoint`` (mindspore/train/checkpoint.proto, proto2)::

    message Checkpoint { message Value { required string tag = 1; oneof value { TensorProto tensor = 2;
                                                                         MapTensorProto maptensor = 3; } }
                         repeated Value value = 1; }
    message TensorProto { repeated int64 dims = 1; required string tensor_type = 2; required bytes tensor_content = 3; }

MindSpore writes one serialised ``Checkpoint`` per parameter and concatenates them (protobuf concatenation merges
repeated fields); a parameter over 512 MiB is split into consecutive values with the same tag, whose contents are
joined. A scalar has ``dims == [0]``; strings (``append_dict`` entries) have type ``str`` and UTF-32 content.
``save_checkpoint(..., crc_check=True)`` appends ``b"crc_num"`` and 10 bytes. Encrypted files cannot be read.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..core.atomic import write_atomic
from ..core.errors import CheckpointError

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
MAX_ELEMENTS = 2**48  # no real tensor has this many elements (or a dimension this long); a bigger shape is corruption


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
        if len(content) % 4:
            raise CheckpointError(f"{source}: the string {tag!r} is not UTF-32 ({len(content)} bytes); the file is "
                                  "corrupt")  # fmt: skip
        try:
            return content.decode("utf-32-le").rstrip("\0")
        except UnicodeDecodeError as err:
            raise CheckpointError(f"{source}: the string {tag!r} is not valid UTF-32; the file is corrupt") from err
    if dtype not in _DTYPES:
        raise CheckpointError(f"{source}: parameter {tag!r} has tensor type {dtype!r}, which swinkit cannot read")
    torch_dtype = _DTYPES[dtype]
    itemsize = torch.empty((), dtype=torch_dtype).element_size()
    shape = [] if dims == [0] and len(content) == itemsize else dims
    # Python integers do not overflow: a shape whose size (or strides) cannot exist is refused before any allocation.
    if any(d >= MAX_ELEMENTS for d in shape) or math.prod(max(d, 1) for d in shape) >= MAX_ELEMENTS:
        raise CheckpointError(f"{source}: parameter {tag!r} declares the impossible shape {tuple(shape)}; the file is "
                              "corrupt or not a MindSpore checkpoint")  # fmt: skip
    count = math.prod(shape)
    if count * itemsize != len(content):
        raise CheckpointError(
            f"{source}: parameter {tag!r} of shape {tuple(shape)} ({dtype}) should hold {count * itemsize} bytes but "
            f"holds {len(content)}; the .ckpt file is corrupt or truncated"
        )
    if not count:
        return torch.empty(shape, dtype=torch_dtype)
    return torch.frombuffer(bytearray(content), dtype=torch_dtype).reshape(shape)


def _decode_name(raw: memoryview, source: str) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(
            f"{source}: a parameter name is not UTF-8 ({bytes(raw[:32])!r}); the file is corrupt"
        ) from err


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
                tag = _decode_name(sub_value, source)
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
