"""
2x super-resolution of a photo: a conv regressor beside bicubic interpolation.
==============================================================================

``ConvAutoencoderRegressor`` learns to map low-resolution patches to the original
patches: 2000 random 48x48 patches of ``china.jpg`` (from
``sklearn.datasets.load_sample_images``), each under a random flip or rotation, are
the targets, their area-downsampled 24x24 versions (each pixel the mean of a 2x2
block) the inputs. Each colour channel is a separate grey image: one photo's channel
correlations (china is mostly grey and blue) do not carry over to other photos, and
the model gets three times the examples. Because the targets are twice the inputs'
size, the regressor upscales (sub-pixel convolution) and predicts the correction to
the bicubic interpolation of its input; an L1 loss keeps the many small corrections
of smooth regions from being drowned by the large ones of sharp edges.

The test image is the other photo, ``flower.jpg``, area-downsampled by 2 in the
same way (213x320). The network is fully convolutional, so the whole image is
upscaled at once. PSNR (``10 * log10(1 / MSE)`` on the [0, 1] scale, higher is
better) is printed for nearest-neighbour upscaling, bicubic interpolation
(``scipy.ndimage.zoom(lr, (2, 2, 1), order=3, grid_mode=True, mode="nearest")``,
aligned with area downsampling) and the model: over the whole 426x640 flower, over
its most detailed quarter (the 16x16 blocks with the largest mean squared
gradient), and over 1000 patches of the training photo (drawn with another seed;
they overlap training patches). A PNG shows crops of the flower: low-res / bicubic
/ model / original.

Training takes under a minute on 2 CPU cores (with
``SKCONVAE_EXAMPLES_QUICK=1``, as in the online gallery: 800 patches, 2 epochs) and
gains about 0.1 dB over bicubic
on the flower (0.4 dB on china); ``benchmarks/bench_quality.py --only superres``
trains the same recipe longer (4000 patches, 6 epochs) and gains 0.6 dB on the
flower. Run from the project root::

    python examples/plot_super_resolution.py [--out super_resolution.png] [--threads N]
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
from scipy.ndimage import zoom
from sklearn.datasets import load_sample_images
from sklearn.feature_extraction.image import extract_patches_2d
from skorch.callbacks import LRScheduler

from skconvae import ConvAutoencoderRegressor
from skconvae.plotting import plot_image_rows

SCALE = 2
LR_PATCH = 24  # side of the low-resolution training patches
# SKCONVAE_EXAMPLES_QUICK=1 (the docs build sets it) trains on less for fewer epochs,
# so the gallery builds in minutes; the numbers it prints then fall short of a full run's.
QUICK = os.environ.get("SKCONVAE_EXAMPLES_QUICK", "") not in ("", "0")
N_PATCHES = 800 if QUICK else 2000
EPOCHS = 2 if QUICK else 3
# (top, left, size) of the crops shown, in full-resolution pixels of flower.jpg.
CROPS = ((170, 290, 48), (100, 190, 48), (350, 400, 48))


def psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of images on the [0, 1] scale."""
    mse = np.mean((np.asarray(estimate, dtype=np.float64) - truth) ** 2)
    return float(10 * np.log10(1.0 / mse))


