"""Hostile and broken inputs of every kind swinkit reads from elsewhere, read in a process with an address-space cap.

``python -m tests.hostile_files OUT_DIR [FAMILY ...] [--scale K]`` writes, for each family, the known hostile inputs
and seeded mutants (``K`` times the usual count) of small valid ones, reads each the way swinkit reads that kind of
input, and prints one JSON object per family (the last line: a JSON list): which hostile inputs were refused, what
escaped other than the family's own errors (nothing, if the readers are sound), whether any payload ran code (each
writes ``OUT_DIR/RAN`` if it runs), and the process's peak resident memory. ``tests/test_hostile_files.py`` runs it
in a subprocess, so a reader that allocates without bound cannot take the test machine down.

The families: ``checkpoint`` (.pth/.pt/.bin, .safetensors, .ckpt, .pdparams files), ``dcp`` (sharded checkpoint
directories), ``shard`` (webdataset shard directories), ``hf`` (Hugging Face datasets), ``yaml`` (configs, and the
config in a checkpoint's metadata), ``download`` (answers of an HTTP server on the loopback address), ``coco``
(COCO annotation files and their images, read and every image loaded as a detection run loads it).
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import io
import json
import os
import pickle
import random
import resource
import shutil
import struct
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from swinkit.checkpoints import mindspore_ckpt
from swinkit.checkpoints.io import read_file
from swinkit.checkpoints.pdparams import write_pdparams
from swinkit.core.errors import CheckpointError, ConfigError, DataError, DownloadError

ADDRESS_SPACE_CAP = 6 * 2**30  # torch maps about 3 GiB of address space, pyarrow and datasets another
MARKER = "RAN"


class RunsCode:
    """Unpickles into ``os.system(command)``: what a payload runs if anything unpickles it with code."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _touch(out: Path) -> str:
    return f"touch {out / MARKER}"


@dataclass
class Family:
    """Inputs of one kind: ``hostile(out)`` names the known hostile inputs, ``valid(out)`` makes valid ones that
    must read, ``mutant(valid, out, rng)`` makes a seeded damaged copy of one, and ``read`` reads an input as swinkit
    would; ``allowed`` is what it may raise."""

    name: str
    allowed: tuple[type[BaseException], ...]
    hostile: Callable[[Path], dict[str, Path]]
    valid: Callable[[Path], list[Path]]
    mutant: Callable[[Path, Path, random.Random, int], Path]
    read: Callable[[Path], object]
    mutants: int
    setup: Callable[[Path], None] = field(default=lambda out: None)


def mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:  # flip a few bytes
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # truncate
        del data[rng.randrange(len(data)) :]
    elif kind == 2:  # cut a chunk out
        start = rng.randrange(len(data))
        del data[start : start + rng.randint(1, 64)]
    elif kind == 3:  # insert garbage
        start = rng.randrange(len(data))
        data[start:start] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:  # overwrite an 8-byte word with a large little-endian integer (lengths, sizes, offsets)
        start = rng.randrange(max(len(data) - 8, 1))
        data[start : start + 8] = struct.pack("<Q", rng.choice([2**31, 2**32 + 7, 2**40, 2**63 - 1, 2**64 - 1]))
    return bytes(data)


def _mutated_file(valid: Path, out: Path, rng: random.Random, index: int) -> Path:
    mutant = out / f"mutant{index}{valid.suffix}"
    mutant.write_bytes(mutate(valid.read_bytes(), rng))
    return mutant


def _mutated_dir(valid: Path, out: Path, rng: random.Random, index: int, pick: Callable[[list[Path]], Path]) -> Path:
    """A copy of directory ``valid`` with one file (``pick`` of its files) mutated."""
    import shutil

    mutant = out / f"mutant{index}"
    shutil.copytree(valid, mutant, symlinks=True)
    files = sorted(p for p in mutant.rglob("*") if p.is_file() and not p.is_symlink())
    target = pick(files) if rng.random() < 0.8 else rng.choice(files)
    target.write_bytes(mutate(target.read_bytes(), rng))
    return mutant


def _counter():
    count = iter(range(10**9))
    return lambda: next(count)


# --- checkpoint files -----------------------------------------------------------------------------------------------
def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"layers.0.weight": torch.randn(4, 6, generator=g), "layers.0.bias": torch.randn(4, generator=g),
            "head.fc.weight": torch.randn(3, 4, generator=g).half(), "steps": torch.arange(5)}  # fmt: skip


