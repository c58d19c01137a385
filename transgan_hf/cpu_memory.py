"""Keep freed CPU memory in the process, so that the large tensors of every training step stop page-faulting.

glibc's `malloc` serves large requests (above a threshold that adapts between 128 KiB and 32 MiB) with a fresh `mmap`
and unmaps the block again on `free`. A training step allocates and frees the same large tensors every time (bf16
copies of the weights under autocast, attention maps, activations, gradients), so each of their pages is faulted in
and zeroed by the kernel on every step: on the 2-core CPU of `benchmarks/`, casting a 4096 x 1024 weight to bf16
takes 3.2 ms into fresh memory and 0.5 ms into reused memory. Serving every request from the heap and not returning
freed memory to the system makes the second case the normal one (what jemalloc or tcmalloc, preloaded, would also do).

Process-wide, so only the entry points call it (`training/train.py`, `transgan generate`), never the library on
import. The peak resident memory of a training step stays the same (the heap's high-water mark is the same peak); the
process no longer gives memory back after that peak, which suits a training or generation job, not a long-lived server.

`freed_heap_bytes` tells how much of that kept memory is free for reuse (the pipeline counts it as available). This
module imports only the standard library: it is part of the pipeline's remote code.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

# Free memory at the top of the heap beyond this is still returned to the system (the largest value mallopt takes).
TRIM_THRESHOLD_BYTES = 2**31 - 1


def reuse_freed_cpu_memory() -> bool:
    """Make glibc serve all allocations from its heap and keep freed memory for reuse; returns whether it applied.

    Does nothing (returns False) where the C library is not glibc (macOS, Windows, musl); calling it again is harmless.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def freed_heap_bytes() -> int:
    """Bytes freed into glibc's heap and kept there for reuse (`mallinfo2().fordblks`); 0 with another C library."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError, TypeError):
        return 0
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().fordblks)
