"""Warped training inputs (``warp``): the warps, the "auto" rule, training."""

import math
from unittest import mock

import numpy as np
import pytest
import torch

from skconvae import AutoencoderNet, ConvAutoencoderTransformer
from skconvae._warp import affine_warp, random_affine

from .conftest import FAST


def one_pixel(height, width, row, col):
    image = torch.zeros(1, 1, height, width)
    image[0, 0, row, col] = 1.0
    return image


def lit(image):
    return [tuple(int(i) for i in index) for index in (image[0, 0] > 0.5).nonzero()]


def test_affine_warp_moves_pixels_as_asked():
    # A non-square image, so that a rotation mixing the axes must account for the aspect.
    image = one_pixel(8, 16, row=1, col=9)  # 2.5 rows above, 1.5 columns right of centre
    none, one = torch.zeros(1), torch.ones(1)
    quarter = torch.full((1,), math.pi / 2)
    assert torch.allclose(affine_warp(image, none, one, torch.zeros(1, 2)), image, atol=1e-6)
    # Shifts are in pixels: 2 along the width, 1 along the height.
    assert lit(affine_warp(image, none, one, torch.tensor([[2.0, 1.0]]))) == [(2, 11)]
    # A quarter turn about the centre, from the width axis towards the height axis:
    # 1.5 columns right becomes 1.5 rows down, 2.5 rows up becomes 2.5 columns right.
    turned = affine_warp(image, quarter, one, torch.zeros(1, 2))
    assert lit(turned) == [(5, 10)]
    assert turned.sum().item() == pytest.approx(1.0, abs=1e-5)
    # Rotation, then shift.
    assert lit(affine_warp(image, quarter, one, torch.tensor([[2.0, 1.0]]))) == [(6, 12)]
    # Zooming in by 2 about the centre doubles the pixel's distance from it.
    zoomed = affine_warp(one_pixel(8, 8, 4, 4), none, 2 * one, torch.zeros(1, 2))[0, 0]
    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    centre = ((zoomed * rows).sum() / zoomed.sum(), (zoomed * cols).sum() / zoomed.sum())
    assert [c.item() for c in centre] == pytest.approx([4.5, 4.5], abs=1e-5)


def test_random_affine_is_seeded_small_and_within_the_images_range():
    x = torch.rand(16, 2, 12, 20)

    def warped(seed, **kwargs):
        return random_affine(x, torch.Generator().manual_seed(seed), **kwargs)

    assert torch.equal(warped(1), warped(1))
    assert not torch.equal(warped(1), warped(2))
    assert warped(1).shape == x.shape
    # Each image has its own warp: with no rotation or zoom, shifts differ per image.
    offsets = warped(1, rotation=0, zoom=0) - x
    assert len({round(float(d), 4) for d in offsets.abs().mean(dim=(1, 2, 3))}) == len(x)
    assert torch.allclose(warped(1, rotation=0, zoom=0, shift=0), x, atol=1e-6)
    # A channels-last batch (the network's layout) stays channels-last.
    rgb = torch.rand(4, 3, 12, 20).contiguous(memory_format=torch.channels_last)
    assert random_affine(rgb).is_contiguous(memory_format=torch.channels_last)
    # Bilinear sampling with the edges repeated: no value outside each image's range.
    lows, highs = x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))
    out = warped(3)
    assert (out.amin(dim=(1, 2, 3)) >= lows - 1e-6).all()
    assert (out.amax(dim=(1, 2, 3)) <= highs + 1e-6).all()


@pytest.mark.parametrize(
    "shape, params, expected",
    [
        ((28, 28), {}, "affine"),  # MNIST-sized images
        ((16, 24), {}, "affine"),  # the smaller side is 16
        ((8, 8), {}, None),  # 8x8 digits: too small to warp
        ((1, 50), {}, None),  # a 1-D signal
        ((28, 28), {"architecture": "classic"}, None),  # trains as it always did
        ((28, 28), {"noise": "gaussian"}, None),  # denoising reconstructs in place
        ((8, 8), {"warp": "affine"}, "affine"),  # asked for
    ],
)
def test_warp_auto_follows_the_rule(shape, params, expected):
    rng = np.random.default_rng(0)
    X = rng.random((40, *shape)) if shape[0] > 1 else rng.random((40, shape[1]))
    ae = ConvAutoencoderTransformer(**params, **{**FAST, "max_epochs": 1, "filters": (4,)})
    ae.fit(X)
    assert ae.warp_ == ae.net_.warp == expected
    assert ae.get_params()["warp"] == params.get("warp", "auto")