def _ckpt_value(tag: bytes, dims: list[int], dtype: bytes, content: bytes) -> bytes:
    field_, varint = mindspore_ckpt._field, mindspore_ckpt._varint
    tensor = b"".join(varint(1 << 3) + varint(d) for d in dims) + field_(2, dtype) + field_(3, content)
    return field_(1, field_(1, tag) + field_(2, tensor))


class _ShortArray:
    """Pickles as a numpy array declaring ``shape`` with only four bytes of data."""

    def __init__(self, shape: tuple[int, ...], dtype: str = "float32", raw: bytes = b"\0" * 4) -> None:
        self.shape, self.dtype, self.raw = shape, dtype, raw

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return _reconstruct, (np.ndarray, (0,), b"b"), (1, self.shape, np.dtype(self.dtype), False, self.raw)


def checkpoint_hostile(out: Path) -> dict[str, Path]:
    """The files issue 12 lists, each of which once escaped or took gigabytes, and payloads that run code."""
    files = {}
    for suffix in (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".pdparams"):
        files[f"empty{suffix}"] = out / f"empty{suffix}"
        files[f"empty{suffix}"].write_bytes(b"")
    ckpts = {
        "dims_2e32": _ckpt_value(b"w", [2**32, 2**32], b"Float32", b"\0" * 4),
        "dims_zero_huge": _ckpt_value(b"w", [0, 2**40, 2**40], b"Float32", b""),
        "dims_max": _ckpt_value(b"w", [2**64 - 1, 2**64 - 1], b"Float32", b"\0" * 4),
        "name_not_utf8": _ckpt_value(b"\xff\xfe\xfa", [1], b"Float32", b"\0" * 4),
        "short_str": _ckpt_value(b"arch", [0], b"str", b"ab"),
    }
    for name, data in ckpts.items():
        files[f"{name}.ckpt"] = out / f"{name}.ckpt"
        files[f"{name}.ckpt"].write_bytes(data)
    pdparams = {
        "object_array": {"w": np.array([1, "x"], dtype=object)},
        "void_array": {"w": np.zeros(3, dtype="V8")},
        "bytes_array": {"w": np.array([b"ab", b"cd"], dtype="S2")},
        "declares_1p7gb": {"w": _ShortArray((20000, 60000))},
        "runs_code": {"w": RunsCode(_touch(out))},
    }
    for name, obj in pdparams.items():
        files[f"{name}.pdparams"] = out / f"{name}.pdparams"
        files[f"{name}.pdparams"].write_bytes(pickle.dumps(obj, protocol=4))
    # A zip that torch would inflate: a 1 GiB record of zeros, deflated to about 1 MB.
    bomb = files["zip_bomb.pth"] = out / "zip_bomb.pth"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as record:
            chunk = bytes(2**20)
            for _ in range(1024):
                record.write(chunk)
        archive.writestr("archive/data.pkl", pickle.dumps({"w": 0}))
    torch.save({"w": RunsCode(_touch(out))}, files.setdefault("runs_code.pth", out / "runs_code.pth"))
    torch.save({"w": RunsCode(_touch(out))}, files.setdefault("runs_code_legacy.pt", out / "runs_code_legacy.pt"),
               _use_new_zipfile_serialization=False)  # fmt: skip
    return files


def checkpoint_valid(out: Path) -> list[Path]:
    state = _state()
    files = [out / "valid.safetensors", out / "valid.pth", out / "valid_legacy.pth", out / "valid.ckpt",
             out / "valid.pdparams"]  # fmt: skip
    save_file(state, files[0])
    torch.save(state, files[1])
    torch.save(state, files[2], _use_new_zipfile_serialization=False)
    mindspore_ckpt.write_ckpt(state, files[3])
    write_pdparams(state, files[4])
    return files


# --- sharded checkpoints ------------------------------------------------------------------------------------------
def _dcp_checkpoint(directory: Path, optim_lr: object = 0.1) -> Path:
    """A sharded checkpoint directory (``directory/dcp``) as a run writes it, with checksums."""
    import torch.distributed.checkpoint as dcp

    from swinkit.checkpoints.sharded import write_checksums

    state = {"model": _state(), "optim": {"lr": optim_lr, "state.0.exp_avg": torch.ones(4, 6)}}
    dcp.save(state, checkpoint_id=directory / "dcp", no_dist=True)
    write_checksums(directory / "dcp", write=True)
    return directory


def dcp_read(directory: Path) -> None:
    from swinkit.checkpoints.sharded import load_sharded, read_metadata
    from swinkit.engine.checkpoint import consolidated_state

    consolidated_state(directory)
    entries = read_metadata(directory / "dcp").state_dict_metadata
    optim = {"lr": 0.0} if "optim.lr" in entries else {}
    load_sharded({"optim": {**optim, "state.0.exp_avg": torch.zeros(4, 6)}}, directory / "dcp", no_dist=True)


