"""Datasets, transforms and loaders for training and evaluation."""

from .datasets import DataLayoutError, Digits, ImageFolder, build_datasets, build_val_dataset, imagenet_folders
from .loader import EpochSampler, build_loader, collate
from .transforms import build_transform, build_two_view_transform

__all__ = [
    "DataLayoutError",
    "Digits",
    "EpochSampler",
    "ImageFolder",
    "build_datasets",
    "build_val_dataset",
    "build_loader",
    "build_transform",
    "build_two_view_transform",
    "collate",
    "imagenet_folders",
]