def test_warp_on_1d_signals_names_the_fix(digits):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST).fit(X)
    before = ae.transform(X[:5])
    signals = np.random.default_rng(0).random((40, 50))  # 50 values: a 1-D signal
    with pytest.raises(ValueError, match=r"warp='affine' warps 2-D images.*warp=None"):
        ae.set_params(warp="affine").fit(signals)
    # The failed fit left the fitted transformer as it was.
    np.testing.assert_array_equal(ae.transform(X[:5]), before)
    assert ae.warp_ is None


def training_batches(fit, X):
    """``(epoch, training, inputs, targets)`` of every batch ``fit(X)`` took a loss of."""
    seen = []

    def get_loss(net, y_pred, y_true, X=None, training=False):
        seen.append((len(net.history), training, X.detach().clone(), y_true.detach().clone()))
        return original(net, y_pred, y_true, X=X, training=training)

    original = AutoencoderNet.get_loss
    with mock.patch.object(AutoencoderNet, "get_loss", get_loss):
        fit(X)
    return seen


def nearest(images, clean):
    """Distance of each image to the nearest clean one (computed exactly)."""
    flat = images.reshape(len(images), -1)
    exact = "donot_use_mm_for_euclid_dist"
    return torch.cdist(flat, clean, compute_mode=exact).min(dim=1).values


@pytest.mark.parametrize(
    "fraction, warped_epochs", [(0.5, {1, 2}), (0.3, {1}), (1.0, {1, 2, 3, 4})]
)
def test_the_first_epochs_warp_the_training_inputs_only(mnist, fraction, warped_epochs):
    images, _ = mnist
    X = images[:60]
    clean = torch.from_numpy(X / 255.0).float().reshape(-1, 28 * 28)
    params = {**FAST, "max_epochs": 4, "early_stopping": True, "validation_fraction": 0.25}
    ae = ConvAutoencoderTransformer(**params, warp_fraction=fraction)
    seen = training_batches(ae.fit, X)
    assert {(epoch, training) for epoch, training, _, _ in seen} == {
        (epoch, training) for epoch in (1, 2, 3, 4) for training in (True, False)
    }
    for epoch, training, inputs, targets in seen:
        assert (nearest(targets, clean) < 1e-4).all()  # the targets are the images
        if training and epoch in warped_epochs:  # no input equals a training image
            distance = nearest(inputs, clean)
            assert (distance > 1e-3).all()
            assert distance.median() > 0.5
        else:  # validation, and the last epochs, see the images as they are
            assert torch.equal(inputs, targets)
    assert ae.warp_ == "affine" and ae.net_.warp_epochs == len(warped_epochs)


def test_without_warps_or_in_partial_fit_inputs_are_the_images(mnist):
    images, _ = mnist
    X = images[:60]
    unwarped = ConvAutoencoderTransformer(**FAST, warp=None)
    chunked = ConvAutoencoderTransformer(**FAST, warp="affine", warp_fraction=1.0)
    for ae, fit in ((unwarped, unwarped.fit), (chunked, chunked.partial_fit)):
        seen = training_batches(fit, X)
        assert seen and all(torch.equal(inputs, targets) for _, _, inputs, targets in seen)
        assert ae.warp_ is None


def test_warps_are_seeded_and_change_training(mnist):
    images, _ = mnist
    X = images[:200].reshape(200, -1)

    def weights(**kwargs):
        ae = ConvAutoencoderTransformer(**FAST, **kwargs).fit(X)
        return torch.cat([p.detach().flatten() for p in ae.net_.module_.parameters()])

    assert torch.equal(weights(), weights())
    assert not torch.allclose(weights(), weights(warp=None))


def test_warm_start_follows_warp(mnist):
    images, _ = mnist
    ae = ConvAutoencoderTransformer(**FAST, warm_start=True).fit(images[:100])
    assert ae.warp_ == ae.net_.warp == "affine"
    ae.set_params(warp=None).fit(images[:100])
    assert ae.warp_ is ae.net_.warp is None
    assert len(ae.net_.history) == 2 * FAST["max_epochs"]
