"""Sharded datasets: an ImageFolder (or a segmentation folder) written as webdataset tar shards with an index, read
back as an exact stream.

Layout (timm's ``wds`` reader reads it as well): ``DIR/_info.json`` and ``DIR/<split>-NNNNNN.tar``. A sample is
``<key>.<ext>``, the image file's bytes as they were (``.jpg``, ``.png``, ...), and ``<key>.cls``, its class index
as text, or for a segmentation set (``"task": "segmentation"`` in the index, written from a folder of
``images/<split>`` and ``annotations/<split>``) ``<key>.seg.png``, its label map's bytes as they were, or for a
detection set (``"task": "detection"``, written from COCO's layout: ``annotations/instances_<split>.json`` beside
``<split>/``) ``<key>.det.json``, the image's COCO entry and its annotations (``{"image": ..., "annotations": [...]}``,
those ``swinkit.data.coco`` keeps), with the categories' ids in the index (``category_ids``).
The key is the sample's position in the folder's sorted file list (nine digits), so a shard run draws the
same augmentation as the folder run for every sample. ``_info.json`` is timm's index (per split: ``filenames``,
``shard_lengths``, ``num_samples``) plus the class names; it is written last, so a directory with an index is
complete.

Reading, for ``P`` processes with ``W`` loader workers each (``W`` = 1 without workers): each epoch deals the shards
(in an order drawn from the seed and the epoch when shuffling) round-robin to the ``P x W`` streams; each stream
reads its shards in turn through a shuffle buffer, and makes whole batches of its own. A process takes
``train_size // P // batch`` batches per epoch, as from a folder, with batch ``k`` from its stream ``k % W``, so
every sample is seen exactly once when the shards split evenly; otherwise a stream with too few samples reads its
shards again and one with too many leaves the rest, and the loader says how many samples that drops or repeats. A
resumed run skips the batches it had taken, stream by stream, before decoding, and goes on at the same sample (with
the same ``P`` and ``W``). Evaluation reads every sample once over all streams (whole shards per stream, the last
batch of each stream short), so its counts summed over processes are exact.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..core import remote
from ..core.atomic import write_dir
from ..core.errors import ConfigError, DataError, DataLayoutError, MissingExtraError, shown
from .coco import CocoDetection
from .datasets import MAX_CLASSES, MAX_IMAGE_BYTES, decode_image, imagenet_folders, open_regular, transform_sample
from .label_maps import SegmentationFolder, folder_layout
from .loader import Loader, StreamFailure, collate, sample_seed

log = logging.getLogger(__name__)

INDEX_FILE = "_info.json"
FORMAT = "swinkit.shards/1"
IMAGE_KEYS = ("jpg", "png", "webp", "bmp", "ppm", "pgm", "tif", "tiff", "gif")
MAX_INDEX_BYTES = 32 << 20  # ImageNet-22k's 14 million samples take an index of a few hundred kilobytes
MAX_SAMPLE_BYTES = MAX_IMAGE_BYTES  # the members of one sample that swinkit reads, together
MAX_LABEL_BYTES = 32  # a .cls member: a class index as text
SEGMENTATION_KEY = "seg.png"  # a sample's label map (webdataset's name for a segmentation mask)
DETECTION_KEY = "det.json"  # a sample's COCO entry and annotations
TASKS = ("classification", "segmentation", "detection")
MAX_PATTERN_NAMES = 100_000  # a brace pattern that names more shards than this (and the index) is not expanded
COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


@dataclass(frozen=True)
class ShardSplit:
    """One split of a shard directory: its shard files (paths or URLs), their sample counts and the class names."""

    root: str
    split: str
    files: tuple[str, ...]
    lengths: tuple[int, ...]
    classes: list[str]
    task: str = "classification"
    category_ids: tuple[int, ...] = ()  # detection: the COCO category id of each class

    def __len__(self) -> int:
        return sum(self.lengths)


def is_shard_dir(root: str) -> bool:
    """True when ``root`` (a directory or a URL prefix) holds a shard index."""
    index = remote.join(root, INDEX_FILE)
    if not remote.is_remote(root):
        return Path(index).is_file()
    try:
        return remote.exists(index)
    except (MissingExtraError, ConfigError):
        raise
    except Exception as err:  # no credentials, no endpoint: say so here rather than "not a dataset"
        raise DataError(remote.cannot_read(index, err)) from err


def _read_index(root: str) -> dict:
    index = remote.join(root, INDEX_FILE)
    try:
        if remote.is_remote(root):
            fs, path = remote.filesystem(index)
            if fs.size(path) > MAX_INDEX_BYTES:
                raise DataError(f"{index}: larger than {MAX_INDEX_BYTES >> 20} MiB; not a shard index")
            text = fs.cat_file(path)
        else:
            with open_regular(index) as f:
                text = f.read(MAX_INDEX_BYTES + 1)
            if len(text) > MAX_INDEX_BYTES:
                raise DataError(f"{index}: larger than {MAX_INDEX_BYTES >> 20} MiB; not a shard index")
    except FileNotFoundError as err:
        raise DataLayoutError(f"{root}: no {INDEX_FILE}; write shards with `swinkit shard --data DIR --output "
                              f"{root}`") from err  # fmt: skip
    except (DataError, MissingExtraError, ConfigError):
        raise
    except Exception as err:
        raise DataError(remote.cannot_read(index, err)) from err
    try:
        info = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as err:
        raise DataError(f"{index}: not JSON swinkit reads ({shown(str(err))}); write the shards again with "
                        "`swinkit shard`") from err  # fmt: skip
    if not isinstance(info, dict) or not isinstance(info.get("splits"), dict):
        raise DataError(f"{index}: no \"splits\" table; not a shard index")
    return info


def _split_table(index: str, name: str, table: object) -> tuple[list[str], list[int]]:
    ok = isinstance(table, dict)
    files, lengths = (table.get("filenames"), table.get("shard_lengths")) if ok else (None, None)
    ok = ok and isinstance(files, list) and isinstance(lengths, list) and len(files) == len(lengths)
    ok = ok and all(isinstance(f, str) and f and ".." not in Path(f).parts and not f.startswith("/") for f in files)
    ok = ok and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in lengths)
    if not ok:
        raise DataError(f"{index}: split {shown(name)} needs equally long \"filenames\" (relative paths) and "
                        "\"shard_lengths\" (counts) lists")  # fmt: skip
    return files, lengths


def open_shards(root: str, split: str) -> ShardSplit:
    """The shards of ``split`` under ``root``: a split named in the index, or a brace pattern of its shard files
    (``train-{000000..000031}.tar``), each of which the index must list.

    Raises:
        DataLayoutError: no index, or no such split.
        DataError: an index that cannot be read or does not describe shards.
    """
    root = root.rstrip("/") if remote.is_remote(root) else remote.local(root)
    info = _read_index(root)
    index = remote.join(root, INDEX_FILE)
    tables = {name: _split_table(index, name, t) for name, t in info["splits"].items()}
    if split in tables:
        files, lengths = tables[split]
    elif "{" in split or split.endswith(".tar"):
        from braceexpand import braceexpand

        known = {f: n for fs, ns in tables.values() for f, n in zip(fs, ns, strict=True)}
        count = brace_count(split)
        if count > max(len(known), MAX_PATTERN_NAMES):  # fewer are expanded, to name the first one not listed
            raise DataLayoutError(f"{root}: {shown(split)} names {count} shards, more than the {len(known)} "
                                  f"{INDEX_FILE} lists; select shards the index lists")  # fmt: skip
        files = list(braceexpand(split))
        missing = [f for f in files if f not in known]
        if missing:
            raise DataLayoutError(f"{root}: {missing[0][:200]} (from {shown(split)}) is not in {INDEX_FILE}; select "
                                  "shards the index lists")  # fmt: skip
        lengths = [known[f] for f in files]
    else:
        have = shown(", ".join(tables) or "none")
        raise DataLayoutError(f"{root}: no split {shown(split)} in {INDEX_FILE} (it has {have}); set "
                              "data.train_split / data.val_split")  # fmt: skip
    classes = info.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise DataError(f"{index}: no \"classes\" list of class names; add one (the folder names in label order)")
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{index}: {len(classes)} classes, more than the {MAX_CLASSES} any dataset has; the index is "
                        "corrupt")  # fmt: skip
    if not remote.is_remote(root):
        outside = next((f for f in files if not Path(root, f).resolve().is_relative_to(Path(root).resolve())), None)
        if outside is not None:
            raise DataLayoutError(f"{root}: shard {shown(outside)} is a link that leads outside the shard directory; "
                                  "copy the shards into it")  # fmt: skip
    task = info.get("task", "classification")
    if task not in TASKS:
        raise DataError(f"{index}: task {shown(str(task), 40)} is none of {', '.join(TASKS)}; write the shards again "
                        "with `swinkit shard`")  # fmt: skip
    category_ids = info.get("category_ids", []) if task == "detection" else []
    if task == "detection" and not (isinstance(category_ids, list) and len(category_ids) == len(classes)
                                    and all(isinstance(c, int) and not isinstance(c, bool) for c in category_ids)):
        raise DataError(f"{index}: a detection index needs \"category_ids\", one integer per class; write the "
                        "shards again with `swinkit shard`")  # fmt: skip
    kept = [(f, n) for f, n in zip(files, lengths, strict=True) if n > 0]  # an empty shard feeds no stream
    if not kept:
        raise DataLayoutError(f"{root}: split {split!r} has no samples")
    return ShardSplit(root, split, tuple(remote.join(root, f) for f, _ in kept), tuple(n for _, n in kept), classes,
                      task, tuple(category_ids))  # fmt: skip


def brace_count(pattern: str) -> int:
    """How many names the brace pattern ``pattern`` expands to (``{a..b[..step]}``, ``{x,y}``, nested), counted
    without expanding it (braceexpand materializes every range)."""
    total, rest = 1, pattern
    while (start := _brace_start(rest)) >= 0:
        end = _brace_end(rest, start)
        if end < 0:
            break
        total *= _group_count(rest[start + 1 : end])
        rest = rest[end + 1 :]
    return total


def _brace_start(text: str) -> int:
    return next((i for i, c in enumerate(text) if c == "{" and (i == 0 or text[i - 1] != "\\")), -1)


def _brace_end(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{" and text[i - 1 : i] != "\\":
            depth += 1
        elif text[i] == "}" and text[i - 1 : i] != "\\":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _group_count(inner: str) -> int:
    numbers = re.fullmatch(r"(-?\d{1,18})\.\.(-?\d{1,18})(?:\.\.(-?\d{1,18}))?", inner)
    if numbers:
        first, last, step = int(numbers[1]), int(numbers[2]), abs(int(numbers[3] or 1)) or 1
        return abs(last - first) // step + 1
    if re.fullmatch(r".\.\..(?:\.\.-?\d+)?", inner):  # a character range: at most the alphabet
        return 256
    alternatives, depth, begin = [], 0, 0
    for i, c in enumerate(inner):
        depth += (c == "{") - (c == "}")
        if c == "," and depth == 0:
            alternatives.append(inner[begin:i])
            begin = i + 1
    alternatives.append(inner[begin:])
    return sum(brace_count(a) for a in alternatives) if len(alternatives) > 1 else brace_count(inner)


# --- writing ------------------------------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    """``"1GB"``, ``"512MB"``, ``"64KiB"`` or a byte count, as bytes."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
             "GIB": 2**30, "TIB": 2**40}  # fmt: skip
    text = str(text).strip().upper()
    number = text.rstrip("KMGTIB")
    unit = text[len(number) :]
    try:
        value = float(number) * units[unit]
    except (KeyError, ValueError):
        raise ConfigError(f"--shard-size {text!r}: give a size such as 1GB, 512MB or 64MiB") from None
    if value < 1:
        raise ConfigError(f"--shard-size {text!r}: a shard must hold at least one byte")
    return int(value)


