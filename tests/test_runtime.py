"""``swinkit.runtime.reuse_freed_memory``: large blocks come from the heap instead of a fresh mmap."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch

from swinkit.runtime import reuse_freed_memory


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]  # fmt: skip


def mmapped_bytes() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    return libc.mallinfo2().hblkhd


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_a_50_mb_activation_is_served_from_the_heap_after_the_setting():
    assert reuse_freed_memory()
    before = mmapped_bytes()
    activation = torch.empty(50 * 2**20, dtype=torch.uint8).fill_(1)
    assert mmapped_bytes() == before
    del activation
    assert reuse_freed_memory()  # idempotent
