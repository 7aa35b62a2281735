"""Datasets, transforms and loaders for training and evaluation: folders, shards, Hugging Face datasets, digits."""

from .build import build_datasets, build_loader, build_val_dataset, dataset_kind
from .datasets import DataLayoutError, Digits, ImageFolder, imagenet_folders
from .loader import EpochSampler, Loader, collate
from .shards import ShardSplit, open_shards, write_shards
from .transforms import build_transform, build_two_view_transform

__all__ = [
    "DataLayoutError",
    "Digits",
    "EpochSampler",
    "ImageFolder",
    "Loader",
    "ShardSplit",
    "build_datasets",
    "build_loader",
    "build_transform",
    "build_two_view_transform",
    "build_val_dataset",
    "collate",
    "dataset_kind",
    "imagenet_folders",
    "open_shards",
    "write_shards",
]
