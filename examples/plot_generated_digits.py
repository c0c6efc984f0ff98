"""
Generating MNIST digits: a Gaussian mixture over autoencoder codes, and a VAE.
==============================================================================

Two ``ConvAutoencoderTransformer`` models with a 16-feature dense bottleneck are fit
on the first 8000 digits of the MNIST test set:

- a plain autoencoder: at ``fit`` it also fits a Gaussian mixture (10 components)
  to the codes of the training digits, and ``sample`` decodes draws from it;
- a variational autoencoder (``variational=True``): its codes are pulled towards
  N(0, I) during training, and ``sample`` decodes draws from that prior.

Each draws ``sample(40, random_state=0)``. The script prints, for each model, the
reconstruction MSE of the 2000 held-out digits (on the [0, 1] scale), and two
rough checks of the samples made with a 10-nearest-neighbour classifier on the
training pixels: how many of the 10 classes the samples cover, and the mean share
of a sample's 10 nearest training digits that agree with its predicted class (near
1 for a clear digit, low for an ambiguous blob). It saves a PNG of the 80 samples,
the mixture's above the VAE's. At this short training the VAE's samples are the
more ambiguous ones: its prior covers codes that no training digit maps to.

The settings (a small network, 8 epochs each) keep the run near a minute on 2 busy
CPU cores (with ``SKCONVAE_EXAMPLES_QUICK=1``, as in the online gallery: 3000
training digits, 4 epochs each). Run from the project root::

    python examples/plot_generated_digits.py [--out generated_digits.png]
        [--data PATH.npz] [--threads N]
"""

import argparse
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
from sklearn.neighbors import KNeighborsClassifier

from skconvae import ConvAutoencoderTransformer
from skconvae.plotting import plot_samples

# SKCONVAE_EXAMPLES_QUICK=1 (the docs build sets it) trains on less for fewer epochs,
# so the gallery builds in minutes; the numbers it prints then fall short of a full run's.
QUICK = os.environ.get("SKCONVAE_EXAMPLES_QUICK", "") not in ("", "0")
N_TRAIN = 3000 if QUICK else 8000
N_HELD_OUT = 2000
LATENT_DIM = 16
N_SAMPLES = 40
N_COLS = 10


DEFAULT_DATA = Path("../shared/data/mnist_test10k.npz")


def load_mnist(data: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test digits as uint8 ``(N, 28, 28)`` images and their labels.

    Read from ``data`` (an ``.npz`` with ``images`` and ``labels``), else from the
    file the environment variable ``SKCONVAE_MNIST`` names, else from
    ``../shared/data/mnist_test10k.npz`` when it exists, else downloaded once by
    :func:`sklearn.datasets.fetch_openml` into scikit-learn's data cache (the last
    10,000 rows of ``mnist_784`` are the same test set).
    """
    data = data or os.environ.get("SKCONVAE_MNIST")
    path = Path(data) if data else DEFAULT_DATA
    if data or path.exists():
        mnist = np.load(path)
        return mnist["images"], mnist["labels"]
    from sklearn.datasets import fetch_openml

    print("MNIST not found locally: fetching mnist_784 from OpenML (cached after the first run)")
    X, y = fetch_openml("mnist_784", version=1, return_X_y=True, as_frame=False)
    return X[-10_000:].reshape(-1, 28, 28).astype(np.uint8), y[-10_000:].astype(np.uint8)


def main(out: str, data: str | None) -> None:
    images, labels = load_mnist(data)
    images = images.astype(np.float32) / 255.0
    train, test = images[:N_TRAIN], images[-N_HELD_OUT:]
    judge = KNeighborsClassifier(n_neighbors=10).fit(train.reshape(N_TRAIN, -1), labels[:N_TRAIN])

    settings = dict(
        filters=(16, 8),
        latent_dim=LATENT_DIM,
        loss="bce",
        max_epochs=4 if QUICK else 8,
        batch_size=64,
        lr=2e-3,
        random_state=0,
    )
    models = {
        "GMM over codes": ConvAutoencoderTransformer(**settings),
        "VAE prior": ConvAutoencoderTransformer(**settings, variational=True),
    }
    print(f"{'model':<16} {'test MSE':>8} {'classes':>7} {'agreement':>9} {'fit (s)':>7}")
    samples = {}
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(train)
        elapsed = time.perf_counter() - start
        samples[name] = model.sample(N_SAMPLES, random_state=0)
        flat = samples[name].reshape(N_SAMPLES, -1)
        predicted = judge.predict(flat)
        agreement = judge.predict_proba(flat).max(axis=1).mean()
        mse = -model.score(test)
        print(
            f"{name:<16} {mse:>8.4f} {len(np.unique(predicted)):>7} {agreement:>9.2f} "
            f"{elapsed:>7.1f}"
        )

    fig = plot_samples(np.concatenate(list(samples.values())), n_cols=N_COLS)
    for index, name in enumerate(samples):
        # Label the first image of each model's block of rows.
        fig.axes[index * N_SAMPLES].set_ylabel(name, rotation=0, ha="right", va="center")
    fig.suptitle(
        f"sample({N_SAMPLES}, random_state=0) of two autoencoders (latent_dim={LATENT_DIM})"
    )
    fig.savefig(out, dpi=100, bbox_inches="tight", pad_inches=0.1)
    print(f"saved {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().partition("\n")[0])
    parser.add_argument("--out", default="generated_digits.png")
    parser.add_argument(
        "--data",
        default=None,
        help="MNIST test set .npz (default: $SKCONVAE_MNIST, else "
        "../shared/data/mnist_test10k.npz when present, else fetch_openml)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's own choice, one per core)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    main(args.out, args.data)
