"""Image-classification datasets: the ImageNet folder layout and scikit-learn's built-in handwritten digits.

Both yield PIL RGB images and integer targets through ``load(index)``; ``TransformedDataset`` applies the transform
and turns an unreadable file into a skipped sample that the loader counts, instead of a crash.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.errors import DataLayoutError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class ImageFolder:
    """``root/<class>/<image>`` with classes in sorted order; files are scanned once, sorted, without opening them."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.classes = sorted(d.name for d in os.scandir(self.root) if d.is_dir() and not d.name.startswith("."))
        self.samples: list[tuple[str, int]] = []
        for target, cls in enumerate(self.classes):
            for dirpath, _, files in sorted(os.walk(self.root / cls, followlinks=True)):
                for fname in sorted(files):
                    if fname.lower().endswith(IMG_EXTENSIONS):
                        self.samples.append((os.path.join(dirpath, fname), target))

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, index: int) -> str:
        return self.samples[index][0]

    def target(self, index: int) -> int:
        return self.samples[index][1]

    def load(self, index: int) -> Image.Image:
        path, _ = self.samples[index]
        with Image.open(path) as img:
            return img.convert("RGB")


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


def imagenet_folders(root: str | Path) -> tuple[ImageFolder, ImageFolder]:
    """The train and val splits of an ImageNet-layout directory: ``root/{train,val}/<class>/<image>``."""
    root = Path(root)
    expected = f"expected {root}/train/<class>/<image> and {root}/val/<class>/<image> (the ImageNet folder layout)"
    problems = []
    for split in ("train", "val"):
        if not (root / split).is_dir():
            problems.append(f"{root / split} is missing ({_describe(root)})")
    if not problems:
        splits = [ImageFolder(root / "train"), ImageFolder(root / "val")]
        for split, ds in zip(("train", "val"), splits, strict=True):
            if not ds.classes or len(ds) == 0:
                problems.append(f"{root / split} has no class folders with images ({_describe(root / split)})")
        if not problems and splits[0].classes != splits[1].classes:
            only = sorted(set(splits[0].classes) ^ set(splits[1].classes))[:5]
            problems.append(f"train and val have different classes (e.g. {only})")
        if not problems:
            return splits[0], splits[1]
    raise DataLayoutError(f"{root} is not an image-classification dataset: {'; '.join(problems)}; {expected}")


def build_datasets(dataset: str, root: str | None, max_train: int | None = None, max_val: int | None = None):
    """(train, val) datasets for ``data.dataset`` = 'folder' (ImageNet layout under ``root``) or 'digits'."""
    if dataset == "digits":
        train, val = Digits("train"), Digits("val")
    else:
        if not root:
            raise DataLayoutError(
                "no data directory: pass --data DIR (ImageNet layout: DIR/train/<class>/*, DIR/val/<class>/*) "
                "or use the built-in digits with data.dataset=digits"
            )
        train, val = imagenet_folders(root)
    if max_train:
        train = Subset(train, max_train)
    if max_val:
        val = Subset(val, max_val)
    return train, val


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
        target = self.base.target(index)
        try:
            img = self.base.load(index)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            return None, target, f"{self.base.name(index)}: {type(err).__name__}: {err}"
        if seed is None:
            return self.transform(img), target, ""
        py_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            torch.manual_seed(seed)
            x = self.transform(img)
        random.setstate(py_state)
        return x, target, ""
