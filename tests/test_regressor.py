"""ConvAutoencoderRegressor: image-to-image regression on real images."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from sklearn.base import clone
from sklearn.datasets import load_sample_images
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skconvae import ConvAutoencoderRegressor
from skconvae.nn import ImageToImageNet, ResidualImageNet
from skconvae.preprocessing import extract_random_patches

FAST = {"filters": (8, 8), "max_epochs": 2, "batch_size": 32, "random_state": 0}


@pytest.fixture(scope="module")
def noisy_digits(mnist):
    images, _ = mnist
    clean = images[:1200].astype(np.float32) / 255
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + 0.4 * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)
    return noisy, clean


@pytest.fixture(scope="module")
def photo_pairs():
    """Low/high-resolution pairs: 60 real 16x16 RGB patches of china.jpg, area-downsampled."""
    china = load_sample_images().images[0]
    hr = np.stack(
        [
            china[r : r + 16, c : c + 16]
            for r in range(0, 160, 16)
            for c in (0, 200, 400, 500, 560, 600)
        ]
    )
    lr = hr.reshape(-1, 8, 2, 8, 2, 3).mean(axis=(2, 4))
    return lr, hr


@pytest.fixture(scope="module")
def denoiser(noisy_digits):
    noisy, clean = noisy_digits
    return ConvAutoencoderRegressor(
        filters=(16, 16), max_epochs=3, batch_size=32, lr=2e-3, random_state=0
    ).fit(noisy[:1000], clean[:1000])


def test_denoiser_beats_the_noisy_input_on_held_out_digits(denoiser, noisy_digits):
    noisy, clean = noisy_digits
    pred = denoiser.predict(noisy[1000:])
    assert pred.shape == (200, 28, 28) and pred.dtype == np.float32
    assert np.mean((pred - clean[1000:]) ** 2) < 0.3 * np.mean((noisy[1000:] - clean[1000:]) ** 2)
    assert denoiser.score(noisy[1000:], clean[1000:]) > 0.5


def test_score_is_variance_weighted_r2_over_pixels(denoiser, noisy_digits):
    noisy, clean = noisy_digits
    pred = denoiser.predict(noisy[1000:]).reshape(200, -1)
    truth = clean[1000:].reshape(200, -1)
    expected = r2_score(truth, pred, multioutput="variance_weighted")
    assert denoiser.score(noisy[1000:], clean[1000:]) == pytest.approx(expected, rel=1e-6)


def test_default_network_is_residual_blocks(denoiser):
    module = denoiser.net_.module_
    assert isinstance(module, ResidualImageNet) and module.residual
    assert [block.first.out_channels for block in module.blocks] == [16, 16]
    # The untrained network starts at the identity (zero-initialised head and blocks).
    fresh = ResidualImageNet(in_channels=1, out_channels=1, input_size=(28, 28), filters=(8, 8))
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(fresh(x), x)


def test_auto_downscale_denoises_on_a_coarser_grid(photo_pairs, noisy_digits):
    """``downscale="auto"``: 2 (and blocks of 64) for same-size targets, 1 (blocks of
    32) for upscaling; an explicit value and explicit filters are kept."""
    lr, hr = photo_pairs
    noisy, clean = noisy_digits
    one_epoch = {"max_epochs": 1, "batch_size": 32, "random_state": 0}
    denoiser = ConvAutoencoderRegressor(**one_epoch).fit(noisy[:64], clean[:64])
    module = denoiser.net_.module_
    assert denoiser.downscale == "auto"  # the parameter stays as set
    assert module.downscale == 2 and module.stem.in_channels == 4
    assert [block.first.out_channels for block in module.blocks] == [64] * 4
    assert module.head.out_channels == 4  # one value per pixel of each 2x2 block
    upscaler = ConvAutoencoderRegressor(**one_epoch).fit(lr, hr)
    assert upscaler.net_.module_.downscale == 1
    assert [block.first.out_channels for block in upscaler.net_.module_.blocks] == [32] * 4
    chosen = ConvAutoencoderRegressor(**FAST, downscale=3).fit(noisy[:64], clean[:64])
    assert chosen.net_.module_.downscale == 3
    assert [block.first.out_channels for block in chosen.net_.module_.blocks] == [8, 8]
    # 28 is not a multiple of 3: padded inside the network, cropped back.
    assert chosen.predict(noisy[:2, :25, :13]).shape == (2, 25, 13)
    with pytest.raises(
        ValueError, match=r"'downscale' parameter .* must be an int in the range \[1, inf\)"
    ):
        ConvAutoencoderRegressor(downscale=0).fit(noisy[:8], clean[:8])


@pytest.mark.parametrize("size", [(37, 50), (41,)])
def test_downscaled_network_sees_farther_at_the_same_cost(size):
    """The receptive field of a downscaled network, measured by the gradient of one
    output pixel, is about ``downscale`` times wider than at full resolution with the
    same number of convolutions; the untrained network is still the identity."""
    torch.manual_seed(0)
    extents = {}
    for downscale in (1, 2):
        net = ResidualImageNet(
            in_channels=1, out_channels=1, input_size=(8,) * len(size), filters=(4, 4),
            downscale=downscale,
        )  # fmt: skip
        x = torch.rand(1, 1, *size, requires_grad=True)
        assert torch.equal(net(x), x)  # zero-initialised head and blocks
        for parameter in net.parameters():
            torch.nn.init.normal_(parameter, std=0.3)
        centre = tuple(s // 2 for s in size)
        net(x)[(0, 0, *centre)].backward()
        grad = x.grad[0, 0].abs()
        seen = (grad.sum(dim=0) if grad.dim() == 2 else grad) > 0  # along the last axis
        extents[downscale] = int(seen.sum())
    # Six 3-wide convolutions: 13 pixels at full resolution; 2x farther on the 2x grid.
    assert extents[1] == 13
    assert extents[2] == 26


def test_unet_network_has_skips_and_residual(noisy_digits):
    noisy, clean = noisy_digits
    model = ConvAutoencoderRegressor(**{**FAST, "filters": (16, 32)}, network="unet")
    module = model.fit(noisy[:300], clean[:300]).net_.module_
    assert isinstance(module, ImageToImageNet) and module.skip_connections and module.residual
    # The decoder stage sees the upsampled deep features and the skip (16 + 32 channels).
    assert module.up[0][0].in_channels == 16 + 32
    assert model.score(noisy[1000:], clean[1000:]) > 0.1


def test_cosine_schedule_decays_the_learning_rate(noisy_digits):
    noisy, clean = noisy_digits
    model = ConvAutoencoderRegressor(**{**FAST, "max_epochs": 3}).fit(noisy[:200], clean[:200])
    # From lr down to lr / 100 at the end of max_epochs.
    assert model.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(1e-3 / 100)
    constant = clone(model).set_params(lr_schedule="constant").fit(noisy[:200], clean[:200])
    assert constant.net_.optimizer_.param_groups[0]["lr"] == 1e-3


def test_fit_on_patches_of_several_photos_predicts_whole_photos():
    """The multi-image path: patches of photos of different sizes, whole held-out photos."""
    photos = [data.camera(), data.coins(), data.astronaut()[..., 1]]
    clean = extract_random_patches(photos, 24, n_patches=400, random_state=0) / 255
    rng = np.random.default_rng(0)
    noisy = (clean + 0.1 * rng.standard_normal(clean.shape)).astype(np.float32)
    model = ConvAutoencoderRegressor(**{**FAST, "max_epochs": 3, "lr": 3e-3}).fit(noisy, clean)
    moon = data.moon()[:200, :300] / 255  # held out, another size than the patches
    noisy_moon = moon + 0.1 * rng.standard_normal(moon.shape)
    denoised = model.predict(noisy_moon[None])
    assert denoised.shape == (1, 200, 300) and denoised.dtype == np.float32
    # Same units as the targets, and cleaner than the noisy input.
    assert 0 <= denoised.min() and denoised.max() <= 1
    assert np.mean((denoised[0] - moon) ** 2) < 0.8 * np.mean((noisy_moon - moon) ** 2)


def test_super_resolution_nhwc_in_nhwc_out(photo_pairs):
    lr, hr = photo_pairs
    model = ConvAutoencoderRegressor(**FAST).fit(lr, hr)
    assert model.scale_ == 2
    assert model.image_shape_ == (3, 8, 8) and model.target_shape_ == (3, 16, 16)
    pred = model.predict(lr[:4])
    assert pred.shape == (4, 16, 16, 3)
    # Targets were 0..255: predictions come back in those units, clipped to their range.
    assert pred.max() <= hr.max() and pred.min() >= hr.min() and pred.max() > 100


def test_residual_upscaling_starts_from_bicubic(photo_pairs):
    """A zeroed residual branch predicts the bicubic upscaling itself."""
    lr, hr = photo_pairs
    model = ConvAutoencoderRegressor(**{**FAST, "max_epochs": 1}).fit(lr, hr)
    with torch.no_grad():
        model.net_.module_.head.weight.zero_()
        model.net_.module_.head.bias.zero_()
    pred = model.predict(lr[:2])
    x = torch.from_numpy(lr[:2].transpose(0, 3, 1, 2)).float()
    bicubic = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    expected = np.clip(bicubic.numpy().transpose(0, 2, 3, 1), hr.min(), hr.max())
    np.testing.assert_allclose(pred, expected, rtol=1e-4, atol=1e-3)


def test_auto_loss_is_mse_for_upscaling_and_l1_otherwise(photo_pairs, noisy_digits):
    """L1 learned almost no correction over bicubic in 2x super-resolution; MSE did."""
    lr, hr = photo_pairs
    noisy, clean = noisy_digits
    upscaler = ConvAutoencoderRegressor(**{**FAST, "max_epochs": 1}).fit(lr, hr)
    denoiser = ConvAutoencoderRegressor(**{**FAST, "max_epochs": 1}).fit(noisy[:64], clean[:64])
    assert upscaler.loss == denoiser.loss == "auto"  # the parameter stays as set
    assert upscaler.net_.criterion_.loss == "mse"
    assert denoiser.net_.criterion_.loss == "l1"
    chosen = ConvAutoencoderRegressor(**{**FAST, "max_epochs": 1}, loss="l1").fit(lr, hr)
    assert chosen.net_.criterion_.loss == "l1"


def test_flat_targets_fold_by_integer_factor(photo_pairs):
    lr, hr = photo_pairs
    flat_lr, flat_hr = lr.reshape(len(lr), -1), hr.reshape(len(hr), -1)
    model = ConvAutoencoderRegressor(**FAST, image_shape=(8, 8, 3)).fit(flat_lr, flat_hr)
    assert model.target_shape_ == (3, 16, 16)
    assert model.predict(flat_lr[:3]).shape == (3, 16 * 16 * 3)


def test_predicts_images_of_any_size(photo_pairs, noisy_digits):
    """Fully convolutional: a model fitted on 8x8 patches upscales a whole 64x64 image,
    and away from the borders that equals upscaling a tile of it."""
    lr, hr = photo_pairs
    model = ConvAutoencoderRegressor(**FAST).fit(lr, hr)
    china = load_sample_images().images[0][100:228, 200:328].astype(np.float32)
    whole_lr = china.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    whole = model.predict(whole_lr[None])
    assert whole.shape == (1, 128, 128, 3)
    tile = model.predict(whole_lr[None, 8:56, 8:56])  # offset on the pooling grid
    assert tile.shape == (1, 96, 96, 3)
    # Low-resolution pixels 16 away from the tile's edges see no padding in either.
    np.testing.assert_allclose(tile[0, 32:64, 32:64], whole[0, 48:80, 48:80], atol=1e-3)
    # Aligned with the image: a zeroed residual branch gives its bicubic upscaling.
    with torch.no_grad():
        model.net_.module_.head.weight.zero_()
        model.net_.module_.head.bias.zero_()
    x = torch.from_numpy(whole_lr.transpose(2, 0, 1)[None])
    bicubic = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    expected = bicubic.numpy()[0].transpose(1, 2, 0)
    expected = np.clip(expected, model.target_min_, model.target_max_)  # per channel
    np.testing.assert_allclose(model.predict(whole_lr[None])[0], expected, atol=1e-3)

    noisy, clean = noisy_digits
    grey = ConvAutoencoderRegressor(**FAST).fit(noisy[:200], clean[:200])
    assert grey.predict(noisy[:3, :20, :15]).shape == (3, 20, 15)


def test_target_shape_for_flat_targets(noisy_digits):
    noisy, clean = noisy_digits
    model = ConvAutoencoderRegressor(**FAST, target_shape=(28, 28)).fit(
        noisy[:200], clean[:200].reshape(200, -1)
    )
    assert model.predict(noisy[:2]).shape == (2, 784)


def test_dataframe_input(noisy_digits):
    noisy, clean = noisy_digits
    df = pd.DataFrame(noisy[:300].reshape(300, -1)).add_prefix("px")
    model = ConvAutoencoderRegressor(**FAST).fit(df, clean[:300])
    assert list(model.feature_names_in_[:2]) == ["px0", "px1"]
    assert model.predict(df.iloc[:5]).shape == (5, 28, 28)


def test_grid_search_and_pipeline(noisy_digits):
    noisy, clean = noisy_digits
    search = GridSearchCV(
        Pipeline([("reg", ConvAutoencoderRegressor(**FAST))]),
        {"reg__residual": [False, True]},
        cv=2,
    )
    search.fit(noisy[:300], clean[:300])
    assert set(search.cv_results_["param_reg__residual"]) == {False, True}
    assert search.predict(noisy[:3]).shape == (3, 28, 28)


def test_clone_pickle_and_reproducibility(noisy_digits):
    noisy, clean = noisy_digits
    model = ConvAutoencoderRegressor(**FAST).fit(noisy[:200], clean[:200])
    again = clone(model).fit(noisy[:200], clean[:200])
    np.testing.assert_array_equal(model.predict(noisy[:20]), again.predict(noisy[:20]))
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(noisy[:20]), model.predict(noisy[:20]))
    # Predictions do not depend on which other images share the batch.
    np.testing.assert_allclose(
        model.predict(noisy[:20])[5:10], model.predict(noisy[5:10]), rtol=1e-5, atol=1e-6
    )


def test_warm_start_continues_with_changed_lr(noisy_digits):
    noisy, clean = noisy_digits
    model = ConvAutoencoderRegressor(**FAST, warm_start=True, lr_schedule="constant")
    model.fit(noisy[:300], clean[:300])
    model.set_params(lr=3e-4, max_epochs=1).fit(noisy[:300], clean[:300])
    assert len(model.net_.history) == FAST["max_epochs"] + 1
    assert model.net_.optimizer_.param_groups[0]["lr"] == 3e-4
    # Continued, not restarted: lower loss than the same epoch from scratch.
    cold = clone(model).set_params(warm_start=False).fit(noisy[:300], clean[:300])
    assert model.net_.history[-1, "train_loss"] < cold.net_.history[-1, "train_loss"]


@pytest.mark.filterwarnings("error")  # a shape mismatch in the loss only warns in torch
def test_one_dimensional_signals(digits):
    X, _ = digits
    signals = X[:, :60]  # 60 features: a 1-D signal
    model = ConvAutoencoderRegressor(**FAST).fit(signals, signals[:, ::-1])
    assert model.target_shape_ == (1, 1, 60)
    assert model.predict(signals[:3]).shape == (3, 60)


@pytest.mark.parametrize(
    "make_y, match",
    [
        (lambda y: None, "requires y to be passed"),
        (lambda y: y[:-1], "inconsistent numbers of samples"),
        (lambda y: y[:, :20, :20], "not an integer multiple"),
        (lambda y: np.where(y > 0.5, np.nan, y), "NaN"),
        (lambda y: y.reshape(len(y), -1)[:, :100], "not an integer multiple"),
    ],
    ids=["none", "length", "non-integer-factor", "nan", "flat-unfoldable"],
)
def test_bad_targets(noisy_digits, make_y, match):
    noisy, clean = noisy_digits
    with pytest.raises(ValueError, match=match):
        ConvAutoencoderRegressor(**FAST).fit(noisy[:50], make_y(clean[:50]))


def _dihedral(images, turns, mirrored):
    """A flip and quarter turns of ``(N, H, W[, C])`` images, by NumPy."""
    view = images[:, :, ::-1] if mirrored else images
    return np.rot90(view, turns, axes=(1, 2))


def _undo_dihedral(images, turns, mirrored):
    view = np.rot90(images, -turns, axes=(1, 2))
    return view[:, :, ::-1] if mirrored else view


@pytest.mark.parametrize("task", ["denoise", "upscale"])
def test_self_ensemble_averages_predictions_over_flips_and_turns(task, noisy_digits, photo_pairs):
    if task == "denoise":
        noisy, clean = noisy_digits
        model = ConvAutoencoderRegressor(**FAST).fit(noisy[:600], clean[:600])
        X = noisy[600:603, :20, :26]  # not square: turns swap height and width
    else:
        lr, hr = photo_pairs
        model = ConvAutoencoderRegressor(**FAST).fit(lr, hr)
        china = load_sample_images().images[0].astype(np.float32)
        X = china[None, 100:112, 200:218].reshape(1, 6, 2, 9, 2, 3).mean(axis=(2, 4))
    plain = model.predict(X)
    expected = np.mean(
        [
            _undo_dihedral(model.predict(np.ascontiguousarray(_dihedral(X, t, m))), t, m)
            for m in (False, True)
            for t in range(4)
        ],
        axis=0,
    )
    ensembled = model.set_params(self_ensemble=True).predict(X)
    assert ensembled.shape == plain.shape == expected.shape
    np.testing.assert_allclose(ensembled, expected, rtol=1e-5, atol=1e-4)
    # The network alone is not symmetric; the ensemble is, up to rounding.
    mirrored = model.predict(np.ascontiguousarray(X[:, :, ::-1]))[:, :, ::-1]
    np.testing.assert_allclose(mirrored, ensembled, rtol=1e-5, atol=1e-4)
    turned = model.predict(np.ascontiguousarray(np.rot90(X, 1, axes=(1, 2))))
    np.testing.assert_allclose(np.rot90(turned, -1, axes=(1, 2)), ensembled, rtol=1e-5, atol=1e-4)
    model.set_params(self_ensemble=False)
    mirrored_plain = model.predict(np.ascontiguousarray(X[:, :, ::-1]))[:, :, ::-1]
    assert np.abs(mirrored_plain - plain).max() > 1e-3 * np.abs(plain).max()


def test_self_ensemble_of_signals_averages_with_the_reversal(digits):
    X, _ = digits
    signals = X[:, :60]
    model = ConvAutoencoderRegressor(**FAST).fit(signals, signals[:, ::-1])
    plain = model.predict(signals[:5])
    reversed_back = model.predict(np.ascontiguousarray(signals[:5, ::-1]))[:, ::-1]
    ensembled = model.set_params(self_ensemble=True).predict(signals[:5])
    np.testing.assert_allclose(ensembled, (plain + reversed_back) / 2, rtol=1e-5, atol=1e-4)
