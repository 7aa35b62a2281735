"""Run by tests/test_segmentation_engine.py under torchrun (2 processes, gloo): a sharded UperNet evaluated with
sliding windows and test-time flip on shares of different lengths and image sizes, so the processes run different
numbers of forwards; writes the scores each process got.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from swinkit.core.distributed import cleanup
from swinkit.engine.config import SegConfig
from swinkit.engine.parallel import shard
from swinkit.engine.segmentation_eval import evaluate_segmentation
from tests.engine_utils import SLIDING, tiny_upernet, uneven_batches


def evaluate(rank: int) -> dict:
    model = shard(tiny_upernet())
    batches = uneven_batches()[rank::2]  # process 0: two batches, process 1: one, of other sizes
    return evaluate_segmentation(model, batches, torch.device("cpu"), "fp32", 5, replace(SegConfig(), **SLIDING))


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    result = evaluate(rank)  # the sharded model is gone when it returns: cleanup() can collect it
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    cleanup()  # as swinkit's commands leave: FSDP's modules freed at interpreter exit can abort the process


if __name__ == "__main__":
    main(Path(sys.argv[1]))