def dcp_hostile(out: Path) -> dict[str, Path]:
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex

    from swinkit.checkpoints.sharded import read_metadata, write_checksums

    made = {}

    def variant(name: str, edit: Callable[[object, Path], object]) -> None:
        directory = _dcp_checkpoint(out / name)
        metadata = read_metadata(directory / "dcp")
        replaced = edit(metadata, directory / "dcp")
        (directory / "dcp" / ".metadata").write_bytes(pickle.dumps(metadata if replaced is None else replaced))
        write_checksums(directory / "dcp", write=True)  # as a careful attacker would: the sums agree
        made[name] = directory

    def huge(metadata, _):
        entry = metadata.state_dict_metadata["model.layers.0.weight"]
        info = metadata.storage_data.pop(MetadataIndex("model.layers.0.weight", entry.chunks[0].offsets))
        entry.size = torch.Size([2**20, 2**20])
        entry.chunks = [ChunkStorageMetadata(torch.Size([0, 0]), entry.size)]
        metadata.storage_data[MetadataIndex("model.layers.0.weight", entry.chunks[0].offsets)] = info

    def pointing(path: str):
        def edit(metadata, _):
            for info in metadata.storage_data.values():
                info.relative_path = path

        return edit

    def fifo(metadata, shards: Path):
        os.mkfifo(shards / "pipe.distcp")
        pointing("pipe.distcp")(metadata, shards)

    def link_out(metadata, shards: Path):
        shard = next(shards.glob("*.distcp"))
        (out / "outside.distcp").write_bytes(shard.read_bytes())
        shard.unlink()
        shard.symlink_to(out / "outside.distcp")

    def transforms(metadata, _):
        for info in metadata.storage_data.values():
            info.transform_descriptors = ["zstd"]

    variant("metadata_runs_code", lambda metadata, _: RunsCode(_touch(out)))
    variant("metadata_field_runs_code", lambda metadata, _: setattr(metadata, "planner_data", RunsCode(_touch(out))))
    variant("tensor_of_4tb", huge)
    variant("path_escape", pointing("../../../../../../etc/passwd"))
    variant("absolute_path", pointing("/etc/passwd"))
    variant("fifo_shard", fifo)
    variant("symlink_out", link_out)
    variant("transform_descriptors", transforms)
    made["optim_entry_runs_code"] = _dcp_checkpoint(out / "optim_entry_runs_code", RunsCode(_touch(out)))
    return made


def dcp_mutant(valid: Path, out: Path, rng: random.Random, index: int) -> Path:
    mutant = _mutated_dir(valid, out, rng, index, lambda files: rng.choice([f for f in files
                                                                             if f.name != "SHA256SUMS"]))
    if rng.random() < 0.5:  # without the sums, a mutated shard reaches the entry readers
        (mutant / "dcp" / "SHA256SUMS").unlink()
    return mutant


# --- shards -------------------------------------------------------------------------------------------------------
def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]], **options) -> Path:
    with tarfile.open(path, "w", **options) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _shard_dir(directory: Path, members: list[tuple[str, bytes]] | None = None, info: dict | None = None,
               samples: int = 4) -> Path:  # fmt: skip
    directory.mkdir(parents=True)
    members = members if members is not None else [
        item for i in range(samples) for item in ((f"{i:09d}.png", _png(i * 30)), (f"{i:09d}.cls", str(i % 2).encode()))
    ]  # fmt: skip
    _tar(directory / "train-000000.tar", members)
    count = len({name.partition(".")[0] for name, _ in members})
    index = info or {"format": "swinkit.shards/1", "classes": ["a", "b"],
                     "splits": {"train": {"filenames": ["train-000000.tar"], "shard_lengths": [count]}}}  # fmt: skip
    (directory / "_info.json").write_text(json.dumps(index))
    return directory


def shard_read(directory: Path, split: str = "train") -> None:
    from swinkit.data import open_shards
    from swinkit.data.shards import stream_loader

    def transform(img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy())

    split_name = (directory / "SPLIT").read_text() if (directory / "SPLIT").is_file() else split
    shards = open_shards(str(directory), split_name)
    for train in (True, False):
        for _ in stream_loader(shards, transform, batch_size=2, train=train):
            pass


