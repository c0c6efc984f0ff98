"""skconvae.plotting on real images: figure structure, colour scales, errors, PNGs."""

import importlib
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_sample_images
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from skorch import NeuralNet

from skconvae import ConvAutoencoderTransformer

from .conftest import FAST

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from skconvae.plotting import (  # noqa: E402
    plot_history,
    plot_image_rows,
    plot_latent,
    plot_reconstructions,
    plot_samples,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def early_stopped(digits):
    """Digits autoencoder with a validation split and an 8-feature dense code."""
    X, _ = digits
    params = {**FAST, "max_epochs": 3, "latent_dim": 8}
    return ConvAutoencoderTransformer(**params, early_stopping=True).fit(X[:600])


@pytest.fixture(scope="module")
def photo_patches():
    """12 real RGB patches of 16x20 pixels cut from china.jpg, uint8 NHWC."""
    china = load_sample_images().images[0]
    return np.stack([china[r : r + 16, 200:220] for r in range(0, 12 * 16, 16)])


def _save(fig, path):
    fig.savefig(path)
    assert path.exists()
    assert path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _drawn(ax):
    return ax.images[0].get_array()


# -- plot_image_rows ------------------------------------------------------------------


def test_image_rows_labels_and_shapes(digits, tmp_path):
    X, y = digits
    rows = {"zeros": X[y == 0], "ones": X[y == 1], "twos": X[y == 2]}
    fig = plot_image_rows(rows, n_images=6)

    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * 6
    assert [ax.get_ylabel() for ax in fig.axes[::6]] == ["zeros", "ones", "twos"]
    assert all(ax.get_ylabel() == "" for i, ax in enumerate(fig.axes) if i % 6)
    assert all(_drawn(ax).shape == (8, 8) for ax in fig.axes)
    np.testing.assert_array_equal(_drawn(fig.axes[7]), X[y == 1][1].reshape(8, 8))
    _save(fig, tmp_path / "image_rows.png")


def test_image_rows_list_is_unlabelled_and_counts_may_differ(digits):
    X, _ = digits
    fig = plot_image_rows([X[:3], X[3:8], X[8:20]], n_images=10)

    assert len(fig.axes) == 3 + 5 + 10
    assert all(ax.get_ylabel() == "" for ax in fig.axes)
    # The grid is as wide as the longest row; shorter rows leave cells empty.
    assert fig.axes[0].get_subplotspec().get_geometry()[:2] == (3, 10)


def test_grey_rows_default_to_their_own_scale_and_vmin_vmax_override(mnist):
    images, _ = mnist
    dim = (images[:4] // 4).astype(np.uint8)  # a second row in 0..63
    fig = plot_image_rows({"mnist": images[:4], "dim": dim}, n_images=4)

    assert _drawn(fig.axes[0]).shape == (28, 28)
    assert fig.axes[0].images[0].get_clim() == (images[:4].min(), images[:4].max())
    assert fig.axes[4].images[0].get_clim() == (dim.min(), dim.max())

    fig = plot_image_rows({"mnist": images[:4], "dim": dim}, vmin=0, vmax=255, cmap="gray_r")
    assert {ax.images[0].get_clim() for ax in fig.axes} == {(0, 255)}
    assert fig.axes[0].images[0].get_cmap().name == "gray_r"


def test_rgb_layouts_draw_the_same_colours(photo_patches):
    n, h, w, c = photo_patches.shape
    expected = photo_patches / 255.0
    rows = {
        "NHWC uint8": photo_patches,
        "NHWC float in [0, 1]": expected,
        "NCHW uint8": photo_patches.transpose(0, 3, 1, 2),
        "flat": photo_patches.reshape(n, -1),
    }
    fig = plot_image_rows(rows, image_shape=(h, w, c), n_images=4)

    assert len(fig.axes) == 4 * 4
    for r, ax in enumerate(fig.axes[::4]):
        assert _drawn(ax).shape == (h, w, 3), r
        np.testing.assert_allclose(_drawn(ax), expected[0], atol=1e-6)


def test_rgb_outside_unit_range_is_min_max_normalised_per_row(photo_patches):
    shifted = photo_patches.astype(np.float64) * 3 - 100  # floats in [-100, 665]
    fig = plot_image_rows({"shifted": shifted}, n_images=12)
    drawn = np.stack([_drawn(ax) for ax in fig.axes])
    assert drawn.min() == 0.0
    assert drawn.max() == pytest.approx(1.0)
    low, high = shifted.min(), shifted.max()
    np.testing.assert_allclose(drawn[0], (shifted[0] - low) / (high - low), atol=1e-6)

    fig = plot_image_rows({"clipped": shifted}, vmin=0, vmax=255)
    np.testing.assert_allclose(_drawn(fig.axes[0]), np.clip(shifted[0] / 255, 0, 1), atol=1e-6)


def test_rgba_and_single_channel_images(photo_patches):
    alpha = np.full((*photo_patches.shape[:3], 1), 255, dtype=np.uint8)
    rgba = np.concatenate([photo_patches, alpha], axis=3)
    grey = photo_patches[..., :1]
    fig = plot_image_rows({"rgba": rgba, "NHW1": grey, "N1HW": grey.transpose(0, 3, 1, 2)})

    h, w = photo_patches.shape[1:3]
    assert _drawn(fig.axes[0]).shape == (h, w, 4)
    assert _drawn(fig.axes[10]).shape == (h, w)
    assert _drawn(fig.axes[20]).shape == (h, w)


def test_image_shape_settles_an_ambiguous_4d_layout(photo_patches):
    tall = photo_patches[:, :3, :8, :]  # (n, 3, 8, 3): channels could be on axis 1 or 3
    assert _drawn(plot_image_rows([tall]).axes[0]).shape == (3, 8, 3)
    chw = tall.transpose(0, 3, 1, 2).copy()  # (n, 3, 3, 8) read back as channels-first
    assert _drawn(plot_image_rows([chw], image_shape=(3, 8, 3)).axes[0]).shape == (3, 8, 3)


def test_non_square_flat_rows_are_drawn_as_signals(digits):
    X, _ = digits
    signals = X[:5, :60]
    fig = plot_image_rows({"signals": signals})

    assert len(fig.axes) == 5
    assert all(not ax.images for ax in fig.axes)
    np.testing.assert_array_equal(fig.axes[2].lines[0].get_ydata(), signals[2])
    low, high = fig.axes[0].get_ylim()
    assert low < signals.min() and high > signals.max()


def test_titles_for_columns_and_per_row(digits):
    X, y = digits
    fig = plot_image_rows({"a": X[:4], "b": X[4:8]}, n_images=4, titles=y[:4])
    assert [ax.get_title() for ax in fig.axes[:4]] == [str(v) for v in y[:4]]
    assert all(ax.get_title() == "" for ax in fig.axes[4:])

    fig = plot_image_rows({"a": X[:2], "b": X[2:4]}, titles={"b": ["p", "q"]})
    assert [ax.get_title() for ax in fig.axes] == ["", "", "p", "q"]

    fig = plot_image_rows([X[:2], X[2:4]], titles=[["w", "x"], ["y", "z"]])
    assert [ax.get_title() for ax in fig.axes] == ["w", "x", "y", "z"]

    with pytest.raises(ValueError, match="one title per column"):
        plot_image_rows({"a": X[:4]}, titles=["only one"])
    with pytest.raises(ValueError, match="one title per image"):
        plot_image_rows({"a": X[:2], "b": X[2:4]}, titles={"b": ["p"]})
    with pytest.raises(ValueError, match="that rows does not have"):
        plot_image_rows({"a": X[:2]}, titles={"c": ["p", "q"]})


@pytest.mark.parametrize(
    ("make_rows", "kwargs", "match"),
    [
        (lambda X: {"a": X[0]}, {}, "1-D array"),
        (lambda X: {"a": X[:4].reshape(4, 1, 8, 8, 1)}, {}, "5-D array"),
        (lambda X: {"a": X[:4]}, {"image_shape": (8, 7)}, "holds 56 values per image"),
        (lambda X: {"a": X[:4].reshape(4, 8, 8)}, {"image_shape": (4, 16)}, "does not match"),
        (lambda X: {"a": X[:4].reshape(4, 2, 16, 2)}, {}, "1, 3 or 4 channels"),
        (lambda X: {"a": X[:4].reshape(4, 4, 4, 4)}, {"image_shape": (4, 4, 3)}, "does not match"),
        (lambda X: {"a": X[:4]}, {"image_shape": (4, 8, 2)}, "2 channels cannot be drawn"),
        (lambda X: {"a": X[:4]}, {"image_shape": (8,)}, "image_shape must be"),
        (lambda X: {"a": X[:4]}, {"image_shape": (8, -8)}, "image_shape must be"),
        (lambda X: {"a": X[:0]}, {}, "holds no images"),
        (lambda X: {"a": X[:4].astype(str).astype(object) + "px"}, {}, "must hold numbers"),
        (lambda X: {"a": X[:4] * 1j}, {}, "complex"),
        (lambda X: {"a": [X[0], X[1, :10]]}, {}, "same shape"),
        (lambda X: {}, {}, "rows is empty"),
        (lambda X: {"a": X[:4]}, {"n_images": 0}, "n_images must be a positive integer"),
    ],
)
def test_image_rows_bad_input_raises_value_error(digits, make_rows, kwargs, match):
    X, _ = digits
    with pytest.raises(ValueError, match=match):
        plot_image_rows(make_rows(X), **kwargs)


def test_image_rows_rejects_a_bare_array(digits):
    X, _ = digits
    with pytest.raises(TypeError, match=r"\[images\]"):
        plot_image_rows(X[:4])


# -- plot_reconstructions ----------------------------------------------------------------


def test_reconstructions_rows_share_the_originals_scale(digits, early_stopped, tmp_path):
    X, _ = digits
    reconstructions = early_stopped.inverse_transform(early_stopped.transform(X[:6]))
    noisy = X[:6] + np.random.default_rng(0).normal(0, 2, size=X[:6].shape)
    fig = plot_reconstructions(X, reconstructions, corrupted=noisy, n_images=6)

    assert len(fig.axes) == 3 * 6
    assert [ax.get_ylabel() for ax in fig.axes[::6]] == ["original", "corrupted", "reconstruction"]
    assert {ax.images[0].get_clim() for ax in fig.axes} == {(X[:6].min(), X[:6].max())}
    np.testing.assert_allclose(_drawn(fig.axes[12]), reconstructions[0].reshape(8, 8))
    _save(fig, tmp_path / "reconstructions.png")


def test_reconstructions_without_corrupted_and_in_colour(photo_patches):
    as_float = photo_patches.astype(np.float32)  # what inverse_transform returns for uint8 in
    fig = plot_reconstructions(photo_patches, as_float, n_images=3)

    assert [ax.get_ylabel() for ax in fig.axes[::3]] == ["original", "reconstruction"]
    np.testing.assert_allclose(_drawn(fig.axes[3]), photo_patches[0] / 255.0, atol=1e-6)


def test_reconstructions_of_another_shape_raise(digits):
    X, _ = digits
    with pytest.raises(ValueError, match="reconstruction images have shape"):
        plot_reconstructions(X[:4], X[:4, :49])


# -- plot_history ----------------------------------------------------------------------


def test_history_of_an_early_stopped_estimator(early_stopped, tmp_path):
    history = early_stopped.net_.history
    fig = plot_history(early_stopped)
    (ax,) = fig.axes

    train, valid, best = ax.lines
    np.testing.assert_array_equal(train.get_xdata(), history[:, "epoch"])
    np.testing.assert_allclose(train.get_ydata(), history[:, "train_loss"])
    np.testing.assert_allclose(valid.get_ydata(), history[:, "valid_loss"])
    best_epoch = int(np.argmin(history[:, "valid_loss"]))
    assert best.get_xdata()[0] == history[best_epoch, "epoch"]
    assert best.get_ydata()[0] == pytest.approx(history[best_epoch, "valid_loss"])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "loss")
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == [
        "train loss",
        "valid loss",
        f"best valid loss (epoch {history[best_epoch, 'epoch']})",
    ]
    _save(fig, tmp_path / "history.png")


def test_history_of_a_skorch_net_without_validation(digits):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST).fit(X[:200])
    fig = plot_history(ae.net_)

    (line,) = fig.axes[0].lines
    np.testing.assert_allclose(line.get_ydata(), ae.net_.history[:, "train_loss"])
    assert len(fig.axes[0].get_legend().get_texts()) == 1


