"""Hugging Face image datasets (``data.dataset=hf``): an ``image`` and a ``label`` column, read through the
``datasets`` library as timm's ``hfds`` reader does; for segmentation (``HFSegmentation``) an ``image`` and a
label-map column; for detection (``HFDetection``) an ``image`` and an ``objects`` column.

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
from ..core.errors import DataError, DataLayoutError, MissingExtraError, shown
from .coco import checked_target
from .datasets import MAX_CLASSES, decode_image, read_image_file
from .label_maps import ADE20K_CLASSES_FILE, decode_label_map, folder_classes, read_classes

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
    """A split of a Hugging Face image dataset, map-style like ``ImageFolder`` (``load(i)``, ``target(i)``).

    Labels must be class indices: integers from 0, below the ``ClassLabel``'s count when the column is one (else at
    most ``MAX_CLASSES`` classes). Images are read from the bytes a row stores, or from a file the row names only
    where it lies inside the dataset's own directory or the Hugging Face caches (a regular file of at most
    ``MAX_IMAGE_BYTES``): a row cannot make swinkit read ``/dev/zero`` or ``/etc/passwd``. A dataset whose rows name
    files elsewhere is refused row by row; store the images in it (``Dataset.from_dict`` with ``{"bytes": ...}``
    images, or ``save_to_disk``, which embeds them).
    """

    def __init__(self, root: str, split: str) -> None:
        import datasets

        ds, self.split = _load(root, split)
        where = f"{root} ({self.split})"
        missing = [c for c in ("image", "label") if c not in ds.column_names]
        if missing:
            have = shown(", ".join(ds.column_names))
            raise DataLayoutError(f"{where}: no {' or '.join(missing)} column (it has {have}); an image dataset has "
                                  "image and label")  # fmt: skip
        if not isinstance(ds.features["image"], datasets.Image):
            raise DataLayoutError(f"{where}: the image column holds {shown(str(ds.features['image']))}, not images")
        if len(ds) == 0:
            raise DataLayoutError(f"{where}: the split has no rows")
        self.root = root
        self.ds = ds.cast_column("image", datasets.Image(decode=False)).select_columns(["image"])
        feature = ds.features["label"]
        names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        try:
            labels = list(ds["label"])
        except Exception as err:  # pyarrow's errors on a damaged data file are of every kind, SystemError included
            raise DataError(f"{where}: the label column cannot be read ({remote.reason(err)}); the dataset's files "
                            "are damaged: write or download it again") from err  # fmt: skip
        self.targets = _class_indices(labels, len(names) if names is not None else MAX_CLASSES, where)
        self.classes = names if names is not None else [str(c) for c in range(max(self.targets) + 1)]
        self.allowed = _image_dirs(root)

    def __len__(self) -> int:
        return len(self.targets)

    def name(self, index: int) -> str:
        return f"{self.root}[{self.split}][{index}]"

    def target(self, index: int) -> int:
        return self.targets[index]

    def load(self, index: int) -> Image.Image:
        data, where = _stored_file(self.ds, index, "image", self.root, self.allowed)
        return decode_image(data, where or self.name(index))


def _stored_file(ds, index: int, column: str, root: str, allowed: tuple[str, ...]) -> tuple[bytes, str | None]:
    """The bytes of row ``index``'s ``column`` (an undecoded ``datasets.Image``): stored in the row, or read from the
    file it names where ``allowed`` (see ``HFImages``); with that file's name, None for stored bytes."""
    try:
        stored = ds[index][column]
    except Exception as err:  # a damaged data file: this row is unreadable, like a corrupt image file
        raise OSError(f"the row cannot be read ({remote.reason(err)})") from err
    if not isinstance(stored, dict):
        raise OSError(f"the row's {column} is a {type(stored).__name__}, not stored image bytes")
    if stored.get("bytes"):
        return stored["bytes"], None
    if stored.get("path"):
        path = Path(stored["path"])
        if not path.is_absolute() and not remote.is_remote(root):
            path = Path(root) / path
        return read_image_file(path, allowed), str(stored["path"])
    raise OSError(f"the row's {column} holds no image bytes nor a path")


LABEL_MAP_COLUMNS = ("annotation", "label", "semantic_segmentation", "segmentation", "mask")


