"""MoBY (Xie et al., 2021, "Self-Supervised Learning with Swin Transformers"): MoCo v2 + BYOL on any backbone.

Online branch: encoder -> projector -> predictor. Target branch: momentum copies of the encoder and projector, no
predictor, no gradients. Each view's prediction is contrasted with the other view's target key (positive) and a
queue of past keys of that other view (negatives):

    L = CE([q1 . k2, q1 . queue2] / T, 0) + CE([q2 . k1, q2 . queue1] / T, 0)

The momentum rises from 0.99 to 1 on a cosine over all training steps and is applied before the target forward.
Keys are gathered from all processes before they enter the FIFO queues. Parameter and buffer names are the
official Transformer-SSL ones (``encoder``, ``encoder_k``, ``projector``, ``projector_k``, ``predictor``,
``queue1``, ``queue2``, ``queue_ptr``), so official checkpoints load as they are (encoder layouts are converted).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import LoadReport
from ..checkpoints import ssl as layout
from ..core.distributed import all_gather_cat
from ..core.errors import CheckpointError, ConfigError
from .backbone import attention_chunks, create_encoder
from .checkpoint import SSLCheckpointLoading, check_part, load_encoder


def momentum_at(step: int, total_steps: int, base: float = 0.99) -> float:
    """Target momentum at optimizer step ``step``: ``1 - (1 - base) * (cos(pi * step / total) + 1) / 2``."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / max(total_steps, 1)) + 1.0) / 2.0