def _image_key(path: str) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    return "jpg" if ext == "jpeg" else ("tiff" if ext == "tif" else ext)


def _folder_samples(data: str | Path, splits: tuple[str, ...]) -> tuple[str, list[str], list, dict]:
    """``(task, classes, per split: a list of (image path, what goes beside it), more index fields)`` of a folder to
    shard: COCO's layout (beside each image its ``.det.json``), a segmentation folder (``images/`` and
    ``annotations/``, or ``img_dir/`` and ``ann_dir/``; beside each image its label map's path) or an ImageNet one
    (beside each image its class index)."""
    root = Path(data)
    if all((root / "annotations" / f"instances_{split}.json").is_file() for split in splits):
        sets = [CocoDetection(root, split, masks=False) for split in splits]  # the box checks; masks when read
        samples = [[(s.name(i), json.dumps(dict(zip(("image", "annotations"), s.record(i), strict=True))).encode())
                    for i in range(len(s))] for s in sets]  # fmt: skip
        return "detection", sets[0].classes, samples, {"category_ids": sets[0].category_ids}
    if folder_layout(root) is not None:
        folders = [SegmentationFolder(root, split) for split in splits]
        return "segmentation", folders[0].classes, [folder.pairs for folder in folders], {}
    folders = imagenet_folders(data, splits)
    return "classification", folders[0].classes, [folder.samples for folder in folders], {}