def shard_hostile(out: Path) -> dict[str, Path]:
    made = {}
    good = [(f"{i:09d}.png", _png(i)) for i in range(2)]
    labelled = [good[0], ("000000000.cls", b"0"), good[1], ("000000001.cls", b"1")]

    # A GNU sparse member (PAX 0.1): 512 stored bytes that read as 4 GiB.
    made["sparse_member"] = _shard_dir(out / "sparse_member", labelled[:2])
    with tarfile.open(made["sparse_member"] / "train-000000.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("000000000.png")
        info.size = 512
        info.pax_headers = {"GNU.sparse.map": "0,512", "GNU.sparse.size": str(4 << 30)}
        tar.addfile(info, io.BytesIO(bytes(512)))
        label = tarfile.TarInfo("000000000.cls")
        label.size = 1
        tar.addfile(label, io.BytesIO(b"0"))
    gz = made["gzip"] = _shard_dir(out / "gzip", labelled)
    (gz / "train-000000.tar").write_bytes(gzip.compress((gz / "train-000000.tar").read_bytes()))
    fifo = made["fifo_shard"] = _shard_dir(out / "fifo_shard", labelled)
    (fifo / "train-000000.tar").unlink()
    os.mkfifo(fifo / "train-000000.tar")
    link = made["symlink_out"] = _shard_dir(out / "symlink_out", labelled)
    (link / "train-000000.tar").rename(out / "outside.tar")
    (link / "train-000000.tar").symlink_to(out / "outside.tar")
    index = {"format": "swinkit.shards/1", "splits": {"train": {"filenames": ["train-000000.tar"],
                                                                "shard_lengths": [2]}}}  # fmt: skip
    made["classes_200k"] = _shard_dir(out / "classes_200k", labelled, {**index, "classes": ["c"] * 200_000})
    deep = made["deep_index"] = _shard_dir(out / "deep_index", labelled)
    (deep / "_info.json").write_text("[" * 200_000)
    brace = made["brace_1e9"] = _shard_dir(out / "brace_1e9", labelled)
    (brace / "SPLIT").write_text("train-{000000000..999999999}.tar")
    for name, label in (("cls_out_of_range", b"7"), ("cls_negative", b"-1"), ("cls_20_digits", b"9" * 20),
                        ("cls_not_a_number", b"\xff\xfe"), ("cls_huge_member", b"1" * 10_000)):  # fmt: skip
        made[name] = _shard_dir(out / name, [good[0], ("000000000.cls", label), *labelled[2:]])
    made["key_5000_digits"] = _shard_dir(out / "key_5000_digits", [("9" * 5000 + ".png", good[0][1]),
                                                                    ("9" * 5000 + ".cls", b"0"), *labelled[2:]])
    made["key_superscript"] = _shard_dir(out / "key_superscript", [("\u00b2.png", good[0][1]), ("\u00b2.cls", b"0"),
                                                                   *labelled[2:]])  # fmt: skip
    made["pickle_member"] = _shard_dir(out / "pickle_member", [*labelled[:2], ("000000000.pyd",
                                       pickle.dumps(RunsCode(_touch(out)))), *labelled[2:]])  # fmt: skip
    huge = tarfile.TarInfo("000000000.png")
    huge.size = 1 << 40  # a header that claims a terabyte, with nothing behind it
    made["member_of_1tb"] = _shard_dir(out / "member_of_1tb", labelled)
    (made["member_of_1tb"] / "train-000000.tar").write_bytes(huge.tobuf())
    made["no_index"] = out / "no_index"
    made["no_index"].mkdir()
    return made


def shard_mutant(valid: Path, out: Path, rng: random.Random, index: int) -> Path:
    return _mutated_dir(valid, out, rng, index, lambda files: next(f for f in files if f.suffix == ".tar"))


# --- Hugging Face datasets ----------------------------------------------------------------------------------------
def _hf_dataset(directory: Path, images: list, labels: list, image_feature=None, label_feature=None) -> Path:
    import datasets

    features = datasets.Features({"image": image_feature or datasets.Image(),
                                  "label": label_feature or datasets.Value("int64")})  # fmt: skip
    ds = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(directory))
    return directory


def _declare(directory: Path, column: str, feature: dict) -> None:
    """Declare a column's feature after the fact, as a hand-made dataset can (datasets checks a ClassLabel's range
    and reads an Image's file when it writes one)."""
    info_path = directory / "train" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["features"][column] = feature
    info_path.write_text(json.dumps(info))


def _rows_naming(directory: Path, path: str) -> Path:
    """A dataset whose one image row names ``path`` and stores no bytes."""
    import datasets

    stored = datasets.Features({"bytes": datasets.Value("binary"), "path": datasets.Value("string")})
    _hf_dataset(directory, [{"bytes": None, "path": path}], [0], image_feature=stored)
    _declare(directory, "image", {"_type": "Image"})
    return directory


