"""Training data for image-to-image models: random patches of images of any size."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["extract_random_patches"]


def extract_random_patches(
    images: Sequence[np.ndarray] | np.ndarray,
    patch_size: int | tuple[int, int],
    n_patches: int,
    *,
    augment: bool = True,
    random_state: int | np.random.RandomState | None = None,
) -> np.ndarray:
    """Cut random patches from a list of images of different sizes.

    Each patch comes from an image drawn with probability proportional to its
    number of patch positions (so every position of every image is equally
    likely), at a uniformly random position. With ``augment=True`` each patch is
    also put under a random one of the 8 symmetries of the square (rotations by
    multiples of 90 degrees, with or without a mirror flip; only the 4 flips for
    non-square patches). The symmetries commute with area downsampling and with
    pixel-wise noise, so pairs made from augmented patches stay valid for
    super-resolution and denoising.

    Parameters
    ----------
    images : sequence of ndarray of shape (height, width) or (height, width, channels)
        The images, each at least ``patch_size`` in height and width; all grey or
        all with the same number of channels (channels last). An ndarray of shape
        ``(n_images, height, width[, channels])`` works too.
    patch_size : int or tuple of int
        ``(height, width)`` of the patches; an int for square patches.
    n_patches : int
        Number of patches to cut.
    augment : bool, default=True
        Apply a random flip / rotation to each patch.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws, for reproducible patches.

    Returns
    -------
    patches : ndarray of shape (n_patches, patch_height, patch_width[, channels])
        Patches in the images' dtype (a common one if the dtypes differ).

    See Also
    --------
    sklearn.feature_extraction.image.extract_patches_2d : Patches of one image.

    Examples
    --------
    >>> from skimage import data
    >>> from skconvae.preprocessing import extract_random_patches
    >>> photos = [data.camera(), data.moon(), data.coins()]   # 512x512, 512x512, 303x384
    >>> patches = extract_random_patches(photos, 32, n_patches=100, random_state=0)
    >>> patches.shape, patches.dtype
    ((100, 32, 32), dtype('uint8'))
    """
    height, width = _check_patch_size(patch_size)
    if not isinstance(n_patches, Integral) or isinstance(n_patches, bool) or n_patches < 1:
        raise ValueError(f"n_patches must be a positive integer; got {n_patches!r}.")
    arrays = _check_images(images, height, width)
    rng = check_random_state(random_state)
    positions = np.array(
        [(a.shape[0] - height + 1) * (a.shape[1] - width + 1) for a in arrays], dtype=np.float64
    )
    sources = rng.choice(len(arrays), size=n_patches, p=positions / positions.sum())
    dtype = np.result_type(*arrays)
    patches = np.empty((n_patches, height, width, *arrays[0].shape[2:]), dtype=dtype)
    symmetries = rng.randint(0, 8 if height == width else 4, size=n_patches)
    for i, (source, symmetry) in enumerate(zip(sources, symmetries, strict=True)):
        image = arrays[source]
        top = rng.randint(0, image.shape[0] - height + 1)
        left = rng.randint(0, image.shape[1] - width + 1)
        patch = image[top : top + height, left : left + width]
        if augment:
            patch = _symmetry(patch, symmetry, square=height == width)
        patches[i] = patch
    return patches


def _symmetry(patch: np.ndarray, k: int, *, square: bool) -> np.ndarray:
    """One of the 8 symmetries of a square patch (of the 4 flips of a rectangle)."""
    if square:
        patch = np.rot90(patch, k % 4)
        return patch[:, ::-1] if k >= 4 else patch
    if k & 1:
        patch = patch[::-1]
    return patch[:, ::-1] if k & 2 else patch


def _check_patch_size(patch_size) -> tuple[int, int]:
    size = (patch_size, patch_size) if isinstance(patch_size, Integral) else patch_size
    try:
        height, width = size
    except (TypeError, ValueError):
        height = width = None
    if not all(
        isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in (height, width)
    ):
        raise ValueError(
            f"patch_size must be a positive int or a (height, width) pair of them, such as 32 "
            f"or (32, 48); got {patch_size!r}."
        )
    return int(height), int(width)


def _check_images(images, height: int, width: int) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        images = list(images)
    if isinstance(images, np.ndarray | str) or not isinstance(images, Sequence) or not images:
        raise ValueError(
            "images must be a non-empty list of 2-D (height, width) or 3-D (height, width, "
            "channels) arrays, or an array of shape (n_images, height, width[, channels]); "
            f"got {type(images).__name__}."
        )
    arrays = [np.asarray(image) for image in images]
    for i, array in enumerate(arrays):
        if array.ndim not in (2, 3) or not np.issubdtype(array.dtype, np.number):
            raise ValueError(
                f"images[{i}] has shape {array.shape} and dtype {array.dtype}; every image "
                "must be a numeric 2-D (height, width) or 3-D (height, width, channels) array."
            )
        if array.shape[2:] != arrays[0].shape[2:]:
            raise ValueError(
                f"images[{i}] has shape {array.shape} but images[0] has shape "
                f"{arrays[0].shape}: all images must be grey or have the same number of "
                "channels (last axis). Convert them first, e.g. with skimage.color.rgb2gray."
            )
        if array.shape[0] < height or array.shape[1] < width:
            raise ValueError(
                f"images[{i}] of shape {array.shape} is smaller than the patch size "
                f"({height}, {width}); use smaller patches or leave the image out."
            )
    return arrays