def write_shards(data: str | Path, output: str, *, shard_bytes: int = 10**9, shard_samples: int | None = None,
                 splits: tuple[str, ...] = ("train", "val")) -> dict:  # fmt: skip
    """Write the ImageNet-layout folder ``data`` (``data/{train,val}/<class>/<image>``), a segmentation folder
    (``data/images/<split>``, ``data/annotations/<split>``; ``swinkit.data.label_maps``) or COCO's layout
    (``data/annotations/instances_<split>.json``, ``data/<split>/``; ``swinkit.data.coco``) as shards under
    ``output``.

    Shards close at ``shard_bytes`` or ``shard_samples``, whichever comes first. A local ``output`` is written into
    a temporary directory and moved into place when complete; a remote one (``s3://...``) gets each shard as one
    upload (an object appears whole or not at all) and the index last. Returns the index.

    Raises:
        ConfigError: ``output`` exists already.
    """
    import webdataset as wds

    task, classes, split_samples, fields = _folder_samples(data, splits)
    is_remote = remote.is_remote(output)
    if is_remote:
        fs, target = remote.filesystem(output)
        if is_shard_dir(output):
            raise ConfigError(f"{output} holds shards already; choose another --output or remove it")
    elif Path(output).exists():
        raise ConfigError(f"{output} exists already; choose another --output or remove it")
    info = {"name": Path(str(data).rstrip("/")).name, "format": FORMAT, "task": task, "classes": classes, **fields,
            "splits": {}}  # fmt: skip

    def beside(extra) -> dict[str, bytes]:
        if task == "detection":
            return {DETECTION_KEY: extra}
        return {SEGMENTATION_KEY: Path(extra).read_bytes()} if task == "segmentation" else {"cls": str(extra).encode()}

    def write(directory: Path) -> None:
        for split, samples in zip(splits, split_samples, strict=True):
            counts: dict[int, int] = {}
            with wds.ShardWriter(str(directory / f"{split}-%06d.tar"), maxcount=shard_samples or 10**12,
                                 maxsize=shard_bytes, verbose=0, encoder=False, mtime=0) as sink:  # fmt: skip
                for i, (path, extra) in enumerate(samples):
                    sink.write({"__key__": f"{i:09d}", _image_key(path): Path(path).read_bytes(), **beside(extra)})
                    counts[sink.shard - 1] = counts.get(sink.shard - 1, 0) + 1  # the shard it went into
            names = [f"{split}-{shard:06d}.tar" for shard in sorted(counts)]
            info["splits"][split] = {"name": split, "num_samples": len(samples), "filenames": names,
                                     "shard_lengths": [counts[shard] for shard in sorted(counts)]}  # fmt: skip
            if is_remote:
                for name in names:
                    fs.put_file(str(directory / name), remote.join(target, name))
        index = json.dumps(info, indent=1) + "\n"
        if is_remote:
            fs.pipe_file(remote.join(target, INDEX_FILE), index.encode())
        else:
            (directory / INDEX_FILE).write_text(index)

    if is_remote:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="swinkit-shards-") as tmp:
            write(Path(tmp))
    else:
        write_dir(output, write)
    return info


