"""2x super-resolution of a photo: a conv regressor beside bicubic interpolation.

``ConvAutoencoderRegressor`` learns to map low-resolution patches to the original
patches: random 32x32 patches of ``china.jpg`` (from
``sklearn.datasets.load_sample_images``) are the targets, their area-downsampled
16x16 versions (each pixel the mean of a 2x2 block) the inputs. Because the
targets are twice the inputs' size, the regressor adds an upsampling stage and
predicts the correction to the bicubic interpolation of its input.

The test image is the other photo, ``flower.jpg``, area-downsampled by 2 in the
same way (213x320). The regressor predicts images of its training size only, so
the whole low-resolution image is cut into overlapping 16x16 tiles (stride 8);
each output pixel comes from the tile whose centre is nearest, which keeps at
least 4 low-resolution pixels of context around it (less at the image border).
PSNR (``10 * log10(1 / MSE)`` on the [0, 1] scale, higher is better) is measured
over the whole 426x640 reconstruction against the original, for nearest-neighbour
upscaling, bicubic interpolation (``scipy.ndimage.zoom(lr, (2, 2, 1), order=3,
grid_mode=True, mode="nearest")``, aligned with area downsampling) and the model.
A PNG shows crops of the four side by side.

The settings (6000 training patches, a small network, 8 epochs) keep the run near a
minute on 2 busy CPU cores. Run from the project root::

    python examples/plot_super_resolution.py [--out super_resolution.png] [--threads 1]
"""

import argparse
import time
from itertools import pairwise

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
from scipy.ndimage import zoom
from sklearn.datasets import load_sample_images
from sklearn.feature_extraction.image import extract_patches_2d

from skconvae import ConvAutoencoderRegressor
from skconvae.plotting import plot_image_rows

SCALE = 2
LR_TILE = 16  # low-resolution patch size the model is trained on
STRIDE = 8  # tile stride when predicting the test image
N_PATCHES = 6000
# (top, left, size) of the crops shown, in full-resolution pixels of flower.jpg.
CROPS = ((150, 270, 96), (90, 170, 96), (330, 370, 96))


def psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of images on the [0, 1] scale."""
    mse = np.mean((np.asarray(estimate, dtype=np.float64) - truth) ** 2)
    return float(10 * np.log10(1.0 / mse))


def area_downsample(images: np.ndarray) -> np.ndarray:
    """Average ``SCALE x SCALE`` blocks of ``(..., H, W, C)`` images (H, W multiples of SCALE)."""
    *lead, height, width, channels = images.shape
    blocks = images.reshape(*lead, height // SCALE, SCALE, width // SCALE, SCALE, channels)
    return blocks.mean(axis=(-4, -2))


def tile_starts(size: int) -> list[int]:
    """Start of every ``LR_TILE`` tile along an axis of ``size`` pixels, the last flush."""
    starts = list(range(0, size - LR_TILE + 1, STRIDE))
    if starts[-1] != size - LR_TILE:
        starts.append(size - LR_TILE)
    return starts


def kept_bounds(starts: list[int], size: int) -> list[int]:
    """Boundaries between tiles: each pixel belongs to the tile with the nearest centre."""
    centres = [start + LR_TILE // 2 for start in starts]
    middles = [(a + b) // 2 for a, b in pairwise(centres)]
    return [0, *middles, size]


def predict_tiled(model: ConvAutoencoderRegressor, low_res: np.ndarray) -> np.ndarray:
    """Upscale a whole ``(H, W, C)`` image with a model trained on ``LR_TILE`` patches."""
    height, width, channels = low_res.shape
    rows, cols = tile_starts(height), tile_starts(width)
    tiles = np.stack(
        [low_res[top : top + LR_TILE, left : left + LR_TILE] for top in rows for left in cols]
    )
    predicted = model.predict(tiles)
    predicted = predicted.reshape(len(rows), len(cols), *predicted.shape[1:])
    row_bounds, col_bounds = kept_bounds(rows, height), kept_bounds(cols, width)
    out = np.empty((height * SCALE, width * SCALE, channels), dtype=np.float32)
    for i, top in enumerate(rows):
        y0, y1 = row_bounds[i], row_bounds[i + 1]
        for j, left in enumerate(cols):
            x0, x1 = col_bounds[j], col_bounds[j + 1]
            out[y0 * SCALE : y1 * SCALE, x0 * SCALE : x1 * SCALE] = predicted[
                i,
                j,
                (y0 - top) * SCALE : (y1 - top) * SCALE,
                (x0 - left) * SCALE : (x1 - left) * SCALE,
            ]
    return out


def main(out: str) -> None:
    china, flower = (image.astype(np.float32) / 255.0 for image in load_sample_images().images)
    # Even sizes, so that area downsampling covers every pixel.
    china = china[: china.shape[0] // SCALE * SCALE, : china.shape[1] // SCALE * SCALE]
    flower = flower[: flower.shape[0] // SCALE * SCALE, : flower.shape[1] // SCALE * SCALE]

    high_res = extract_patches_2d(
        china, (LR_TILE * SCALE, LR_TILE * SCALE), max_patches=N_PATCHES, random_state=0
    )
    low_res = area_downsample(high_res)
    model = ConvAutoencoderRegressor(
        filters=(16, 32), max_epochs=8, batch_size=32, lr=2e-3, random_state=0
    )
    start = time.perf_counter()
    model.fit(low_res, high_res)
    fit_seconds = time.perf_counter() - start

    flower_low = area_downsample(flower)
    upscaled = {
        "nearest": np.repeat(np.repeat(flower_low, SCALE, axis=0), SCALE, axis=1),
        "bicubic": np.clip(
            zoom(flower_low, (SCALE, SCALE, 1), order=3, grid_mode=True, mode="nearest"), 0, 1
        ),
        "regressor": predict_tiled(model, flower_low),
    }

    print(
        f"2x super-resolution of flower.jpg ({flower_low.shape[0]}x{flower_low.shape[1]} -> "
        f"{flower.shape[0]}x{flower.shape[1]}); PSNR over the whole image, the model "
        f"predicting overlapping {LR_TILE}x{LR_TILE} tiles"
    )
    print(f"regressor trained on {N_PATCHES} patches of china.jpg in {fit_seconds:.1f} s")
    print(f"{'method':<12} {'PSNR (dB)':>9}")
    for name, image in upscaled.items():
        print(f"{name:<12} {psnr(image, flower):>9.2f}")

    rows = {}
    for number, (top, left, size) in enumerate(CROPS, start=1):
        window = (slice(top, top + size), slice(left, left + size))
        rows[f"crop {number}"] = np.stack(
            [*(image[window] for image in upscaled.values()), flower[window]]
        )
    titles = [
        "low-res (nearest)",
        f"bicubic {psnr(upscaled['bicubic'], flower):.2f} dB",
        f"regressor {psnr(upscaled['regressor'], flower):.2f} dB",
        "original",
    ]
    fig = plot_image_rows(rows, n_images=len(titles), titles=titles, vmin=0.0, vmax=1.0)
    fig.suptitle("2x super-resolution of flower.jpg (model trained on china.jpg)")
    fig.savefig(out, dpi=100, bbox_inches="tight", pad_inches=0.1)
    print(f"saved {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="super_resolution.png")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 is fastest on a busy machine (default: 1)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    main(args.out)