def hf_read(directory: Path) -> None:
    from swinkit.data.datasets import transform_sample
    from swinkit.data.hf import HFImages

    images = HFImages(str(directory), "train")
    for i in range(len(images)):
        _, _, unreadable = transform_sample(lambda i=i: images.load(i), images.name(i), images.target(i),
                                            lambda x: x, None)  # fmt: skip
        if unreadable:  # a run skips it and counts it; here, where every row matters, it is refused
            raise DataError(unreadable)


def hf_hostile(out: Path) -> dict[str, Path]:
    import datasets

    made = {}
    image = {"bytes": _png(3), "path": "a.png"}
    for name, path in (("path_dev_zero", "/dev/zero"), ("path_etc_passwd", "/etc/passwd"),
                       ("path_dotdot", "../../../../etc/hostname")):  # fmt: skip
        made[name] = _rows_naming(out / name, path)
    made["label_1e9"] = _hf_dataset(out / "label_1e9", [image], [10**9])
    made["label_negative"] = _hf_dataset(out / "label_negative", [image], [-1])
    for name, labels, feature in (("label_string", ["3"], datasets.Value("string")),
                                  ("label_none", [None], datasets.Value("int64")),
                                  ("label_nan", [float("nan")], datasets.Value("float64")),
                                  ("label_fraction", [1.5], datasets.Value("float64")),
                                  ("label_list", [[1, 2]], datasets.Sequence(datasets.Value("int64"))),
                                  ("image_int", None, None)):  # fmt: skip
        if name == "image_int":
            made[name] = _hf_dataset(out / name, [7], [0], image_feature=datasets.Value("int64"))
        else:
            made[name] = _hf_dataset(out / name, [image], labels, label_feature=feature)
    made["label_past_class_label"] = _hf_dataset(out / "label_past_class_label", [image], [5])
    _declare(made["label_past_class_label"], "label", {"names": ["a", "b"], "_type": "ClassLabel"})
    made["empty_split"] = _hf_dataset(out / "empty_split", [], [])
    script = made["loading_script"] = out / "loading_script"
    script.mkdir()
    (script / "loading_script.py").write_text(f"import os\nos.system({_touch(out)!r})\n")
    return made


def hf_mutant(valid: Path, out: Path, rng: random.Random, index: int) -> Path:
    # The JSON that describes the dataset; the Arrow data itself is memory-mapped and trusted by pyarrow.
    return _mutated_dir(valid, out, rng, index, lambda files: rng.choice([f for f in files if f.suffix == ".json"]))


# --- YAML -----------------------------------------------------------------------------------------------------------
ALIAS_BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(8)
] + ["model: *i", ""])  # 10^9 values once expanded, in about 700 bytes


def yaml_read(path: Path) -> None:
    from swinkit.engine.checkpoint import stored_config
    from swinkit.engine.config import load_config

    if path.suffix == ".safetensors":
        stored_config(path)
    else:
        load_config(str(path))


def yaml_hostile(out: Path) -> dict[str, Path]:
    texts = {
        "alias_bomb": ALIAS_BOMB,
        "self_alias": "a: &a [*a]\n",
        "deep_flow": "[" * 100_000,
        "deep_block": "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 150)),
        "python_tag": f"model:\n  name: !!python/object/apply:os.system [{_touch(out)!r}]\n",
        "python_name": "model:\n  name: !!python/name:os.system\n",
        "huge_int": "train:\n  seed: " + "9" * 5000 + "\n",
        "flat_amp_level": "arch: swinv2_tiny_window8_256\namp_level: O9\n",
        "flat_scheduler_list": "arch: swinv2_tiny_window8_256\nlr_scheduler: [a]\n",
        "list_key": "? [a, b]\n: 1\n",
        "name_nul": "name: \"a\\0b\"\n",
        "megabytes": "name: " + "x" * (2 << 20) + "\n",
    }
    made = {}
    for name, text in texts.items():
        made[name] = out / f"{name}.yaml"
        made[name].write_text(text)
    made["not_utf8"] = out / "not_utf8.yaml"
    made["not_utf8"].write_bytes(b"model:\n  name: \xff\xfe\n")
    made["bomb_in_metadata"] = out / "bomb_in_metadata.safetensors"
    save_file({"w": torch.zeros(1)}, made["bomb_in_metadata"], metadata={"config": ALIAS_BOMB})
    return made