def test_history_draws_into_given_axes(early_stopped):
    fig, (left, right) = plt.subplots(1, 2)
    assert plot_history(early_stopped, ax=right) is fig
    assert not left.lines and len(right.lines) == 3


def test_history_of_unfitted_models_raises_not_fitted():
    with pytest.raises(NotFittedError):
        plot_history(ConvAutoencoderTransformer())
    with pytest.raises(NotFittedError, match="history is empty"):
        plot_history(NeuralNet(torch.nn.Linear(2, 2), criterion=torch.nn.MSELoss))


def test_history_of_something_else_raises_type_error(digits):
    X, _ = digits
    with pytest.raises(TypeError, match="PCA has no training history"):
        plot_history(PCA(2).fit(X))
    with pytest.raises(TypeError, match="got list"):
        plot_history([1, 2, 3])


# -- plot_latent ------------------------------------------------------------------------


def test_latent_projects_wide_codes_with_pca(digits, early_stopped, tmp_path):
    X, y = digits
    fig = plot_latent(early_stopped, X, y)
    ax = fig.axes[0]

    assert len(fig.axes) == 1
    assert ax.get_xlabel().startswith("latent PC 1")
    assert ax.get_ylabel().startswith("latent PC 2")
    (scatter,) = ax.collections
    assert len(scatter.get_offsets()) == len(X)
    codes = early_stopped.transform(X).astype(np.float64)
    expected = PCA(2, random_state=0).fit_transform(codes)
    np.testing.assert_allclose(scatter.get_offsets(), expected, rtol=1e-4, atol=1e-5)
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == [str(c) for c in np.unique(y)]
    _save(fig, tmp_path / "latent.png")


