"""Top-1/top-5 evaluation over the whole validation set, exact for any number of processes (``swinkit eval`` of a
checkpoint is ``swinkit.deploy.eval_checkpoint``).

Each process evaluates its own round-robin share of the validation set (no padding, no duplicates); correct
counts and the number of samples are summed over processes, so the result equals the single-process one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core import device as devices
from ..core.distributed import all_reduce_sum
from .parallel import evaluation_batches
from .setup import autocast


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, precision: str = "fp32") -> dict:
    """Returns ``{"top1", "top5", "loss", "n"}`` over every sample of ``loader``'s dataset, summed over processes.

    top-1/top-5 are percentages; loss is the mean cross-entropy; unreadable images are left out of ``n``.
    """
    counts = torch.zeros(3, dtype=torch.int64)  # correct top-1, correct top-5, samples
    loss_sum = torch.zeros(1, dtype=torch.float64)
    for images, targets in evaluation_batches(model, loader, device):
        with autocast(device, precision):
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").double().cpu()
        topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = topk == targets[:, None]
        counts += torch.tensor([hits[:, 0].sum().item(), hits.any(dim=1).sum().item(), len(targets)])
    if devices.distributed_backend(device) != "gloo":  # NCCL, XCCL, HCCL reduce device tensors
        counts, loss_sum = counts.to(device), loss_sum.to(device)
    all_reduce_sum(counts)
    all_reduce_sum(loss_sum)
    c1, c5, n = counts.tolist()
    n_safe = max(n, 1)
    return {"top1": 100.0 * c1 / n_safe, "top5": 100.0 * c5 / n_safe, "loss": loss_sum.item() / n_safe, "n": n}
