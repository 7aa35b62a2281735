"""Detection data: COCO's annotation files and the built-in digit scenes as instance datasets.

A detection dataset has ``classes`` (object class names, the background not counted), ``category_ids`` (the COCO
category id of each class), ``len``, ``name(i)``, ``load(i) -> (PIL RGB image, target)`` and ``record(i) ->
(image entry, annotations)`` in COCO's JSON form (the ground truth the COCO evaluator scores against, crowd
regions included). A target holds ``boxes`` (N, 4) float32 pixel edges (x0, y0, x1, y1), ``labels`` (N,) int64 in
1..len(classes) (the class's index + 1: 0 is torchvision's background), ``masks`` (N, H, W) uint8 and ``image_id``.

``CocoDetection`` reads COCO's layout: ``root/annotations/instances_<split>.json`` beside the images in
``root/<split>/`` (``file_name`` relative to it). Classes are the file's ``categories`` in id order. Masks come from
polygons (a list of ``[x0, y0, x1, y1, ...]``) or RLE (``{"size": [h, w], "counts": ...}``, compressed or not),
decoded by pycocotools. Crowd annotations (``iscrowd: 1``) are not trained on (as torchvision's and mmdet's
pipelines) and stay in the ground truth, where the COCO evaluator ignores detections that match them.

The file is checked whole when the dataset is built. What makes it unusable is an ``AnnotationError`` naming the
entry and the fix: not JSON, not COCO's structure, two images with one id. An annotation that cannot be trained on
is skipped, counted and named in one warning (``skipped``): a box outside its image or without area, a category id
that ``categories`` lacks, a polygon of fewer than 3 points, RLE of another size than its image, no segmentation
where masks are trained. Boxes that reach past the border are clipped to it (COCO's own do, by fractions of a
pixel). A missing or unreadable image file is skipped when it is loaded and counted as the loop counts unreadable
images. An RLE's counts are checked to cover exactly its image before pycocotools decodes them (its decoder writes
where the counts say), and an image's masks are decoded only once the image itself has been read at the size its
entry declares.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.errors import DataError, DataLayoutError, MissingExtraError, shown
from .datasets import decode_image, read_image_file

log = logging.getLogger(__name__)

MAX_ANNOTATION_BYTES = 4 << 30  # COCO's largest file (instances_train2017.json) is 448 MB
MAX_SHOWN = 5


class AnnotationError(DataError):
    """An annotation file, or an entry of it, that cannot be used; the message names it and the fix."""


def coco_mask():
    """pycocotools' mask API (the ``detection`` extra)."""
    try:
        from pycocotools import mask
    except ImportError as err:
        raise MissingExtraError("detection needs pycocotools: pip install 'swinkit[detection]'") from err
    return mask


def rle_counts(counts: str) -> list[int]:
    """The run lengths of COCO's compressed RLE string (pycocotools' ``rleFrString``: 5-bit groups in characters
    from 48, a continuation bit, sign extension, each count after the second stored as a difference)."""
    out: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                raise ValueError("the string ends inside a count")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[p]!r} is outside COCO's RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def _decode_mask(segmentation, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 of a checked polygon list or RLE (``_check_segmentation``)."""
    mask = coco_mask()
    if isinstance(segmentation, list):
        rle = mask.merge(mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    return np.ascontiguousarray(mask.decode(rle))


def _check_segmentation(segmentation, height: int, width: int) -> str:
    """Why ``segmentation`` cannot be decoded for an image of ``height`` x ``width`` ('' when it can)."""
    if isinstance(segmentation, list):
        if not segmentation or not all(isinstance(p, list) for p in segmentation):
            return "a polygon segmentation is a list of [x0, y0, x1, y1, ...] lists"
        for polygon in segmentation:
            if len(polygon) < 6 or len(polygon) % 2:
                return (f"a polygon of {len(polygon) // 2} point(s){' and an odd coordinate' * (len(polygon) % 2)}; "
                        "a polygon needs at least 3 (x, y) points")  # fmt: skip
            if not all(isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in polygon):
                return "a polygon coordinate that is not a finite number"
            xs, ys = polygon[0::2], polygon[1::2]
            if min(xs) < -width or max(xs) > 2 * width or min(ys) < -height or max(ys) > 2 * height:
                # pycocotools rasterizes a polygon edge by edge, pixel by pixel: far-away points cost without end
                return f"a polygon reaches far outside its {width}x{height} image; fix its coordinates"
        return ""
    if not isinstance(segmentation, dict) or not {"size", "counts"} <= set(segmentation):
        return "segmentation is neither a polygon list nor RLE ({'size': [h, w], 'counts': ...})"
    size = segmentation["size"]
    if size != [height, width]:
        return f"RLE of size {size} on an image of {height}x{width} (h x w); the RLE belongs to another image size"
    counts = segmentation["counts"]
    try:
        runs = rle_counts(counts) if isinstance(counts, str) else counts
    except ValueError as err:
        return f"RLE counts cannot be read ({err})"
    if not isinstance(runs, list) or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in runs):
        return "RLE counts are not non-negative integers"
    if sum(runs) != height * width:
        return f"RLE counts cover {sum(runs)} pixels, not the image's {height * width}"
    return ""


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and bool(np.isfinite(value))