@pytest.fixture(scope="module")
def mnist_2d(mnist):
    images, labels = mnist
    ae = ConvAutoencoderTransformer(**{**FAST, "latent_dim": 2}).fit(images[:300])
    return ae, images[:300], labels[:300]


def test_latent_draws_2d_codes_as_they_are(mnist_2d):
    ae, images, labels = mnist_2d
    fig = plot_latent(ae, images, labels)
    ax = fig.axes[0]

    np.testing.assert_allclose(ax.collections[0].get_offsets(), ae.transform(images))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("latent 1", "latent 2")
    assert len(ax.get_legend().get_texts()) == len(np.unique(labels))


def test_latent_uses_pandas_column_names(mnist_2d):
    ae, images, labels = mnist_2d
    ae.set_output(transform="pandas")
    try:
        fig = plot_latent(ae, images, pd.Series(labels, name="digit"))
    finally:
        ae.set_output(transform="default")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "convautoencodertransformer0"
    assert ax.get_legend().get_title().get_text() == "digit"


def test_latent_without_labels_and_with_many_classes(digits, early_stopped):
    X, _ = digits
    fig = plot_latent(early_stopped, X)
    ax = fig.axes[0]
    assert ax.get_legend() is None
    assert len(np.unique(ax.collections[0].get_facecolors(), axis=0)) == 1

    many = np.arange(len(X)) % 25  # 25 classes: a colour bar instead of a legend
    fig = plot_latent(early_stopped, X, many)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_legend() is None
    assert len(fig.axes[0].collections[0].get_offsets()) == len(X)
    np.testing.assert_array_equal(fig.axes[0].collections[0].get_array(), many)


