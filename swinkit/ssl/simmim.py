"""SimMIM (Xie et al., 2022): masked image modelling with a Swin encoder and a one-layer decoder.

Random square patches of ``mask_patch_size`` pixels (a multiple of the model's patch size) are masked at
``mask_ratio``: their patch embeddings are replaced by a learnable mask token before the first stage. A 1x1
convolution maps the last stage's map to ``stride**2 * in_chans`` channels and a pixel shuffle brings it back to
the image size. The loss is the L1 distance to the input on the masked pixels only (optionally to the input
normalised by its local mean and variance, the Swin V2 recipe's ``norm_target``).

Names follow the official code (``encoder``, ``decoder.0`` the conv); the mask token is ``mask_token`` here and
``encoder.mask_token`` in official checkpoints, which load as they are (encoder layouts are converted).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import LoadReport
from ..checkpoints import ssl as layout
from ..core.errors import CheckpointError, ConfigError
from ..models import HierarchicalModel
from .backbone import attention_chunks, create_encoder
from .checkpoint import SSLCheckpointLoading, check_part, load_encoder


def norm_targets(targets: torch.Tensor, window: int) -> torch.Tensor:
    """(B, C, H, W) pixels normalised by the mean and (unbiased) variance of their ``window`` x ``window``
    neighbourhood, as the official Swin V2 SimMIM recipe (window 47)."""
    if window % 2 == 0:
        raise ConfigError(f"the normalisation window must be odd, got {window}")
    pool = dict(kernel_size=window, stride=1, padding=window // 2)
    mean = F.avg_pool2d(targets, **pool, count_include_pad=False)
    mean_sq = F.avg_pool2d(targets**2, **pool, count_include_pad=False)
    count = F.avg_pool2d(torch.ones_like(targets), **pool, count_include_pad=True) * window**2
    var = ((mean_sq - mean**2) * (count / (count - 1))).clamp(min=0.0)
    return (targets - mean) / (var + 1e-6) ** 0.5


class SimMIM(SSLCheckpointLoading, nn.Module):
    """SimMIM around a Swin V1 or V2 encoder.

    Args:
        encoder: a swinkit Swin (``family`` 'swin' or 'swinv2'), built with ``num_classes=0``.
        mask_ratio: fraction of mask patches replaced by the mask token (rounded up).
        mask_patch_size: side of a mask patch in pixels (the official 32; e.g. 8 for 32 px digits).
        norm_target_window: normalise the targets by their local mean/variance over this odd window (None: raw).
    """

    ssl_method = "simmim"

    def __init__(
        self,
        encoder: HierarchicalModel,
        *,
        mask_ratio: float = 0.6,
        mask_patch_size: int = 32,
        norm_target_window: int | None = None,
    ) -> None:
        super().__init__()
        if getattr(encoder, "family", None) not in ("swin", "swinv2"):
            raise ConfigError(f"SimMIM needs a Swin V1 or V2 encoder, got {type(encoder).__name__}")
        self.encoder = encoder
        self.patch_size = encoder.patch_embed.patch_size
        if mask_patch_size % self.patch_size:
            raise ConfigError(
                f"mask_patch_size {mask_patch_size} is not a multiple of the patch size {self.patch_size}"
            )
        self.mask_ratio = mask_ratio
        self.mask_patch_size = mask_patch_size
        self.norm_target_window = norm_target_window
        self.in_chans = encoder.patch_embed.proj.in_channels
        self.stride = self.patch_size * 2 ** (len(encoder.layers) - 1)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, encoder.embed_dims[0]))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.decoder = nn.Sequential(
            nn.Conv2d(encoder.num_features, self.stride**2 * self.in_chans, kernel_size=1),
            nn.PixelShuffle(self.stride),
        )

    @property
    def num_features(self) -> int:
        return self.encoder.num_features

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the encoder's block activations in the backward pass instead of storing them."""
        self.encoder.set_grad_checkpointing(enable)

    def set_attention_chunks(self, chunks: int) -> None:
        """The encoder's window attention a group of windows at a time (``HierarchicalModel``'s)."""
        attention_chunks(self.encoder, chunks)

    def feature_module(self) -> nn.Module:
        """A module whose forward is ``self(images, features=True)``, for the kNN monitor."""
        return _Features(self)

    def random_mask(self, batch: int, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
        """(batch, height / patch, width / patch) 0/1 token mask: ``ceil(ratio * n)`` random mask patches of n."""
        s = self.mask_patch_size
        if height % s or width % s:
            raise ConfigError(f"the input {height}x{width} is not a multiple of mask_patch_size {s}")
        grid = (height // s, width // s)
        n = grid[0] * grid[1]
        masked = torch.rand(batch, n, device=device).argsort(dim=1)[:, : math.ceil(n * self.mask_ratio)]
        mask = torch.zeros(batch, n, device=device).scatter_(1, masked, 1.0).view(batch, *grid)
        scale = s // self.patch_size
        return mask.repeat_interleave(scale, 1).repeat_interleave(scale, 2)

    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) and token mask (B, H/p, W/p) -> the reconstruction (B, C, H, W)."""
        x = self.encoder.patch_embed(images)  # (B, H/p, W/p, C0)
        w = mask.unsqueeze(-1).to(x.dtype)
        x = x * (1.0 - w) + self.mask_token.to(x.dtype) * w
        for stage in self.encoder.layers:
            x = stage(x)
        x = self.encoder.norm(x)  # (B, H/stride, W/stride, num_features)
        return self.decoder(x.permute(0, 3, 1, 2))

    def loss(self, reconstruction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean L1 over the masked pixels (and channels); unmasked pixels do not count."""
        target = target.float()
        if self.norm_target_window:
            target = norm_targets(target, self.norm_target_window)
        p = self.patch_size
        pixels = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).float()  # (B, 1, H, W)
        l1 = F.l1_loss(reconstruction.float(), target, reduction="none")
        return (l1 * pixels).sum() / (pixels.sum() + 1e-5) / self.in_chans

    def forward(
        self, images: torch.Tensor, mask: torch.Tensor | None = None, *, features: bool = False
    ) -> torch.Tensor:
        """Images (B, C, H, W) -> the reconstruction loss; a random mask is drawn when none is given.

        ``features=True`` returns the encoder's pooled features (B, num_features) instead: what the kNN monitor reads.
        It goes through this forward so that a sharded SimMIM (FSDP, one root) gathers its parameters for it.
        """
        if features:
            return self.encoder(images)
        if mask is None:
            mask = self.random_mask(images.shape[0], images.shape[2], images.shape[3], images.device)
        return self.loss(self.reconstruct(images, mask), images, mask)

    def no_weight_decay(self) -> set[str]:
        skip = {n for n, p in self.named_parameters() if p.ndim <= 1 or n.endswith(".bias")}
        return skip | {"mask_token"} | {f"encoder.{n}" for n in self.encoder.no_weight_decay()}

    def load_backbone(self, state: dict, format: str, strict: bool, source: str) -> LoadReport:
        """A backbone checkpoint into the encoder."""
        return load_encoder(self.encoder, state, format, strict, source)

    def load_parts(self, state: dict, format: str, strict: bool, source: str) -> LoadReport:
        """The encoder, mask token and decoder of a SimMIM checkpoint."""
        encoder_state, _ = layout.online_encoder(state)
        report = load_encoder(self.encoder, encoder_state, format, strict, source)
        report.format = f"simmim ({report.format} encoder)"
        token = state.get(layout.MASK_TOKEN, state.get("mask_token"))
        if token is not None:
            self.mask_token.data.copy_(token.reshape(self.mask_token.shape))
            report.loaded.append("mask_token")
        elif strict:
            raise CheckpointError(f"{source} has no mask token; use strict=False to keep a fresh one")
        part = layout.split(state, "decoder.")
        result = self.decoder.load_state_dict(part, strict=False)
        check_part("decoder", result, strict, source)
        report.loaded += [f"decoder.{k}" for k in part]
        return report


def build_simmim(
    backbone: str,
    *,
    backbone_kwargs: dict | None = None,
    mask_ratio: float = 0.6,
    mask_patch_size: int = 32,
    norm_target_window: int | None = None,
) -> SimMIM:
    """SimMIM around a registry Swin V1/V2 backbone (``backbone_kwargs`` go to its constructor)."""
    encoder = create_encoder(backbone, **(backbone_kwargs or {}))
    return SimMIM(
        encoder, mask_ratio=mask_ratio, mask_patch_size=mask_patch_size, norm_target_window=norm_target_window
    )


class _Features(nn.Module):
    """``simmim(images, features=True)`` as a module of its own (train/eval and ``img_size`` follow the encoder)."""

    def __init__(self, simmim: SimMIM) -> None:
        super().__init__()
        self.simmim = simmim
        self.img_size = getattr(simmim.encoder, "img_size", None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.simmim(images, features=True)
