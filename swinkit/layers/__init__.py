"""Building blocks shared by the models."""

from .attention import WindowAttention, WindowAttentionV1, WindowAttentionV2, chunked_attention
from .head import ClassifierHead
from .mlp import DropPath, Mlp, drop_path_rates
from .patch import PatchEmbed, PatchMerging, PatchMergingV2, merge_2x2
from .stage import Stage, build_stages
from .window import (
    WindowGeometry,
    shifted_window_attention,
    to_2tuple,
    window_attention,
    window_geometry,
    window_partition,
    window_reverse,
)

__all__ = [
    "chunked_attention",
    "ClassifierHead",
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "PatchMergingV2",
    "Stage",
    "build_stages",
    "WindowAttention",
    "WindowAttentionV1",
    "WindowAttentionV2",
    "WindowGeometry",
    "drop_path_rates",
    "merge_2x2",
    "shifted_window_attention",
    "to_2tuple",
    "window_attention",
    "window_geometry",
    "window_partition",
    "window_reverse",
]