class MoBYMLP(nn.Module):
    """``num_layers - 1`` blocks of Linear -> BatchNorm1d -> ReLU, then a Linear (the last layer has no BN).

    Keys as in the official code: ``linear_hidden.{1 + 3i}`` Linear, ``linear_hidden.{2 + 3i}`` BN, ``linear_out``.
    """

    def __init__(self, in_dim: int, inner_dim: int = 4096, out_dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        hidden: list[nn.Module] = [nn.Identity()]
        for i in range(num_layers - 1):
            hidden += [nn.Linear(in_dim if i == 0 else inner_dim, inner_dim), nn.BatchNorm1d(inner_dim), nn.ReLU(True)]
        self.linear_hidden = nn.Sequential(*hidden)
        self.linear_out = nn.Linear(in_dim if num_layers == 1 else inner_dim, out_dim) if num_layers else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim)."""
        return self.linear_out(self.linear_hidden(x))


class MoBY(SSLCheckpointLoading, nn.Module):
    """MoBY around two copies of one backbone architecture.

    Args:
        encoder: the online backbone, returning pooled features (B, num_features) (built with ``num_classes=0``).
        encoder_k: the target backbone: the same architecture, typically without drop path; its weights are
            overwritten with the online ones.
        momentum: the target momentum at step 0 (rises to 1).
        temperature: of the contrastive loss.
        queue_size: keys per queue; must be a multiple of the global batch.
        proj_dim, hidden_dim, proj_layers, pred_layers: projector (num_features -> hidden -> proj_dim) and
            predictor (proj_dim -> hidden -> proj_dim) MLPs.
    """

    ssl_method = "moby"

    def __init__(
        self,
        encoder: nn.Module,
        encoder_k: nn.Module,
        *,
        momentum: float = 0.99,
        temperature: float = 0.2,
        queue_size: int = 4096,
        proj_dim: int = 256,
        hidden_dim: int = 4096,
        proj_layers: int = 2,
        pred_layers: int = 2,
    ) -> None:
        super().__init__()
        self.base_momentum = momentum
        self.temperature = temperature
        self.queue_size = queue_size
        self.encoder = encoder
        self.encoder_k = encoder_k
        self.projector = MoBYMLP(encoder.num_features, hidden_dim, proj_dim, proj_layers)
        self.projector_k = MoBYMLP(encoder.num_features, hidden_dim, proj_dim, proj_layers)
        self.predictor = MoBYMLP(proj_dim, hidden_dim, proj_dim, pred_layers)
        for online, target in ((self.encoder, self.encoder_k), (self.projector, self.projector_k)):
            target.load_state_dict(online.state_dict())
            target.requires_grad_(False)
        self.register_buffer("queue1", F.normalize(torch.randn(proj_dim, queue_size), dim=0))
        self.register_buffer("queue2", F.normalize(torch.randn(proj_dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def num_features(self) -> int:
        return self.encoder.num_features

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the online encoder's block activations in the backward pass (the target one has no backward)."""
        self.encoder.set_grad_checkpointing(enable)

    def sharding_roots(self) -> list[nn.Module]:
        """Under FSDP each part is a root of its own: the kNN monitor calls the encoder on its own, and the momentum
        update then sees every part's sharded parameters (``swinkit.engine.parallel``)."""
        return [self.encoder, self.encoder_k, self.projector, self.projector_k, self.predictor]

    def feature_module(self) -> nn.Module:
        """The module the kNN monitor reads pooled features from: the online encoder."""
        return self.encoder

    def set_attention_chunks(self, chunks: int) -> None:
        """Window attention of both encoders a group of windows at a time (``HierarchicalModel``'s)."""
        for encoder in (self.encoder, self.encoder_k):
            attention_chunks(encoder, chunks)

    def convert_sync_batchnorm(self) -> None:
        """Sync the heads' BatchNorm over processes (DDP on GPUs), as the official code does."""
        for name in ("projector", "projector_k", "predictor"):
            setattr(self, name, nn.SyncBatchNorm.convert_sync_batchnorm(getattr(self, name)))

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online, for the encoder and the projector."""
        for online, target in ((self.encoder, self.encoder_k), (self.projector, self.projector_k)):
            for p_online, p_target in zip(online.parameters(), target.parameters(), strict=True):
                p_target.mul_(momentum).add_(p_online.detach(), alpha=1.0 - momentum)

    def contrastive_loss(self, query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        """InfoNCE of L2-normalised queries (B, D) against their keys (B, D) and a queue (D, K) of negatives."""
        positive = (query * key).sum(dim=1, keepdim=True)  # (B, 1)
        negative = query @ queue.clone().detach()  # (B, K)
        logits = torch.cat([positive, negative], dim=1) / self.temperature
        return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long, device=query.device))

    @torch.no_grad()
    def enqueue(self, key1: torch.Tensor, key2: torch.Tensor) -> None:
        """Replace the oldest keys of each queue with this step's keys of all processes (rank order)."""
        key1, key2 = all_gather_cat(key1), all_gather_cat(key2)
        n, ptr = key1.shape[0], int(self.queue_ptr)
        if self.queue_size % n:
            raise ConfigError(f"the queue size {self.queue_size} is not a multiple of the global batch {n}")
        self.queue1[:, ptr : ptr + n] = key1.T
        self.queue2[:, ptr : ptr + n] = key2.T
        self.queue_ptr[0] = (ptr + n) % self.queue_size

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, momentum: float | None = None) -> torch.Tensor:
        """Two augmented views (B, C, H, W) of the same images -> the summed symmetric loss (a scalar).

        Args:
            momentum: the target momentum of this step (``momentum_at(step, total)``); ``base_momentum`` if None.
                It is applied before the target forward. In training mode the keys are enqueued afterwards.
        """
        batch = len(view1)
        # Both views go through the encoder at once (it has no batch statistics); the heads see one view at a
        # time, so their BatchNorm statistics are per view as in the official code.
        features = self.encoder(torch.cat([view1, view2]))  # (2B, num_features)
        pred1, pred2 = (F.normalize(self.predictor(self.projector(f)).float(), dim=1) for f in features.split(batch))
        with torch.no_grad():
            self.momentum_update(self.base_momentum if momentum is None else momentum)
            features_k = self.encoder_k(torch.cat([view1, view2]))
            key1, key2 = (F.normalize(self.projector_k(f).float(), dim=1) for f in features_k.split(batch))
        loss = self.contrastive_loss(pred1, key2, self.queue2) + self.contrastive_loss(pred2, key1, self.queue1)
        if self.training:
            self.enqueue(key1, key2)
        return loss

    def no_weight_decay(self) -> set[str]:
        """Biases, norms (every tensor of one dimension) and what the encoder keeps out of weight decay."""
        skip = {n for n, p in self.named_parameters() if p.ndim <= 1 or n.endswith(".bias")}
        if hasattr(self.encoder, "no_weight_decay"):
            skip |= {f"encoder.{n}" for n in self.encoder.no_weight_decay()}
        return skip

    def load_backbone(self, state: dict, format: str, strict: bool, source: str) -> LoadReport:
        """A backbone checkpoint into both encoders."""
        report = load_encoder(self.encoder, state, format, strict, source)
        self.encoder_k.load_state_dict(self.encoder.state_dict())
        report.adapted.append("backbone checkpoint: loaded into the online and the target encoder")
        return report

    def load_parts(self, state: dict, format: str, strict: bool, source: str) -> LoadReport:
        """Both encoders, the projectors, the predictor and the queues of a MoBY checkpoint."""
        report = LoadReport(source, f"moby ({format} encoders)")
        for prefix in ("encoder.", "encoder_k."):
            part = load_encoder(getattr(self, prefix[:-1]), layout.split(state, prefix), format, strict, source)
            report.loaded += [prefix + k for k in part.loaded]
            report.dropped += [prefix + k for k in part.dropped]
            report.adapted += part.adapted
            report.missing += [prefix + k for k in part.missing]
            report.unexpected += [prefix + k for k in part.unexpected]
        for name in ("projector", "projector_k", "predictor"):
            part = layout.split(state, name + ".")
            result = getattr(self, name).load_state_dict(part, strict=False)
            check_part(name, result, strict, source)
            report.loaded += [f"{name}.{k}" for k in part]
        for name in ("queue1", "queue2", "queue_ptr"):
            if name not in state:
                if strict:
                    raise CheckpointError(f"{source} has no {name}; use strict=False to keep the fresh queues")
                report.missing.append(name)
                continue
            buffer = getattr(self, name)
            if state[name].shape != buffer.shape:
                raise CheckpointError(
                    f"{source}: {name} is {tuple(state[name].shape)} but the model's is {tuple(buffer.shape)}; build "
                    f"MoBY with the checkpoint's queue size and projection dimension"
                )
            buffer.copy_(state[name])
            report.loaded.append(name)
        return report


def build_moby(
    backbone: str,
    *,
    drop_path_rate: float | None = 0.2,
    target_drop_path_rate: float = 0.0,
    backbone_kwargs: dict | None = None,
    **kwargs,
) -> MoBY:
    """MoBY around a registry backbone or ``timm:<name>``, with drop path on the online encoder only.

    Args:
        backbone: e.g. ``swin_tiny_patch4_window7_224`` or ``timm:deit_small_patch16_224``.
        drop_path_rate: online encoder (None keeps the model's default).
        target_drop_path_rate: target encoder.
        backbone_kwargs: other constructor arguments of the backbone (``img_size``, ``embed_dim``, ...).
        **kwargs: ``MoBY`` arguments (``queue_size``, ``temperature``, ...).
    """
    backbone_kwargs = dict(backbone_kwargs or {})
    online = dict(backbone_kwargs, **({} if drop_path_rate is None else {"drop_path_rate": drop_path_rate}))
    encoder = create_encoder(backbone, **online)
    encoder_k = create_encoder(backbone, **dict(backbone_kwargs, drop_path_rate=target_drop_path_rate))
    return MoBY(encoder, encoder_k, **kwargs)
