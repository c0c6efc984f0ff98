"""glibc's thresholds are raised once per process, so batches reuse their memory."""

import os
import subprocess
import sys
import textwrap

import pytest

from skconvae import _allocator

pytestmark = pytest.mark.skipif(not _allocator.uses_glibc(), reason="glibc's malloc only")


def _huge_pages_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


# With transparent huge pages always on, fresh heap memory faults in 2 MiB at a time, so
# counting page faults no longer measures whether memory was handed back.
counts_4k_faults = pytest.mark.skipif(
    _huge_pages_always(),
    reason="transparent huge pages are always on here: page faults no longer count 4 KiB pages",
)

# A fresh process allocates, writes and frees one tensor per round, ten rounds, each
# 64 KiB larger than the last (16 MiB and up), and reports the minor page faults of the
# last five rounds. Left alone, glibc raises its mmap threshold to each freed mapping's
# size only, so every next, larger tensor is mapped afresh and unmapped on free: a fault
# per page, whatever the heap's layout. (A working set of equal tensors is no baseline:
# whether glibc then trims its heap depends on where the address space randomisation put
# it, and half the fresh processes here kept their memory untouched.) With the thresholds
# raised (31 MiB), every round reuses the heap and faults only the 64 KiB it grew by.
_FIRST_BYTES, _STEP_BYTES, _ROUNDS = 16 << 20, 64 << 10, 10
_CHILD = textwrap.dedent(
    f"""
    import resource, sys, torch
    from skconvae._allocator import raise_malloc_thresholds
    if sys.argv[1] == "raise":
        assert raise_malloc_thresholds()
        assert not raise_malloc_thresholds()  # once per process
    for k in range({_ROUNDS}):
        if k == {_ROUNDS // 2}:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty({_FIRST_BYTES} + k * {_STEP_BYTES}, dtype=torch.uint8).fill_(1)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)
# The pages of the last five rounds, each faulted in afresh.
_FAULTS_IF_HANDED_BACK = sum(
    (_FIRST_BYTES + r * _STEP_BYTES) // 4096 for r in range(_ROUNDS // 2, _ROUNDS)
)


def _page_faults(mode: str, env=None, child=_CHILD) -> list[int]:
    proc = subprocess.run(
        [sys.executable, "-c", child, mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return [int(word) for word in proc.stdout.split()]


@counts_4k_faults
def test_raised_thresholds_stop_page_faults_of_a_reused_working_set():
    (raised,) = _page_faults("raise")
    assert raised < _FAULTS_IF_HANDED_BACK / 20, raised
    (untouched,) = _page_faults("leave")
    if untouched < _FAULTS_IF_HANDED_BACK / 20:
        # glibc raises its thresholds by itself when the process frees a large mapping;
        # where the imports already freed one of 16 MiB or more, there is no slow
        # baseline to compare with.
        pytest.skip(f"glibc's thresholds are already raised after import ({untouched} faults)")
    # Left alone, each tensor is mapped afresh and unmapped on free.
    assert untouched > _FAULTS_IF_HANDED_BACK / 2, untouched
    assert raised < untouched / 20, (raised, untouched)


def test_runs_once_per_process(monkeypatch):
    monkeypatch.setattr(_allocator, "_raised_in_pid", None)
    assert _allocator.raise_malloc_thresholds() is True
    assert _allocator.raise_malloc_thresholds() is False
    # A child process (another pid) raises its own.
    monkeypatch.setattr(_allocator, "_raised_in_pid", -1)
    assert _allocator.raise_malloc_thresholds() is True


# Under a fixed trim threshold (as Dask starts its workers): faults of the working set
# before, inside and after ``keep_batch_memory``.
_FIXED_CHILD = textwrap.dedent(
    """
    import resource, sys, torch
    from skconvae._allocator import keep_batch_memory
    def faults_of_working_set():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            tensors = [torch.empty(8 << 20, dtype=torch.uint8).fill_(1) for _ in range(3)]
            del tensors
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    outside = faults_of_working_set()
    with keep_batch_memory():
        faults_of_working_set()  # the first round maps the memory it then keeps
        inside = faults_of_working_set()
    print(outside, inside, faults_of_working_set())
    """
)


@counts_4k_faults
def test_fixed_thresholds_are_lifted_inside_calls_and_restored_after():
    outside, inside, after = _page_faults("", {"MALLOC_TRIM_THRESHOLD_": "65536"}, _FIXED_CHILD)
    assert outside > 1000 and after > 1000, (outside, after)  # the configured policy
    assert inside < outside / 20, (inside, outside)


def test_fixed_thresholds_read_from_the_environment():
    assert _allocator.fixed_thresholds({}) is None
    assert _allocator.fixed_thresholds({"OMP_NUM_THREADS": "1"}) is None
    default = _allocator.GLIBC_DEFAULT_THRESHOLD
    assert _allocator.fixed_thresholds({"MALLOC_TRIM_THRESHOLD_": "65536"}) == {
        "trim": 65536,
        "mmap": default,
    }
    tunables = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=0x100000:glibc.foo=1"}
    assert _allocator.fixed_thresholds(tunables) == {"trim": default, "mmap": 1 << 20}
    assert _allocator.fixed_thresholds({"MALLOC_TOP_PAD_": "0"}) == {
        "trim": default,
        "mmap": default,
    }