class HFSegmentation:
    """A split of a Hugging Face segmentation dataset, like ``label_maps.SegmentationFolder``: ``load(i)`` gives
    the image and its checked label map.

    The label map is the dataset's other image column (the first of ``LABEL_MAP_COLUMNS`` where there are several:
    ``annotation`` in ADE20K's ``scene_parse_150``); it is read and checked as a folder's label map is. The classes
    come from a ``classes.txt`` beside a local dataset, else they are ADE20K's 150. Rows are read as ``HFImages``
    reads them (stored bytes, or files inside the dataset's own directory and the caches).
    """

    def __init__(self, root: str, split: str, reduce_zero_label: bool = False) -> None:
        import datasets

        ds, self.split = _load(root, split)
        where = f"{root} ({self.split})"
        images = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
        maps = [c for c in LABEL_MAP_COLUMNS if c in images] + [c for c in images if c not in (*LABEL_MAP_COLUMNS,
                                                                                              "image")]  # fmt: skip
        if "image" not in images or not maps:
            have = shown(", ".join(f"{c}: {type(f).__name__}" for c, f in ds.features.items()))
            raise DataLayoutError(f"{where}: a segmentation dataset has an image column and a label-map image column "
                                  f"(e.g. annotation); it has {have}")  # fmt: skip
        if len(ds) == 0:
            raise DataLayoutError(f"{where}: the split has no rows")
        self.root, self.column, self.reduce_zero_label = root, maps[0], reduce_zero_label
        columns = ["image", self.column]
        self.ds = ds.cast_column("image", datasets.Image(decode=False)).cast_column(
            self.column, datasets.Image(decode=False)).select_columns(columns)  # fmt: skip
        local = not remote.is_remote(root) and not root.startswith(HUB_PREFIX)
        self.classes = folder_classes(Path(root)) if local else read_classes(ADE20K_CLASSES_FILE)
        self.allowed = _image_dirs(root)

    def __len__(self) -> int:
        return len(self.ds)

    def name(self, index: int) -> str:
        return f"{self.root}[{self.split}][{index}]"

    def load(self, index: int):
        data, where = _stored_file(self.ds, index, "image", self.root, self.allowed)
        image = decode_image(data, where or self.name(index))
        labels, where = _stored_file(self.ds, index, self.column, self.root, self.allowed)
        return image, decode_label_map(labels, where or f"{self.name(index)} ({self.column})", image.size,
                                       len(self.classes), self.reduce_zero_label)  # fmt: skip


BOX_FORMATS = ("xywh", "xyxy")


class HFDetection:
    """A split of a Hugging Face detection dataset, as ``swinkit.data.coco`` datasets are: ``load(i)`` gives the
    image and its target (with its ``record``, the ground truth it is scored on).

    The layout is the one of the Hub's object-detection datasets and transformers' guide (``cppe-5``): an ``image``
    column and an ``objects`` column holding, per image, ``bbox`` (``box_format``: COCO's ``xywh``, or ``xyxy``) and
    ``category`` (a ``ClassLabel``: its names are the classes, its indices the category ids), with ``id``,
    ``iscrowd``, ``area`` and ``segmentation`` (COCO's polygons or RLE) where the dataset has them; an ``image_id``
    column names the images (else the row number). ``limit`` keeps the first rows. Annotations are checked as a COCO
    file's, once the image has been decoded (its size comes from its pixels): one that cannot be trained on is left
    out and named in a warning. Rows are read as ``HFImages`` reads them.
    """

    def __init__(self, root: str, split: str, masks: bool = True, box_format: str = "xywh",
                 limit: int | None = None) -> None:  # fmt: skip
        import datasets

        ds, self.split = _load(root, split)
        where = f"{root} ({self.split})"
        feature = ds.features.get("objects")
        category = _inner(feature, "category") if feature is not None else None
        if "image" not in ds.column_names or not isinstance(ds.features["image"], datasets.Image) or category is None:
            have = shown(", ".join(ds.column_names))
            raise DataLayoutError(f"{where}: a detection dataset has an image column and an objects column of bbox and "
                                  f"category (a ClassLabel); it has {have}")  # fmt: skip
        if not isinstance(category, datasets.ClassLabel):
            raise DataLayoutError(f"{where}: objects.category is {shown(str(category))}; a ClassLabel names the "
                                  "classes")  # fmt: skip
        if box_format not in BOX_FORMATS:
            raise DataLayoutError(f"det.hf_box_format={box_format!r}: one of {', '.join(BOX_FORMATS)}")
        if len(ds) == 0:
            raise DataLayoutError(f"{where}: the split has no rows")
        self.root, self.masks, self.box_format = root, masks, box_format
        self.classes = list(category.names)
        self.category_ids = list(range(len(self.classes)))
        columns = ["image", "objects", *(["image_id"] if "image_id" in ds.column_names else [])]
        ds = ds.cast_column("image", datasets.Image(decode=False)).select_columns(columns)
        self.ds = ds.select(range(min(limit, len(ds)))) if limit else ds
        self.allowed = _image_dirs(root)

    def __len__(self) -> int:
        return len(self.ds)

    def name(self, index: int) -> str:
        return f"{self.root}[{self.split}][{index}]"

    def load(self, index: int):
        data, where = _stored_file(self.ds, index, "image", self.root, self.allowed)
        where = where or self.name(index)
        picture = decode_image(data, where)
        row = self.ds[index]
        image_id = row.get("image_id", index)
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise DataError(f"{where}: image_id {shown(image_id, 40)} is not an integer")
        image = {"id": image_id, "width": picture.size[0], "height": picture.size[1], "file_name": self.name(index)}
        anns = _annotations(row["objects"], image_id, self.box_format, where)
        label_of = {cid: cid + 1 for cid in self.category_ids}
        return picture, checked_target(image, anns, label_of, self.masks, where)


