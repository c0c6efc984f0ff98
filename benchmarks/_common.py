"""Helpers shared by the benchmark scripts: data, machine description, PSNR."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MNIST_PATH = ROOT.parent / "shared" / "data" / "mnist_test10k.npz"
N_TRAIN = 8000


def load_mnist(path: str | Path = MNIST_PATH):
    """MNIST test set split as the benchmarks use it: first 8000 train, last 2000 test."""
    data = np.load(path)
    images, labels = data["images"], data["labels"]
    return (images[:N_TRAIN], labels[:N_TRAIN]), (images[N_TRAIN:], labels[N_TRAIN:])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line describing where a benchmark ran."""
    import sklearn
    import skorch
    import torch

    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{os.cpu_count()} cores ({cpu_model()}){gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"scikit-learn {sklearn.__version__}, skorch {skorch.__version__}"
    )


def psnr(estimate: np.ndarray, truth: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of the mean squared error over all values."""
    mse = np.mean((np.asarray(estimate, dtype=np.float64) - truth) ** 2)
    return float(10 * np.log10(peak**2 / mse))