# --- reading ------------------------------------------------------------------------------------------------------
def sample_index(key: str) -> int:
    """The sample's index for its augmentation seed: the key swinkit wrote, or a stable hash of another key."""
    return int(key) if key.isascii() and key.isdigit() and len(key) <= 18 else zlib.crc32(key.encode())


class ShardStream(IterableDataset):
    """Batches ``(images, targets, unreadable)`` of one process's share of a ``ShardSplit`` (see the module
    docstring); ``streams`` is the loader's worker count (1 without workers).

    A classification sample is its image and ``.cls``; another task's ``decode(raw, where, transform, seed)`` makes
    ``(input, target, message)`` of a raw sample, ``collate_fn`` the batch. ``epoch_batches`` fixes the training
    batches a process takes an epoch (an iteration schedule), else one pass over the split."""

    def __init__(self, split: ShardSplit, transform, *, batch_size: int, train: bool, rank: int, world_size: int,
                 streams: int, seed: int, shuffle: bool, buffer: int, decode=None, collate_fn=collate,
                 epoch_batches: int | None = None) -> None:  # fmt: skip
        self.split, self.transform = split, transform
        self.decode, self.collate_fn, self.epoch_batches = decode, collate_fn, epoch_batches
        self.batch_size, self.train = batch_size, train
        self.rank, self.world_size, self.streams = rank, world_size, streams
        self.seed, self.shuffle, self.buffer = seed, shuffle and train, buffer
        self.epoch, self.done = 0, 0  # batches of this epoch already taken (a resumed run)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Epoch ``epoch``, skipping the first ``start`` samples of this process's share (whole batches)."""
        self.epoch, self.done = epoch, start // self.batch_size

    # -- the plan of an epoch, the same in every process and worker
    def _order(self, epoch: int) -> list[int]:
        n = len(self.split.files)
        if not self.shuffle:
            return list(range(n))
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()

    def _shards_of(self, epoch: int, slot: int) -> list[int]:
        return self._order(epoch)[slot :: self.world_size * self.streams]

    def _samples_in(self, shards: list[int]) -> int:
        return sum(self.split.lengths[i] for i in shards)

    def batches_per_epoch(self) -> int:
        return self.epoch_batches or len(self.split) // self.world_size // self.batch_size

    def _quota(self, stream: int) -> int:
        """Training batches of ``stream`` (batch k of the process comes from stream k % streams)."""
        total = self.batches_per_epoch()
        return total // self.streams + (stream < total % self.streams)

    def coverage(self, epoch: int) -> tuple[int, int]:
        """``(dropped, repeated)`` samples of a training epoch over all processes."""
        dropped = repeated = 0
        for slot in range(self.world_size * self.streams):
            have = self._samples_in(self._shards_of(epoch, slot))
            need = self._quota(slot % self.streams) * self.batch_size
            dropped, repeated = dropped + max(have - need, 0), repeated + max(need - have, 0)
        return dropped, repeated

    def __len__(self) -> int:
        if self.train:
            return self.batches_per_epoch() - self.done
        slots = (self.rank * self.streams + w for w in range(self.streams))
        return sum(math.ceil(self._samples_in(self._shards_of(0, s)) / self.batch_size) for s in slots)

    # -- one worker's stream
    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        # A resumed epoch: the first batch now is the process's batch `done`, which stream `done % streams` makes.
        stream = (worker + self.done) % self.streams
        slot = self.rank * self.streams + stream
        shards = self._shards_of(self.epoch, slot)
        try:
            if self.train:
                quota = self._quota(stream)
                taken = self.done // self.streams + (stream < self.done % self.streams)
                yield from self._batches(self._training_samples(shards, slot), quota - taken, skip=taken)
            else:
                yield from self._batches(self._read(shards), None, skip=0)
        except DataError as err:
            yield StreamFailure(str(err))

    def _training_samples(self, shards: list[int], slot: int):
        """The stream's shards, shuffled through a buffer; read again (shuffled afresh) while the quota needs more, so
        that every sample is taken once before any is taken twice."""
        import webdataset as wds

        size = max(1, min(self.buffer, self._samples_in(shards)))
        for again in itertools.count():
            samples = self._read(shards)
            if self.shuffle:
                rng = random.Random(f"swinkit-shards:{self.seed}:{self.epoch}:{slot}:{again}")
                samples = wds.shuffle(size, initial=size, rng=rng)(samples)
            yield from samples

    def _batches(self, samples, count: int | None, skip: int):
        for _ in range(skip * self.batch_size):
            next(samples)  # raw samples: skipped without decoding
        made = 0
        while count is None or made < count:
            batch = []
            for raw in samples:
                key = raw["__key__"]
                seed = sample_seed(self.seed, self.epoch, sample_index(key)) if self.train else None
                batch.append(self._decode(raw, key, seed))
                if len(batch) == self.batch_size:
                    break
            if not batch:
                return
            yield self.collate_fn(batch)
            made += 1
            if len(batch) < self.batch_size:
                return

    def _decode(self, raw: dict, key: str, seed: int | None):
        where = f"{raw.get('__url__', '?')}:{shown(key, 40)}"
        if self.decode is not None:
            return self.decode(raw, where, self.transform, seed)
        label = raw.get("cls", b"")
        if not re.fullmatch(rb"\s*\d{1,9}\s*", label) or int(label) >= len(self.split.classes):
            raise DataError(f"{where}: .cls {shown(label, 40)} is not a class index of the {len(self.split.classes)} "
                            f"classes in {INDEX_FILE}; write the shards with `swinkit shard`")  # fmt: skip
        target = int(label)
        data = next((raw[k] for k in IMAGE_KEYS if k in raw), None)
        if data is None:
            return None, target, f"{where}: no image (none of .{', .'.join(IMAGE_KEYS)})"

        return transform_sample(lambda: decode_image(data, where), where, target, self.transform, seed)

    def _read(self, shards: list[int]):
        """The raw samples (dicts of bytes) of ``shards`` in order."""
        for i in shards:
            url = self.split.files[i]
            try:
                with _open(url) as stream:
                    count = 0
                    for sample in tar_samples(stream, url):
                        count += 1
                        yield sample
            except DataError:
                raise
            except (tarfile.TarError, OSError, ValueError) as err:
                raise DataError(f"{url}: not a readable shard ({remote.reason(err)}); write it again with "
                                "`swinkit shard`") from err  # fmt: skip
            if count != self.split.lengths[i]:
                raise DataError(f"{url}: holds {count} samples, the index says {self.split.lengths[i]}; the shard "
                                "changed since the index was written: write the shards again")  # fmt: skip