def test_latent_draws_into_given_axes(digits, early_stopped):
    X, y = digits
    fig, (left, right) = plt.subplots(1, 2)
    assert plot_latent(early_stopped, X[:50], y[:50], ax=left) is fig
    assert len(left.collections) == 1 and not right.collections


def test_latent_bad_input(digits, early_stopped):
    X, y = digits
    with pytest.raises(ValueError, match="one label per sample"):
        plot_latent(early_stopped, X, y[:10])
    with pytest.raises(ValueError, match="at least 2 features"):
        plot_latent(PCA(1).fit(X), X, y)
    with pytest.raises(NotFittedError):
        plot_latent(ConvAutoencoderTransformer(), X, y)


# -- plot_samples -----------------------------------------------------------------------


def test_samples_grid(mnist, tmp_path):
    images, _ = mnist
    fig = plot_samples(images[:23], n_cols=10)

    assert len(fig.axes) == 23
    assert fig.axes[0].get_subplotspec().get_geometry()[:2] == (3, 10)
    assert all(ax.get_ylabel() == "" and ax.get_title() == "" for ax in fig.axes)
    assert all(_drawn(ax).shape == (28, 28) for ax in fig.axes)
    # One colour scale for every sample.
    assert {ax.images[0].get_clim() for ax in fig.axes} == {(0, 255)}
    assert {ax.images[0].get_cmap().name for ax in fig.axes} == {"gray"}
    _save(fig, tmp_path / "samples.png")
    inverted = plot_samples(images[:3], cmap="gray_r")
    assert {ax.images[0].get_cmap().name for ax in inverted.axes} == {"gray_r"}


def test_samples_in_colour_and_flat(photo_patches):
    n, h, w, c = photo_patches.shape
    fig = plot_samples(photo_patches.reshape(n, -1), image_shape=(h, w, c), n_cols=4)
    assert len(fig.axes) == n
    assert fig.axes[0].get_subplotspec().get_geometry()[:2] == (3, 4)
    np.testing.assert_allclose(_drawn(fig.axes[-1]), photo_patches[-1] / 255.0, atol=1e-6)


def test_samples_bad_input(digits):
    X, _ = digits
    with pytest.raises(ValueError, match="n_cols must be a positive integer"):
        plot_samples(X[:4], n_cols=0)
    with pytest.raises(ValueError, match="1-D array"):
        plot_samples(X[0])


# -- optional dependency ----------------------------------------------------------------


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "skconvae.plotting")
    with pytest.raises(ImportError, match=r'pip install "skconvae\[plot\]"'):
        importlib.import_module("skconvae.plotting")
