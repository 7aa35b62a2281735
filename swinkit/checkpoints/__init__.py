"""Checkpoints of every ecosystem the models were released in, converted to and from swinkit's layout."""

from ..core.errors import CheckpointError
from .load import FORMATS, LoadReport, detect_format, load_checkpoint, save_checkpoint

__all__ = ["FORMATS", "CheckpointError", "LoadReport", "detect_format", "load_checkpoint", "save_checkpoint"]
