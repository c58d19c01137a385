"""`transgan_hf.cpu_memory`: large CPU tensors come from the reusable heap instead of fresh mmaps."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Runs in a fresh interpreter: the setting is process-wide. glibc's mallinfo2 counts the bytes held in mmapped
# blocks (hblkhd); a 64 MiB tensor is one such block by default and none once the setting applies.
PROBE = """
import ctypes, sys, torch
from transgan_hf.cpu_memory import reuse_freed_cpu_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = reuse_freed_cpu_memory() if sys.argv[1] == "on" else False
before = libc.mallinfo2().hblkhd
tensor = torch.ones(16 * 2**20)  # 64 MiB
held_in_mmaps = libc.mallinfo2().hblkhd - before
del tensor
heap_sizes = []
for _ in range(6):  # a training loop's pattern: the same large tensor allocated and freed again and again
    tensor = torch.ones(16 * 2**20)
    heap_sizes.append(libc.mallinfo2().arena)
    del tensor
print(applied, held_in_mmaps, heap_sizes[-1] - heap_sizes[2])
"""


def probe(setting: str) -> tuple[bool, int, int]:
    result = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    applied, held_in_mmaps, heap_growth = result.stdout.split()
    return applied == "True", int(held_in_mmaps), int(heap_growth)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_large_tensors_come_from_the_heap_and_are_reused() -> None:
    applied, held_in_mmaps, _ = probe("off")
    assert not applied and held_in_mmaps >= 64 * 2**20  # the default: a fresh mmap per large tensor
    applied, held_in_mmaps, heap_growth = probe("on")
    assert applied and held_in_mmaps == 0
    assert heap_growth == 0  # after the first few, every new 64 MiB tensor reuses freed heap memory

