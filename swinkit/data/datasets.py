"""Image-classification datasets: the ImageNet folder layout and scikit-learn's built-in handwritten digits.

Both yield PIL RGB images and integer targets through ``load(index)``; ``TransformedDataset`` applies the transform
and turns an unreadable file into a skipped sample that the loader counts, instead of a crash.
"""

from __future__ import annotations

import io
import os
import random
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.errors import DataError, DataLayoutError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
MAX_CLASSES = 100_000  # ImageNet-22k has 21,841; more is an index or a label column gone wrong, not a dataset
MAX_IMAGE_BYTES = 512 << 20  # larger than any image file a dataset holds
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class ImageFolder:
    """``root/<class>/<image>`` with classes in sorted order; files are scanned once, sorted, without opening them.

    Symbolic links to directories are followed, but every real directory is read at most once: a link back to its
    own folder, to the split or to another class adds nothing (it would loop forever or count images twice).

    Raises:
        DataLayoutError: a class folder holds no images (it would be a class that no sample has).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.classes = sorted(d.name for d in os.scandir(self.root) if d.is_dir() and not d.name.startswith("."))
        self.samples: list[tuple[str, int]] = []
        seen = {os.path.realpath(self.root), *(os.path.realpath(self.root / c) for c in self.classes)}
        empty = []
        for target, cls in enumerate(self.classes):
            count = len(self.samples)
            for dirpath, dirnames, files in os.walk(self.root / cls, followlinks=True):
                fresh = []
                for d in sorted(dirnames):
                    real = os.path.realpath(os.path.join(dirpath, d))
                    if real not in seen:
                        seen.add(real)
                        fresh.append(d)
                dirnames[:] = fresh
                for fname in sorted(files):
                    if fname.lower().endswith(IMG_EXTENSIONS):
                        self.samples.append((os.path.join(dirpath, fname), target))
            if len(self.samples) == count:
                empty.append(cls)
        if empty and len(empty) < len(self.classes):
            raise DataLayoutError(
                f"{self.root}: the class folder(s) {', '.join(empty[:5])} hold no images; add images or remove the "
                "folder (an empty folder would still be counted as a class)"
            )

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, index: int) -> str:
        return self.samples[index][0]

    def target(self, index: int) -> int:
        return self.samples[index][1]

    def load(self, index: int) -> Image.Image:
        path, _ = self.samples[index]
        return decode_image(read_image_file(path), path)  # a FIFO named like an image is refused, not waited on


def open_regular(path: str | os.PathLike, inside: Sequence[str | os.PathLike] = ()):
    """``path`` opened for binary reading if it is a regular file, and (given directories ``inside``) one that lies
    inside one of them once links are resolved; a FIFO, device or directory would hang or never end.

    Raises:
        FileNotFoundError: there is no such file (for the caller to say what was expected there).
        DataError: anything else (names the path).
    """
    resolved = Path(path).resolve()
    if inside and not any(resolved.is_relative_to(Path(d).resolve()) for d in inside):
        raise DataError(f"{path} lies outside {', '.join(map(str, inside))} (a link, '..' or an absolute path); a "
                        "dataset reads its own files only")  # fmt: skip
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
    except FileNotFoundError:
        raise
    except OSError as err:
        raise DataError(f"{path}: cannot be opened ({os.strerror(err.errno or 0)})") from err
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{path} is not a regular file (a FIFO, device or directory); a dataset reads files only")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_image_file(path: str | os.PathLike, inside: Sequence[str | os.PathLike] = ()) -> bytes:
    """The bytes of an image file (``open_regular``), at most ``MAX_IMAGE_BYTES`` of them."""
    with open_regular(path, inside) as f:
        data = f.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise DataError(f"{path}: larger than {MAX_IMAGE_BYTES >> 20} MiB, more than any image file")
    return data


def decode_image(data: bytes, source: str) -> Image.Image:
    """An encoded image (a file's bytes, a shard's or a dataset row's) as 8-bit RGB, decoded by PIL within its
    decompression-bomb limit. (torchvision's ``decode_jpeg`` gives the same pixels and decodes 500x375 JPEGs 1.07x
    to 1.15x faster, a few percent of a 224 px RandAugment pipeline's time per image, but is deprecated since
    torchvision 0.29: ``benchmarks/data_table.py`` measures both.)"""
    with Image.open(io.BytesIO(data)) as img:
        return to_rgb(img, source)


def to_rgb(img: Image.Image, source: str) -> Image.Image:
    """An 8-bit RGB image; 16-bit and 32-bit integer images and float images are scaled by their real range.

    PIL's own ``convert("RGB")`` clips such pixels to 255 (a 16-bit PNG turns white). Integer pixels are read as
    16-bit (0..65535), float pixels as 0..1; pixels outside that range raise ``DataError``.
    """
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img.convert("RGB")
    pixels = np.asarray(img, dtype=np.float64)
    high = 1.0 if img.mode == "F" else 65535.0
    if not (np.isfinite(pixels).all() and pixels.min(initial=0) >= 0 and pixels.max(initial=0) <= high):
        raise DataError(
            f"{source}: {img.mode} pixels range over [{pixels.min():g}, {pixels.max():g}], outside 0..{high:g}; "
            "convert the image to 8 or 16 bits per channel"
        )
    return Image.fromarray(np.round(pixels * (255.0 / high)).astype(np.uint8)).convert("RGB")


class Digits:
    """scikit-learn's 1,797 handwritten 8x8 digits (10 classes), shipped with the library: no download.

    The split is fixed: a stratified 80/20 split with seed 0 gives 1,437 training and 360 validation images.
    """

    def __init__(self, split: str) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        train_idx, val_idx = train_test_split(
            np.arange(len(digits.target)),
            test_size=DIGITS_VAL_FRACTION,
            stratify=digits.target,
            random_state=DIGITS_SPLIT_SEED,
        )
        idx = train_idx if split == "train" else val_idx
        # Pixel values are 0..16; scale to 0..255 grey images.
        self.images = (digits.images[idx] * (255.0 / 16.0)).round().astype(np.uint8)
        self.targets = digits.target[idx].astype(np.int64)
        self.classes = [str(c) for c in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def name(self, index: int) -> str:
        return f"digits[{index}]"

    def target(self, index: int) -> int:
        return int(self.targets[index])

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index], mode="L").convert("RGB")


class Subset:
    """The first ``n`` samples of a dataset (a fixed list, so runs stay comparable)."""

    def __init__(self, base, n: int) -> None:
        self.base, self.n = base, min(n, len(base))
        self.classes = base.classes

    def __len__(self) -> int:
        return self.n

    def name(self, index: int) -> str:
        return self.base.name(index)

    def target(self, index: int) -> int:
        return self.base.target(index)

    def load(self, index: int) -> Image.Image:
        return self.base.load(index)


def _describe(path: Path) -> str:
    if not path.exists():
        return "it does not exist"
    entries = sorted(p.name for p in path.iterdir())[:5]
    return f"it contains {entries or 'nothing'}"


def imagenet_folders(root: str | Path, splits: tuple[str, ...] = ("train", "val")) -> list[ImageFolder]:
    """The ``splits`` of an ImageNet-layout directory: ``root/{train,val}/<class>/<image>``."""
    root = Path(root)
    expected = " and ".join(f"{root}/{s}/<class>/<image>" for s in splits) + " (the ImageNet folder layout)"
    if root.exists() and not root.is_dir():
        raise DataLayoutError(f"{root} is a file, not a dataset directory; expected {expected}")
    problems = []
    for split in splits:
        if not (root / split).is_dir():
            problems.append(f"{root / split} is missing ({_describe(root)})")
    if not problems:
        folders = [ImageFolder(root / split) for split in splits]
        for split, ds in zip(splits, folders, strict=True):
            if not ds.classes or len(ds) == 0:
                problems.append(f"{root / split} has no class folders with images ({_describe(root / split)})")
        if not problems and any(ds.classes != folders[0].classes for ds in folders):
            only = sorted(set(folders[0].classes) ^ set(folders[-1].classes))[:5]
            problems.append(f"train and val have different classes (e.g. {only})")
        if not problems:
            return folders
    raise DataLayoutError(f"{root} is not an image-classification dataset: {'; '.join(problems)}; expected {expected}")


def require_root(root: str | None) -> str:
    if not root:
        raise DataLayoutError(
            "no data directory: pass --data DIR (ImageNet layout: DIR/train/<class>/*, DIR/val/<class>/*, or shards "
            "written by `swinkit shard`) or use the built-in digits with data.dataset=digits"
        )
    return root


def first(dataset, n: int | None):
    """The first ``n`` samples of a map-style dataset (all of them for ``None``)."""
    return Subset(dataset, n) if n else dataset


class TransformedDataset(torch.utils.data.Dataset):
    """Loads and transforms samples; keys are ``(index, seed)`` pairs from ``loader.EpochSampler``.

    The seed makes each sample's augmentation a function of (run seed, epoch, index) alone: independent of workers,
    of the number of processes and of where a resumed run restarts. An unreadable image returns
    ``(None, target, "path: reason")`` so the loader can skip and count it.
    """

    def __init__(self, base, transform) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        return transform_sample(lambda: self.base.load(index), self.base.name(index), self.base.target(index),
                                self.transform, seed)  # fmt: skip


def transform_sample(load, name: str, target: int, transform, seed: int | None) -> tuple:
    """``(transform(load()), target, "")``, or ``(None, target, "name: reason")`` when the image cannot be read.

    With a ``seed``, the transform draws from RNGs seeded with it (and the callers' RNG states are kept).
    """
    try:
        img = load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return None, target, f"{name}: {type(err).__name__}: {err}"
    if seed is None:
        return transform(img), target, ""
    py_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        torch.manual_seed(seed)
        x = transform(img)
    random.setstate(py_state)
    return x, target, ""
