"""What machine a measurement ran on: the CPU's name and the vector instruction sets that decide its speed."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# /proc/cpuinfo flag -> the name the ISA goes by, fastest last.
ISA_FLAGS = {
    "avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx512_bf16": "AVX512-BF16",
    "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16",
}  # fmt: skip
NATIVE_BF16 = ("AVX512-BF16", "AMX-BF16")


def _cpuinfo() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.exists() else []


def cpu_name() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@functools.cache
def isa() -> tuple[str, ...]:
    """The instruction sets of ``ISA_FLAGS`` the CPU has (Linux; empty elsewhere). Read once: the attention kernel
    asks on every call."""
    flags = next((set(line.split(":", 1)[1].split()) for line in _cpuinfo() if line.startswith("flags")), set())
    return tuple(name for flag, name in ISA_FLAGS.items() if flag in flags)


def native_bf16() -> list[str]:
    """The instruction sets of this CPU that compute in bf16 natively (empty: bf16 is emulated, slower than fp32)."""
    return [name for name in isa() if name in NATIVE_BF16]


def has_amx() -> bool:
    """Whether the CPU has AMX tile units for bf16 (Intel Sapphire Rapids and later)."""
    return "AMX-BF16" in isa()


def describe() -> str:
    """``"<cpu name>, <n> cores available, ISA: AVX2, AVX-512"`` for the head of every benchmark's output."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    found = ", ".join(isa()) or "none of " + ", ".join(ISA_FLAGS.values())
    return f"{cpu_name()}, {cores} cores available, ISA: {found}"