def annotation_problem(ann: dict, size: tuple[int, int], label_of: dict[int, int], masks: bool) -> str:
    """Why an annotation of an image of ``size`` (H, W) cannot be trained on ('' when it can); ``label_of`` maps the
    category ids to labels, ``masks`` asks for a segmentation."""
    height, width = size
    category = ann.get("category_id")
    if not isinstance(category, int) or isinstance(category, bool) or category not in label_of:
        return f"category_id {shown(category, 40)} is not in 'categories'; add the category or fix the annotation"
    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
        return "bbox is not [x, y, width, height] of numbers"
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return f"bbox {box} has zero or negative width or height; fix or remove the annotation"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return f"bbox {box} lies outside its {width}x{height} image; fix or remove the annotation"
    if masks:
        segmentation = ann.get("segmentation")
        if segmentation in (None, [], {}):
            return "no segmentation, which a Mask R-CNN trains on; add one or train a Faster R-CNN"
        reason = _check_segmentation(segmentation, height, width)
        if reason:
            return reason
    return ""


def instance_target(image: dict, anns: list[dict], label_of: dict[int, int], masks: bool) -> dict:
    """The target of an image's checked, non-crowd annotations (module docstring), ``image`` its COCO entry: boxes
    clipped to the image, masks decoded (``masks``)."""
    height, width = image["height"], image["width"]
    boxes = torch.tensor([ann["bbox"] for ann in anns], dtype=torch.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    target = {
        "boxes": boxes.float(),
        "labels": torch.tensor([label_of[ann["category_id"]] for ann in anns], dtype=torch.int64),
        "image_id": image["id"],
    }
    if masks:
        planes = [_decode_mask(ann["segmentation"], height, width) for ann in anns]
        target["masks"] = (torch.from_numpy(np.stack(planes)) if planes
                           else torch.zeros(0, height, width, dtype=torch.uint8))  # fmt: skip
    return target


def checked_target(image: dict, anns: list[dict], label_of: dict[int, int], masks: bool, where: str) -> dict:
    """The target of one image's annotations as a stream gives them (a shard's sample, a dataset row): each checked
    (``annotation_problem``), one that cannot be trained on left out and named in a warning; with the ``record``
    of the image's entry and its usable annotations."""
    kept = []
    for ann in anns:
        problem = annotation_problem(ann, (image["height"], image["width"]), label_of, masks)
        if problem:
            log.warning("%s: annotation %s left out: %s", where, ann.get("id"), problem)
        else:
            kept.append(ann)
    trained = [ann for ann in kept if not ann.get("iscrowd", 0)]
    return {**instance_target(image, trained, label_of, masks), "record": (image, kept)}


def check_size(picture: Image.Image, image: dict, where: str) -> None:
    """The decoded picture must have its entry's size (its masks are decoded at that size)."""
    if picture.size != (image["width"], image["height"]):
        raise DataError(f"{where}: the image is {picture.size[0]}x{picture.size[1]} but its annotation entry says "
                        f"{image['width']}x{image['height']}; the file or the entry is wrong")  # fmt: skip


class CocoDetection:
    """COCO's layout (module docstring): ``root/annotations/instances_<split>.json`` and ``root/<split>/``.

    Args:
        root: the dataset directory.
        split: ``train2017``, ``val2017``, ...
        masks: train masks (Mask R-CNN): an annotation without a usable segmentation is skipped.
        filter_empty: leave out images without a trainable annotation (mmdet's ``filter_empty_gt``, for training);
            evaluation keeps every image.
        limit: keep the first ``limit`` images (in the file's order), for tests and smoke runs.
    """

    def __init__(self, root: str | Path, split: str, *, masks: bool = True, filter_empty: bool = False,
                 limit: int | None = None) -> None:  # fmt: skip
        self.root = Path(root)
        self.annotation_file = self.root / "annotations" / f"instances_{split}.json"
        self.image_dir = self.root / split
        if not self.annotation_file.is_file():
            raise DataLayoutError(f"{self.annotation_file}: no annotation file; COCO's layout is "
                                  f"root/annotations/instances_<split>.json beside root/<split>/ images")  # fmt: skip
        data = _read_json(self.annotation_file)
        self.categories, self.category_ids, self.classes = _categories(data, self.annotation_file)
        label_of = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        images = _images(data, self.annotation_file)
        self.skipped: list[str] = []
        per_image: dict[int, list[dict]] = {image["id"]: [] for image in images}
        train: dict[int, list[dict]] = {image["id"]: [] for image in images}
        sizes = {image["id"]: (image["height"], image["width"]) for image in images}
        for n, ann in enumerate(_list(data, "annotations", self.annotation_file)):
            where = f"{self.annotation_file.name}: annotation {ann.get('id', f'#{n}') if isinstance(ann, dict) else n}"
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            if not isinstance(image_id, int) or isinstance(image_id, bool) or image_id not in sizes:
                raise AnnotationError(f"{where}: its image_id is not an id of 'images'; each annotation must name "
                                      "one of the file's images")  # fmt: skip
            reason = annotation_problem(ann, sizes[ann["image_id"]], label_of, masks)
            if reason:
                self.skipped.append(f"{where} (image {ann['image_id']}): {reason}")
                continue
            per_image[ann["image_id"]].append(ann)
            if not ann.get("iscrowd", 0):
                train[ann["image_id"]].append(ann)
        if filter_empty:
            images = [image for image in images if train[image["id"]]]
        self.images = images[:limit] if limit else images
        self.annotations, self.trained = per_image, train
        self.masks, self.label_of = masks, label_of
        if self.skipped:
            log.warning("%s: skipped %d annotation(s) that cannot be trained on; first: %s", self.annotation_file,
                        len(self.skipped), "; ".join(self.skipped[:MAX_SHOWN]))  # fmt: skip

    def __len__(self) -> int:
        return len(self.images)

    def name(self, index: int) -> str:
        return str(self.image_dir / self.images[index]["file_name"])

    def record(self, index: int) -> tuple[dict, list[dict]]:
        """The image's entry and its usable annotations, crowd regions included."""
        image = self.images[index]
        return image, self.annotations[image["id"]]

    def load(self, index: int) -> tuple[Image.Image, dict]:
        """The image and its target, with ``record``: its ``record(index)``, the ground truth it is scored on."""
        entry = self.images[index]
        path = self.image_dir / entry["file_name"]
        picture = decode_image(read_image_file(path, inside=[self.image_dir]), str(path))
        check_size(picture, entry, str(path))
        target = instance_target(entry, self.trained[entry["id"]], self.label_of, self.masks)
        return picture, {**target, "record": self.record(index)}


def _read_json(path: Path):
    size = path.stat().st_size
    if size > MAX_ANNOTATION_BYTES:
        raise AnnotationError(f"{path}: {size >> 20} MiB, more than any COCO annotation file; is it the right file?")
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: not a JSON annotation file ({err}); COCO's instances_<split>.json is "
                              "expected") from err  # fmt: skip
    except RecursionError as err:
        raise AnnotationError(f"{path}: nested too deeply to be an annotation file") from err


