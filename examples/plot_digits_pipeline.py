"""
Conv-autoencoder features for a classifier, every parameter at its default.
===========================================================================

Cross-validates ``Pipeline([("ae", ConvAutoencoderTransformer()), ("clf", SVC())])``
on scikit-learn's bundled 8x8 digits beside an SVC on raw pixels and on PCA(32)
codes (5 stratified folds), prints the mean accuracies and fit times, and saves a
PNG of held-out digits above their reconstructions. Nothing is tuned: the
autoencoder's ``"auto"`` parameters are resolved from the data at ``fit``.

With ``SKCONVAE_EXAMPLES_QUICK=1`` (as in the online gallery) the comparison runs on
3 folds and the autoencoder trains 20 epochs instead of its ``"auto"`` number (87
for the 1437 training images of a fold of 5), so its accuracy there falls short of
the full run's. Run from the project root::

    python examples/plot_digits_pipeline.py [--out digits_reconstructions.png]
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from skconvae import ConvAutoencoderTransformer

N_COMPONENTS = 32
# SKCONVAE_EXAMPLES_QUICK=1 (the docs build sets it) trains briefly, so the gallery
# builds in minutes; the numbers it prints then fall short of a full run's.
QUICK = os.environ.get("SKCONVAE_EXAMPLES_QUICK", "") not in ("", "0")


def main(out: str) -> None:
    X, y = load_digits(return_X_y=True)
    folds = StratifiedKFold(3 if QUICK else 5, shuffle=True, random_state=0)
    # Every parameter at its default, unless in a quick run.
    ae_params = {"max_epochs": 20} if QUICK else {}
    models = {
        "SVC on raw pixels": Pipeline([("clf", SVC())]),
        f"PCA({N_COMPONENTS}) -> SVC": Pipeline(
            [("pca", PCA(N_COMPONENTS, random_state=0)), ("clf", SVC())]
        ),
        "autoencoder -> SVC": Pipeline(
            [("ae", ConvAutoencoderTransformer(**ae_params, random_state=0)), ("clf", SVC())]
        ),
    }
    print(f"{'model':<20} {'CV accuracy':>11} {'fit per fold (s)':>17}")
    results = {}
    for name, model in models.items():
        results[name] = cross_validate(
            model, X, y, cv=folds, return_estimator=True, return_indices=True
        )
        accuracy, fit_time = results[name]["test_score"], results[name]["fit_time"]
        print(f"{name:<20} {accuracy.mean():>11.4f} {fit_time.mean():>17.1f}")

    # Reconstructions of digits held out from the first fold's models.
    ae_pipe = results["autoencoder -> SVC"]["estimator"][0]
    pca_pipe = results[f"PCA({N_COMPONENTS}) -> SVC"]["estimator"][0]
    held_out = results["autoencoder -> SVC"]["indices"]["test"][0]
    ae, pca = ae_pipe.named_steps["ae"], pca_pipe.named_steps["pca"]
    print(f"the autoencoder's code: {ae.latent_dim_} features, {ae.max_epochs_} epochs")
    shown = X[np.sort(held_out)[:10]]
    rows = {
        "original": shown,
        f"AE({ae.latent_dim_})": ae.inverse_transform(ae.transform(shown)),
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
    parser = argparse.ArgumentParser(description=__doc__.strip().partition("\n")[0])
    parser.add_argument("--out", default="digits_reconstructions.png")
    main(parser.parse_args().out)
