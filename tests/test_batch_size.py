"""Inference batch sizes: measured once on the CPU, reused, never changing results."""

import pickle

import numpy as np
import pytest
import torch

from skconvae import ConvAutoencoderTransformer
from skconvae import _net as net_module
from skconvae._batch_size import (
    CPU_CANDIDATES,
    CUDA_CANDIDATES,
    BatchSizeChooser,
    batch_size_candidates,
    batches_per_round,
    measurement_schedule,
)
from skconvae._transfer import HostTransfers

from .conftest import FAST


def _run_schedule(chooser, seconds_per_sample):
    """Feed the chooser full batches timed by ``seconds_per_sample[size]``; return sizes."""
    sizes = []
    while chooser.chosen is None:
        size = chooser.next_size()
        sizes.append(size)
        chooser.record(size, size, size * seconds_per_sample[size])
    return sizes


def test_chooser_takes_turns_on_as_many_samples_and_keeps_the_fastest():
    chooser = BatchSizeChooser((32, 64, 128), measured_samples=128, rounds=2)
    sizes = _run_schedule(chooser, {32: 3e-5, 64: 1e-5, 128: 2e-5})
    # Each turn: one uncounted batch, then >= 64 samples (one batch at least).
    one_round = [32, 32, 32, 64, 64, 128, 128]
    assert sizes == [*one_round, *one_round]
    assert [batches_per_round(s, 128, 2) for s in (32, 64, 128)] == [2, 1, 1]
    assert chooser.samples == {32: {0: 64, 1: 64}, 64: {0: 64, 1: 64}, 128: {0: 128, 1: 128}}
    assert chooser.chosen == 64 and chooser.next_size() == 64


def test_chooser_skips_each_turns_first_batch_and_takes_the_median_round():
    # A turn's first batch pays for the switch from another size (one-time setup in
    # the first round) and is not counted; a burst of load during one round does not
    # decide, the median round does.
    chooser = BatchSizeChooser((32, 64), measured_samples=96, rounds=3)
    assert measurement_schedule((32, 64), 96, 3) == [
        (32, -1), (32, 0), (64, -1), (64, 0),
        (32, -1), (32, 1), (64, -1), (64, 1),
        (32, -1), (32, 2), (64, -1), (64, 2),
    ]  # fmt: skip
    timings = {
        32: [1.0, 32 * 3e-5, 1.0, 32 * 9e-5, 1.0, 32 * 3e-5],
        64: [1.0, 64 * 2e-5, 1.0, 64 * 2e-5, 1.0, 64 * 2e-5],
    }
    for size, _ in measurement_schedule((32, 64), 96, 3):
        chooser.record(size, size, timings[size].pop(0))
    assert chooser.seconds_per_sample == pytest.approx({32: 3e-5, 64: 2e-5})
    assert chooser.chosen == 64
    # On CUDA only each candidate's first batch is left out.
    assert measurement_schedule((32, 64), 96, 3, every_turn=False) == [
        (32, -1), (32, 0), (64, -1), (64, 0), (32, 1), (64, 1), (32, 2), (64, 2)
    ]  # fmt: skip
    slow_round = BatchSizeChooser((32, 64), measured_samples=96, rounds=3)
    timings = {
        32: [0.0, 32 * 1e-5, 0.0, 32 * 1e-5, 0.0, 32 * 1e-5],
        64: [0.0, 64 * 2e-5, 0.0, 64 * 9e-5, 0.0, 64 * 9e-5],
    }
    for size, _ in measurement_schedule((32, 64), 96, 3):
        slow_round.record(size, size, timings[size].pop(0))
    assert slow_round.chosen == 32


def test_a_calls_first_batch_is_not_counted_on_the_cpu():
    # Other work ran between two calls, as between two sizes: the batch after it only
    # passes, and the schedule's own batches are all still timed.
    chooser = BatchSizeChooser((32, 64), measured_samples=64, rounds=2)
    chooser.start_call()  # the first call starts with an uncounted batch anyway
    assert chooser.schedule[:2] == [(32, -1), (32, 0)]
    chooser.record(32, 32, 1.0)
    chooser.start_call()
    assert chooser.schedule[:2] == [(32, -1), (32, 0)]
    chooser.record(32, 32, 9.0)  # after the caller's own work: not counted
    assert chooser.seconds == {}
    assert _run_schedule(chooser, {32: 3e-5, 64: 2e-5}) == [32, 64, 64, 32, 32, 64, 64]
    assert chooser.seconds_per_sample == pytest.approx({32: 3e-5, 64: 2e-5})
    # On CUDA (every_turn=False) calls are timed from their first batch.
    cuda = BatchSizeChooser((512, 1024), every_turn=False)
    cuda.record(512, 512, 1.0)
    cuda.start_call()
    assert cuda.schedule[0] == (512, 0)


