"""
Denoising whole photos: a regressor trained on other photos beside scikit-image.
================================================================================

``ConvAutoencoderRegressor`` learns to remove Gaussian noise (sigma 0.1 on the
[0, 1] scale, about 25 grey levels) from random 40x40 patches of eight grey photos
of ``skimage.data`` and ``china.jpg``, cut by
:func:`skconvae.preprocessing.extract_random_patches` (with random flips and
rotations), then cleans the whole of two photos it never saw, ``chelsea`` (the
cat) and ``flower.jpg``, in one call each. Beside it: the best classical denoiser
of ``skimage.restoration`` -- NL-means and total variation, each with its
parameter swept and picked on the test photo itself, which flatters them -- and
BM3D (at the true sigma) when the ``bm3d`` package is installed
(``pip install "skconvae[bench]"``). The script prints the PSNR of each and saves
a PNG of crops: clean / noisy / classical / skconvae.

``benchmarks/bench_restoration.py`` measures the same comparison with every
method tuned and three training seeds. The default here trains on 1500 patches
for 4 epochs (a minute or two on 2 cores); ``--patches 3000 --epochs 10`` is the
benchmark's setting and ``--quick`` a few-second smoke run. With
``SKCONVAE_EXAMPLES_QUICK=1`` (as in the online gallery) the defaults are 500
patches and 2 epochs. Run from the project root::

    python examples/plot_restoration_photos.py [--out restoration_photos.png] [--quick]
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
from skimage import color, data, restoration
from sklearn.datasets import load_sample_images

from skconvae import ConvAutoencoderRegressor
from skconvae.plotting import plot_image_rows
from skconvae.preprocessing import extract_random_patches

SIGMA = 0.1
TRAIN = ("astronaut", "camera", "coffee", "rocket", "coins", "brick", "grass", "gravel")
CROP = 160  # side of the crops shown
# SKCONVAE_EXAMPLES_QUICK=1 (the docs build sets it) trains on less for fewer epochs,
# so the gallery builds in minutes; the numbers it prints then fall short of a full run's.
QUICK = os.environ.get("SKCONVAE_EXAMPLES_QUICK", "") not in ("", "0")


def psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of images on the [0, 1] scale."""
    return float(10 * np.log10(1.0 / np.mean((estimate.astype(np.float64) - truth) ** 2)))


def grey(image: np.ndarray) -> np.ndarray:
    image = color.rgb2gray(image) if image.ndim == 3 else image / 255.0
    return image.astype(np.float32)


def best_classical(noisy: np.ndarray, clean: np.ndarray) -> tuple[str, np.ndarray]:
    """The best of NL-means and TV over their parameter grids, judged on ``clean``."""
    candidates = {
        f"NL-means h={h:.2f}": restoration.denoise_nl_means(
            noisy, h=h, sigma=SIGMA, patch_size=5, patch_distance=6, fast_mode=True
        )
        for h in (0.6 * SIGMA, 0.8 * SIGMA, SIGMA)
    }
    candidates |= {
        f"TV weight={w:.2f}": restoration.denoise_tv_chambolle(noisy, weight=w)
        for w in (0.6 * SIGMA, 0.85 * SIGMA, 1.2 * SIGMA)
    }
    try:
        import bm3d
    except ImportError:
        pass
    else:
        candidates["BM3D"] = bm3d.bm3d(noisy, sigma_psd=SIGMA)
    name = max(candidates, key=lambda k: psnr(np.clip(candidates[k], 0, 1), clean))
    return name, np.clip(candidates[name], 0, 1)


def main(out: str, n_patches: int, epochs: int) -> None:
    china, flower = load_sample_images().images
    train = [grey(getattr(data, name)()) for name in TRAIN] + [grey(china)]
    tests = {"chelsea": grey(data.chelsea()), "flower.jpg": grey(flower)}
    clean_patches = extract_random_patches(train, 40, n_patches, random_state=0)
    rng = np.random.default_rng(0)
    noisy_patches = clean_patches + SIGMA * rng.standard_normal(clean_patches.shape)

    model = ConvAutoencoderRegressor(max_epochs=epochs, random_state=0)
    start = time.perf_counter()
    model.fit(noisy_patches.astype(np.float32), clean_patches)
    print(
        f"fit on {n_patches} patches of {len(train)} photos, {epochs} epochs: "
        f"{time.perf_counter() - start:.0f} s"
    )

    rows = {"clean": [], "noisy": [], "classical": [], "skconvae": []}
    titles = []
    for name, clean in tests.items():
        noisy = clean + SIGMA * rng.standard_normal(clean.shape).astype(np.float32)
        denoised = model.predict(noisy[None])[0]  # the whole photo at once
        method, classical = best_classical(noisy, clean)
        print(
            f"{name}: noisy {psnr(noisy, clean):.2f} dB, {method} {psnr(classical, clean):.2f} "
            f"dB, skconvae {psnr(denoised, clean):.2f} dB"
        )
        top, left = (clean.shape[0] - CROP) // 2, (clean.shape[1] - CROP) // 2
        window = np.s_[top : top + CROP, left : left + CROP]
        for row, image in zip(rows.values(), (clean, noisy, classical, denoised), strict=True):
            row.append(np.clip(image[window], 0, 1))
        titles.append(f"{name}\n{method}")
    fig = plot_image_rows(rows, n_images=len(tests), titles=titles, vmin=0.0, vmax=1.0)
    # Two lines: one would be wider than the two columns of crops.
    fig.suptitle(f"Held-out photos (centre crops),\nGaussian noise sigma={SIGMA}")
    fig.savefig(out, dpi=100, bbox_inches="tight", pad_inches=0.1)
    print(f"saved {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().partition("\n")[0])
    parser.add_argument("--out", default="restoration_photos.png")
    parser.add_argument("--patches", type=int, default=500 if QUICK else 1500)
    parser.add_argument("--epochs", type=int, default=2 if QUICK else 4)
    parser.add_argument("--quick", action="store_true", help="a few seconds of training")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's own choice, one per core)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.patches, args.epochs = 200, 1
    main(args.out, args.patches, args.epochs)
