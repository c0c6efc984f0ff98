"""glibc's thresholds are raised once per process, so batches reuse their memory."""

import subprocess
import sys
import textwrap

import pytest

from skconvae import _allocator

pytestmark = pytest.mark.skipif(not _allocator.uses_glibc(), reason="glibc's malloc only")

# A fresh process allocates and frees a batch-like working set (three 8 MiB tensors,
# each written) ten times and reports the minor page faults of the last five rounds.
_CHILD = textwrap.dedent(
    """
    import resource, sys, torch
    from skconvae._allocator import raise_malloc_thresholds
    if sys.argv[1] == "raise":
        assert raise_malloc_thresholds()
        assert not raise_malloc_thresholds()  # once per process
    def working_set():
        tensors = [torch.empty(8 << 20, dtype=torch.uint8).fill_(1) for _ in range(3)]
        del tensors
    for _ in range(5):
        working_set()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        working_set()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _page_faults(mode: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


def test_raised_thresholds_stop_page_faults_of_a_reused_working_set():
    untouched, raised = _page_faults("leave"), _page_faults("raise")
    # Left alone, glibc's thresholds stay at the largest chunk freed so far (8 MiB),
    # the 24 MiB working set is trimmed after every round and faulted back in.
    assert untouched > 1000, untouched
    assert raised < untouched / 20, (raised, untouched)


def test_runs_once_per_process(monkeypatch):
    monkeypatch.setattr(_allocator, "_raised_in_pid", None)
    assert _allocator.raise_malloc_thresholds() is True
    assert _allocator.raise_malloc_thresholds() is False
    # A child process (another pid) raises its own.
    monkeypatch.setattr(_allocator, "_raised_in_pid", -1)
    assert _allocator.raise_malloc_thresholds() is True
