"""Segmentation data on disk: label maps and their checks, and folders of images beside label maps.

- ``SegmentationFolder``: ``root/images/<split>/*`` beside ``root/annotations/<split>/*.png`` paired by file stem,
  ADE20K's release layout (splits ``training`` and ``validation``), or mmseg's generic one, ``root/img_dir/<split>``
  beside ``root/ann_dir/<split>``. Classes come from ``root/classes.txt`` (one name per line), else ADE20K's 150. With
  ``reduce_zero_label`` (ADE20K) label 0 ("other") becomes the ignore index 255 and every other label drops by one.

A label map must be a single-channel index map (PNG mode L, P or I;16 with values below 256) of its image's size,
with values below the class count or equal to the ignore index; anything else is a ``LabelMapError`` naming the file
and the fix. Its size is checked before its pixels are decoded.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import DataError, DataLayoutError
from .datasets import IMG_EXTENSIONS, decode_image, read_image_file

IGNORE_INDEX = 255
ADE20K_CLASSES_FILE = Path(__file__).parent / "ade20k_classes.txt"


class LabelMapError(DataError):
    """A label map that does not fit its image or its classes."""


def read_label_map(path: Path, size: tuple[int, int], num_classes: int, reduce_zero_label: bool) -> np.ndarray:
    """The (H, W) uint8 label map at ``path`` for an image of ``size`` (W, H), checked and reduced."""
    return decode_label_map(read_image_file(path), str(path), size, num_classes, reduce_zero_label)


def decode_label_map(data: bytes, name: str, size: tuple[int, int], num_classes: int,
                     reduce_zero_label: bool) -> np.ndarray:  # fmt: skip
    """The (H, W) uint8 label map encoded in ``data`` (``name`` says where it came from), checked against its image's
    ``size`` (W, H) before its pixels are decoded, then against the classes, and reduced."""
    try:
        with Image.open(io.BytesIO(data)) as label:
            mode, label_size = label.mode, label.size
            if mode not in ("L", "P", "I;16", "I"):
                raise LabelMapError(f"{name}: a {mode} image where a single-channel index map (PNG mode L or P) is "
                                    "expected; convert colour-coded masks to class indices first")  # fmt: skip
            if label_size != size:
                raise LabelMapError(f"{name}: label map is {label_size[0]}x{label_size[1]} but its image is "
                                    f"{size[0]}x{size[1]}; the pair must be the same size (is it the right file?)")
            values = np.asarray(label)
    except LabelMapError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        reason = f"{type(err).__name__}: {err}"
        raise LabelMapError(f"{name}: not a readable label map ({reason}); replace the file") from err
    if values.max(initial=0) > IGNORE_INDEX:
        raise LabelMapError(f"{name}: label value {int(values.max())} does not fit an index map of 8 bits")
    values = values.astype(np.uint8)
    if reduce_zero_label:
        values = np.where(values == 0, IGNORE_INDEX, values - 1).astype(np.uint8)
        values[values == IGNORE_INDEX - 1] = IGNORE_INDEX
    check_labels(values, num_classes, name)
    return values


def check_labels(values: np.ndarray, num_classes: int, name: str) -> None:
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        raise LabelMapError(f"{name}: label value {int(bad.max())} is outside the {num_classes} classes (0.."
                            f"{num_classes - 1}, {IGNORE_INDEX} = ignore); fix the map, the class list, or "
                            "seg.reduce_zero_label")  # fmt: skip


FOLDER_LAYOUTS = (("images", "annotations"), ("img_dir", "ann_dir"))  # ADE20K's, mmseg's generic one


def folder_layout(root: Path) -> tuple[str, str] | None:
    """The (images, label maps) directory names ``root`` holds: the first of ``FOLDER_LAYOUTS`` present, else
    None."""
    return next(((i, a) for i, a in FOLDER_LAYOUTS if (root / i).is_dir() and (root / a).is_dir()), None)


class SegmentationFolder:
    """Images and label maps of one split of ``root`` (module docstring)."""

    def __init__(self, root: str | Path, split: str, reduce_zero_label: bool = False,
                 classes: Sequence[str] | None = None) -> None:  # fmt: skip
        root = Path(root)
        image_dir, label_dir = folder_layout(root) or FOLDER_LAYOUTS[0]  # absent: the error names ADE20K's
        images, labels = root / image_dir / split, root / label_dir / split
        for folder in (images, labels):
            if not folder.is_dir():
                raise DataLayoutError(f"{folder} does not exist; a segmentation folder holds images/{split}/ and "
                                      f"annotations/{split}/ (ADE20K's layout), or img_dir/{split}/ and "
                                      f"ann_dir/{split}/ (mmseg's)")  # fmt: skip
        pictures = {p.stem: p for p in sorted(images.iterdir()) if p.suffix.lower() in IMG_EXTENSIONS}
        maps = {p.stem: p for p in sorted(labels.iterdir()) if p.suffix.lower() == ".png"}
        if not pictures:
            raise DataLayoutError(f"{images}: no images in the {split} split")
        unpaired = sorted(set(pictures) ^ set(maps))
        if unpaired:
            stem = unpaired[0]
            lonely = pictures.get(stem) or maps[stem]
            other = "label map" if stem in pictures else "image"
            raise DataLayoutError(f"{lonely} has no {other} of the same name ({len(unpaired)} unpaired file(s) in "
                                  f"{root}); every image needs its label map and the reverse")  # fmt: skip
        self.pairs = [(pictures[stem], maps[stem]) for stem in sorted(pictures)]
        self.classes = list(classes) if classes is not None else folder_classes(root)
        self.reduce_zero_label = reduce_zero_label

    def __len__(self) -> int:
        return len(self.pairs)

    def name(self, index: int) -> str:
        return str(self.pairs[index][0])

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        image_path, label_path = self.pairs[index]
        image = decode_image(read_image_file(image_path), str(image_path))
        return image, read_label_map(label_path, image.size, len(self.classes), self.reduce_zero_label)


def folder_classes(root: Path) -> list[str]:
    """The class names of ``root/classes.txt`` (one per line), else ADE20K's 150."""
    listed = root / "classes.txt"
    return read_classes(listed if listed.is_file() else ADE20K_CLASSES_FILE)


def read_classes(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
