"""
Denoising colour photo patches: a conv regressor beside Gaussian blur.
======================================================================

``ConvAutoencoderRegressor`` learns to map noisy 16x16 RGB patches to clean ones.
It trains on 8000 random patches of ``china.jpg``, each randomly flipped,
transposed, colour-permuted and inverted so that one photo covers more of what a
photo can look like, and is tested on 1000 random patches of the other photo,
``flower.jpg`` (both from ``sklearn.datasets.load_sample_images``). The noise is
Gaussian with standard deviation 0.1 on the [0, 1] scale (about 25 grey levels),
clipped to [0, 1].

The script prints the PSNR (``10 * log10(1 / MSE)`` over all pixels, higher is
better) of the noisy patches, of the best of a few Gaussian blurs (sigma picked on
the test patches, which flatters the blur) and of the model, on all test patches
and on the quarter of them with the most detail (largest mean squared gradient of
the clean patch), and on patches of the training photo ``china.jpg`` (drawn
with another seed; they overlap training patches). Most of ``flower.jpg`` is a
smooth, out-of-focus background, on which a blur is at its best. A PNG shows
random and detailed test patches: original / noisy / blur / model.

The settings (8000 small patches, a small network, 6 epochs) keep the run near a
minute on 2 busy CPU cores (with ``SKCONVAE_EXAMPLES_QUICK=1``, as in the online
gallery: 3000 patches, 3 epochs); the model is still improving when it stops, and
more epochs help. Run from the project root::

    python examples/plot_denoising_photos.py [--out denoising_photos.png] [--threads N]
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from sklearn.datasets import load_sample_images
from sklearn.feature_extraction.image import extract_patches_2d

from skconvae import ConvAutoencoderRegressor
from skconvae.plotting import plot_image_rows

PATCH = 16
# SKCONVAE_EXAMPLES_QUICK=1 (the docs build sets it) trains on less for fewer epochs,
# so the gallery builds in minutes; the numbers it prints then fall short of a full run's.
QUICK = os.environ.get("SKCONVAE_EXAMPLES_QUICK", "") not in ("", "0")
N_TRAIN = 3000 if QUICK else 8000
N_TEST = 1000
NOISE_SIGMA = 0.1
BLUR_SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0)
N_SHOWN = 5  # patches shown per group (random, detailed)


def psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of images on the [0, 1] scale."""
    mse = np.mean((np.asarray(estimate, dtype=np.float64) - truth) ** 2)
    return float(10 * np.log10(1.0 / mse))


def add_noise(patches: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = np.clip(patches + rng.normal(0.0, NOISE_SIGMA, patches.shape), 0.0, 1.0)
    return noisy.astype(np.float32)


def blur(patches: np.ndarray, sigma: float) -> np.ndarray:
    """Blur each ``(N, H, W, C)`` patch and channel on its own."""
    return gaussian_filter(patches, sigma=(0, sigma, sigma, 0))


def augment(patches: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flips, transposes, colour-channel orders and inversions of each patch.

    One photo is a narrow training set: its colours and brightness differ from the
    test photo's (china.jpg is bright, flower.jpg mostly dark). Gaussian noise
    clipped to [0, 1] is symmetric under all these maps, so they are valid pairs.
    """
    patches = patches.copy()
    for axes_op in (lambda p: p[:, :, ::-1], lambda p: p.transpose(0, 2, 1, 3)):
        chosen = rng.random(len(patches)) < 0.5
        patches[chosen] = axes_op(patches[chosen])
    orders = np.argsort(rng.random((len(patches), patches.shape[-1])), axis=1)
    patches = np.take_along_axis(patches, orders[:, None, None, :], axis=3)
    inverted = rng.random(len(patches)) < 0.5
    patches[inverted] = 1.0 - patches[inverted]
    return patches


def detail(patches: np.ndarray) -> np.ndarray:
    """Mean squared gradient of each ``(N, H, W, C)`` patch."""
    rows, cols = np.gradient(patches, axis=(1, 2))
    return (rows**2 + cols**2).mean(axis=(1, 2, 3))


def main(out: str) -> None:
    china, flower = (image.astype(np.float32) / 255.0 for image in load_sample_images().images)
    train = extract_patches_2d(china, (PATCH, PATCH), max_patches=N_TRAIN, random_state=0)
    test = extract_patches_2d(flower, (PATCH, PATCH), max_patches=N_TEST, random_state=0)
    # Held-out patches of the training photo; they may overlap training patches.
    china_test = extract_patches_2d(china, (PATCH, PATCH), max_patches=N_TEST, random_state=1)
    rng = np.random.default_rng(0)
    train = augment(train, rng)
    noisy_train, noisy_test, noisy_china = (add_noise(p, rng) for p in (train, test, china_test))

    model = ConvAutoencoderRegressor(
        filters=(16, 32), max_epochs=3 if QUICK else 6, batch_size=32, lr=2e-3, random_state=0
    )
    start = time.perf_counter()
    model.fit(noisy_train, train)
    fit_seconds = time.perf_counter() - start
    denoised = model.predict(noisy_test)

    detailed = np.argsort(detail(test))[-len(test) // 4 :]
    subsets = {
        "flower, all": (test, noisy_test, denoised, slice(None)),
        "flower, detailed": (test, noisy_test, denoised, detailed),
        "china (train photo)": (china_test, noisy_china, model.predict(noisy_china), slice(None)),
    }
    table = {"noisy": [], "best blur": [], "regressor": []}
    best_sigmas = []
    for clean, noisy, predicted, index in subsets.values():
        clean, noisy = clean[index], noisy[index]
        blur_psnr = {s: psnr(blur(noisy, s), clean) for s in BLUR_SIGMAS}
        best_sigmas.append(max(blur_psnr, key=blur_psnr.get))
        table["noisy"].append(psnr(noisy, clean))
        table["best blur"].append(blur_psnr[best_sigmas[-1]])
        table["regressor"].append(psnr(predicted[index], clean))

    print(
        f"PSNR (dB) of {PATCH}x{PATCH} test patches, noise sigma={NOISE_SIGMA}; regressor "
        f"trained on {N_TRAIN} patches of china.jpg in {fit_seconds:.1f} s"
    )
    print(f"{'method':<12}" + "".join(f"{name:>22}" for name in subsets))
    for method, values in table.items():
        print(f"{method:<12}" + "".join(f"{value:>22.2f}" for value in values))
    print(f"{'blur sigma':<12}" + "".join(f"{sigma:>22}" for sigma in best_sigmas))

    shown = np.concatenate([np.arange(N_SHOWN), detailed[-N_SHOWN:]])
    sigma = best_sigmas[0]
    rows = {
        "original": test[shown],
        "noisy": noisy_test[shown],
        f"blur\nsigma={sigma}": blur(noisy_test[shown], sigma),
        "regressor": denoised[shown],
    }
    titles = ["random"] * N_SHOWN + ["detailed"] * N_SHOWN
    fig = plot_image_rows(rows, n_images=len(shown), titles=titles, vmin=0.0, vmax=1.0)
    fig.suptitle(f"Test patches of flower.jpg, Gaussian noise sigma={NOISE_SIGMA}")
    fig.savefig(out, dpi=100, bbox_inches="tight", pad_inches=0.1)
    print(f"saved {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().partition("\n")[0])
    parser.add_argument("--out", default="denoising_photos.png")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's own choice, one per core)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    main(args.out)