def tar_samples(stream, url: str):
    """webdataset's samples of an uncompressed tar stream, read sequentially: consecutive files ``<key>.<ext>`` make
    one sample ``{"__key__", "__url__", ext: bytes, ...}`` of the members swinkit reads (the image, ``.cls`` and
    ``.seg.png``; others are skipped unread). Refused before anything is allocated for them: a compressed shard (its
    size would not bound what it inflates to), a sparse member (a few bytes that expand to gigabytes), a member or a
    sample larger than ``MAX_SAMPLE_BYTES``, a label larger than ``MAX_LABEL_BYTES`` (a tar header can claim any
    size)."""
    magic = stream.read(6)
    stream.seek(0)
    kind = next((name for prefix, name in COMPRESSED.items() if magic.startswith(prefix)), None)
    if kind is not None:
        raise DataError(f"{url}: a {kind}-compressed shard; swinkit reads uncompressed tar shards (images are "
                        "compressed already): write them with `swinkit shard`")  # fmt: skip
    sample, size = None, 0
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            tar.members = []  # a streamed archive otherwise keeps every header it has read
            if member.issparse():
                raise DataError(f"{url}: {shown(member.name)} is a sparse member; not a shard swinkit can read")
            if not member.isreg():
                continue
            directory, _, name = member.name.rpartition("/")
            stem, dot, ext = name.partition(".")
            ext = ext.lower()
            if not dot or stem.startswith("__") or (ext not in ("cls", SEGMENTATION_KEY, DETECTION_KEY)
                                                    and ext not in IMAGE_KEYS):  # fmt: skip
                continue
            key = f"{directory}/{stem}" if directory else stem
            if sample is None or sample["__key__"] != key:
                if sample is not None:
                    yield sample
                sample, size = {"__key__": key, "__url__": url}, 0
            size += member.size
            limit = MAX_LABEL_BYTES if ext == "cls" else MAX_SAMPLE_BYTES
            if member.size > limit or size > MAX_SAMPLE_BYTES:
                raise DataError(f"{url}: {shown(member.name)} declares {member.size} bytes, more than a "
                                f"{'label' if ext == 'cls' else 'sample'} holds ({limit} bytes); not a shard swinkit "
                                "can read")  # fmt: skip
            sample[ext] = tar.extractfile(member).read()
    if sample is not None:
        yield sample


