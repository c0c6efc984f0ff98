"""Keep glibc from returning a batch's activations to the system after every batch.

PyTorch's CPU tensors come from ``malloc``. glibc serves a request larger than its
``mmap`` threshold with a fresh mapping that ``free`` unmaps at once, and it gives the
top of its heap back to the system whenever more than its trim threshold lies free
there. Both thresholds start low (128 KiB) and rise only when the process frees a
mapped chunk, to that chunk's size (at most 32 MiB on 64-bit systems; the trim
threshold to twice that). Until something raises them, every batch whose activations
pass them gets fresh pages from the kernel and pays a page fault for each 4 KiB it
touches: measured on the classic MNIST encoder with one thread, batches of 256 ran at
8,000 images per CPU-second with 57% of the time in the kernel, against 20,000 once
the thresholds were up (``benchmarks/bench_speed.py --sections allocator``). Whether
they were up depended on what the process happened to free before, so the same call
was fast in one process and slow in the next.

:func:`keep_batch_memory` wraps ``fit`` and every inference pass on the CPU:

- Normally it frees one untouched mapping just under the 32 MiB cap, once per
  process (:func:`raise_malloc_thresholds`): glibc's own rule then sets the ``mmap``
  threshold to 32 MiB and the trim threshold to 64 MiB, the state any process reaches
  by itself after freeing one such array. This keeps glibc's dynamic behaviour and
  touches no page; the price is that up to 64 MiB of freed memory may stay with the
  process instead of going back to the system.
- Where the environment fixes a threshold (``MALLOC_TRIM_THRESHOLD_`` and the like,
  or ``GLIBC_TUNABLES``), glibc's dynamic rule is off and nothing raises them. Dask
  starts its workers so (``MALLOC_TRIM_THRESHOLD_=65536``, to hand memory back
  promptly), which made every fit in a Dask search fault through its batches. There
  the thresholds are set with ``mallopt`` for the duration of the call (at least
  32 MiB and 64 MiB, never below the configured values) and set back to the
  configured values afterwards, followed by ``malloc_trim(0)``, so between calls the
  process keeps the policy it was started with.

Activations larger than 32 MiB are still mapped afresh on every batch; the inference
batch-size measurement (``_batch_size.py``) sees their page faults and avoids them.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import threading

import torch

# glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems: a freed mapped chunk raises the
# threshold only up to this size, and mallopt accepts no larger mmap threshold.
GLIBC_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
GLIBC_DEFAULT_THRESHOLD = 128 * 1024
# Below the cap by more than malloc's chunk header and posix_memalign's alignment slack.
_PROBE_BYTES = GLIBC_MMAP_THRESHOLD_MAX - 1024 * 1024
# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Settings that turn glibc's dynamic thresholds off, as environment variables and tunables.
_FIXING_VARIABLES = {
    "MALLOC_TRIM_THRESHOLD_": "trim",
    "MALLOC_MMAP_THRESHOLD_": "mmap",
    "MALLOC_TOP_PAD_": None,
    "MALLOC_MMAP_MAX_": None,
}
_FIXING_TUNABLES = {
    "glibc.malloc.trim_threshold": "trim",
    "glibc.malloc.mmap_threshold": "mmap",
    "glibc.malloc.top_pad": None,
    "glibc.malloc.mmap_max": None,
}

_raised_in_pid: int | None = None
_lock = threading.Lock()
_active = 0


def uses_glibc() -> bool:
    """Whether this process's C library is glibc (the thresholds are glibc's)."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@functools.cache
def _libc() -> ctypes.CDLL:
    """This process's C library, opened once (for ``mallopt`` and ``malloc_trim``)."""
    return ctypes.CDLL(None)


def fixed_thresholds(environ=None) -> dict[str, int] | None:
    """The ``{"trim": bytes, "mmap": bytes}`` the environment fixed, or None where glibc's
    dynamic thresholds are on (no variable or tunable that turns them off)."""
    environ = os.environ if environ is None else environ
    variables = _FIXING_VARIABLES.items()
    settings = {name: environ[variable] for variable, name in variables if variable in environ}
    for item in environ.get("GLIBC_TUNABLES", "").split(":"):
        tunable, _, value = item.partition("=")
        if tunable in _FIXING_TUNABLES:
            settings[_FIXING_TUNABLES[tunable]] = value
    if not settings:
        return None
    fixed = {"trim": GLIBC_DEFAULT_THRESHOLD, "mmap": GLIBC_DEFAULT_THRESHOLD}
    for name in fixed:
        with contextlib.suppress(KeyError, ValueError):
            fixed[name] = int(settings[name], 0)
    return fixed


def raise_malloc_thresholds() -> bool:
    """Raise glibc's dynamic ``mmap`` and trim thresholds to their maximum, once per process.

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


@contextlib.contextmanager
def keep_batch_memory():
    """Within, freed batch memory stays with the process for the next batch (see above)."""
    fixed = fixed_thresholds() if uses_glibc() else None
    if fixed is None:
        raise_malloc_thresholds()
        yield
        return
    global _active
    libc = _libc()
    with _lock:  # threads may run calls at once: the first in sets, the last out restores
        if _active == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, max(fixed["mmap"], GLIBC_MMAP_THRESHOLD_MAX))
            libc.mallopt(_M_TRIM_THRESHOLD, max(fixed["trim"], 2 * GLIBC_MMAP_THRESHOLD_MAX))
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                libc.mallopt(_M_TRIM_THRESHOLD, fixed["trim"])
                libc.mallopt(_M_MMAP_THRESHOLD, fixed["mmap"])
                libc.malloc_trim(0)
