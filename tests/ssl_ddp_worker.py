"""Run by tests/test_ssl_moby.py under torchrun (2 processes, gloo): one DDP step of a tiny MoBY.

Each process feeds its own images and saves its keys (recomputed by the unchanged target branch) and its queues.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from tests.ssl_utils import tiny_moby


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = tiny_moby(seed=0)  # the same initial weights and queues in every process
    net = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    g = torch.Generator().manual_seed(100 + rank)
    a, b = torch.randn(4, 3, 16, 16, generator=g), torch.randn(4, 3, 16, 16, generator=g)
    net(a, b).backward()
    with torch.no_grad():
        key1, key2 = (F.normalize(model.projector_k(model.encoder_k(v)), dim=1) for v in (a, b))
    state = {"key1": key1, "key2": key2, "queue1": model.queue1, "queue2": model.queue2, "queue_ptr": model.queue_ptr}
    torch.save(state, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
