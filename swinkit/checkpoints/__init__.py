"""Checkpoints of every ecosystem the models were released in, converted to and from swinkit's layout."""

from ..core.errors import CheckpointError
from .layouts import FORMATS, WRITE_FORMATS, detect_format
from .load import LoadReport, load_checkpoint, save_checkpoint

__all__ = [
    "FORMATS",
    "WRITE_FORMATS",
    "CheckpointError",
    "LoadReport",
    "detect_format",
    "load_checkpoint",
    "save_checkpoint",
]
