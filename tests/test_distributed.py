"""Data-parallel training under torchrun, and searches on a Dask cluster."""

import glob
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback

from skconvae import ConvAutoencoderRegressor, ConvAutoencoderTransformer, load
from skconvae._data import BatchIterator, ImageBatches
from skconvae._distributed import ShardedBatches

from .conftest import FAST, ROOT

# A hang (a process waiting on a collective the others never join) must fail, not block.
TORCHRUN_TIMEOUT_S = 240
CLUSTER_TIMEOUT_S = 300


def run_launch(command, env) -> subprocess.CompletedProcess:
    """Run a torchrun launch; past ``TORCHRUN_TIMEOUT_S`` stop it and fail.

    torchrun starts each worker in a session of its own, so killing the launcher
    would leave hung workers behind; SIGTERM makes it stop them first.
    """
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as launch:
        try:
            stdout, stderr = launch.communicate(timeout=TORCHRUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            launch.terminate()
            try:
                launch.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                launch.kill()
                launch.communicate()
            pytest.fail(f"the torchrun launch hung: stopped after {TORCHRUN_TIMEOUT_S} s")
    return subprocess.CompletedProcess(command, launch.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """What each of 2 torchrun processes (gloo, 1 thread each) ended with."""
    out = tmp_path_factory.mktemp("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        f"--log-dir={out / 'logs'}", "--redirects=3",
        str(ROOT / "tests" / "torchrun_fit.py"), str(out),
    ]  # fmt: skip
    completed = run_launch(command, env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = [pickle.loads((out / f"rank{rank}.pkl").read_bytes()) for rank in (0, 1)]
    logs = {
        (rank, stream): open(
            glob.glob(str(out / "logs" / "**" / str(rank) / f"{stream}.log"), recursive=True)[0]
        ).read()
        for rank in (0, 1)
        for stream in ("stdout", "stderr")
    }
    return results, logs, out


def assert_same_weights(first, second):
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_torchrun_processes_end_with_the_same_model(two_processes):
    (first, second), _, _ = two_processes
    assert first["threads"] == second["threads"] == 1
    a, b = first["transformer"], second["transformer"]
    assert_same_weights(a["weights"], b["weights"])
    assert_same_weights(first["regressor"]["weights"], second["regressor"]["weights"])
    np.testing.assert_array_equal(a["data_max"], b["data_max"])
    np.testing.assert_array_equal(a["density_means"], b["density_means"])
    np.testing.assert_array_equal(a["transform"], b["transform"])
    assert a["parallel_left"] is None and b["parallel_left"] is None
    # The code statistics are the first process's, however each process's codes round.
    assert_same_weights(first["encoded_apart"]["weights"], second["encoded_apart"]["weights"])
    np.testing.assert_array_equal(
        first["encoded_apart"]["density_means"], second["encoded_apart"]["density_means"]
    )
    # Only the first process fitted the code density; the second took it.
    assert first["encoded_apart"]["mixture_fits"] == 1
    assert second["encoded_apart"]["mixture_fits"] == 0
    # Early stopping loaded an earlier epoch's weights: batch norm's statistics of
    # that epoch were shared before they were kept (without it, they differ).
    assert first["stopped"]["epochs"] == second["stopped"]["epochs"] == 3
    assert_same_weights(first["stopped"]["weights"], second["stopped"]["weights"])
    # distributed=False: each process trained alone, on its own data.
    with pytest.raises(AssertionError):
        assert_same_weights(first["solo_weights"], second["solo_weights"])


def test_torchrun_processes_share_each_epoch_and_agree_on_losses(two_processes):
    (first, second), _, _ = two_processes
    a, b = first["transformer"], second["transformer"]
    n_train = 1001 - round(0.1 * 1001)
    for epoch, (mine, theirs) in enumerate(zip(a["samples"], b["samples"], strict=True)):
        assert mine + theirs == n_train, epoch
        assert abs(mine - theirs) <= 1, (mine, theirs)
    assert a["steps"] == b["steps"] == [-(-n_train // 63)] * len(a["steps"])
    losses = [[(row["train_loss"], row["valid_loss"]) for row in r["history"]] for r in (a, b)]
    assert losses[0] == losses[1]
    # The history records global batches: sizes sum to the whole training set.
    batches = a["history"][0]["batches"]
    assert sum(batch.get("train_batch_size", 0) for batch in batches) == n_train
    assert sum(batch.get("valid_batch_size", 0) for batch in batches) == 1001 - n_train


def test_torchrun_gradients_in_several_buckets_average_as_in_one(two_processes):
    (first, second), _, _ = two_processes
    one, several = first["buckets"]["one"], first["buckets"]["several"]
    assert one["buckets_per_step"] == 1
    assert several["buckets_per_step"] > 2
    assert_same_weights(one["weights"], several["weights"])
    assert_same_weights(several["weights"], second["buckets"]["several"]["weights"])
    np.testing.assert_array_equal(one["losses"], several["losses"])
    np.testing.assert_array_equal(several["losses"], second["buckets"]["several"]["losses"])


def test_torchrun_stops_and_errors_agree(two_processes):
    (first, second), _, _ = two_processes
    assert "training loss became" in first["diverged"]
    assert first["diverged"] == second["diverged"]
    assert "given different training data" in first["mismatch"]
    assert first["mismatch"] == second["mismatch"]
    # The code density is fitted by the first process alone; its error reaches both.
    assert first["mixture_error"] == second["mixture_error"] == "mixture failed"
    # One that cannot be pickled reaches them by name instead of hanging the others.
    assert first["unpicklable_error"] == second["unpicklable_error"]
    assert first["unpicklable_error"] == "HoldsALock: mixture failed"


def test_torchrun_only_first_process_prints(two_processes):
    _, logs, _ = two_processes
    assert "train_loss" in logs[0, "stdout"] and "valid_loss" in logs[0, "stdout"]
    assert "train_loss" not in logs[1, "stdout"]
    # Nor does it warn: DDP's renamed buffer switch (torch 2.13) is passed by its new name.
    assert "Warning" not in logs[0, "stderr"] + logs[1, "stderr"]


def test_torchrun_model_loads_in_one_process(two_processes, digits):
    (first, _), _, out = two_processes
    model = load(out / "transformer.safetensors")
    X = digits[0][:1001]
    np.testing.assert_array_equal(model.transform(X[:5]), first["transformer"]["transform"])
    regressor = pickle.loads(first["regressor"]["pickle"])
    images = X.reshape(-1, 8, 8)[:200]
    assert regressor.predict(images[:3]).shape == (3, 8, 8)
    # Same global batch and seed in one process: the same training, up to rounding.
    alone = ConvAutoencoderRegressor(filters=(4,), max_epochs=2, batch_size=32, random_state=1)
    alone.fit(images, images[:, ::-1])
    np.testing.assert_allclose(
        first["regressor"]["train_loss"], alone.net_.history[:, "train_loss"], rtol=1e-3
    )


def test_outside_a_launch_nothing_changes(digits):
    X = digits[0][:300]
    auto = ConvAutoencoderTransformer(**FAST).fit(X)
    alone = ConvAutoencoderTransformer(**FAST, distributed=False).fit(X)
    np.testing.assert_array_equal(auto.transform(X), alone.transform(X))
    with pytest.raises(ValueError, match="torchrun launch"):
        ConvAutoencoderTransformer(**FAST, distributed=True).fit(X)
    with pytest.raises(InvalidParameterError, match="distributed"):
        ConvAutoencoderTransformer(**FAST, distributed="yes").fit(X)


@pytest.mark.parametrize("shuffle", [True, False])
def test_shards_split_every_global_batch(shuffle):
    n, batch_size, world = 23, 10, 3  # batches of 10, 10 and 3
    dataset = ImageBatches(torch.arange(n).reshape(n, 1, 1, 1))
    parts = []
    for rank in range(world):
        batches = BatchIterator(
            dataset, batch_size, shuffle, generator=torch.Generator().manual_seed(5)
        )
        parts.append(list(ShardedBatches(batches, rank, world)))
    steps = [len(p) for p in parts]
    assert steps == [3, 3, 3]
    whole = BatchIterator(dataset, batch_size, shuffle, generator=torch.Generator().manual_seed(5))
    for step, (global_x, _) in enumerate(whole):
        shards = [p[step] for p in parts]
        assert {s.n_global for s in shards} == {len(global_x)}
        taken = torch.cat([s[0][: s.n_local] for s in shards]).flatten()
        assert sorted(taken.tolist()) == sorted(global_x.flatten().tolist())
        assert max(s.n_local for s in shards) - min(s.n_local for s in shards) <= 1
        assert all(len(s[0]) == max(s.n_local, 1) for s in shards)


class RecordThreads(Callback):
    def on_epoch_begin(self, net, **kwargs):
        net.history.record("torch_threads", torch.get_num_threads())


@pytest.fixture
def hard_timeout():
    """Fail a test that starts a cluster after a few minutes instead of blocking the suite."""

    def expire(signum, frame):
        raise TimeoutError(f"gave up after {CLUSTER_TIMEOUT_S} s: a Dask cluster test hung")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(CLUSTER_TIMEOUT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def small_digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X[:300], y[:300]


def _pipeline():
    return make_pipeline(
        ConvAutoencoderTransformer(**{**FAST, "max_epochs": 1}, latent_dim=8),
        LogisticRegression(max_iter=200),
    )


def _modules_imported_by_an_optimizer() -> list[str]:
    before = set(sys.modules)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    return sorted(set(sys.modules) - before)


def _gpu_recipe_cluster(distributed, n_workers):
    """The user guide's one-GPU-per-worker recipe: single-threaded workers that each hold
    one "GPU" resource and import skconvae as they start."""
    return distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        resources={"GPU": 1},
        preload=["skconvae"],
        dashboard_address=":0",
    )


def _codes_on_the_cluster(model, X, rows):
    """``model.transform`` of ``X`` as a dask array of ``rows``-row blocks, computed on
    the current client: the estimator travels once, with the graph."""
    import dask.array as da

    n_out = len(model.get_feature_names_out())
    blocks = da.from_array(X, chunks=(rows, X.shape[1]))
    return blocks.map_blocks(
        model.transform, dtype=np.float32, chunks=(blocks.chunks[0], (n_out,))
    ).compute()


def test_grid_search_on_a_dask_cluster_matches_serial(small_digits, hard_timeout):
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("dask.array")
    from joblib import parallel_config

    X, y = small_digits
    grid = {"convautoencodertransformer__latent_dim": [4, 8]}
    # The serial reference runs one torch thread per fit, as the workers do: with
    # another thread count, float sums run in another order and scores may differ.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = GridSearchCV(_pipeline(), grid, cv=2).fit(X, y)
    finally:
        torch.set_num_threads(threads)
    with (
        # The user guide's one-GPU-per-worker recipe, on CPU workers: every fit asks for
        # the "GPU" resource each worker holds.
        _gpu_recipe_cluster(distributed, n_workers=2) as cluster,
        distributed.Client(cluster) as client,
        parallel_config(backend="dask", resources={"GPU": 1}),
    ):
        imported = client.run(lambda: "skconvae" in sys.modules)
        assert list(imported.values()) == [True, True]
        # skconvae's preload hook has built an optimizer: a fit's first one imports
        # nothing more (torch imports its compiler stack then, about 2 s).
        first_optimizer = client.run(_modules_imported_by_an_optimizer)
        assert list(first_optimizer.values()) == [[], []]
        spread = GridSearchCV(_pipeline(), grid, cv=2, n_jobs=-1).fit(X, y)
        ae = ConvAutoencoderTransformer(**FAST, callbacks=[RecordThreads()])
        on_worker = client.submit(ae.fit, X).result()
        codes = _codes_on_the_cluster(on_worker, X, rows=100)
    for key in ("mean_test_score", "split0_test_score", "split1_test_score", "rank_test_score"):
        np.testing.assert_array_equal(spread.cv_results_[key], serial.cv_results_[key], key)
    # Worker processes run one task per thread: torch takes one thread per fit.
    assert on_worker.net_.history[0, "torch_threads"] == 1
    np.testing.assert_allclose(codes, on_worker.transform(X), rtol=1e-5, atol=1e-6)


def test_fit_in_a_threaded_dask_worker_takes_its_share_of_cores(small_digits, hard_timeout):
    distributed = pytest.importorskip("distributed")
    X, _ = small_digits
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    before = torch.get_num_threads()
    ae = ConvAutoencoderTransformer(**FAST, callbacks=[RecordThreads()])
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        fitted = client.submit(ae.fit, X).result()
    assert fitted.net_.history[0, "torch_threads"] == min(before, max(1, cores // 2))
    assert torch.get_num_threads() == before
    local = ConvAutoencoderTransformer(**FAST, callbacks=[RecordThreads()]).fit(X)
    assert local.net_.history[0, "torch_threads"] == before


# -- on a GPU (pytest -m gpu) ----------------------------------------------------------


@pytest.fixture(scope="module")
def two_processes_on_one_gpu(tmp_path_factory):
    """What each of 2 torchrun processes training data-parallel on one GPU ended with."""
    from .conftest import MNIST_PATH

    if not MNIST_PATH.exists():
        pytest.skip(f"MNIST test set not found at {MNIST_PATH}")
    out = tmp_path_factory.mktemp("torchrun_gpu")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(ROOT / "tests" / "torchrun_gpu_fit.py"), str(MNIST_PATH), str(out),
    ]  # fmt: skip
    completed = run_launch(command, env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [pickle.loads((out / f"rank{rank}.pkl").read_bytes()) for rank in (0, 1)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torchrun_processes_train_data_parallel_on_cuda(two_processes_on_one_gpu, mnist):
    from .torchrun_gpu_fit import N_FIT, SETTINGS

    first, second = two_processes_on_one_gpu
    for result in (first, second):
        assert result["device"].startswith("cuda")
        assert result["parameters_on"] == ["cuda:0"]
        assert result["module"] == "ConvAutoencoder"  # the plain module, no DDP wrapper
    # DDP averaged the gradients on the GPU: the same steps, the same weights.
    assert_same_weights(first["weights"], second["weights"])
    assert_same_weights(first["partial_weights"], second["partial_weights"])
    assert first["train_loss"] == second["train_loss"]
    # Each process encodes on its own; cuDNN may pick another algorithm in each.
    np.testing.assert_allclose(first["codes"], second["codes"], rtol=1e-3, atol=1e-3)
    # The same global batch and seed in one process: the same training, up to batch
    # norm's statistics over half batches and cuDNN's rounding.
    images, _ = mnist
    alone = ConvAutoencoderTransformer(**SETTINGS, random_state=0).fit(images[:N_FIT])
    np.testing.assert_allclose(first["train_loss"], alone.net_.history[:, "train_loss"], rtol=0.03)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dask_worker_holding_the_gpu_fits_and_encodes_on_it(mnist, hard_timeout):
    """The user guide's one-GPU-per-worker recipe on a real GPU: fits asked to need one
    "GPU" run on the worker that holds it and train there on CUDA."""
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("dask.array")
    from joblib import parallel_config
    from sklearn.model_selection import cross_validate

    images, labels = mnist
    X, y = images[:600].reshape(600, -1), labels[:600]
    with (
        _gpu_recipe_cluster(distributed, n_workers=1) as cluster,
        distributed.Client(cluster) as client,
    ):
        with parallel_config(backend="dask", resources={"GPU": 1}):
            spread = cross_validate(_pipeline(), X, y, cv=2, n_jobs=-1, return_estimator=True)
        ae = ConvAutoencoderTransformer(**FAST)
        fitted = client.submit(ae.fit, X, resources={"GPU": 1}).result()
        codes = _codes_on_the_cluster(fitted, X, rows=150)
    assert fitted.device_ == "cuda"
    assert [pipe[0].device_ for pipe in spread["estimator"]] == ["cuda", "cuda"]
    serial = cross_validate(_pipeline(), X, y, cv=2)
    # cuDNN picks its algorithms per process: scores agree to a few digits of 300.
    np.testing.assert_allclose(spread["test_score"], serial["test_score"], atol=0.03)
    np.testing.assert_allclose(codes, fitted.transform(X), rtol=1e-3, atol=1e-3)
