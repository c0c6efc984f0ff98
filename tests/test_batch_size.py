"""Inference batch sizes: measured once on the CPU, reused, never changing results."""

import pickle

import numpy as np
import pytest
import torch

from skconvae import ConvAutoencoderTransformer
from skconvae import _net as net_module
from skconvae._batch_size import (
    CPU_CANDIDATES,
    CUDA_BATCH_SIZE,
    BatchSizeChooser,
    batch_size_candidates,
    batches_per_round,
    measurement_schedule,
)

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
    # One uncounted batch each, then per round >= 64 samples (one batch at least) each.
    first_round = [32, 32, 32, 64, 64, 128, 128]
    assert sizes == [*first_round, 32, 32, 64, 128]
    assert [batches_per_round(s, 128, 2) for s in (32, 64, 128)] == [2, 1, 1]
    assert chooser.samples == {32: {0: 64, 1: 64}, 64: {0: 64, 1: 64}, 128: {0: 128, 1: 128}}
    assert chooser.chosen == 64 and chooser.next_size() == 64


def test_chooser_skips_the_first_batch_and_takes_the_median_round():
    # The first batch of a new size pays one-time setup and is not counted; a burst of
    # load during one round does not decide, the median round does.
    chooser = BatchSizeChooser((32, 64), measured_samples=96, rounds=3)
    assert measurement_schedule((32, 64), 96, 3) == [
        (32, -1), (32, 0), (64, -1), (64, 0), (32, 1), (64, 1), (32, 2), (64, 2)
    ]  # fmt: skip
    timings = {
        32: [1.0, 32 * 3e-5, 32 * 9e-5, 32 * 3e-5],
        64: [1.0, 64 * 2e-5, 64 * 2e-5, 64 * 2e-5],
    }
    for size, _ in measurement_schedule((32, 64), 96, 3):
        chooser.record(size, size, timings[size].pop(0))
    assert chooser.seconds_per_sample == pytest.approx({32: 3e-5, 64: 2e-5})
    assert chooser.chosen == 64
    slow_round = BatchSizeChooser((32, 64), measured_samples=96, rounds=3)
    timings = {
        32: [1.0, 32 * 1e-5, 32 * 1e-5, 32 * 1e-5],
        64: [1.0, 64 * 2e-5, 64 * 9e-5, 64 * 9e-5],
    }
    for size, _ in measurement_schedule((32, 64), 96, 3):
        slow_round.record(size, size, timings[size].pop(0))
    assert slow_round.chosen == 32


def test_chooser_ignores_cut_short_batches():
    chooser = BatchSizeChooser((32, 64))
    chooser.record(32, 10, 1.0)  # the end of the data
    chooser.record(16, 16, 1.0)  # capped after running out of memory
    assert chooser.next_size() == 32 and chooser.samples == {}
    assert len(chooser.schedule) == len(measurement_schedule((32, 64)))


def test_a_single_candidate_is_used_without_measuring():
    chooser = BatchSizeChooser((96,))
    chooser.record(96, 96, 5.0)
    assert chooser.chosen == 96 and chooser.seconds_per_sample == {}


def test_candidates_per_device():
    assert batch_size_candidates(on_cuda=False, forced=None) == CPU_CANDIDATES
    assert batch_size_candidates(on_cuda=True, forced=None) == (CUDA_BATCH_SIZE,)
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
    X = np.concatenate([images, images])  # longer than the whole schedule
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
