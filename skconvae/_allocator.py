"""Keep glibc from returning a batch's activations to the system after every batch.

PyTorch's CPU tensors come from ``malloc``. glibc serves a request larger than its
``mmap`` threshold with a fresh mapping that ``free`` unmaps at once, and it gives the
top of its heap back to the system whenever more than its trim threshold (twice the
``mmap`` threshold) lies free there. Both thresholds start low (128 KiB) and rise
only when the process frees a mapped chunk, to that chunk's size (at most 32 MiB on
64-bit systems). Until something raises them, every inference batch whose
activations pass them gets fresh pages from the kernel and pays a page fault for each
4 KiB it touches: measured on the classic MNIST encoder with one thread, batches of
256 ran at 8,000 images per CPU-second with 57% of the time in the kernel, against
20,000 once the thresholds were up (``benchmarks/bench_speed.py --sections
allocator``). Whether they are up depended on what the process happened to free
before, so the same call was fast in one process and slow in the next.

:func:`raise_malloc_thresholds` frees one untouched mapping just under the 32 MiB
cap, once per process: glibc's own rule then sets the ``mmap`` threshold to 32 MiB and
the trim threshold to 64 MiB, the state any process reaches by itself after freeing
one such array. Unlike ``mallopt`` this keeps glibc's dynamic behaviour, and it costs
one ``mmap``/``munmap`` pair: no page is touched. The price is that up to 64 MiB of
freed memory may stay with the process instead of going back to the system.
Activations larger than 32 MiB are still mapped afresh on every batch; the inference
batch-size measurement (``_batch_size.py``) sees their page faults and avoids them.
"""

from __future__ import annotations

import os
import platform

import torch

# glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems: a freed mapped chunk raises the
# threshold only up to this size.
GLIBC_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
# Below the cap by more than malloc's chunk header and posix_memalign's alignment slack.
_PROBE_BYTES = GLIBC_MMAP_THRESHOLD_MAX - 1024 * 1024

_raised_in_pid: int | None = None


def uses_glibc() -> bool:
    """Whether this process's C library is glibc (the thresholds are glibc's)."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def raise_malloc_thresholds() -> bool:
    """Raise glibc's ``mmap`` and trim thresholds to their dynamic maximum, once per process.

    Returns whether the probe ran in this call (False: not glibc, or done already in
    this process; a forked or spawned child runs it again).
    """
    global _raised_in_pid
    pid = os.getpid()
    if _raised_in_pid == pid or not uses_glibc():
        return False
    _raised_in_pid = pid
    probe = torch.empty(_PROBE_BYTES, dtype=torch.uint8)  # mapped, never touched
    del probe  # its free raises the thresholds to its size
    return True