def area_downsample(images: np.ndarray) -> np.ndarray:
    """Average ``SCALE x SCALE`` blocks of ``(..., H, W, C)`` images (H, W multiples of SCALE)."""
    *lead, height, width, channels = images.shape
    blocks = images.reshape(*lead, height // SCALE, SCALE, width // SCALE, SCALE, channels)
    return blocks.mean(axis=(-4, -2))


def augment(patches: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each ``(N, H, W, C)`` patch under a random one of the square's 8 symmetries.

    One photo is a narrow training set; flips and rotations commute with area
    downsampling, so the pairs stay valid.
    """
    out = np.empty_like(patches)
    for i, (patch, k) in enumerate(zip(patches, rng.integers(0, 8, len(patches)), strict=True)):
        patch = np.rot90(patch, k % 4)
        out[i] = patch[:, ::-1] if k >= 4 else patch
    return out


def channels_as_images(images: np.ndarray) -> np.ndarray:
    """``(..., H, W, C)`` colour images -> ``(N * C, H, W)`` grey images."""
    images = images.reshape(-1, *images.shape[-3:])
    return images.transpose(0, 3, 1, 2).reshape(-1, *images.shape[1:3])


def upscale(model: ConvAutoencoderRegressor, low_res: np.ndarray) -> np.ndarray:
    """Upscale ``(N, H, W, C)`` (or one ``(H, W, C)``) colour images channel by channel."""
    n, channels = low_res.reshape(-1, *low_res.shape[-3:]).shape[0], low_res.shape[-1]
    grey = model.predict(channels_as_images(low_res))  # any size: fully convolutional
    colour = grey.reshape(n, channels, *grey.shape[1:]).transpose(0, 2, 3, 1)
    return colour.reshape(*low_res.shape[:-3], *colour.shape[1:])


def detailed_mask(image: np.ndarray, block: int = 16) -> np.ndarray:
    """Pixels of the quarter of ``block``-sized blocks with the largest mean squared gradient."""
    rows, cols = np.gradient(image, axis=(0, 1))
    energy = (rows**2 + cols**2).mean(axis=-1)
    height, width = (size // block * block for size in energy.shape)
    per_block = energy[:height, :width].reshape(height // block, block, width // block, block)
    per_block = per_block.mean(axis=(1, 3))
    keep = per_block >= np.quantile(per_block, 0.75)
    mask = np.zeros(energy.shape, dtype=bool)
    mask[:height, :width] = np.repeat(np.repeat(keep, block, axis=0), block, axis=1)
    return mask


def bicubic(low_res: np.ndarray) -> np.ndarray:
    """Cubic-spline upscaling of an ``(H, W, C)`` image, aligned with area downsampling."""
    upscaled = zoom(low_res, (SCALE, SCALE, 1), order=3, grid_mode=True, mode="nearest")
    return np.clip(upscaled, 0.0, 1.0)


def main(out: str) -> None:
    china, flower = (image.astype(np.float32) / 255.0 for image in load_sample_images().images)
    # Even sizes, so that area downsampling covers every pixel.
    china = china[: china.shape[0] // SCALE * SCALE, : china.shape[1] // SCALE * SCALE]
    flower = flower[: flower.shape[0] // SCALE * SCALE, : flower.shape[1] // SCALE * SCALE]

    patch_size = (LR_PATCH * SCALE, LR_PATCH * SCALE)
    high_res = extract_patches_2d(china, patch_size, max_patches=N_PATCHES, random_state=0)
    high_res = channels_as_images(augment(high_res, np.random.default_rng(0)))
    # The U-Net recipe measured in docs/benchmarks.rst (the default network is a residual stack).
    model = ConvAutoencoderRegressor(
        network="unet",
        loss="l1",
        max_epochs=EPOCHS,
        lr=1e-3,
        lr_schedule="constant",
        callbacks=[LRScheduler("CosineAnnealingLR", T_max=EPOCHS)],
        random_state=0,
    )
    start = time.perf_counter()
    model.fit(area_downsample(high_res[..., None])[..., 0], high_res)
    fit_seconds = time.perf_counter() - start

    flower_low = area_downsample(flower)
    upscaled = {
        "nearest": np.repeat(np.repeat(flower_low, SCALE, axis=0), SCALE, axis=1),
        "bicubic": bicubic(flower_low),
        "regressor": upscale(model, flower_low),
    }
    detailed = detailed_mask(flower)
    # Patches of the training photo, drawn with another seed (they overlap training patches).
    china_high = extract_patches_2d(china, patch_size, max_patches=1000, random_state=1)
    china_low = area_downsample(china_high)
    china_upscaled = {
        "nearest": np.repeat(np.repeat(china_low, SCALE, axis=1), SCALE, axis=2),
        # One patch at a time: zooming the 4-D stack gives the same values, far slower.
        "bicubic": np.stack([bicubic(patch) for patch in china_low]),
        "regressor": upscale(model, china_low),
    }

    print(
        f"2x super-resolution, regressor trained on {N_PATCHES} patches of china.jpg "
        f"(x 3 channels) in {fit_seconds:.1f} s"
    )
    print(
        f"PSNR (dB) of flower.jpg ({flower_low.shape[0]}x{flower_low.shape[1]} -> "
        f"{flower.shape[0]}x{flower.shape[1]}) as a whole image; of its most detailed "
        f"quarter; and of {len(china_high)} {patch_size[0]}x{patch_size[1]} patches of "
        "china.jpg"
    )
    header = ("flower, whole", "flower, detailed", "china patches")
    print(f"{'method':<12}" + "".join(f"{name:>18}" for name in header))
    for name, image in upscaled.items():
        values = (
            psnr(image, flower),
            psnr(image[detailed], flower[detailed]),
            psnr(china_upscaled[name], china_high),
        )
        print(f"{name:<12}" + "".join(f"{value:>18.2f}" for value in values))

    rows = {}
    for number, (top, left, size) in enumerate(CROPS, start=1):
        window = (slice(top, top + size), slice(left, left + size))
        rows[f"crop {number}"] = np.stack(
            [*(image[window] for image in upscaled.values()), flower[window]]
        )
    titles = ["low-res (nearest)", "bicubic", "regressor", "original"]
    fig = plot_image_rows(rows, n_images=len(titles), titles=titles, vmin=0.0, vmax=1.0)
    fig.suptitle("2x super-resolution of flower.jpg (model trained on china.jpg)")
    fig.set_size_inches(*(2 * fig.get_size_inches()))  # larger cells, to see pixels
    fig.savefig(out, dpi=100, bbox_inches="tight", pad_inches=0.1)
    print(f"saved {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().partition("\n")[0])
    parser.add_argument("--out", default="super_resolution.png")
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
