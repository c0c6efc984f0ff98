"""How many samples inference hands the network at a time, measured rather than guessed.

On a CPU the fastest inference batch size is not a property of the model alone:
besides the caches, it depends on whether the allocator returns a batch's
activations to the operating system between batches (glibc does so, erratically,
once they pass its trim and ``mmap`` thresholds, and every following batch then
pays page faults to touch fresh memory). Measured here on MNIST with the classic
network, the same encoder ran at 6,000 to 23,000 images per CPU-second depending on
the batch size alone, and the best size moved with the allocator's history. So the
first inference passes on the CPU run their real batches through a short schedule
of candidate sizes, time them, and keep the fastest for later batches: nothing is
computed twice, and the choice is remembered per method, input shape and thread
count. On CUDA a large fixed batch is used (halved on out-of-memory).

Results do not depend on the choice: the candidates start at 32 samples, above the
sizes where CPU kernels switch to other code paths.
"""

from __future__ import annotations

import threading

# Candidate batch sizes on the CPU, each timed on two real batches (the first pays
# for the kernels' one-time setup for a new shape).
CPU_CANDIDATES = (32, 64, 128, 256, 512, 1024)
RUNS_PER_CANDIDATE = 2
CUDA_BATCH_SIZE = 1024


class BatchSizeChooser:
    """Propose inference batch sizes, measure them, settle on the fastest.

    One chooser lives on the net per kind of inference pass; it survives across
    calls, so the schedule of candidates is spread over the first calls when they
    are small, and later calls start with the chosen size.

    Parameters
    ----------
    candidates : sequence of int
        Batch sizes to try, each ``runs`` times, in this order. A single candidate
        means "use this size", with nothing to measure.
    runs : int, default=2
        Full batches timed per candidate; the fastest run counts.
    """

    def __init__(self, candidates, runs: int = RUNS_PER_CANDIDATE):
        self.schedule = [int(size) for size in candidates for _ in range(runs)]
        self.best_seconds_per_sample: dict[int, float] = {}
        self.chosen: int | None = int(candidates[0]) if len(candidates) == 1 else None
        # Threads may run inference on one net at once.
        self._lock = threading.Lock()

    def next_size(self) -> int:
        """Size of the next batch to run."""
        with self._lock:
            return self.chosen if self.chosen is not None else self.schedule[0]

    def record(self, size: int, n_samples: int, seconds: float) -> None:
        """Report that a batch proposed as ``size`` ran ``n_samples`` in ``seconds``.

        Batches cut short (by the end of the data, or after running out of memory)
        are no measurement of ``size`` and only pass.
        """
        with self._lock:
            if self.chosen is not None or n_samples != size or size != self.schedule[0]:
                return
            per_sample = seconds / n_samples
            best = self.best_seconds_per_sample.get(size, float("inf"))
            self.best_seconds_per_sample[size] = min(best, per_sample)
            self.schedule.pop(0)
            if not self.schedule:
                times = self.best_seconds_per_sample
                self.chosen = min(times, key=lambda s: (times[s], s))


def batch_size_candidates(on_cuda: bool, forced: int | None) -> tuple[int, ...]:
    """The sizes a new chooser tries: the forced size, CUDA's fixed one, or the CPU's."""
    if forced is not None:
        return (int(forced),)
    return (CUDA_BATCH_SIZE,) if on_cuda else CPU_CANDIDATES
