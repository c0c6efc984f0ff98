import os
import pathlib

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

ROOT = pathlib.Path(__file__).resolve().parents[1]
MNIST_PATH = ROOT.parent / "shared" / "data" / "mnist_test10k.npz"

# Settings that keep a fit to a fraction of a second; used by every test that
# does not measure quality.
FAST = {"max_epochs": 2, "filters": (4, 2), "batch_size": 64, "random_state": 0}


def pytest_configure(config):
    """Run the default suite on the CPU, as CI does, even on a machine with a GPU.

    The default suite checks the CPU contract, which holds bit for bit (refits with one
    ``random_state``, batch sizes, threads, Dask blocks). On CUDA, cuDNN's autotuned
    algorithms and TF32 make those agree only to rounding, so the CUDA contract has its
    own tests, marked ``gpu``: ``pytest -m gpu`` sees the GPU. So does any run with
    ``SKCONVAE_TEST_CUDA=1``, e.g. to try the whole suite on CUDA. Hiding the GPU through
    the environment also hides it from the processes tests start (torchrun, Dask).
    """
    selects_gpu = "gpu" in config.option.markexpr and "not gpu" not in config.option.markexpr
    if not selects_gpu and os.environ.get("SKCONVAE_TEST_CUDA") != "1":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


@pytest.fixture(autouse=True)
def _seed_rngs():
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits():
    X, y = load_digits(return_X_y=True)
    return X, y


@pytest.fixture(scope="session")
def mnist():
    if not MNIST_PATH.exists():
        pytest.skip(f"MNIST test set not found at {MNIST_PATH}")
    data = np.load(MNIST_PATH)
    return data["images"], data["labels"]
