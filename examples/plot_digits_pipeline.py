"""
Conv-autoencoder features for a classifier, beside raw pixels and PCA.
======================================================================

Fits ``Pipeline([("ae", ConvAutoencoderTransformer(...)), ("clf", SVC())])`` on
scikit-learn's bundled 8x8 digits, prints its held-out accuracy beside an SVC on
raw pixels and on PCA with the same number of components, and saves a PNG of
held-out digits above their reconstructions.

Run from the project root::

    python examples/plot_digits_pipeline.py [--out digits_reconstructions.png]
"""

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from skconvae import ConvAutoencoderTransformer

N_COMPONENTS = 32


def main(out: str) -> None:
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )

    models = {
        "SVC on raw pixels": Pipeline([("clf", SVC())]),
        f"PCA({N_COMPONENTS}) -> SVC": Pipeline(
            [("pca", PCA(N_COMPONENTS, random_state=0)), ("clf", SVC())]
        ),
        f"AE({N_COMPONENTS}) -> SVC": Pipeline(
            [
                (
                    "ae",
                    ConvAutoencoderTransformer(
                        filters=(32, 32),
                        latent_dim=N_COMPONENTS,
                        max_epochs=60,
                        batch_size=32,
                        random_state=0,
                    ),
                ),
                ("scale", StandardScaler()),
                ("clf", SVC()),
            ]
        ),
    }
    print(f"{'model':<22} {'accuracy':>8} {'fit (s)':>8}")
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(X_train, y_train)
        elapsed = time.perf_counter() - start
        print(f"{name:<22} {model.score(X_test, y_test):>8.3f} {elapsed:>8.1f}")

    ae = models[f"AE({N_COMPONENTS}) -> SVC"].named_steps["ae"]
    pca = models[f"PCA({N_COMPONENTS}) -> SVC"].named_steps["pca"]
    shown = X_test[:10]
    rows = {
        "original": shown,
        f"AE({N_COMPONENTS})": ae.inverse_transform(ae.transform(shown)),
        f"PCA({N_COMPONENTS})": pca.inverse_transform(pca.transform(shown)),
    }
    fig, axes = plt.subplots(len(rows), len(shown), figsize=(len(shown), len(rows) + 0.4))
    for row, (label, images) in zip(axes, rows.items(), strict=True):
        for ax, image in zip(row, images, strict=True):
            ax.imshow(image.reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(label, rotation=0, ha="right", va="center")
    fig.suptitle("Held-out digits and their reconstructions")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"saved {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", default="digits_reconstructions.png")
    main(parser.parse_args().out)
