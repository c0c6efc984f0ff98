"""skconvae.preprocessing.extract_random_patches on real photos of different sizes."""

import numpy as np
import pytest
from skimage import data

from skconvae.preprocessing import extract_random_patches


@pytest.fixture(scope="module")
def photos():
    # 512x512, 303x384 grey; a 40x60 crop keeps one small image in the list.
    return [data.camera(), data.coins(), data.moon()[:40, :60]]


def _window_of(patch, images):
    """``(image index, symmetry)`` of the window of ``images`` that ``patch`` is.

    The images hold distinct increasing values (row-major), so the patch's smallest
    value is its window's top-left corner.
    """
    h, w = patch.shape
    index, rest = divmod(int(patch.min()), 1_000_000)
    row, col = divmod(rest, images[index].shape[1])
    window = images[index][row : row + h, col : col + w]
    symmetries = [np.rot90(window, k) for k in range(4)]
    symmetries += [s[:, ::-1] for s in symmetries]
    matches = [k for k, s in enumerate(symmetries) if np.array_equal(s, patch)]
    return index, matches[0] if matches else None


def test_patches_are_windows_under_the_square_symmetries():
    sizes = [(64, 64), (30, 50), (20, 20)]
    images = [
        1_000_000 * i + np.arange(h * w, dtype=np.int64).reshape(h, w)
        for i, (h, w) in enumerate(sizes)
    ]
    patches = extract_random_patches(images, 16, n_patches=400, random_state=0)
    assert patches.shape == (400, 16, 16) and patches.dtype == np.int64
    found = [_window_of(p, images) for p in patches]
    assert all(k is not None for _, k in found)
    # Every position equally likely: images weighted by their positions (2401, 525, 25).
    counts = np.bincount([i for i, _ in found], minlength=3)
    assert counts[0] > 3 * counts[1] > 0 and counts[2] < counts[1]
    assert len({k for _, k in found}) == 8  # all symmetries occur
    plain = extract_random_patches(images, 16, n_patches=50, random_state=0, augment=False)
    assert {_window_of(p, images)[1] for p in plain} == {0}
    # Rectangular patches: only the flips keep their shape.
    flips = extract_random_patches(images, (8, 12), n_patches=50, random_state=0)
    assert flips.shape == (50, 8, 12)


def test_real_photos_of_different_sizes(photos):
    patches = extract_random_patches(photos, 16, n_patches=60, random_state=0)
    assert patches.shape == (60, 16, 16) and patches.dtype == np.uint8
    assert 20 < patches.mean() < 235 and patches.std() > 10


def test_reproducible_colour_and_rectangular(photos):
    colour = [data.astronaut(), data.chelsea()]
    first = extract_random_patches(colour, (8, 12), 20, random_state=3)
    again = extract_random_patches(colour, (8, 12), 20, random_state=3)
    assert first.shape == (20, 8, 12, 3)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, extract_random_patches(colour, (8, 12), 20, random_state=4))


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        ([], {}, "non-empty list"),
        ("camera", {}, "non-empty list"),
        ([np.zeros((50, 50)), np.zeros((50, 50, 3))], {}, "same number of channels"),
        ([np.zeros((10, 50))], {}, "smaller than the patch size"),
        ([np.zeros(50)], {}, "2-D"),
        ([np.zeros((50, 50))], {"patch_size": 0}, "patch_size must be"),
        ([np.zeros((50, 50))], {"patch_size": (4, 4, 4)}, "patch_size must be"),
        ([np.zeros((50, 50))], {"n_patches": 0}, "n_patches must be"),
    ],
)
def test_bad_input(images, kwargs, match):
    kwargs = {"patch_size": 16, "n_patches": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        extract_random_patches(images, **kwargs)
