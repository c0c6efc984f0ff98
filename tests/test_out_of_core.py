"""Data larger than memory: streaming fit, partial_fit, Dask arrays in and out."""

import threading
import warnings

import numpy as np
import pytest
import torch

from skconvae import ConvAutoencoderRegressor, ConvAutoencoderTransformer
from skconvae._data import ImageBatches, read_ahead, reads_slowly
from skconvae._sources import ArraySource, streams

from .conftest import FAST

DENSE = {**FAST, "latent_dim": 8}


@pytest.fixture(scope="module")
def digits_memmap(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("mm") / "digits.npy"
    np.save(path, digits[0])
    return np.load(path, mmap_mode="r")


class RecordingArray:
    """A sliceable array-like that is not an ndarray (like an h5py dataset), logging reads."""

    def __init__(self, array):
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.reads = []

    def __len__(self):
        return len(self.array)

    def __getitem__(self, index):
        self.reads.append(index)
        return self.array[index]


def _weights(model):
    return {k: v.clone() for k, v in model.net_.module_.state_dict().items()}


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- streaming fit ---------------------------------------------------------------------


def test_streams_rule(digits_memmap, digits):
    assert streams(digits_memmap) and streams(digits_memmap[100:])
    assert streams(RecordingArray(digits[0]))
    assert not streams(digits[0]) and not streams(digits[0].tolist())
    assert not streams(torch.zeros(3, 4))


@pytest.mark.parametrize("early_stopping", [False, True])
def test_memmap_fit_equals_in_memory_fit(digits_memmap, digits, early_stopping):
    X = digits[0]
    params = {**DENSE, "early_stopping": early_stopping}
    from_ram = ConvAutoencoderTransformer(**params).fit(X)
    from_disk = ConvAutoencoderTransformer(**params).fit(digits_memmap)
    # Same batches, same statistics: the same model, bit for bit.
    np.testing.assert_array_equal(from_disk.transform(X), from_ram.transform(X))
    np.testing.assert_array_equal(from_disk.data_max_, X.max() * np.ones(1))
    np.testing.assert_array_equal(from_disk.code_density_.means_, from_ram.code_density_.means_)
    assert from_disk.net_.history[:, "train_loss"] == from_ram.net_.history[:, "train_loss"]


def test_streaming_fit_reads_sorted_batches_never_the_whole(digits):
    X = digits[0].astype(np.float32)
    source = RecordingArray(X)
    ConvAutoencoderTransformer(**DENSE).fit(source)
    fancy = [r for r in source.reads if isinstance(r, np.ndarray)]
    slices = [r for r in source.reads if isinstance(r, slice)]
    # Training batches: sorted row indices, at most batch_size of them.
    assert fancy and all(len(r) <= FAST["batch_size"] for r in fancy)
    assert all(np.all(np.diff(r) > 0) for r in fancy)
    covered = np.concatenate(fancy)
    assert len(covered) >= FAST["max_epochs"] * len(X) - 2 * len(fancy)  # contiguous ones slice
    # Statistics and density passes read bounded contiguous blocks.
    assert all((s.stop or len(X)) - (s.start or 0) <= 4096 for s in slices)


def test_streaming_fit_h5py_like_regressor_equals_in_memory(digits):
    clean = digits[0].reshape(-1, 8, 8)
    noisy = clean + np.random.default_rng(0).normal(0, 3, clean.shape)
    params = {"filters": (4, 8), "max_epochs": 1, "batch_size": 64, "random_state": 0}
    ram = ConvAutoencoderRegressor(**params).fit(noisy, clean)
    lazy = ConvAutoencoderRegressor(**params).fit(RecordingArray(noisy), RecordingArray(clean))
    np.testing.assert_array_equal(lazy.predict(noisy[:50]), ram.predict(noisy[:50]))
    np.testing.assert_array_equal(lazy.target_max_, ram.target_max_)


def test_streaming_fit_rejects_nan_and_leaves_model(tmp_path, digits):
    X = digits[0].copy()
    model = ConvAutoencoderTransformer(**DENSE).fit(X)
    before = _weights(model)
    X[1500, 3] = np.nan
    np.save(tmp_path / "bad.npy", X)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        model.fit(np.load(tmp_path / "bad.npy", mmap_mode="r"))
    assert _same_weights(before, _weights(model))


def test_array_source_take_returns_batches_in_requested_order(digits):
    from skconvae._layout import infer_layout

    X = digits[0].astype(np.float32)
    source = ArraySource(RecordingArray(X), infer_layout((64,), None, "auto"))
    index = torch.tensor([900, 3, 57, 1200])
    batch, target = source.take(index)
    assert target is None
    np.testing.assert_array_equal(batch.numpy().reshape(4, 64), X[index.numpy()])
    np.testing.assert_array_equal(source.inputs.reads[-1], [3, 57, 900, 1200])
    sub = source.subset(torch.tensor([5, 2]))
    np.testing.assert_array_equal(sub.take(slice(0, 2))[0].numpy().reshape(2, 64), X[[5, 2]])


# -- partial_fit -----------------------------------------------------------------------


def test_read_ahead_reads_the_next_batch_while_the_caller_works():
    started = {i: threading.Event() for i in range(5)}

    def take(i):
        started[i].set()
        return i * 10

    got = []
    for item in read_ahead(range(5), take):
        got.append(item)
        k = item // 10
        if k + 1 < 5:  # the plain loop would not start k + 1 before this item is done
            assert started[k + 1].wait(timeout=30), f"batch {k + 1} was not read ahead"
    assert got == [0, 10, 20, 30, 40]


def test_read_ahead_raises_the_readers_error_in_order_and_plain_loop_stays_in_thread():
    def take(i):
        if i == 2:
            raise OSError("disk gone")
        return i

    items = read_ahead(range(5), take)
    assert [next(items), next(items)] == [0, 1]
    with pytest.raises(OSError, match="disk gone"):
        next(items)
    threads = []
    plain = read_ahead(range(3), lambda i: threads.append(threading.current_thread()) or i, False)
    assert list(plain) == [0, 1, 2]
    assert threads == [threading.main_thread()] * 3


def test_streaming_fit_reads_ahead_and_in_memory_fit_does_not(digits_memmap, digits, monkeypatch):
    readers = set()
    take = ArraySource.take
    monkeypatch.setattr(
        ArraySource,
        "take",
        lambda self, i: readers.add(threading.current_thread().name) or take(self, i),
    )
    ConvAutoencoderTransformer(**FAST).fit(digits_memmap)
    assert any(name.startswith("skconvae-read-ahead") for name in readers), readers
    assert reads_slowly(ArraySource(digits_memmap, None)) and not reads_slowly(
        ImageBatches(torch.zeros(2, 1, 8, 8))
    )


def test_partial_fit_trains_one_pass_per_call_keeping_optimizer_state(digits):
    X = digits[0]
    model = ConvAutoencoderTransformer(**DENSE)
    assert model.partial_fit(X[:900]) is model
    steps = float(model.net_.optimizer_.state_dict()["state"][0]["step"])
    model.partial_fit(X[900:])
    assert len(model.net_.history) == 2
    batches = -(-900 // 64) + -(-897 // 64)
    assert model.net_.optimizer_.state_dict()["state"][0]["step"] == batches
    assert steps == -(-900 // 64)
    assert model.transform(X[:3]).shape == (3, 8)
    assert model.code_density_.means_.shape == (10, 8)


def test_partial_fit_chunk_of_one_image_keeps_code_statistics_and_density(digits):
    X = digits[0]
    model = ConvAutoencoderTransformer(**DENSE).partial_fit(X[:500])
    density, mean = model.code_density_, model.net_.module_.code_mean.clone()
    model.partial_fit(X[500:501])  # one image: no spread to standardise or fit a density to
    assert len(model.net_.history) == 2
    assert model.code_density_ is density
    torch.testing.assert_close(model.net_.module_.code_mean, mean, rtol=0, atol=0)
    assert model.sample(2, random_state=0).shape == (2, 64)
    model.partial_fit(X[501:600])
    assert model.code_density_ is not density


def test_partial_fit_after_fit_with_early_stopping_trains_on_the_whole_chunk(digits):
    X = digits[0]
    model = ConvAutoencoderTransformer(**DENSE, early_stopping=True).fit(X)
    model.partial_fit(X[:640])
    last = model.net_.history[-1]
    assert len(model.net_.history) == 3 and "valid_loss" not in last
    assert sum(b["train_batch_size"] for b in last["batches"]) == 640


def test_partial_fit_scaling_rule(digits):
    X = digits[0]
    as_uint8 = ConvAutoencoderTransformer(**DENSE).partial_fit((X[:500] * 8).astype(np.uint8))
    assert (as_uint8.data_min_[0], as_uint8.data_max_[0]) == (0, 255)  # the dtype's range
    floats = ConvAutoencoderTransformer(**DENSE).partial_fit(X[:500] / 2)
    np.testing.assert_array_equal(floats.data_max_, [(X[:500] / 2).max()])  # first chunk's
    given = ConvAutoencoderTransformer(**DENSE, data_range=(0, 20)).partial_fit(X[:500])
    assert (given.data_min_[0], given.data_max_[0]) == (0, 20)
    with pytest.warns(UserWarning, match=r"outside the range \[0, 8\].*clipped.*data_range"):
        floats.partial_fit(X[500:])
    with pytest.raises(ValueError, match="data_range must be None or"):
        ConvAutoencoderTransformer(**DENSE, data_range=(3, 1)).partial_fit(X)


def test_partial_fit_chunk_within_range_does_not_warn(digits):
    X = digits[0]
    model = ConvAutoencoderTransformer(**DENSE, data_range=(0, 16)).partial_fit(X[:300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.partial_fit(X[300:600])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda X: X[:, :60], "X has 60 features, but ConvAutoencoderTransformer is expecting 64"),
        (lambda X: X.reshape(-1, 8, 8)[:, :6, :6], r"X holds samples of shape \(6, 6\)"),
        (lambda X: np.where(X == 0, np.nan, X), "Input X contains NaN"),
        (lambda X: X.astype(str), "dtype='numeric' is not compatible"),
    ],
)
def test_partial_fit_bad_chunk_same_error_as_transform_model_unchanged(digits, bad, match):
    X = digits[0]
    model = ConvAutoencoderTransformer(**DENSE).partial_fit(X[:600])
    weights = _weights(model)
    optimizer = float(model.net_.optimizer_.state_dict()["state"][0]["step"])
    attributes = dict(vars(model))
    chunk = bad(X[600:900])
    with pytest.raises(ValueError, match=match):
        model.transform(chunk)
    with pytest.raises(ValueError, match=match):
        model.partial_fit(chunk)
    assert _same_weights(weights, _weights(model))
    assert model.net_.optimizer_.state_dict()["state"][0]["step"] == optimizer
    assert len(model.net_.history) == 1 and vars(model).keys() == attributes.keys()


def test_partial_fit_failure_in_training_restores_weights(digits):
    X = digits[0]
    model = ConvAutoencoderTransformer(**DENSE, scaling=None).partial_fit(X[:300])
    weights, n_epochs = _weights(model), len(model.net_.history)
    from skconvae import NonFiniteLossError

    model.set_params(lr=1e30)
    with pytest.raises(NonFiniteLossError):
        model.partial_fit(X[300:] * 1e30)
    assert _same_weights(weights, _weights(model))
    default_lr = ConvAutoencoderTransformer().lr
    assert len(model.net_.history) == n_epochs and model.net_.lr == DENSE.get("lr", default_lr)


def test_partial_fit_passes_approach_fit(mnist):
    images = mnist[0][:3000]
    train, held_out = images[:2000], images[2000:]
    params = {**DENSE, "filters": (8, 4), "batch_size": 32, "max_epochs": 3}
    fitted = ConvAutoencoderTransformer(**params).fit(train)
    chunked = ConvAutoencoderTransformer(**params)
    for _ in range(3):
        for start in range(0, 2000, 500):
            chunked.partial_fit(train[start : start + 500])
    mse_fit, mse_chunks = -fitted.score(held_out), -chunked.score(held_out)
    assert mse_chunks < 1.25 * mse_fit
    assert mse_chunks < 0.5 * np.var(held_out.astype(float))  # learnt something


def test_regressor_partial_fit(digits):
    clean = (digits[0].reshape(-1, 8, 8) * 15).astype(np.uint8)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 30, clean.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    model = ConvAutoencoderRegressor(filters=(4, 8), batch_size=64, random_state=0)
    for start in range(0, 1797, 600):
        model.partial_fit(noisy[start : start + 600], clean[start : start + 600])
    assert len(model.net_.history) == 3
    assert model.target_max_[0] == 255 and model.input_max_[0] == 255
    assert model.score(noisy, clean) > 0.3
    with pytest.raises(ValueError, match="y has 16 features per sample"):
        model.partial_fit(noisy[:10], clean[:10, :4, :4].reshape(10, -1))


# -- Dask ------------------------------------------------------------------------------


da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")


@pytest.fixture(scope="module")
def fitted(digits):
    return ConvAutoencoderTransformer(**DENSE).fit(digits[0])


@pytest.fixture(scope="module")
def fitted_regressor(digits):
    clean = digits[0].reshape(-1, 8, 8)
    noisy = clean + np.random.default_rng(0).normal(0, 3, clean.shape)
    return ConvAutoencoderRegressor(filters=(4, 8), max_epochs=1, random_state=0).fit(noisy, clean)


@pytest.mark.parametrize("method", ["transform", "reconstruct", "score_samples"])
@pytest.mark.parametrize("shape", [(64,), (8, 8), (8, 8, 1)])
def test_dask_methods_equal_numpy_bit_for_bit(fitted, digits, method, shape):
    X = digits[0][:700].reshape(-1, *shape)
    lazy = getattr(fitted, method)(da.from_array(X, chunks=(250, *shape)))
    expected = getattr(fitted, method)(X)
    assert isinstance(lazy, da.Array)
    assert lazy.shape == expected.shape and lazy.dtype == expected.dtype
    assert lazy.chunks[0] == (250, 250, 200)
    np.testing.assert_array_equal(lazy.compute(), expected)


def test_dask_inverse_transform_and_predict(fitted, fitted_regressor, digits):
    codes = fitted.transform(digits[0][:300])
    lazy = fitted.inverse_transform(da.from_array(codes, chunks=100))
    np.testing.assert_array_equal(lazy.compute(), fitted.inverse_transform(codes))
    images = digits[0][:300].reshape(-1, 8, 8)
    predicted = fitted_regressor.predict(da.from_array(images, chunks=(128, 8, 8)))
    assert predicted.chunks == ((128, 128, 44), (8,), (8,))
    np.testing.assert_array_equal(predicted.compute(), fitted_regressor.predict(images))
    larger = np.random.default_rng(0).uniform(0, 16, (6, 16, 12))
    lazy_larger = fitted_regressor.predict(da.from_array(larger, chunks=(3, 16, 12)))
    assert lazy_larger.shape == (6, 16, 12)
    np.testing.assert_array_equal(lazy_larger.compute(), fitted_regressor.predict(larger))


def _counted_blocks(X, n_blocks):
    calls = []

    def load(i):
        calls.append(i)
        return X[i::n_blocks]

    sizes = [len(X[i::n_blocks]) for i in range(n_blocks)]
    blocks = [
        da.from_delayed(dask.delayed(load)(i), (n, *X.shape[1:]), X.dtype)
        for i, n in enumerate(sizes)
    ]
    return da.concatenate(blocks), calls


def test_dask_transform_is_lazy_and_model_enters_graph_once(fitted, digits):
    X, calls = _counted_blocks(digits[0][:600], 4)
    codes = fitted.transform(X)
    assert calls == []
    graph = dict(codes.__dask_graph__())
    models = [k for k in graph if isinstance(k, str) and k.startswith("skconvae-model")]
    assert len(models) == 1
    assert codes.compute().shape == (600, 8) and sorted(calls) == [0, 1, 2, 3]


def test_dask_chunked_across_features_error(fitted, digits):
    X = da.from_array(digits[0], chunks=(500, 32))
    with pytest.raises(ValueError, match=r"Rechunk along samples only: X\.rechunk"):
        fitted.transform(X)
    with pytest.raises(ValueError, match=r"Rechunk along samples only"):
        ConvAutoencoderTransformer(**DENSE).fit(X)


def test_dask_fit_and_partial_fit_stream_blocks(digits):
    X, calls = _counted_blocks(digits[0], 6)
    model = ConvAutoencoderTransformer(**DENSE).fit(X)
    # Each block computed for the statistics pass, once per epoch, once for the density
    # (plus the first rows for validation): never the whole array at once.
    assert len(calls) <= 6 * (1 + FAST["max_epochs"] + 1) + 1
    reference = ConvAutoencoderTransformer(**DENSE).fit(digits[0])
    assert -model.score(digits[0]) < 1.2 * -reference.score(digits[0])
    chunked = ConvAutoencoderTransformer(**DENSE).partial_fit(X)
    assert len(chunked.net_.history) == 1
    assert chunked.data_max_[0] == digits[0].max()


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster, timeout=60) as client,
    ):
        yield client


def test_dask_transform_on_local_cluster(cluster_client, fitted, digits):
    X = da.from_array(digits[0], chunks=300)
    codes = fitted.transform(X)
    result = cluster_client.compute(codes).result(timeout=120)
    np.testing.assert_array_equal(result, fitted.transform(digits[0]))
