"""Self-supervised meta-architectures wrapping any backbone: MoBY (contrastive) and SimMIM (masked image modelling).

The training loop that drives them is ``swinkit.engine.pretrain`` (``swinkit pretrain``).
"""

from .backbone import TIMM_PREFIX, EncoderInfo, create_encoder, encoder_info
from .moby import MoBY, MoBYMLP, build_moby, momentum_at
from .simmim import SimMIM, build_simmim, norm_targets

__all__ = [
    "TIMM_PREFIX",
    "EncoderInfo",
    "MoBY",
    "MoBYMLP",
    "SimMIM",
    "build_moby",
    "build_simmim",
    "create_encoder",
    "encoder_info",
    "momentum_at",
    "norm_targets",
]
