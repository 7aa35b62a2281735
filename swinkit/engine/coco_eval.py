"""COCO evaluation of a detector, exact for any number of processes: pycocotools' ``COCOeval`` on every image once.

Each process runs its round-robin share of the validation set (``swinkit.engine.parallel.evaluation_batches``) and
turns the detections into COCO's result entries: ``bbox`` as (x, y, width, height) in the image's pixels, the class
as its COCO ``category_id``, masks (the model's probabilities over 0.5, torchvision's and mmdet's threshold) as
compressed RLE. The entries are gathered to the first process with each evaluated image's ground truth (the
``record`` its target carries: its COCO entry and annotations, crowd regions included, which COCOeval ignores
detections on), which scores them with ``COCOeval`` for ``bbox`` and ``segm``; the scores are then sent to every
process. So the ground truth is what was evaluated, from a folder or a stream of shards alike; an image that could
not be read is left out (and counted by the loader), as an unreadable image is from a top-1. A split without any
detection scores 0.

The scores are COCOeval's twelve ``stats`` (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl) times
100, with -1 where the split has no object of that size; the per-class AP is each class's precision averaged over
IoU 0.5:0.95, recall and all areas at 100 detections, as mmdet's ``classwise`` table.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch
from torch import nn

from ..core.distributed import all_gather_objects, broadcast_object, is_main_process
from ..data.coco import coco_mask
from .parallel import evaluation_batches
from .setup import autocast

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
MASK_THRESHOLD = 0.5


def coco_results(output: dict, image_id: int, category_ids: list[int]) -> tuple[list[dict], list[dict]]:
    """One image's detections (torchvision's output dict, on the CPU) as COCO result entries: boxes, and masks when
    the output has them."""
    boxes = output["boxes"].double().tolist()
    scores = output["scores"].float().tolist()
    categories = [category_ids[label - 1] for label in output["labels"].tolist()]
    box_entries = [{"image_id": image_id, "category_id": c, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": s}
                   for (x0, y0, x1, y1), c, s in zip(boxes, categories, scores, strict=True)]  # fmt: skip
    mask_entries = []
    if "masks" in output:
        binary = (output["masks"][:, 0] > MASK_THRESHOLD).to(torch.uint8).numpy()
        for plane, c, s in zip(binary, categories, scores, strict=True):
            rle = coco_mask().encode(np.asfortranarray(plane))
            mask_entries.append({"image_id": image_id, "category_id": c, "score": s,
                                 "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
    return box_entries, mask_entries


def ground_truth(records: list[tuple[dict, list[dict]]], classes: list[str], category_ids: list[int]) -> dict:
    """COCO's JSON form of the images' ``(entry, annotations)`` records, with COCOeval's ``area`` (the box's, where
    an annotation has no number there) and ``iscrowd`` (0 or 1) filled in and the annotations numbered 1, 2, ..."""
    images, annotations = [], []
    for image, anns in records:
        images.append(image)
        for ann in anns:  # numbered afresh: COCOeval indexes annotations by id, which scores do not depend on
            area = ann.get("area")
            if not (isinstance(area, int | float) and not isinstance(area, bool) and math.isfinite(area)):
                area = ann["bbox"][2] * ann["bbox"][3]
            annotations.append({**ann, "iscrowd": int(bool(ann.get("iscrowd", 0))), "area": area,
                                "id": len(annotations) + 1})  # fmt: skip
    categories = [{"id": cid, "name": name} for cid, name in zip(category_ids, classes, strict=True)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _quiet(call, *args):
    """``call(*args)`` without the progress and tables pycocotools prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        return call(*args)


def score(truth: dict, results: list[dict], iou_type: str, classes: list[str]) -> dict:
    """COCOeval of ``results`` against ``truth`` (COCO's JSON dicts): ``{"stats": {name: value x 100}, "per_class":
    [{"class", "AP"}]}``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {"stats": dict.fromkeys(STAT_NAMES, 0.0), "per_class": [{"class": c, "AP": 0.0} for c in classes]}
    gt = COCO()
    gt.dataset = truth
    _quiet(gt.createIndex)
    detections = _quiet(gt.loadRes, [dict(entry) for entry in results])  # loadRes adds fields to its entries
    evaluator = COCOeval(gt, detections, iou_type)
    _quiet(evaluator.evaluate)
    _quiet(evaluator.accumulate)
    _quiet(evaluator.summarize)
    precision = evaluator.eval["precision"]  # (IoU, recall, class, area, max detections)
    per_class = []
    for k, name in enumerate(classes):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_class.append({"class": name, "AP": float(values.mean() * 100) if values.size else float("nan")})
    stats = {name: float(v * 100) if v >= 0 else -1.0 for name, v in zip(STAT_NAMES, evaluator.stats, strict=True)}
    return {"stats": stats, "per_class": per_class}


@torch.no_grad()
def evaluate_detection(model: nn.Module, loader, device: torch.device, precision: str, classes: list[str],
                       category_ids: list[int]) -> dict:  # fmt: skip
    """COCO scores of ``model`` on every image ``loader`` gives (module docstring): ``{"bbox": score(),
    "segm": score() (a model with masks), "n": images}`` in every process, and in the first one also
    ``"detections": {"bbox": [...], "segm": [...]}``, the result entries scored; call on every process."""
    boxes, masks, records = [], [], []
    for images, targets in evaluation_batches(model, loader, device):
        with autocast(device, precision):
            outputs = model(images)
        for output, target in zip(outputs, targets, strict=True):
            cpu = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in output.items()}
            box_entries, mask_entries = coco_results(cpu, int(target["image_id"]), category_ids)
            boxes += box_entries
            masks += mask_entries
            records.append(target["record"])
    gathered = all_gather_objects((boxes, masks, records))
    result, detections = None, None
    if is_main_process():
        boxes = [entry for part in gathered for entry in part[0]]
        masks = [entry for part in gathered for entry in part[1]]
        records = [record for part in gathered for record in part[2]]
        truth = ground_truth(records, classes, category_ids)
        result = {"bbox": score(truth, boxes, "bbox", classes), "n": len(records)}
        detections = {"bbox": boxes}
        if model.roi_heads.has_mask():
            result["segm"] = score(truth, masks, "segm", classes)
            detections["segm"] = masks
    result = broadcast_object(result)
    return {**result, "detections": detections} if detections is not None else result