def _open(url: str):
    if not remote.is_remote(url):
        return open_regular(url)
    fs, path = remote.filesystem(url)
    try:
        return fs.open(path, "rb", block_size=8 << 20)
    except FileNotFoundError as err:
        raise DataError(f"{url}: listed in {INDEX_FILE} but missing; copy the whole shard directory") from err
    except Exception as err:
        raise DataError(remote.cannot_read(url, err)) from err


def stream_workers(split: ShardSplit, workers: int, world_size: int, train: bool) -> int:
    """Loader workers for ``split``: ``workers``, but no more than each process has shards for (training needs a
    shard for every stream)."""
    n = len(split.files)
    if train and n < world_size:
        raise DataLayoutError(f"{split.root}: {n} {split.split} shard(s) cannot feed {world_size} processes; write "
                              "at least one shard per process (swinkit shard --shard-samples N)")  # fmt: skip
    most = n // world_size if train else max(1, math.ceil(n / world_size))
    if workers > most:
        log.warning("%s: %d %s shard(s) over %d process(es) feed at most %d loader worker(s) each; using %d (write "
                    "more, smaller shards to use data.workers=%d)", split.root, n, split.split, world_size, most, most,
                    workers)  # fmt: skip
        return most
    return workers


def stream_loader(split: ShardSplit, transform, *, batch_size: int, train: bool, rank: int = 0, world_size: int = 1,
                  seed: int = 0, workers: int = 0, pin_memory: bool = False, shuffle: bool = True,
                  buffer: int = 2000, decode=None, collate_fn=collate,
                  epoch_batches: int | None = None) -> Loader:  # fmt: skip
    """A loader over ``split``'s shards for process ``rank`` of ``world_size`` (see the module docstring;
    ``decode``, ``collate_fn`` and ``epoch_batches`` as ``ShardStream``'s)."""
    workers = stream_workers(split, workers, world_size, train)
    stream = ShardStream(split, transform, batch_size=batch_size, train=train, rank=rank, world_size=world_size,
                         streams=max(1, workers), seed=seed, shuffle=shuffle, buffer=buffer, decode=decode,
                         collate_fn=collate_fn, epoch_batches=epoch_batches)  # fmt: skip
    if train and rank == 0:
        dropped, repeated = stream.coverage(0)
        if repeated:  # otherwise only the samples that fill no last batch are left out, as from a folder
            log.warning("%s: %d shards over %d process(es) x %d stream(s): epoch 1 repeats %d samples and leaves out "
                        "%d of %d. Every sample is seen once an epoch when the shards hold equal counts (swinkit "
                        "shard --shard-samples N), their number is a multiple of %d and the samples of a stream are a "
                        "multiple of the batch %d", split.root, len(split.files), world_size, stream.streams, repeated,
                        dropped, len(split), world_size * stream.streams, batch_size)  # fmt: skip
    return Loader(stream, batch_size=None, collate_fn=_made, num_workers=workers, pin_memory=pin_memory,
                  persistent_workers=False, generator=torch.Generator().manual_seed(seed))  # fmt: skip


def _made(batch):
    return batch  # the stream makes whole batches itself
