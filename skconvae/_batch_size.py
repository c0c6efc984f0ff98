"""How many samples inference hands the network at a time, measured rather than guessed.

On a CPU the fastest inference batch size is not a property of the model alone: it
depends on the caches, on the thread count and on whether the batch's activations
fit under the allocator's thresholds (see ``_allocator.py``: larger ones are mapped
afresh, and fault in page by page, on every batch). Measured here on MNIST, the
classic encoder ran at 12,000 to 34,000 images per second depending on the batch
size alone, and the best size differs between models. So the first inference passes
on the CPU run their real batches through a short schedule of candidate sizes, time
them, and keep the fastest for later batches: nothing is computed twice, and the
choice is remembered per method, input shape and thread count.

The candidates take turns over a few rounds, each timed on the same number of
samples per round (at least one batch), so that a small size is judged on as many
samples as a large one, and a burst of load on a shared machine slows every
candidate a little rather than one a lot; each candidate's median time per sample
over the rounds decides. A candidate's first batch pays one-time setup for a new
shape and is not counted. On the CPU neither is the first batch of each later turn:
it pays for the switch from the size before (activations of a new size in fresh
memory, cold caches), nor the first batch of each call, which follows other work.
Counted, that cost fell on the one timed batch of a large candidate but was shared by
the several of a small one: measured on the classic encoder, 512 timed at
26,000-45,000 images per second where it runs at 54,000-65,000, and the schedule
chose 64. (CUDA's caching allocator keeps its blocks across sizes.)
On CUDA the candidates are larger: there a batch's arithmetic is cheap next to
launching its kernels and copying it in and out, and the copy out waits for the
batch, so its time is the real one. A batch that runs out of device memory is
halved until it fits, and it and every larger candidate leave the measurement, so
later calls do not run out again.

Results do not depend on the choice: the candidates start at 32 samples, above the
sizes where CPU kernels switch to other code paths, and a call's last rows join the
batch before them when they are fewer than that.
"""

from __future__ import annotations

import math
import statistics
import threading

# Candidate batch sizes on the CPU; each is timed on about MEASURED_SAMPLES samples
# (at least one batch per round) spread over ROUNDS rounds, each after an uncounted batch.
CPU_CANDIDATES = (32, 64, 128, 256, 512, 1024)
MEASURED_SAMPLES = 2048
ROUNDS = 4
CUDA_CANDIDATES = (512, 1024, 2048, 4096)
# No inference batch is smaller, but for calls with fewer samples (see the module docstring).
MIN_BATCH_SIZE = min(CPU_CANDIDATES)


def batches_per_round(size: int, measured_samples: int = MEASURED_SAMPLES, rounds: int = ROUNDS):
    """Timed batches of ``size`` in each round of the schedule."""
    return max(1, math.ceil(measured_samples / rounds / size))


def measurement_schedule(
    candidates, measured_samples=MEASURED_SAMPLES, rounds=ROUNDS, every_turn=True
):
    """``[(size, round)]`` in order: the candidates take turns, round by round, each
    turn starting with an uncounted batch (round -1), or only each candidate's first
    turn when not ``every_turn``."""
    schedule = []
    for r in range(rounds):
        for size in candidates:
            warm_up = [(size, -1)] if r == 0 or every_turn else []
            schedule += warm_up + [(size, r)] * batches_per_round(size, measured_samples, rounds)
    return schedule


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
    measured_samples : int, default=2048
        Samples timed per candidate over all rounds, after its first (uncounted) batch.
    rounds : int, default=4
        Turns the candidates take; the median over them decides.
    every_turn : bool, default=True
        Leave the first batch of every turn, and of every call, uncounted (for
        the CPU), not only each candidate's first.
    """

    def __init__(
        self,
        candidates,
        measured_samples: int = MEASURED_SAMPLES,
        rounds: int = ROUNDS,
        every_turn: bool = True,
    ):
        sizes = [int(size) for size in candidates]
        self.schedule = measurement_schedule(sizes, measured_samples, rounds, every_turn)
        self.every_turn = every_turn
        # Per candidate and round: timed seconds and samples.
        self.seconds: dict[int, dict[int, float]] = {}
        self.samples: dict[int, dict[int, int]] = {}
        self.chosen: int | None = sizes[0] if len(sizes) == 1 else None
        # Threads may run inference on one net at once.
        self._lock = threading.Lock()

    @property
    def seconds_per_sample(self) -> dict[int, float]:
        """Median over rounds of the timed seconds per sample, per candidate measured so far."""
        return {
            size: statistics.median(
                seconds / self.samples[size][r] for r, seconds in rounds.items()
            )
            for size, rounds in self.seconds.items()
        }

    def next_size(self) -> int:
        """Size of the next batch to run."""
        with self._lock:
            return self.chosen if self.chosen is not None else self.schedule[0][0]

    def start_call(self) -> None:
        """Report that an inference call begins: with ``every_turn``, its first batch
        is not counted either, since other work ran since the last batch (the
        caller's code, other passes), as a switch of size does."""
        with self._lock:
            if self.chosen is None and self.every_turn and self.schedule:
                size, r = self.schedule[0]
                if r >= 0:
                    self.schedule.insert(0, (size, -1))

    def out_of_memory(self, size: int) -> None:
        """Report that a batch of ``size`` ran out of device memory: candidates from
        ``size`` up are dropped, and with none left the half of ``size`` is kept."""
        with self._lock:
            if self.chosen is not None:
                self.chosen = min(self.chosen, max(1, size // 2))
                return
            self.schedule = [(s, r) for s, r in self.schedule if s < size]
            for measured in (self.seconds, self.samples):
                for s in [s for s in measured if s >= size]:
                    del measured[s]
            if not self.schedule:
                self._choose(fallback=max(1, size // 2))

    def _choose(self, fallback: int) -> None:
        per_sample = self.seconds_per_sample
        self.chosen = min(per_sample, key=lambda s: (per_sample[s], s)) if per_sample else fallback

    def record(self, size: int, n_samples: int, seconds: float) -> None:
        """Report that a batch proposed as ``size`` ran ``n_samples`` in ``seconds``.

        Batches cut short (by the end of the data, or after running out of memory)
        are no measurement of ``size`` and only pass.
        """
        with self._lock:
            if self.chosen is not None or n_samples != size or size != self.schedule[0][0]:
                return
            _, r = self.schedule.pop(0)
            if r >= 0:  # round -1: setup for a new shape, or the switch to this size
                rounds = self.seconds.setdefault(size, {})
                rounds[r] = rounds.get(r, 0.0) + seconds
                counts = self.samples.setdefault(size, {})
                counts[r] = counts.get(r, 0) + n_samples
            if not self.schedule:
                self._choose(fallback=size)


def batch_size_candidates(on_cuda: bool, forced: int | None) -> tuple[int, ...]:
    """The sizes a new chooser tries: the forced size, or the device's candidates."""
    if forced is not None:
        return (int(forced),)
    return CUDA_CANDIDATES if on_cuda else CPU_CANDIDATES