FLAT_CONFIG = """# a seed-style (MindSpore ModelZoo) config
arch: cswin_64_24322_small_224
data_url: ./data/imagenet
set: ImageNet
num_classes: 1000
auto_augment: rand-m9-mstd0.5-inc1
crop_ratio: 0.9
lr_scheduler: cosine_lr
base_lr: 0.001
warmup_length: 20
cool_length: 80
cool_lr: 0.00001
amp_level: O1
beta: [ 0.9, 0.999 ]
keep_bn_fp32: True
epochs: 300
"""


def yaml_valid(out: Path) -> list[Path]:
    from swinkit.engine.config import CONFIG_DIR, load_config, to_yaml

    flat = out / "flat.yaml"
    flat.write_text(FLAT_CONFIG)
    stored = out / "stored.safetensors"
    save_file({"w": torch.zeros(1)}, stored, metadata={"config": to_yaml(load_config("quickstart"))})
    shipped = [CONFIG_DIR / f"{name}.yaml" for name in ("quickstart", "swinv2_tiny_window8_256", "cswin_small_224")]
    return [*shipped, flat, stored]


# --- downloads ------------------------------------------------------------------------------------------------------
class _Answers(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (path -> bytes, or a function that writes the whole answer)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        answer = self.server.files.get(self.path)
        if callable(answer):
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
                answer(self)
            return
        if answer is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def _answer(status: int, headers: list[tuple[str, str]], body: bytes = b"", repeat: int = 1, drip: float = 0.0):
    def write(handler) -> None:
        handler.send_response(status)
        for key, value in headers:
            handler.send_header(key, value)
        handler.end_headers()
        for _ in range(repeat):
            handler.wfile.write(body)
            handler.wfile.flush()
            time.sleep(drip)

    return write


class _Server:
    url = ""
    files: dict = {}


def download_setup(out: Path) -> None:
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    server.daemon_threads = True
    server.files = _Server.files = {}
    _Server.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ.update({"SWINKIT_HOME": str(out / "home"), "SWINKIT_DOWNLOAD_TIMEOUT": "1",
                       "SWINKIT_DOWNLOAD_MAX_BYTES": str(8 << 20), "SWINKIT_DOWNLOAD_DEADLINE": "20"})  # fmt: skip
    for name in ("SWINKIT_OFFLINE", "HF_HUB_OFFLINE", "SWINKIT_GITHUB_MIRROR"):
        os.environ.pop(name, None)


def _served(out: Path, name: str, answer) -> Path:
    """A file ``out/name.url`` that holds the URL the server answers with ``answer`` at ``/name``."""
    suffix = Path(name).suffix
    _Server.files[f"/{name}"] = answer
    path = out / f"{name}.url{suffix}"
    path.write_text(f"{_Server.url}/{name}")
    return path


def download_read(path: Path) -> None:
    from swinkit.hub.download import fetch_url

    read_file(fetch_url(path.read_text(), progress=False))


def download_hostile(out: Path) -> dict[str, Path]:
    buffer = io.BytesIO()
    torch.save({"w": RunsCode(_touch(out))}, buffer, _use_new_zipfile_serialization=False)
    zip_payload = io.BytesIO()
    torch.save({"w": RunsCode(_touch(out))}, zip_payload)

    def redirect_loop(handler) -> None:
        handler.send_response(302)
        handler.send_header("Location", handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    answers = {
        "drip.pth": _answer(200, [], b"x", repeat=40, drip=0.1),
        "endless.pth": _answer(200, [], bytes(1 << 20), repeat=64),
        "html.safetensors": _answer(200, [("Content-Type", "text/html")], b"<!DOCTYPE html><html>sign in</html>"),
        "gzip.pth": _answer(200, [("Content-Encoding", "gzip")], gzip.compress(_good_pth())),
        "empty.pth": _answer(200, [("Content-Length", "0")]),
        "bad_length.pth": _answer(200, [("Content-Length", "abc")], _good_pth()),
        "two_lengths.pth": _answer(200, [("Content-Length", str(len(_good_pth()))), ("Content-Length", "7")],
                                   _good_pth()),
        "longer_than_announced.pth": _answer(200, [("Content-Length", "10")], _good_pth()),
        "cut_short.pth": _answer(200, [], _good_pth()[:300]),
        "redirect_loop.pth": redirect_loop,
        "not_found.pth": None,
        "legacy_runs_code.pth": buffer.getvalue(),
        "zip_runs_code.pth": zip_payload.getvalue(),
    }
    return {name: _served(out, name, answer) for name, answer in answers.items()}


def _good_pth() -> bytes:
    buffer = io.BytesIO()
    torch.save(_state(), buffer)
    return buffer.getvalue()


def download_valid(out: Path) -> list[Path]:
    st = out / "st.safetensors"
    save_file(_state(), st)
    return [_served(out, "valid.pth", _good_pth()), _served(out, "valid.safetensors", st.read_bytes())]


def download_mutant(valid: Path, out: Path, rng: random.Random, index: int) -> Path:
    suffix = Path(valid.read_text()).suffix
    body = _Server.files["/" + valid.read_text().rsplit("/", 1)[1]]
    return _served(out, f"mutant{index}{suffix}", mutate(body, rng))


# --- COCO annotation files ----------------------------------------------------------------------------------------
def _coco_dir(directory: Path, edit: Callable[[dict], None] | None = None) -> Path:
    """A COCO folder of two 8x8 images (split ``val``), one polygon and one RLE annotation, edited by ``edit``."""
    (directory / "val").mkdir(parents=True)
    (directory / "annotations").mkdir()
    for i in range(2):
        (directory / "val" / f"{i}.png").write_bytes(_png(60 * i))
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 8, "height": 8} for i in range(2)],
        "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 1, "bbox": [1, 1, 4, 4], "iscrowd": 0, "area": 16,
             "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 8, 8], "iscrowd": 1, "area": 64,
             "segmentation": {"size": [8, 8], "counts": [10, 44, 10]}},
        ],
    }  # fmt: skip
    if edit is not None:
        edit(data)
    (directory / "annotations" / "instances_val.json").write_text(json.dumps(data))
    return directory


