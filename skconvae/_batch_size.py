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
count. Each candidate's first batch pays one-time setup for a new shape and is not
counted; then at least 1,024 samples (and two batches) are timed per candidate, so
that a small size is judged on as many samples as a large one, and the total time
over them, allocator stalls included, decides. On CUDA a large fixed batch is used
(halved on out-of-memory).

Results do not depend on the choice: the candidates start at 32 samples, above the
sizes where CPU kernels switch to other code paths, and a call's last rows join the
batch before them when they are fewer than that.
"""

from __future__ import annotations

import math
import threading

# Candidate batch sizes on the CPU; each is timed over at least MEASURED_SAMPLES
# samples in at least MIN_MEASURED_BATCHES full batches, after one uncounted batch.
CPU_CANDIDATES = (32, 64, 128, 256, 512, 1024)
MEASURED_SAMPLES = 1024
MIN_MEASURED_BATCHES = 2
CUDA_BATCH_SIZE = 1024
# No inference batch is smaller, but for calls with fewer samples (see the module docstring).
MIN_BATCH_SIZE = min(CPU_CANDIDATES)


def batches_per_candidate(size: int, measured_samples: int = MEASURED_SAMPLES) -> int:
    """Batches of ``size`` in the schedule: one uncounted, then the timed ones."""
    return 1 + max(MIN_MEASURED_BATCHES, math.ceil(measured_samples / size))


class BatchSizeChooser:
    """Propose inference batch sizes, measure them, settle on the fastest.

    One chooser lives on the net per kind of inference pass; it survives across
    calls, so the schedule of candidates is spread over the first calls when they
    are small, and later calls start with the chosen size.

    Parameters
    ----------
    candidates : sequence of int
        Batch sizes to try, in this order. A single candidate means "use this
        size", with nothing to measure.
    measured_samples : int, default=1024
        Samples timed per candidate, after its first (uncounted) batch.
    """

    def __init__(self, candidates, measured_samples: int = MEASURED_SAMPLES):
        self.schedule = [
            int(size)
            for size in candidates
            for _ in range(batches_per_candidate(int(size), measured_samples))
        ]
        self.seconds: dict[int, float] = {}
        self.samples: dict[int, int] = {}
        self._warmed: set[int] = set()
        self.chosen: int | None = int(candidates[0]) if len(candidates) == 1 else None
        # Threads may run inference on one net at once.
        self._lock = threading.Lock()

    @property
    def seconds_per_sample(self) -> dict[int, float]:
        """Timed seconds per sample of every candidate measured so far."""
        return {size: self.seconds[size] / self.samples[size] for size in self.samples}

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
            self.schedule.pop(0)
            if size not in self._warmed:  # the first batch of a new shape pays setup
                self._warmed.add(size)
            else:
                self.seconds[size] = self.seconds.get(size, 0.0) + seconds
                self.samples[size] = self.samples.get(size, 0) + n_samples
            if not self.schedule:
                per_sample = self.seconds_per_sample
                self.chosen = min(per_sample, key=lambda s: (per_sample[s], s))


def batch_size_candidates(on_cuda: bool, forced: int | None) -> tuple[int, ...]:
    """The sizes a new chooser tries: the forced size, CUDA's fixed one, or the CPU's."""
    if forced is not None:
        return (int(forced),)
    return (CUDA_BATCH_SIZE,) if on_cuda else CPU_CANDIDATES
