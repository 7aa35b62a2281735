"""What a config's ``data`` section names: its datasets and their loaders, for every reader.

``data.dataset``: ``folder`` (ImageNet layout: ``root/<split>/<class>/<image>``), ``wds`` (shards written by
``swinkit shard``, local or remote), ``hf`` (a Hugging Face image dataset), ``digits`` (scikit-learn's, built in), or
``auto`` (what ``--data`` sets): shards when ``root`` holds a shard index, a Hugging Face dataset when it is one
(``hf://datasets/...``, a ``save_to_disk`` directory), a folder otherwise. ``data.train_split`` and
``data.val_split`` name the splits (a folder's subdirectories, the index's splits or brace patterns of shard files,
the Hugging Face dataset's splits).
"""

from __future__ import annotations

from pathlib import Path

from ..core import remote
from ..core.errors import ConfigError, DataLayoutError
from .datasets import Digits, first, imagenet_folders, require_root
from .hf import HUB_PREFIX, HFImages
from .loader import Loader, map_loader
from .shards import ShardSplit, is_shard_dir, open_shards, stream_loader


def dataset_kind(dataset: str, root: str | None) -> str:
    """The reader of ``data.dataset`` (``auto`` resolved by looking at ``root``)."""
    if dataset != "auto":
        return dataset
    root = require_root(root)
    if root.startswith(HUB_PREFIX) or (Path(root) / "dataset_dict.json").is_file():
        return "hf"
    return "wds" if is_shard_dir(root) else "folder"


def _splits(data, splits: tuple[str, ...], limits: tuple[int | None, ...]) -> list:
    kind = dataset_kind(data.dataset, data.root)
    if kind == "digits":
        return [Digits(split) for split in splits]
    root = require_root(data.root)
    if kind == "wds":
        if any(limits):
            raise ConfigError("data.max_train_samples/max_val_samples select from a list; with shards, select shard "
                              "files instead (data.train_split='train-{000000..000009}.tar')")  # fmt: skip
        return [open_shards(root, split) for split in splits]
    if kind == "hf":
        return [HFImages(root, split) for split in splits]
    if remote.is_remote(root):
        raise DataLayoutError(
            f"{root}: no shard index ({root}/_info.json) there. Object storage serves shards: write the folder as "
            "shards (`swinkit shard --data DIR --output URL`), or mount the bucket and pass the mounted folder"
        )
    return imagenet_folders(root, splits)


def build_datasets(data) -> tuple:
    """``(train, val)`` of the ``data`` section of a config (``swinkit.engine.config.DataConfig`` or alike)."""
    limits = (data.max_train_samples, data.max_val_samples)
    train, val = _splits(data, (data.train_split, data.val_split), limits)
    if isinstance(train, ShardSplit):
        if train.classes != val.classes:
            raise DataLayoutError(f"{data.root}: the {data.train_split} and {data.val_split} shards name different "
                                  "classes")  # fmt: skip
        return train, val
    return first(train, data.max_train_samples), first(val, data.max_val_samples)


def build_val_dataset(data):
    """The validation split alone (``swinkit eval`` needs no training split)."""
    (val,) = _splits(data, (data.val_split,), (data.max_val_samples,))
    return val if isinstance(val, ShardSplit) else first(val, data.max_val_samples)


def build_loader(base, transform, *, data, batch_size: int, train: bool, rank: int = 0, world_size: int = 1,
                 seed: int = 0, pin_memory: bool = False) -> Loader:  # fmt: skip
    """The loader of a dataset ``build_datasets`` made: shards stream, everything else is indexed."""
    options = dict(batch_size=batch_size, train=train, rank=rank, world_size=world_size, seed=seed,
                   workers=data.workers, pin_memory=pin_memory, shuffle=data.shuffle)  # fmt: skip
    if isinstance(base, ShardSplit):
        return stream_loader(base, transform, buffer=data.shuffle_buffer, **options)
    return map_loader(base, transform, **options)