def _inner(feature, key: str):
    """The feature of each object's ``key`` inside an ``objects`` column: a ``Sequence`` (``List``) of a dict, a dict
    of ``Sequence``s (how ``datasets`` stores a sequence of a dict), or a list of one dict."""
    inner = getattr(feature, "feature", feature)
    inner = inner[0] if isinstance(inner, list) and inner else inner
    value = inner.get(key) if isinstance(inner, dict) else None
    if isinstance(feature, dict) and value is not None:  # a dict of per-object lists
        value = getattr(value, "feature", value)
    return value


def _annotations(objects, image_id: int, box_format: str, where: str) -> list[dict]:
    """A row's ``objects`` (a dict of per-object lists, or a list of per-object dicts) as COCO annotations."""
    if isinstance(objects, dict):
        count = len(objects.get("bbox") or [])
        if any(not isinstance(v, list) or len(v) != count for v in objects.values()):
            raise DataError(f"{where}: objects' fields are not lists of one entry per object")
        objects = [{k: v[i] for k, v in objects.items()} for i in range(count)]
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise DataError(f"{where}: objects is {shown(objects, 40)}, not a list of objects")
    anns = []
    for n, obj in enumerate(objects):
        box = obj.get("bbox")
        numbers = isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) and not isinstance(
            v, bool) for v in box)  # fmt: skip
        if box_format == "xyxy" and numbers:
            box = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
        ann = {"id": obj.get("id", n), "image_id": image_id, "category_id": obj.get("category"), "bbox": box,
               "iscrowd": int(bool(obj.get("iscrowd", 0)))}  # fmt: skip
        if obj.get("segmentation") not in (None, [], {}):
            ann["segmentation"] = obj["segmentation"]
        if isinstance(obj.get("area"), int | float) and not isinstance(obj.get("area"), bool):
            ann["area"] = obj["area"]
        anns.append(ann)
    return anns


def _class_indices(labels: list, count: int, where: str) -> list[int]:
    """``labels`` as class indices in ``[0, count)``; anything else (a string, None, NaN, 1.5, a list, -1) is refused
    with its row."""
    for row, label in enumerate(labels):
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < count:
            kind = "no label (-1: a test split?)" if label == -1 else f"a {type(label).__name__} {shown(label, 40)}"
            raise DataError(f"{where}: row {row} has {kind}, not a class index in [0, {count}); labels must be "
                            "integer class indices")  # fmt: skip
    return labels


def _image_dirs(root: str) -> tuple[str, ...]:
    """Where a row's image file may lie: the dataset's own directory, and the caches Hub datasets download into."""
    import datasets
    from huggingface_hub import constants

    own = () if remote.is_remote(root) else (root,)
    return (*own, datasets.config.HF_DATASETS_CACHE, constants.HF_HUB_CACHE)
