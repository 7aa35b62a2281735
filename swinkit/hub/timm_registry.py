"""swinkit's models in timm's registry, for code that builds every model through ``timm.create_model``.

``register_in_timm()`` registers each swinkit model through timm's public ``register_model`` under a prefixed name
(``swinkit_cswin_tiny_224``; timm reserves ``/`` and ``:`` for hub and local sources), with an entry point that
calls ``swinkit.create_model``: ``timm.create_model("swinkit_swinv2_tiny_window8_256.in1k", pretrained=True,
features_only=True)`` is ``swinkit.create_model("swinv2_tiny_window8_256", pretrained="in1k", features_only=True)``.
Nothing is registered on import: a process opts in by calling it once. swinkit's weights and preprocessing come with
the model (``model.pretrained_cfg``); timm's pretrained-cfg overlays and cache directories are for timm's own
weights and are refused.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..core.errors import ConfigError
from ..models import list_models
from .pretrained import create_model

__all__ = ["register_in_timm"]


def _entrypoint(name: str, registered: str) -> Callable[..., nn.Module]:
    def build(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None,
              **kwargs) -> nn.Module:  # fmt: skip
        if pretrained_cfg_overlay or cache_dir or isinstance(pretrained_cfg, dict):
            raise ConfigError(
                f"{registered}: swinkit's weights come from its own registry; pretrained_cfg_overlay, cache_dir and a "
                "pretrained_cfg dict are timm's (set SWINKIT_HOME for the cache)"
            )
        tag = pretrained_cfg if isinstance(pretrained_cfg, str) else None
        if not pretrained:
            return create_model(f"{name}.{tag}" if tag else name, **kwargs)
        return create_model(name, pretrained=tag or True, **kwargs)

    build.__name__ = build.__qualname__ = registered
    build.__module__ = __name__
    build.__doc__ = f"swinkit's {name} (``swinkit.create_model``)."
    return build


def register_in_timm(prefix: str = "swinkit_") -> list[str]:
    """Register every swinkit model in timm's registry as ``prefix + name``; returns the registered names."""
    from timm.models import register_model

    if not prefix or any(c in prefix for c in "/:."):
        raise ConfigError(f"prefix {prefix!r}: give a non-empty prefix without '/', ':' or '.' (timm's separators)")
    names = []
    for name in list_models():
        registered = prefix + name
        register_model(_entrypoint(name, registered))
        names.append(registered)
    return names
