"""Training and evaluation: config schema, optimizer, schedules, EMA, the loop, evaluation, checkpoints, DDP.

Modules are imported on use (``from swinkit.engine.train import train``) to keep ``import swinkit`` light.
"""

from .config import Config, ConfigError, list_configs, load_config

__all__ = ["Config", "ConfigError", "list_configs", "load_config"]
