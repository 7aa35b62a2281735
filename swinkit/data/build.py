"""What a config's ``data`` section names: its datasets and their loaders, for every reader.

``data.dataset``: ``folder`` (ImageNet layout: ``root/<split>/<class>/<image>``), ``wds`` (shards written by
``swinkit shard``, local or remote), ``hf`` (a Hugging Face image dataset), ``digits`` (scikit-learn's, built in), or
``auto`` (what ``--data`` sets): shards when ``root`` holds a shard index, a Hugging Face dataset when it is one
(``hf://datasets/...``, a ``save_to_disk`` directory), a folder otherwise. ``data.train_split`` and
``data.val_split`` name the splits (a folder's subdirectories, the index's splits or brace patterns of shard files,
the Hugging Face dataset's splits).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core import remote
from ..core.errors import ConfigError, DataLayoutError
from .coco import CocoDetection
from .datasets import Digits, first, imagenet_folders, require_root
from .digit_scenes import DigitSceneInstances, DigitScenes
from .hf import HUB_PREFIX, HFDetection, HFImages, HFSegmentation
from .label_maps import SegmentationFolder
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
            raise ConfigError(SHARDS_ARE_NOT_A_LIST)
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
        if train.task != "classification":
            example = "upernet_digits" if train.task == "segmentation" else "maskrcnn_digits"
            raise ConfigError(f"{data.root}: these shards hold {train.task} samples, not classes; train a {train.task} "
                              f"model (e.g. -c {example} with data.dataset=wds)")  # fmt: skip
        if train.classes != val.classes:
            raise DataLayoutError(f"{data.root}: the {data.train_split} and {data.val_split} shards name different "
                                  "classes")  # fmt: skip
        return train, val
    return first(train, data.max_train_samples), first(val, data.max_val_samples)


def _task_dataset(data, folder: str):
    """``data`` with ``dataset=auto`` resolved for a dense task: shards, a Hugging Face dataset, or the task's
    ``folder`` reader."""
    if data.dataset != "auto":
        return data
    kind = dataset_kind("auto", data.root)
    return dataclasses.replace(data, dataset=folder if kind == "folder" else kind)


SHARDS_ARE_NOT_A_LIST = ("data.max_train_samples/max_val_samples select from a list; with shards, select shard files "
                         "instead (data.train_split='train-{000000..000009}.tar')")


def _task_shards(data, name: str, limit: int | None, task: str, written_from: str) -> ShardSplit:
    """The shards of split ``name`` for a ``task`` run; ``written_from`` names what such shards are written from."""
    if limit:
        raise ConfigError(SHARDS_ARE_NOT_A_LIST)
    shards = open_shards(require_root(data.root), name)
    if shards.task != task:
        raise ConfigError(f"{data.root}: these shards hold {shards.task} samples; a {task} model trains on shards "
                          f"written from {written_from} (`swinkit shard`)")  # fmt: skip
    return shards


SEGMENTATION_DATASETS = ("digit_scenes", "segmentation", "wds", "hf")


def build_segmentation_datasets(data, seg, splits: tuple[str, ...] = ("train", "val")) -> list:
    """The ``splits`` ('train', 'val') of a segmentation run: ``data.dataset=digit_scenes`` (built in;
    ``seg.scenes``, ``seg.val_scenes``, ``seg.scene_size``), ``segmentation`` (a folder of ``images/<split>`` and
    ``annotations/<split>``: ADE20K's layout, ``swinkit.data.label_maps``), ``wds`` (that folder written as
    shards by ``swinkit shard``, local or remote) or ``hf`` (a Hugging Face dataset of images and label maps,
    ``swinkit.data.hf.HFSegmentation``); ``auto`` (what ``--data`` sets) is shards, a Hugging Face dataset or a
    folder by what ``root`` holds."""
    data = _task_dataset(data, "segmentation")
    if data.dataset not in SEGMENTATION_DATASETS:
        raise ConfigError(f"data.dataset={data.dataset} holds classified images; a segmentation model trains on "
                          f"data.dataset= one of {', '.join(SEGMENTATION_DATASETS)}")  # fmt: skip
    out = []
    for split in splits:
        limit = data.max_train_samples if split == "train" else data.max_val_samples
        name = data.train_split if split == "train" else data.val_split
        if data.dataset == "digit_scenes":
            dataset = DigitScenes(split, seg.scenes if split == "train" else seg.val_scenes, seg.scene_size)
        elif data.dataset == "wds":
            dataset = _task_shards(data, name, limit, "segmentation", "a folder of images/ and annotations/")
        elif data.dataset == "hf":
            dataset = HFSegmentation(require_root(data.root), name, seg.reduce_zero_label)
        else:
            dataset = SegmentationFolder(require_root(data.root), name, seg.reduce_zero_label)
        out.append(first(dataset, limit))
    return out


DETECTION_DATASETS = ("digit_scenes", "coco", "wds", "hf")


def build_detection_datasets(data, seg, det, masks: bool, splits: tuple[str, ...] = ("train", "val")) -> list:
    """The ``splits`` ('train', 'val') of a detection run: ``data.dataset=digit_scenes`` (built in; ``seg.scenes``,
    ``seg.val_scenes``, ``seg.scene_size``), ``coco`` (``data.root/annotations/instances_<split>.json`` beside
    ``data.root/<split>/``, ``swinkit.data.coco``; ``det.filter_empty`` applies to the training split) or ``wds``
    (that folder written as shards by ``swinkit shard``, local or remote; every image of the file, those without
    annotations too) or ``hf`` (a Hugging Face dataset of images and objects, ``swinkit.data.hf.HFDetection``, boxes
    in ``det.hf_box_format``); ``auto`` (what ``--data`` sets) is shards, a Hugging Face dataset or a COCO folder by
    what ``root`` holds. ``masks``: the model trains masks (Mask R-CNN)."""
    data = _task_dataset(data, "coco")
    if data.dataset not in DETECTION_DATASETS:
        raise ConfigError(f"data.dataset={data.dataset} holds no object annotations; a detector trains on "
                          f"data.dataset= one of {', '.join(DETECTION_DATASETS)} (COCO's layout for your own "
                          "data)")  # fmt: skip
    out = []
    for split in splits:
        limit = data.max_train_samples if split == "train" else data.max_val_samples
        name = data.train_split if split == "train" else data.val_split
        if data.dataset == "digit_scenes":
            count = seg.scenes if split == "train" else seg.val_scenes
            dataset = DigitSceneInstances(split, min(count, limit or count), seg.scene_size)
        elif data.dataset == "wds":
            dataset = _task_shards(data, name, limit, "detection", "COCO's layout")
        elif data.dataset == "hf":
            dataset = HFDetection(require_root(data.root), name, masks, det.hf_box_format, limit)
        else:
            dataset = CocoDetection(require_root(data.root), name, masks=masks,
                                    filter_empty=det.filter_empty and split == "train", limit=limit)  # fmt: skip
        out.append(dataset)
    return out


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
