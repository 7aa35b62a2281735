"""The device module is the only place that knows accelerators: no torch.cuda elsewhere, clear errors for a device
that is not there, each device kind's collectives and precision."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from swinkit.cli import main
from swinkit.core import device as devices
from swinkit.core.errors import ConfigError
from tests.engine_utils import TINY

REPO = Path(__file__).resolve().parents[1]


def test_no_torch_cuda_outside_the_device_module():
    pattern = re.compile(r"\btorch\.cuda\b|\bfrom torch import cuda\b")
    offenders = [
        f"{path.relative_to(REPO)}:{i}"
        for root in ("swinkit", "benchmarks")
        for path in sorted((REPO / root).rglob("*.py"))
        if path != REPO / "swinkit" / "core" / "device.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_device_that_is_not_there_is_one_clear_error(capsys):
    assert main(["train", *TINY, "train.device=cuda"]) == 2
    err = capsys.readouterr().err
    assert "train.device=cuda: this machine has no cuda device" in err and "train.device=auto" in err
    with pytest.raises(ConfigError, match="no npu device \\(and torch_npu installed\\)"):
        devices.resolve("npu")


def test_each_kind_of_device_has_its_collectives_precision_and_pinning():
    assert devices.distributed_backend("cpu") == "gloo" and devices.distributed_backend("cuda") == "nccl"
    cpu = torch.device("cpu")
    assert devices.resolve("cpu") == cpu and devices.default_precision(cpu) == "fp32"
    assert not devices.pin_memory(cpu) and not devices.has_sync_batchnorm(cpu) and not devices.has_fp16_kernels(cpu)
    auto = devices.resolve("auto")
    assert auto.type == (devices.accelerator() or "cpu")
    devices.set_rng_states(devices.rng_states())  # a round trip on any machine (nothing to do without an accelerator)
    assert devices.grad_scaler(cpu, enabled=False).is_enabled() is False