def coco_read(directory: Path) -> None:
    from swinkit.data.coco import CocoDetection
    from swinkit.data.detection import DetectionPipeline, DetectionSamples

    dataset = CocoDetection(directory, "val")
    samples = DetectionSamples(dataset, DetectionPipeline(train=True, shorter_sides=(16,), crop_policy=False))
    for i in range(len(dataset)):
        samples[(i, i)]  # an unreadable image comes back as (None, None, reason): skipped and counted


def _edit(path: list, value) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def coco_hostile(out: Path) -> dict[str, Path]:
    made = {}
    ann = ["annotations", 0]
    cases = {
        "polygon_far_away": (ann + ["segmentation"], [[1, 1, 5, 1, 1e9, 1e9]]),  # rasterized point by point
        "polygon_huge_count": (ann + ["segmentation"], [[1, 1] * 3 + [2**62, 3]]),
        "rle_overflowing_counts": (["annotations", 1, "segmentation", "counts"], [10, 2**40, 10]),
        "rle_string_overflowing": (["annotations", 1, "segmentation", "counts"], "0" * 10 + "~~~~~~~~~~~~"),
        "rle_of_a_huge_image": (["annotations", 1, "segmentation"], {"size": [10**6, 10**6], "counts": [10**12]}),
        "entry_of_a_huge_image": (["images", 0], {"id": 0, "file_name": "0.png", "width": 10**6, "height": 10**6}),
        "file_outside": (["images", 0, "file_name"], "../../../../etc/passwd"),
        "absolute_file": (["images", 0, "file_name"], "/etc/passwd"),
        "id_a_list": (ann + ["image_id"], [0]),
        "category_a_dict": (ann + ["category_id"], {"a": 1}),
        "box_of_strings": (ann + ["bbox"], ["1", "1", "4", "4"]),
        "box_nan": (ann + ["bbox"], [float("nan"), 1, 4, 4]),
        "width_negative": (["images", 1, "width"], -8),
        "duplicate_image": (["images", 1, "id"], 0),
        "segmentation_a_string": (ann + ["segmentation"], "polygon"),
        "iscrowd_a_list": (ann + ["iscrowd"], [1]),
    }  # fmt: skip
    for name, (path, value) in cases.items():
        made[name] = _coco_dir(out / name, _edit(path, value))
    made["not_json"] = _coco_dir(out / "not_json")
    (made["not_json"] / "annotations" / "instances_val.json").write_bytes(b"\x80PK\x03\x04 not json")
    made["deep_json"] = _coco_dir(out / "deep_json")
    (made["deep_json"] / "annotations" / "instances_val.json").write_text("[" * 100_000 + "]" * 100_000)
    made["fifo_image"] = _coco_dir(out / "fifo_image")
    (made["fifo_image"] / "val" / "0.png").unlink()
    os.mkfifo(made["fifo_image"] / "val" / "0.png")
    made["no_file"] = out / "no_file"
    made["no_file"].mkdir()
    return made


