"""Hugging Face image datasets (``data.dataset=hf``): an ``image`` and a ``label`` column, read through the
``datasets`` library as timm's ``hfds`` reader does.

``data.root`` is a directory ``datasets.save_to_disk`` wrote, a directory of parquet/arrow files in the Hub's split
layout (``data/train-*.parquet``, ``data/validation-*.parquet``), or ``hf://datasets/<user>/<name>`` (a Hub
dataset, through ``HF_ENDPOINT``, ``HF_TOKEN`` and the Hugging Face cache). Images are decoded here from their
stored bytes, like a folder's files, so the pixels match the folder's; a ``ClassLabel`` column names the classes.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from PIL import Image

from ..core import remote
from ..core.errors import DataError, DataLayoutError, MissingExtraError
from .datasets import decode_image

HUB_PREFIX = "hf://datasets/"
SPLIT_ALIASES = {"val": ("validation", "valid"), "validation": ("val",)}


def _load(root: str, split: str):
    try:
        import datasets
    except ImportError as err:
        raise MissingExtraError("data.dataset=hf needs the datasets library (pip install datasets)") from err
    try:
        if root.startswith(HUB_PREFIX):
            name = root[len(HUB_PREFIX) :].strip("/")
            splits, load = datasets.get_dataset_split_names(name), partial(datasets.load_dataset, name)
        elif (Path(root) / "dataset_dict.json").is_file():
            saved = datasets.load_from_disk(root)
            splits, load = list(saved), lambda split: saved[split]
        elif Path(root).is_dir():
            splits, load = datasets.get_dataset_split_names(root), partial(datasets.load_dataset, root)
        else:
            raise DataLayoutError(f"{root}: not a Hugging Face dataset (no such directory; a Hub dataset is "
                                  f"{HUB_PREFIX}<user>/<name>)")  # fmt: skip
    except DataLayoutError:
        raise
    except Exception as err:
        raise DataError(f"{root}: could not read the dataset's splits ({remote.reason(err)})") from err
    for name in (split, *SPLIT_ALIASES.get(split, ())):
        if name in splits:
            return load(split=name), name
    raise DataLayoutError(f"{root}: no split {split!r} (it has {', '.join(splits)}); set data.train_split / "
                          "data.val_split")  # fmt: skip


class HFImages:
    """A split of a Hugging Face image dataset, map-style like ``ImageFolder`` (``load(i)``, ``target(i)``)."""

    def __init__(self, root: str, split: str) -> None:
        import datasets

        ds, self.split = _load(root, split)
        missing = [c for c in ("image", "label") if c not in ds.column_names]
        if missing:
            raise DataLayoutError(f"{root} ({self.split}): no {' or '.join(missing)} column (it has "
                                  f"{', '.join(ds.column_names)}); an image dataset has image and label")  # fmt: skip
        self.root = root
        self.ds = ds.cast_column("image", datasets.Image(decode=False)).select_columns(["image"])
        self.targets = [int(t) for t in ds["label"]]
        feature = ds.features["label"]
        if isinstance(feature, datasets.ClassLabel):
            self.classes = list(feature.names)
        else:
            self.classes = [str(c) for c in range(max(self.targets, default=-1) + 1)]

    def __len__(self) -> int:
        return len(self.targets)

    def name(self, index: int) -> str:
        return f"{self.root}[{self.split}][{index}]"

    def target(self, index: int) -> int:
        return self.targets[index]

    def load(self, index: int) -> Image.Image:
        stored = self.ds[index]["image"]
        if stored.get("bytes"):
            return decode_image(stored["bytes"], self.name(index))
        if stored.get("path"):
            return decode_image(Path(stored["path"]).read_bytes(), stored["path"])
        raise OSError("the row holds no image bytes nor a path")