def test_chooser_ignores_cut_short_batches():
    chooser = BatchSizeChooser((32, 64))
    chooser.record(32, 10, 1.0)  # the end of the data
    chooser.record(16, 16, 1.0)  # capped after running out of memory
    assert chooser.next_size() == 32 and chooser.samples == {}
    assert len(chooser.schedule) == len(measurement_schedule((32, 64)))


def test_out_of_memory_drops_that_size_and_larger_ones():
    chooser = BatchSizeChooser((32, 64, 128), measured_samples=128, rounds=2)
    for size in (32, 32, 32, 64, 64):  # the first round, up to 128's turn
        chooser.record(size, size, size * 1e-5)
    chooser.out_of_memory(100)  # a batch of 100 (capped, or cut short) did not fit
    assert {size for size, _ in chooser.schedule} == {32, 64}
    chooser.record(128, 128, 1.0)  # a stale report of a dropped size only passes
    assert _run_schedule(chooser, {32: 3e-5, 64: 2e-5}) == [32, 32, 32, 64, 64]
    assert chooser.chosen == 64
    chooser.out_of_memory(64)  # once chosen, the choice halves
    assert chooser.chosen == 32
    # Measurements of a dropped size are forgotten; with nothing measured, half the size.
    chooser = BatchSizeChooser((512, 1024))
    chooser.record(512, 512, 0.0)
    chooser.out_of_memory(512)
    assert chooser.schedule == [] and chooser.chosen == 256 and chooser.seconds == {}


def test_a_single_candidate_is_used_without_measuring():
    chooser = BatchSizeChooser((96,))
    chooser.record(96, 96, 5.0)
    assert chooser.chosen == 96 and chooser.seconds_per_sample == {}


def test_candidates_per_device():
    assert batch_size_candidates(on_cuda=False, forced=None) == CPU_CANDIDATES
    assert batch_size_candidates(on_cuda=True, forced=None) == CUDA_CANDIDATES
    assert batch_size_candidates(on_cuda=False, forced=100) == (100,)
    # Results stay identical across candidates only from 32 samples on (see below).
    assert min(CPU_CANDIDATES) >= 32


@pytest.fixture(scope="module")
def fitted(mnist):
    images, _ = mnist
    return ConvAutoencoderTransformer(**FAST, latent_dim=8).fit(images[:500])


def _spy_batches(monkeypatch):
    seen = []
    original = net_module.as_compact_tensor

    def spy(batch):
        seen.append(len(batch))
        return original(batch)

    monkeypatch.setattr(net_module, "as_compact_tensor", spy)
    return seen


def test_transform_measures_once_then_uses_the_fastest_size(fitted, mnist, monkeypatch):
    images, _ = mnist
    X = np.concatenate([images] * 3)  # longer than the whole schedule
    ae = pickle.loads(pickle.dumps(fitted))
    seen = _spy_batches(monkeypatch)
    codes = ae.transform(X)
    schedule = [size for size, _ in measurement_schedule(CPU_CANDIDATES)]
    assert sum(schedule) < len(X)
    assert seen[: len(schedule)] == schedule
    (chooser,) = [c for key, c in ae.net_._batch_sizes.items() if key[0] == ("encode", False)]
    assert chooser.chosen in CPU_CANDIDATES
    assert set(seen[len(schedule) : -1]) <= {chooser.chosen} and sum(seen) == len(X)
    # A later call starts at the chosen size; other passes measure on their own.
    seen.clear()
    ae.transform(X[:1000])
    assert seen[0] == min(chooser.chosen, 1000)
    seen.clear()
    ae.score_samples(X[:100])
    assert seen == [32, 32, 36]  # the schedule goes on; a short tail joins the last batch
    # The measurement belongs to the machine: a pickled model measures afresh.
    assert pickle.loads(pickle.dumps(ae)).net_._batch_sizes == {}
    # Batch sizes from 32 on give bit-identical results.
    monkeypatch.setattr(net_module, "INFERENCE_BATCH_SIZE", 1000)
    np.testing.assert_array_equal(ae.transform(X), codes)


