"""
Anomaly scores from reconstruction error: the most and least typical MNIST digits.
==================================================================================

``ConvAutoencoderTransformer.score_samples`` is the negative per-image reconstruction
MSE: higher is more normal, as for scikit-learn's outlier detectors. The script
shows two uses, on the MNIST test set (first 8000 digits train, last 2000 held out):

1. An autoencoder fit on all 8000 training digits ranks the 2000 held-out digits;
   the PNG shows the 10 most normal (top row) and the 10 most anomalous (bottom
   row), each titled with its label and reconstruction MSE (on the [0, 1] scale).
   Reconstruction error favours simple, thin strokes (ones) and flags thick,
   complex digits: a known bias of reconstruction-based scores.
2. One-class detection: an autoencoder fit only on the training images of one
   digit (``--digit``, default 0) scores the held-out digits; the printed ROC AUC
   says how well its score separates that digit (normal) from the other nine
   (anomalies), beside the same score from PCA reconstructions with as many
   components as the autoencoder has latent features.

The settings (a small network with a 16-feature bottleneck, 8 and 30 epochs) keep
the run well under a minute on 2 busy CPU cores; with ``SKCONVAE_EXAMPLES_QUICK=1``
(as in the online gallery) 3000 training digits and 3 and 10 epochs. Run from the
project root::

    python examples/plot_anomalies.py [--out anomalies.png] [--digit 0]
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
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from skconvae import ConvAutoencoderTransformer
from skconvae.plotting import plot_image_rows

# SKCONVAE_EXAMPLES_QUICK=1 (the docs build sets it) trains on less for fewer epochs,
# so the gallery builds in minutes; the numbers it prints then fall short of a full run's.
QUICK = os.environ.get("SKCONVAE_EXAMPLES_QUICK", "") not in ("", "0")
N_TRAIN = 3000 if QUICK else 8000
N_HELD_OUT = 2000
LATENT_DIM = 16
N_SHOWN = 10


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


def make_autoencoder(max_epochs: int) -> ConvAutoencoderTransformer:
    return ConvAutoencoderTransformer(
        filters=(16, 8),
        latent_dim=LATENT_DIM,
        loss="bce",
        max_epochs=max_epochs,
        batch_size=64,
        lr=2e-3,
        random_state=0,
    )


def pca_scores(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Negative per-image MSE of PCA reconstructions, like ``score_samples``."""
    pca = PCA(LATENT_DIM, random_state=0).fit(train.reshape(len(train), -1))
    flat = test.reshape(len(test), -1)
    return -np.mean((pca.inverse_transform(pca.transform(flat)) - flat) ** 2, axis=1)


def main(out: str, data: str | None, digit: int) -> None:
    images, labels = load_mnist(data)
    images = images.astype(np.float32) / 255.0
    train, test = images[:N_TRAIN], images[-N_HELD_OUT:]
    train_labels, test_labels = labels[:N_TRAIN], labels[-N_HELD_OUT:]

    # 1. Rank held-out digits by an autoencoder fit on all digits.
    start = time.perf_counter()
    autoencoder = make_autoencoder(max_epochs=3 if QUICK else 8).fit(train)
    print(
        f"autoencoder fit on all {N_TRAIN} training digits in {time.perf_counter() - start:.1f} s"
    )
    scores = autoencoder.score_samples(test)
    order = np.argsort(scores)
    most_normal, most_anomalous = order[::-1][:N_SHOWN], order[:N_SHOWN]
    print(f"held-out reconstruction MSE: median {np.median(-scores):.4f}")
    for name, index in (("most normal", most_normal), ("most anomalous", most_anomalous)):
        print(
            f"{name:<15} labels {' '.join(str(label) for label in test_labels[index])}; "
            f"MSE {-scores[index].max():.4f} to {-scores[index].min():.4f}"
        )

    # 2. One-class: normal = one digit, anomalies = the other nine.
    normal_train = train[train_labels == digit]
    start = time.perf_counter()
    one_class = make_autoencoder(max_epochs=10 if QUICK else 30).fit(normal_train)
    elapsed = time.perf_counter() - start
    is_normal = test_labels == digit
    print(
        f"\none-class: fit on the {len(normal_train)} training images of digit {digit} "
        f"({elapsed:.1f} s); held out: {is_normal.sum()} of digit {digit} vs "
        f"{(~is_normal).sum()} others"
    )
    aucs = {
        "autoencoder score_samples": roc_auc_score(is_normal, one_class.score_samples(test)),
        f"PCA({LATENT_DIM}) reconstruction": roc_auc_score(
            is_normal, pca_scores(normal_train, test)
        ),
    }
    print(f"{'score':<32} {'ROC AUC':>7}")
    for name, auc in aucs.items():
        print(f"{name:<32} {auc:>7.3f}")

    shown = np.concatenate([most_normal, most_anomalous])
    titles = [f"{test_labels[i]}: {-scores[i]:.3f}" for i in shown]
    fig = plot_image_rows(
        {"most normal": test[most_normal], "most anomalous": test[most_anomalous]},
        n_images=N_SHOWN,
        titles=[titles[:N_SHOWN], titles[N_SHOWN:]],
        cmap="gray_r",
        vmin=0.0,
        vmax=1.0,
    )
    fig.suptitle("Held-out digits ranked by score_samples (title: label: reconstruction MSE)")
    fig.savefig(out, dpi=100, bbox_inches="tight", pad_inches=0.1)
    print(f"saved {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().partition("\n")[0])
    parser.add_argument("--out", default="anomalies.png")
    parser.add_argument(
        "--data",
        default=None,
        help="MNIST test set .npz (default: $SKCONVAE_MNIST, else "
        "../shared/data/mnist_test10k.npz when present, else fetch_openml)",
    )
    parser.add_argument(
        "--digit", type=int, default=0, choices=range(10), help="normal class of the one-class part"
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
    main(args.out, args.data, args.digit)
