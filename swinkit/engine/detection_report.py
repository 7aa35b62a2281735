"""What a detection evaluation leaves beside its numbers: the record's AP fields and the COCO tables.

A training run writes ``val_coco.txt`` to its directory after each evaluation (the latest one, its epoch and step in
the first line): COCOeval's twelve numbers for boxes (and masks) and the per-class AP table; ``swinkit eval`` prints
the same tables, with the numbers in its ``eval.json``.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..core.atomic import write_atomic

RECORDED = {"AP": "ap", "AP50": "ap50", "AP75": "ap75"}
IOU_TYPES = {"bbox": "box", "segm": "mask"}


def record(result: dict, prefix: str) -> dict:
    """An epoch record's fields of ``evaluate_detection``'s ``result``: ``{prefix}box_ap``, ``_ap50``, ``_ap75``
    (and ``mask_``)."""
    out = {}
    for iou_type, kind in IOU_TYPES.items():
        if iou_type in result:
            stats = result[iou_type]["stats"]
            out.update({f"{prefix}{kind}_{field}": stats[name] for name, field in RECORDED.items()})
    return out


def _cell(value: float) -> str:
    return "-" if value < 0 or math.isnan(value) else f"{value:.1f}"


def coco_tables(result: dict) -> str:
    """COCO's twelve numbers per IoU type in one table, then the per-class AP (box and mask side by side)."""
    kinds = [k for k in IOU_TYPES if k in result]
    names = list(result[kinds[0]]["stats"])
    lines = [f"{'':6}" + "".join(f"{name:>7}" for name in names)]
    for kind in kinds:
        stats = result[kind]["stats"]
        lines.append(f"{IOU_TYPES[kind]:6}" + "".join(f"{_cell(stats[n]):>7}" for n in names))
    width = max(len(row["class"]) for row in result[kinds[0]]["per_class"])
    lines += ["", f"{'class':{width}}" + "".join(f"{IOU_TYPES[k] + ' AP':>10}" for k in kinds)]
    for i, row in enumerate(result[kinds[0]]["per_class"]):
        cells = "".join(f"{_cell(result[k]['per_class'][i]['AP']):>10}" for k in kinds)
        lines.append(f"{row['class']:{width}}{cells}")
    return "\n".join(lines) + "\n"


def write_run_report(run_dir: str | Path, result: dict, epoch: int, step: int) -> Path:
    """``val_coco.txt`` in ``run_dir``: the tables of the evaluation at ``epoch`` (``step``), written atomically."""
    path = Path(run_dir) / "val_coco.txt"
    text = f"epoch {epoch}, step {step}: {result['n']} images\n\n" + coco_tables(result)
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))
    return path
