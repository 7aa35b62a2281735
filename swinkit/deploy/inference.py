"""A model made ready for inference at a precision, eager or compiled: what ``eval``, ``predict`` and ``benchmark``
share.

- **Precision.** ``fp32``; ``bf16``: the weights themselves are cast to bf16 and the images with them (not autocast,
  which casts every weight again on every call and runs LayerNorm in fp32 between bf16 GEMMs), and the logits come
  back in fp32; ``auto``: bf16 where the hardware computes in it natively (a CPU with AVX512-BF16 or AMX, an
  accelerator that reports bf16 support), fp32 elsewhere (an AVX2 CPU emulates bf16, slower than fp32). The choice is
  logged. fp16 is for accelerators.
- **Compiled** (``compile=True``): ``torch.compile`` with Inductor's *freezing*: the weights are folded into the graph
  as constants, so Inductor prepacks them for oneDNN and fuses the norms, GELU and residual adds into the GEMMs'
  neighbours. The batch dimension is compiled dynamic, so one graph per image size serves every batch of two or more
  (a single image is padded to two: dynamo specialises a size of 1). The dynamic batch is also what keeps Inductor's
  fp32 linears on oneDNN: with a static batch it packs them for MKL instead, measured 0.82-0.93x swinkit's eager
  fp32 on an AMD EPYC, against 1.01-1.14x with the dynamic batch. The first call pays the compilation (about a
  minute on 2 CPU cores) and one eager image per image size, which leaves each attention mask of that size in a
  buffer the graph folds as a constant (``freeze_bias`` in ``swinkit.layers.attention``). Frozen weights are
  constants of the graph, so a weight changed in place (``load_state_dict``) makes the next call compile again.
  Compiling is opt-in, since in fp32 the GEMMs it cannot speed up are three quarters of the forward (the README's
  performance section has the measurements).
- **int8** (CPU): every linear layer runs oneDNN's int8 GEMM with int8 weights and activations quantized per call
  (``swinkit.deploy.int8``, which has the measurements it was chosen by); the rest of the model stays fp32. The
  deployable int8 artifact is another thing: ``swinkit export --format onnx --quantize int8`` writes an ONNX Runtime
  graph, checked against PyTorch when it is written.
"""

from __future__ import annotations

import logging

import torch
import torch._inductor.config as inductor_config
from torch import nn

from ..core import device as devices
from ..core import machine
from ..core.errors import ConfigError
from ..layers import WindowAttention
from .int8 import quantize_int8

log = logging.getLogger(__name__)

INFERENCE_PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def inference_precision(precision: str, device: torch.device) -> str:
    """The precision ``precision`` means on ``device`` for inference (module docstring); logs what 'auto' chose."""
    if precision not in INFERENCE_PRECISIONS:
        raise ConfigError(f"precision {precision!r}: choose one of {', '.join(INFERENCE_PRECISIONS)}")
    if precision == "fp16" and not devices.has_fp16_kernels(device):
        raise ConfigError(f"fp16 inference is for accelerators; on {device.type} use --precision bf16 or auto")
    if precision == "int8" and device.type != "cpu":
        raise ConfigError(f"int8 inference runs on the CPU; on {device.type} use bf16 or auto")
    if precision != "auto":
        return precision
    if device.type == "cpu":
        native = machine.native_bf16()
        chosen = "bf16" if native else "fp32"
        why = f"the CPU computes bf16 natively ({', '.join(native)})" if native else "the CPU has no native bf16"
    else:
        chosen = devices.default_precision(device)
        why = f"{device.type} {'supports' if chosen == 'bf16' else 'does not support'} bf16"
    log.info("precision auto: %s (%s)", chosen, why)
    return chosen


class InferenceModel(nn.Module):
    """``model`` in eval mode, cast to ``precision`` (in place) and, with ``compile``, compiled; see the module
    docstring. Takes fp32 images and returns fp32 logits whatever the precision."""

    def __init__(self, model: nn.Module, precision: str = "fp32", compile: bool = False) -> None:
        super().__init__()
        if precision not in (*DTYPES, "int8"):
            raise ConfigError(f"precision {precision!r}: resolve 'auto' with inference_precision first")
        if precision == "int8" and compile:
            raise ConfigError("int8 runs eagerly (its per-call quantization does not compile): drop --compile")
        self.precision = precision
        self.dtype = DTYPES.get(precision, torch.float32)
        self.model = model.eval().to(self.dtype)
        if precision == "int8":
            if any(p.device.type != "cpu" for p in self.model.parameters()):
                raise ConfigError("int8 inference runs on the CPU: move the model there, or use bf16 on an accelerator")
            quantize_int8(self.model)
        self.compiled = torch.compile(self.model) if compile else None
        self._attention = [m for m in self.model.modules() if isinstance(m, WindowAttention)] if compile else []
        for module in self._attention:
            module.freeze_bias = True
        self._frozen_versions: tuple[int, ...] | None = None
        self._prepared_sizes: set[tuple[int, ...]] = set()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            images = images.to(self.dtype)
            if self.compiled is None:
                return self.model(images).float()
            versions = tuple(t._version for t in self.model.state_dict(keep_vars=True).values())
            if self._frozen_versions not in (None, versions):
                # The weights changed in place (an EMA load): the frozen graph and masks hold the old ones.
                torch._dynamo.reset()
                for module in self._attention:
                    module.clear_cache()
                self._prepared_sizes.clear()
            self._frozen_versions = versions
            size = tuple(images.shape[2:])
            if self._attention and size not in self._prepared_sizes:
                self.model(images[:1])  # eager, once per size: the attention masks the graph reads as constants
                self._prepared_sizes.add(size)
            n = images.shape[0]
            if n == 1:  # the dynamic-batch graph serves it (see the module docstring)
                images = images.repeat(2, 1, 1, 1)
            torch._dynamo.maybe_mark_dynamic(images, 0)
            # Freezing is read when a graph compiles, which any call may do (a new geometry): set around every call.
            # (``torch.compile(options={"freezing": True})`` does not reach it: measured, the weights stayed inputs.)
            with inductor_config.patch(freezing=True):
                return self.compiled(images)[:n].float()

    @property
    def model_info(self):
        return self.model.model_info