def coco_mutant(valid: Path, out: Path, rng: random.Random, index: int) -> Path:
    """The valid folder with one value of its annotation file replaced by a hostile one (or its bytes mutated)."""
    data = json.loads((valid / "annotations" / "instances_val.json").read_text())
    if rng.random() < 0.2:
        target = shutil.copytree(valid, out / f"mutant{index}")
        file = target / "annotations" / "instances_val.json"
        file.write_bytes(mutate(file.read_bytes(), rng))
        return target
    paths = []

    def walk(node, path):
        paths.append(path)
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            walk(child, [*path, key])

    walk(data, [])
    path = rng.choice(paths[1:])
    value = rng.choice([None, -1, 0, 1.5, 2**63, -(2**63), 1e308, float("inf"), "x", "", [], {}, [0] * 7, True,
                        {"size": [8, 8], "counts": "x"}, [[0, 0, 8, 0, 8, 8]], 10**9])  # fmt: skip
    return _coco_dir(out / f"mutant{index}", _edit(path, value))


# --- the run ----------------------------------------------------------------------------------------------------------
FAMILIES = [
    Family("checkpoint", (CheckpointError,), checkpoint_hostile, checkpoint_valid, _mutated_file, read_file, 100),
    Family("dcp", (CheckpointError,), dcp_hostile, lambda out: [_dcp_checkpoint(out / "valid")], dcp_mutant,
           dcp_read, 300),
    Family("shard", (DataError,), shard_hostile, lambda out: [_shard_dir(out / "valid")], shard_mutant, shard_read,
           300),
    Family("hf", (DataError,), hf_hostile, lambda out: [_hf_dataset(out / "valid", [{"bytes": _png(i), "path": None}
           for i in range(3)], [0, 1, 0])], hf_mutant, hf_read, 100),
    Family("yaml", (ConfigError, CheckpointError), yaml_hostile, yaml_valid, _mutated_file, yaml_read, 60),
    Family("download", (DownloadError, CheckpointError, ConfigError), download_hostile, download_valid,
           download_mutant, download_read, 60, setup=download_setup),
    Family("coco", (DataError,), coco_hostile, lambda out: [_coco_dir(out / "valid")], coco_mutant, coco_read, 200),
]  # fmt: skip


def _peak_rss_mb() -> float:
    """This process's resident high-water mark. Not ``getrusage``'s ``ru_maxrss``: Linux carries that over from the
    parent across fork and exec, so under a large test runner it reports the runner's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _outcome(family: Family, item: Path) -> str | None:
    """None if the input was read or refused with one of the family's errors, else what escaped."""
    try:
        family.read(item)
    except family.allowed:
        return None
    except Exception as err:  # an escape: what the test reports
        return f"{item.name}: {type(err).__name__}: {str(err)[:300]}"
    return None


def run_family(family: Family, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    family.setup(out)
    start = time.perf_counter()
    refused, accepted, escaped = [], [], []
    for name, item in family.hostile(out).items():
        try:
            family.read(item)
            accepted.append(name)
        except family.allowed:
            refused.append(name)
        except Exception as err:  # an escape
            escaped.append(f"{name}: {type(err).__name__}: {str(err)[:300]}")
    valid, mutants = [], 0
    rng = random.Random(f"swinkit-hostile:{family.name}")
    next_index = _counter()
    for item in family.valid(out):
        family.read(item)  # a valid input must read: an error here fails the whole run, as it should
        valid.append(item.name)
        for _ in range(family.mutants):
            mutants += 1
            problem = _outcome(family, family.mutant(item, out, rng, next_index()))
            if problem:
                escaped.append(f"mutant of {item.name}: {problem}")
    return {"family": family.name, "refused": sorted(refused), "accepted": sorted(accepted), "escaped": escaped,
            "valid": valid, "mutants": mutants, "ran_code": (out / MARKER).exists() or (out.parent / MARKER).exists(),
            "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def main(out: Path, names: list[str], scale: int = 1) -> list[dict]:
    """Run the families ``names`` (all when empty), with ``scale`` times their mutants."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))
    chosen = [replace(f, mutants=f.mutants * scale) for f in FAMILIES if not names or f.name in names]
    results = [run_family(f, out / f.name) for f in chosen]
    peak = _peak_rss_mb()
    return [{**r, "peak_rss_mb": peak} for r in results]


if __name__ == "__main__":
    args = sys.argv[2:]
    scale = int(args.pop(args.index("--scale") + 1)) if "--scale" in args else 1
    print(json.dumps(main(Path(sys.argv[1]), [a for a in args if a != "--scale"], scale)))
