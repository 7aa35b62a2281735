"""The interface every swinkit model shares (timm's): features, head, intermediates, weight decay, checkpointing.

A subclass builds ``patch_embed`` ((B, C, H, W) -> (B, H/4, W/4, C0)), ``layers`` (a list of stages on channels-last
maps, stage i at stride 4 * 2**i), ``norm`` and ``head``, and sets ``num_features``, ``embed_dims`` and ``family``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.errors import ConfigError
from ..layers import ClassifierHead, to_2tuple

# Parameters matched by name that the official recipes keep out of weight decay, besides every 1-D tensor.
NO_WEIGHT_DECAY_KEYWORDS = ("cpb_mlp", "logit_scale", "relative_position_bias_table")
WINDOW_PADDING = ("masked", "visible")


def init_weights(module: nn.Module) -> None:
    """Official init: truncated normal (std 0.02) linear weights, zero biases; LayerNorms keep (1, 0)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class HierarchicalModel(nn.Module):
    family: str = ""

    patch_embed: nn.Module
    layers: nn.ModuleList
    norm: nn.Module
    head: nn.Module
    num_features: int
    embed_dims: list[int]
    img_size: tuple[int, int]

    def _set_widths(self, img_size: int | tuple[int, int], embed_dim: int, depths: Sequence[int],
                    num_heads: Sequence[int]) -> None:  # fmt: skip
        """``img_size`` as (H, W), ``embed_dims`` doubling per stage and ``num_features``; checks one head count per
        stage."""
        if len(depths) != len(num_heads):
            raise ConfigError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length")
        self.img_size = to_2tuple(img_size)
        self.embed_dims = [embed_dim * 2**i for i in range(len(depths))]
        self.num_features = self.head_hidden_size = self.embed_dims[-1]  # timm's names; no pre-logits layer

    def _finish_init(self, num_classes: int, drop_rate: float, norm_eps: float = 1e-5) -> None:
        """The final norm and the classifier, the official weight init, and ``feature_info``."""
        self.norm = nn.LayerNorm(self.num_features, eps=norm_eps)
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate)
        self.apply(init_weights)
        stride = self.patch_embed.proj.stride[0]  # the patch size (CSWin's overlapping stem: its stride)
        self.feature_info = [
            {"num_chs": dim, "reduction": stride * 2**i, "module": f"layers.{i}"}
            for i, dim in enumerate(self.embed_dims)
        ]
        self.pruned_prefixes: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def default_cfg(self) -> dict:
        """timm's older name of ``pretrained_cfg``."""
        return self.pretrained_cfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, H/32, W/32, num_features) normalised channels-last map."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Channels-last map -> logits, or the pooled features with ``pre_logits``."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a freshly initialised one (``num_classes=0`` removes it); ``global_pool``
        'avg' or '' (no pooling), as in timm (None keeps it)."""
        self.head.reset(num_classes, global_pool)

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters to train without weight decay: norms, biases, logit scales and position biases."""
        return {
            name
            for name, param in self.named_parameters()
            if param.ndim <= 1 or name.endswith(".bias") or any(k in name for k in NO_WEIGHT_DECAY_KEYWORDS)
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass to save memory."""
        for layer in self.layers:
            layer.grad_checkpointing = enable

    def set_attention_chunks(self, chunks: int) -> None:
        """Compute window attention ``chunks`` groups of windows at a time (the Swin V2 paper's sequential
        self-attention; see ``swinkit.layers.attention``): less peak memory at high resolution, the same output."""
        if not isinstance(chunks, int) or chunks < 1:
            raise ConfigError(f"attention_chunks must be an integer >= 1, got {chunks!r}")
        attentions = [m for m in self.modules() if hasattr(m, "attention_chunks")]
        if not attentions:
            raise ConfigError(f"{type(self).__name__} has no window attention to compute in chunks")
        for module in attentions:
            module.attention_chunks = chunks

    def set_window_padding(self, mode: str) -> None:
        """How windows treat a map that is not a window multiple (``swinkit.layers.window``): 'masked' (the default:
        padded keys masked out, windows clamped to small maps, as the official classifiers) or 'visible' (the
        official segmentation and detection backbones' rule, which their weights were trained with: zero tokens
        that every query sees, windows never clamped). Segmentation and detection models set 'visible'."""
        if mode not in WINDOW_PADDING:
            raise ConfigError(f"window_padding must be one of {', '.join(WINDOW_PADDING)}, got {mode!r}")
        blocks = [m for m in self.modules() if hasattr(m, "visible_padding")]
        if not blocks:
            raise ConfigError(f"{type(self).__name__} has no shifted windows; window_padding applies to Swin V1/V2")
        for block in blocks:
            block.visible_padding = mode == "visible"

    def _take_indices(self, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
        """timm's ``feature_take_indices``: None takes every stage, an int n the last n, a sequence its stages as given
        (negative ones counted from the end). Returns the stage indices and the largest."""
        n = len(self.layers)
        if indices is None:
            indices = n
        if isinstance(indices, int):
            if not 0 < indices <= n:
                raise ConfigError(f"last-n indices={indices} is out of range (1 to {n} stages)")
            take = list(range(n - indices, n))
        else:
            take = [n + i if i < 0 else i for i in indices]
            if not take or any(not 0 <= i < n for i in take):
                raise ConfigError(f"stage indices {list(indices)} out of range for {n} stages")
        return take, max(take)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs at strides 4, 8, 16, 32, as timm's ``forward_intermediates``.

        Args:
            indices: stages to return (``_take_indices``: all by default; an int n means the last n).
            norm: apply the final norm to the last stage's map when it is returned.
            stop_early: stop after the last requested stage (``intermediates_only`` stops there too: same maps).
            output_fmt: 'NCHW' or 'NHWC' (timm's Swin offers NCHW only).
            intermediates_only: return only the list of maps.

        Returns:
            The list of maps in stage order, or (the last stage run's channels-last map, normalised when that is the
            last stage, as in timm; the list of maps).
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ConfigError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, max_index = self._take_indices(indices)
        last = len(self.layers) - 1
        stages = self.layers[: max_index + 1] if (stop_early or intermediates_only) else self.layers
        intermediates = []
        x = self.patch_embed(x)
        i = 0
        for i, layer in enumerate(stages):
            x = layer(x)
            if i in take:
                y = self.norm(x) if norm and i == last else x
                intermediates.append(y.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else y)
        if intermediates_only:
            return intermediates
        return (self.norm(x) if i == last else x), intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop what ``forward_intermediates(indices=indices)`` does not need, as timm does: the stages after the last
        index, then the final norm (sized for the last stage) and the classifier, which also go with ``prune_norm`` and
        ``prune_head``. ``num_features`` becomes the last kept stage's width. Returns the stage indices."""
        take, max_index = self._take_indices(indices)
        prune_end = max_index < len(self.layers) - 1
        pruned = [f"layers.{i}." for i in range(max_index + 1, len(self.layers))]
        if prune_norm or prune_end:
            self.norm = nn.Identity()
            pruned.append("norm.")
        self.layers = self.layers[: max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.head.in_features = self.num_features
        if prune_head or prune_end:
            self.reset_classifier(0, "")
            pruned.append("head.fc.")
        self.pruned_prefixes = (*self.pruned_prefixes, *pruned)
        return take


FEATURE_CLASSES = (None, "getter", "list")  # timm's names for a module returning a list of maps


class FeatureExtractor(nn.Module):
    """A backbone returning its stage maps instead of logits: ``create_model(..., features_only=True)``, as timm's
    feature networks do (its ``getter`` kind, built on ``forward_intermediates``).

    ``out_indices``: stages (0..3 at strides 4..32; negative counts from the end; an int n is the last n stages).
    ``output_fmt``: 'NCHW' (default) or 'NHWC'. ``feature_info`` is timm's ``FeatureInfo``: ``channels()``,
    ``reduction()``, ``module_name()``, ``get_dicts()`` over the returned maps, indexing by stage.
    """

    def __init__(self, model: HierarchicalModel, out_indices: int | Sequence[int] = (0, 1, 2, 3), *,
                 feature_cls: str | None = None, output_fmt: str = "NCHW") -> None:  # fmt: skip
        from timm.models import FeatureInfo

        super().__init__()
        if feature_cls not in FEATURE_CLASSES:
            raise ConfigError(f"feature_cls={feature_cls!r}: swinkit's feature extractor is timm's 'getter' (it "
                              "returns forward_intermediates' maps); leave feature_cls unset or 'getter'")  # fmt: skip
        if output_fmt not in ("NCHW", "NHWC"):
            raise ConfigError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        self.out_indices = model.prune_intermediate_layers(out_indices, prune_norm=True)  # timm's getter, norm=False
        self.model, self.output_fmt = model, output_fmt
        kept = [dict(info) for info in model.feature_info[: max(self.out_indices) + 1]]
        self.feature_info = FeatureInfo(kept, self.out_indices)

    @property
    def pretrained_cfg(self) -> dict:
        return self.model.pretrained_cfg

    default_cfg = pretrained_cfg

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=self.out_indices, output_fmt=self.output_fmt,
                                                intermediates_only=True)  # fmt: skip

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def set_attention_chunks(self, chunks: int) -> None:
        self.model.set_attention_chunks(chunks)
