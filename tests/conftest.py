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
