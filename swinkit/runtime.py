"""Process-wide CPU setting swinkit's commands apply: freed activation memory is kept for reuse.

glibc's malloc serves every block above its mmap threshold (128 KiB, adapting up to 32 MiB) with a fresh ``mmap`` and
hands it back to the system when it is freed. A vision model's activations are such blocks (the MLP activation of a
Swin V2-T stage-1 block at batch 8 is 50 MB), so every forward pass faults every page of them in again, each page
zeroed by the kernel first. Raising the mmap and trim thresholds keeps freed blocks in the heap for the next pass;
the measured effect is in the README's performance section. The cost is that the process keeps its peak heap instead
of returning it to the system, as PyTorch's GPU caching allocator keeps GPU memory.

Every ``swinkit`` command calls ``reuse_freed_memory()`` once at start (``swinkit benchmark --default-allocator``
leaves it off, to measure it); library users can call it themselves. It does nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 30


def reuse_freed_memory(threshold_bytes: int = THRESHOLD_BYTES) -> bool:
    """Serve blocks up to ``threshold_bytes`` from the heap and keep up to that much freed memory; True if applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes) and libc.mallopt(_M_TRIM_THRESHOLD, threshold_bytes))