def _list(data, key: str, path: Path) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise AnnotationError(f"{path}: no {key!r} list at the top level; COCO's instances file has 'images', "
                              "'annotations' and 'categories'")  # fmt: skip
    return data[key]


def _categories(data, path: Path) -> tuple[list[dict], list[int], list[str]]:
    categories = _list(data, "categories", path)
    if not categories:
        raise AnnotationError(f"{path}: 'categories' is empty; a detector needs at least one class")
    seen = set()
    for c in categories:
        if not (isinstance(c, dict) and isinstance(c.get("id"), int) and isinstance(c.get("name"), str)):
            raise AnnotationError(f"{path}: category {str(c)[:80]} has no integer 'id' and string 'name'")
        if c["id"] in seen:
            raise AnnotationError(f"{path}: category id {c['id']} appears twice; ids must be unique")
        seen.add(c["id"])
    ordered = sorted(categories, key=lambda c: c["id"])
    return ordered, [c["id"] for c in ordered], [c["name"] for c in ordered]


def _images(data, path: Path) -> list[dict]:
    images, seen = _list(data, "images", path), set()
    for image in images:
        if not (isinstance(image, dict) and isinstance(image.get("id"), int)
                and isinstance(image.get("file_name"), str) and isinstance(image.get("width"), int)
                and isinstance(image.get("height"), int) and image["width"] > 0 and image["height"] > 0):  # fmt: skip
            raise AnnotationError(f"{path}: image entry {str(image)[:80]} needs an integer 'id', a 'file_name' and "
                                  "positive integer 'width' and 'height'")  # fmt: skip
        if image["id"] in seen:
            raise AnnotationError(f"{path}: image id {image['id']} appears twice ({image['file_name']}); ids must be "
                                  "unique, remove or renumber the duplicate")  # fmt: skip
        seen.add(image["id"])
    return images


def write_coco(root: str | Path, split: str, dataset, indices: Sequence[int] | None = None) -> Path:
    """Write ``dataset`` (any detection dataset) in COCO's layout under ``root``: the images as PNG files in
    ``root/<split>/`` and ``root/annotations/instances_<split>.json``; returns the annotation file."""
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in indices if indices is not None else range(len(dataset)):
        picture, _ = dataset.load(i)
        image, anns = dataset.record(i)
        picture.save(root / split / image["file_name"])
        images.append(image)
        annotations += anns
    out = root / "annotations" / f"instances_{split}.json"
    categories = [{"id": cid, "name": name} for cid, name in zip(dataset.category_ids, dataset.classes, strict=True)]
    out.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return out