def test_short_calls_do_not_measure_and_results_do_not_depend_on_batching(fitted, mnist):
    images, _ = mnist
    ae = pickle.loads(pickle.dumps(fitted))
    one_pass = [ae.score_samples(images[:20]) for _ in range(3)]
    assert all(c.chosen is None for c in ae.net_._batch_sizes.values())
    whole = ae.score_samples(images[:3000])
    np.testing.assert_array_equal(one_pass[0], whole[:20])
    codes = ae.transform(images[:3000])
    np.testing.assert_array_equal(
        ae.inverse_transform(codes)[:40], ae.inverse_transform(codes[:40])
    )
    np.testing.assert_array_equal(ae.reconstruct(images[:3000])[:40], ae.reconstruct(images[:40]))


def test_compile_true_fits_eagerly_and_compiles_inference_only(mnist, monkeypatch):
    images, _ = mnist
    compiled = []

    def fake_compile(fn, **kwargs):
        compiled.append((fn.__name__, kwargs))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    ae = ConvAutoencoderTransformer(**FAST, latent_dim=8, compile=True).fit(images[:300])
    assert compiled == []  # training and fit's own encoding pass stay eager
    ae.transform(images[:50])
    ae.score(images[:50])
    assert [name for name, _ in compiled] == ["encode", "forward"]
    assert all(kwargs == {"dynamic": True} for _, kwargs in compiled)
    ae.transform(images[:50])
    assert len(compiled) == 2  # compiled once per method


def test_a_short_tail_joins_the_last_batch(fitted, mnist, monkeypatch):
    """Fewer than 32 samples can take other CPU kernels (a batch of 5 changed a code
    by 5e-7): the last rows of a call join the batch before them instead."""
    images, _ = mnist
    X = images[: 64 * 3 + 5]
    ae = pickle.loads(pickle.dumps(fitted))
    monkeypatch.setattr(net_module, "INFERENCE_BATCH_SIZE", 64)
    seen = _spy_batches(monkeypatch)
    codes = ae.transform(X)
    assert seen == [64, 64, 69]
    monkeypatch.setattr(net_module, "INFERENCE_BATCH_SIZE", 1000)
    np.testing.assert_array_equal(ae.transform(X), codes)
    seen.clear()
    ae.transform(X[:20])  # a call shorter than 32 is one batch
    assert seen == [20]


def _fake_events(log: list):
    """A stand-in for ``torch.cuda.Event``, so that the overlapped path runs on the CPU."""

    class Event:
        def record(self):
            log.append("record")

        def synchronize(self):
            log.append("synchronize")

    return Event


def test_overlapped_transfers_copy_each_result_out_one_batch_later(monkeypatch):
    log = []
    monkeypatch.setattr(torch.cuda, "Event", _fake_events(log))
    transfers = HostTransfers("cpu")
    transfers.overlap, transfers.pin = True, False  # CUDA's path, unpinned
    out = np.zeros((6, 2), np.float32)
    batches = [torch.arange(4.0).reshape(2, 2) + 10 * i for i in range(3)]
    for i, batch in enumerate(batches):
        on_device = transfers.to_device(batch)
        assert on_device is not batch  # staged, then sent
        transfers.to_host(on_device * 2, out[2 * i : 2 * i + 2], wait=False)
        # The batch before this one is in the output; this one is not, yet.
        assert (out[2 * i : 2 * i + 2] == 0).all()
        done = np.concatenate([b.numpy() * 2 for b in batches[:i]] or [np.empty((0, 2))])
        np.testing.assert_array_equal(out[: 2 * i], done)
    transfers.finish()
    np.testing.assert_array_equal(out, torch.cat(batches).numpy() * 2)
    # Each result waits for its copy only once the next batch is queued.
    assert log == ["record", "record", "synchronize", "record", "synchronize", "synchronize"]
    transfers.to_host(torch.ones(2, 2), out[:2])  # wait=True: copied before it returns
    assert (out[:2] == 1).all() and transfers._pending is None
