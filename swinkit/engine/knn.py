"""k-nearest-neighbour accuracy of a frozen encoder: the pretraining monitor of ``swinkit pretrain``.

The training images (evaluation transform, no augmentation) form the memory bank; each validation image votes
among its k most cosine-similar bank features with weights ``exp(similarity / T)`` (Wu et al., 2018, as DINO's
monitor). Each process extracts features for its share of the images; the shares are gathered, so the result is
the single-process one for any number of processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.distributed import all_gather_objects
from .parallel import evaluation_batches
from .setup import autocast


@torch.no_grad()
def extract_features(encoder: nn.Module, loader, device: torch.device, precision: str = "fp32"):
    """L2-normalised pooled features (N, D) and labels (N,) of every sample of ``loader``'s dataset, all processes."""
    features, labels = [], []
    for images, targets in evaluation_batches(encoder, loader, device):
        with autocast(device, precision):
            out = encoder(images)
        features.append(F.normalize(out.float(), dim=1).cpu())
        labels.append(targets.cpu())
    shares = all_gather_objects((torch.cat(features) if features else None, torch.cat(labels) if labels else None))
    shares = [s for s in shares if s[0] is not None]
    return torch.cat([f for f, _ in shares]), torch.cat([t for _, t in shares])


def knn_top1(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> float:
    """Top-1 (%) of a similarity-weighted k-NN vote; features are L2-normalised (N, D)."""
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    k = min(k, len(bank))
    correct = 0
    for start in range(0, len(queries), chunk):
        sim, idx = (queries[start : start + chunk] @ bank.T).topk(k, dim=1)  # (n, k)
        votes = torch.zeros(len(sim), num_classes).scatter_add_(1, bank_labels[idx], (sim / temperature).exp())
        correct += (votes.argmax(dim=1) == query_labels[start : start + chunk]).sum().item()
    return 100.0 * correct / max(len(queries), 1)


def knn_accuracy(
    encoder: nn.Module, bank_loader, val_loader, device: torch.device, precision: str = "fp32", k: int = 20,
    temperature: float = 0.07,
) -> float:  # fmt: skip
    """kNN top-1 (%) on ``val_loader``'s images with ``bank_loader``'s images as the labelled memory bank."""
    bank, bank_labels = extract_features(encoder, bank_loader, device, precision)
    queries, query_labels = extract_features(encoder, val_loader, device, precision)
    return knn_top1(bank, bank_labels, queries, query_labels, k, temperature)
