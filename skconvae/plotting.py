"""Figures for looking at an autoencoder: images, reconstructions, training and codes.

Every function returns a :class:`matplotlib.figure.Figure` made with pyplot (so
``plt.show()`` displays it and ``plt.close(fig)`` frees it) and never shows it.
matplotlib is an optional dependency: ``pip install "skconvae[plot]"``.

Image inputs, wherever a function takes images, may be:

- flat rows ``(n, n_features)``, folded by ``image_shape=(height, width)`` or
  ``(height, width, channels)`` in the order ``images.reshape(n, -1)`` produces;
  with ``image_shape=None`` a square number of features is a square grey image
  and any other number a 1-D signal, drawn as a line;
- grey images ``(n, height, width)``;
- images with 1, 3 (RGB) or 4 (RGBA) channels, ``(n, height, width, channels)``,
  or ``(n, channels, height, width)`` when the last axis is not 1, 3 or 4
  (``image_shape`` settles a tie).

Colour scale: grey images use ``cmap`` between ``vmin`` and ``vmax``, signals use
them as y-limits. RGB(A) images are mapped to [0, 1] with ``vmin`` and ``vmax``
and clipped. When ``vmin`` or ``vmax`` is None, each row of the figure takes its
own: integer colour images within 0..255 use 0 and 255, float colour images
within [0, 1] use 0 and 1, and anything else the row's minimum and maximum (one
scale per row, so the images of a row compare).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ._layout import infer_layout

try:
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator
except ImportError as exc:
    raise ImportError(
        "skconvae.plotting needs matplotlib, which is not installed. Install it with: "
        'pip install "skconvae[plot]"'
    ) from exc

__all__ = [
    "plot_history",
    "plot_image_rows",
    "plot_latent",
    "plot_reconstructions",
    "plot_samples",
]

_COLOUR_CHANNELS = (1, 3, 4)
_MAX_LEGEND_CLASSES = 20


@dataclass(frozen=True)
class _Row:
    """Images ready to draw.

    ``kind`` is "grey" for (N, H, W) data, "colour" for (N, H, W, C) and "signal" for (N, L).
    """

    kind: str
    data: np.ndarray

    def __len__(self) -> int:
        return len(self.data)

    def head(self, n: int) -> _Row:
        return _Row(self.kind, self.data[:n])


# -- public functions ----------------------------------------------------------------


def plot_image_rows(
    rows: Mapping[Any, ArrayLike] | Sequence[ArrayLike],
    *,
    image_shape: tuple[int, ...] | None = None,
    n_images: int = 10,
    titles: Sequence[Any] | Mapping[Any, Sequence[Any]] | None = None,
    cmap: str | Colormap = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """Draw rows of images, one labelled row per entry of ``rows``.

    Parameters
    ----------
    rows : dict of label -> array-like, or list of array-like
        The images of each row, in any of the layouts listed in
        :mod:`skconvae.plotting` (rows may differ in layout and count). Dict keys
        label the rows; a list draws unlabelled rows.
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(height, width, channels)`` of flat rows. For
        3-D and 4-D arrays it must match the images (it is read from them).
    n_images : int, default=10
        Number of images drawn from the start of each row.
    titles : sequence, or list/dict of sequences, default=None
        Titles drawn above images. A flat sequence (such as ``y[:n_images]``)
        titles the columns, above the top row. One sequence per row, as a list
        in row order or a dict with the keys of ``rows``, titles each image of
        that row (such as predicted labels).
    cmap : str or Colormap, default="gray"
        Colour map of grey images.
    vmin, vmax : float or None, default=None
        Limits of the colour scale (y-limits of signals). None: each row's own,
        as described in :mod:`skconvae.plotting`.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure, one axes per image drawn.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from sklearn.datasets import load_digits
    >>> from skconvae.plotting import plot_image_rows
    >>> X, y = load_digits(return_X_y=True)
    >>> fig = plot_image_rows({"zeros": X[y == 0], "ones": X[y == 1]}, n_images=5)
    >>> len(fig.axes)
    10
    >>> fig.axes[5].get_ylabel()
    'ones'
    >>> fig.axes[0].images[0].get_array().shape
    (8, 8)
    >>> plt.close(fig)
    """
    labels, arrays = _split_rows(rows)
    n_images = _check_count(n_images, "n_images")
    drawable = [
        _as_row(images, image_shape, _row_name(label, i)).head(n_images)
        for i, (label, images) in enumerate(zip(labels, arrays, strict=True))
    ]
    grid_titles = _grid_titles(titles, labels, drawable, isinstance(rows, Mapping))
    return _draw_grid(drawable, labels, grid_titles, cmap=cmap, vmin=vmin, vmax=vmax)


def plot_reconstructions(
    originals: ArrayLike,
    reconstructions: ArrayLike,
    *,
    corrupted: ArrayLike | None = None,
    image_shape: tuple[int, ...] | None = None,
    n_images: int = 10,
) -> Figure:
    """Draw original images above their reconstructions (and corrupted inputs).

    All rows share the colour scale of the originals (see
    :mod:`skconvae.plotting`), so a reconstruction's contrast is the one it has
    and not stretched to its own extremes.

    Parameters
    ----------
    originals : array-like
        Clean images, in any layout listed in :mod:`skconvae.plotting`.
    reconstructions : array-like
        The autoencoder's output for them, such as
        ``ae.inverse_transform(ae.transform(originals))``; same image shape.
    corrupted : array-like or None, default=None
        Noisy or masked inputs of a denoising autoencoder, drawn between the two.
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(height, width, channels)`` of flat rows.
    n_images : int, default=10
        Number of images drawn per row.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Rows labelled "original", "corrupted" (if given) and "reconstruction".

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from sklearn.datasets import load_digits
    >>> from skconvae import ConvAutoencoderTransformer
    >>> from skconvae.plotting import plot_reconstructions
    >>> X, _ = load_digits(return_X_y=True)
    >>> ae = ConvAutoencoderTransformer(filters=(4, 2), max_epochs=1, random_state=0)
    >>> ae.fit(X[:300]).image_shape_
    (1, 8, 8)
    >>> fig = plot_reconstructions(X, ae.inverse_transform(ae.transform(X[:8])), n_images=8)
    >>> [ax.get_ylabel() for ax in fig.axes[::8]]
    ['original', 'reconstruction']
    >>> plt.close(fig)
    """
    n_images = _check_count(n_images, "n_images")
    named = {"original": originals, "corrupted": corrupted, "reconstruction": reconstructions}
    drawable = {
        label: _as_row(images, image_shape, label).head(n_images)
        for label, images in named.items()
        if images is not None
    }
    reference = drawable["original"]
    for label, row in drawable.items():
        if row.data.shape[1:] != reference.data.shape[1:]:
            raise ValueError(
                f"{label} images have shape {row.data.shape[1:]}, but the originals have "
                f"{reference.data.shape[1:]}. Pass images of the same shape, such as "
                "ae.inverse_transform(ae.transform(originals))."
            )
    vmin, vmax = _default_limits(reference)
    return _draw_grid(list(drawable.values()), list(drawable), {}, vmin=vmin, vmax=vmax)


def plot_history(estimator: Any, *, ax: Axes | None = None) -> Figure:
    """Plot the training loss per epoch, and the validation loss when there is one.

    Parameters
    ----------
    estimator : ConvAutoencoderTransformer or skorch.NeuralNet
        A fitted skconvae estimator (its ``net_.history`` is read) or a skorch
        net (its ``history``). The validation loss is there when the net held out
        data, such as with ``early_stopping=True``; its best epoch is marked.
    ax : matplotlib Axes or None, default=None
        Axes to draw in; None makes a new figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure that holds the plot.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator (or net) has not been trained.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from sklearn.datasets import load_digits
    >>> from skconvae import ConvAutoencoderTransformer
    >>> from skconvae.plotting import plot_history
    >>> X, _ = load_digits(return_X_y=True)
    >>> ae = ConvAutoencoderTransformer(filters=(4, 2), max_epochs=2, early_stopping=True,
    ...                                 random_state=0).fit(X[:300])
    >>> fig = plot_history(ae)
    >>> [text.get_text() for text in fig.axes[0].get_legend().get_texts()][:2]
    ['train loss', 'valid loss']
    >>> plt.close(fig)
    """
    history = _training_history(estimator)
    epochs = np.array([row.get("epoch", i + 1) for i, row in enumerate(history)])
    if not all("train_loss" in row for row in history):
        raise ValueError(
            "The training history has no 'train_loss' in some epochs; plot_history "
            "expects the history skorch records when training a net."
        )
    train_loss = np.array([row["train_loss"] for row in history], dtype=float)

    fig, ax = _figure_and_axes(ax, figsize=(6.0, 4.0))
    ax.plot(epochs, train_loss, marker="o", markersize=3, label="train loss")
    if all("valid_loss" in row for row in history):
        valid_loss = np.array([row["valid_loss"] for row in history], dtype=float)
        ax.plot(epochs, valid_loss, marker="o", markersize=3, label="valid loss")
        if np.isfinite(valid_loss).any():
            best = int(np.nanargmin(valid_loss))
            ax.plot(
                epochs[best],
                valid_loss[best],
                linestyle="none",
                marker="*",
                markersize=14,
                color="C3",
                label=f"best valid loss (epoch {epochs[best]})",
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Training history")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def plot_latent(
    estimator: Any,
    X: ArrayLike,
    y: ArrayLike | None = None,
    *,
    ax: Axes | None = None,
) -> Figure:
    """Scatter the codes of ``X`` in two dimensions, coloured by ``y``.

    Codes with two features are drawn as they are; wider codes are projected on
    their first two principal components (``PCA(2)``), which the axis labels say,
    with the share of variance each explains.

    Parameters
    ----------
    estimator : fitted transformer
        A fitted :class:`~skconvae.ConvAutoencoderTransformer` (or any fitted
        transformer, a pipeline included); ``estimator.transform(X)`` gives the
        codes.
    X : array-like
        Samples to encode, in a layout the estimator accepts.
    y : array-like of shape (n_samples,) or None, default=None
        Labels that colour the points: a legend for up to 20 classes, else a
        colour bar. None: one colour.
    ax : matplotlib Axes or None, default=None
        Axes to draw in; None makes a new figure.

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure that holds the scatter plot.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from sklearn.datasets import load_digits
    >>> from skconvae import ConvAutoencoderTransformer
    >>> from skconvae.plotting import plot_latent
    >>> X, y = load_digits(return_X_y=True)
    >>> X, y = X[:300], y[:300]
    >>> ae = ConvAutoencoderTransformer(filters=(4, 2), max_epochs=1, random_state=0).fit(X)
    >>> fig = plot_latent(ae, X, y)
    >>> fig.axes[0].get_xlabel()[:11]
    'latent PC 1'
    >>> len(fig.axes[0].get_legend().get_texts())
    10
    >>> plt.close(fig)
    """
    codes = estimator.transform(X)
    columns = getattr(codes, "columns", None)
    codes = np.asarray(codes, dtype=float)
    if codes.ndim != 2 or codes.shape[1] < 2:
        raise ValueError(
            f"plot_latent needs codes with at least 2 features, but transform returned "
            f"shape {codes.shape}. Fit the estimator with a wider code (latent_dim >= 2)."
        )
    if codes.shape[1] == 2:
        points = codes
        xlabel, ylabel = (
            [str(c) for c in columns] if columns is not None else ["latent 1", "latent 2"]
        )
    else:
        pca = PCA(n_components=2, random_state=0)
        points = pca.fit_transform(codes)
        xlabel, ylabel = (
            f"latent PC {i + 1} ({share:.0%} of variance)"
            for i, share in enumerate(pca.explained_variance_ratio_)
        )

    fig, ax = _figure_and_axes(ax, figsize=(6.0, 5.0))
    size = 20.0 if len(points) <= 500 else 8.0
    if y is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, color="C0", alpha=0.7, linewidths=0)
    else:
        _scatter_by_label(fig, ax, points, y, size)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"Codes of {type(estimator).__name__}")
    return fig


def plot_samples(
    images: ArrayLike,
    *,
    image_shape: tuple[int, ...] | None = None,
    n_cols: int = 10,
    cmap: str | Colormap = "gray",
) -> Figure:
    """Draw images (such as generated samples) in a grid, ``n_cols`` per row.

    Every image is drawn, one axes each: slice the array to show fewer. The
    colour scale is shared by all images, as described in :mod:`skconvae.plotting`.

    Parameters
    ----------
    images : array-like
        Images in any layout listed in :mod:`skconvae.plotting`.
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(height, width, channels)`` of flat rows.
    n_cols : int, default=10
        Number of images per row of the grid.
    cmap : str or Colormap, default="gray"
        Colour map of grey images (``"gray_r"`` draws dark digits on white).

    Returns
    -------
    fig : matplotlib.figure.Figure
        The figure, one axes per image.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from sklearn.datasets import load_digits
    >>> from skconvae.plotting import plot_samples
    >>> X, _ = load_digits(return_X_y=True)
    >>> fig = plot_samples(X[:12], n_cols=5)
    >>> len(fig.axes)
    12
    >>> plt.close(fig)
    """
    n_cols = _check_count(n_cols, "n_cols")
    row = _as_row(images, image_shape, "images")
    vmin, vmax = _default_limits(row)
    chunks = [_Row(row.kind, row.data[i : i + n_cols]) for i in range(0, len(row), n_cols)]
    return _draw_grid(chunks, [None] * len(chunks), {}, cmap=cmap, vmin=vmin, vmax=vmax)


# -- image input -----------------------------------------------------------------------


def _split_rows(rows) -> tuple[list[Any], list[Any]]:
    if isinstance(rows, Mapping):
        labels, arrays = list(rows.keys()), list(rows.values())
    elif isinstance(rows, np.ndarray) or not isinstance(rows, Sequence) or isinstance(rows, str):
        raise TypeError(
            f"rows must be a dict of label -> images or a list of image arrays; got "
            f"{type(rows).__name__}. For a single row pass {{'label': images}} or [images]."
        )
    else:
        labels, arrays = [None] * len(rows), list(rows)
    if not arrays:
        raise ValueError("rows is empty; pass at least one row of images.")
    return labels, arrays


def _row_name(label, index: int) -> str:
    return f"row {label!r}" if label is not None else f"row {index}"


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def _check_image_shape(image_shape) -> tuple[int, ...]:
    try:
        shape = tuple(image_shape)
    except TypeError:
        shape = ()
    if len(shape) not in (2, 3) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in shape
    ):
        raise ValueError(
            "image_shape must be (height, width) or (height, width, channels) of positive "
            f"integers; got {image_shape!r}."
        )
    return tuple(int(v) for v in shape)


def _to_array(images, name: str) -> np.ndarray:
    try:
        array = np.asarray(images)
    except ValueError as exc:
        raise ValueError(
            f"{name} could not be read as an array of images ({exc}). Pass an array "
            "whose images all have the same shape."
        ) from exc
    if np.iscomplexobj(array):
        raise ValueError(f"{name} holds complex numbers; pass real values (such as np.abs).")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif not np.issubdtype(array.dtype, np.number):
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{name} must hold numbers, but its dtype is {array.dtype}; pass numeric images."
            ) from exc
    return array


def _as_row(images, image_shape, name: str) -> _Row:
    """Read one array of images in any accepted layout as a drawable row."""
    array = _to_array(images, name)
    shape = None if image_shape is None else _check_image_shape(image_shape)
    if array.ndim < 2 or array.ndim > 4:
        raise ValueError(
            f"{name} is a {array.ndim}-D array of shape {array.shape}; pass flat rows "
            "(n, n_features), grey images (n, height, width) or images with channels "
            "(n, height, width, channels). For one flat image use image.reshape(1, -1)."
        )
    if len(array) == 0:
        raise ValueError(f"{name} holds no images.")

    if array.ndim == 2:
        return _fold_flat(array, shape, name)
    if array.ndim == 3:
        _check_shape_matches(shape, (*array.shape[1:], 1), name)
        return _Row("grey", array)
    return _image_row(_channels_last(array, shape, name))


def _fold_flat(array: np.ndarray, shape, name: str) -> _Row:
    # The estimators' rule: a square number of features is a grey image, any other
    # count a 1-D signal, unless image_shape says how rows fold.
    layout = infer_layout(array.shape[1:], shape, "auto", data=name)
    if shape is None and layout.height != layout.width:  # not square: (1, n_features)
        return _Row("signal", array)
    return _image_row(array.reshape(len(array), layout.height, layout.width, layout.channels))


def _channels_last(array: np.ndarray, shape, name: str) -> np.ndarray:
    """Return 4-D images as (N, H, W, C), reading NCHW when the last axis cannot be channels."""
    candidates = []
    if array.shape[3] in _COLOUR_CHANNELS:
        candidates.append(array)
    if array.shape[1] in _COLOUR_CHANNELS:
        candidates.append(array.transpose(0, 2, 3, 1))
    if not candidates:
        raise ValueError(
            f"{name} has shape {array.shape}, but 4-D images need 1, 3 or 4 channels on "
            "the last axis (n, height, width, channels) or on axis 1 "
            "(n, channels, height, width)."
        )
    if shape is not None:
        for candidate in candidates:
            if _shape_matches(shape, candidate.shape[1:]):
                return candidate
        _check_shape_matches(shape, candidates[0].shape[1:], name)  # raises: none matched
    return candidates[0]


def _shape_matches(shape, hwc: tuple[int, ...]) -> bool:
    return tuple(shape) == tuple(hwc) or (hwc[2] == 1 and tuple(shape) == tuple(hwc[:2]))


def _check_shape_matches(shape, hwc: tuple[int, ...], name: str) -> None:
    if shape is not None and not _shape_matches(shape, hwc):
        raise ValueError(
            f"image_shape={shape} does not match the images of {name}, whose (height, "
            f"width, channels) is {tuple(hwc)}. Pass image_shape=None for 3-D and 4-D "
            "arrays: their shape is read from the array."
        )


def _image_row(images: np.ndarray) -> _Row:
    channels = images.shape[3]
    if channels == 1:
        return _Row("grey", images[..., 0])
    if channels not in _COLOUR_CHANNELS:
        raise ValueError(
            f"Images with {channels} channels cannot be drawn; pass 1 (grey), 3 (RGB) or "
            "4 (RGBA) channels."
        )
    return _Row("colour", images)


def _default_limits(row: _Row) -> tuple[float, float]:
    """The colour scale of a row when no vmin/vmax is given (see the module docstring)."""
    finite = row.data[np.isfinite(row.data)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if row.kind == "colour":
        if np.issubdtype(row.data.dtype, np.integer) and low >= 0 and high <= 255:
            return 0.0, 255.0
        if low >= 0 and high <= 1:
            return 0.0, 1.0
    return low, high


# -- drawing -----------------------------------------------------------------------------


def _grid_titles(titles, labels, rows: list[_Row], by_key: bool) -> dict[tuple[int, int], str]:
    """Map ``(row, column)`` of the grid to the title drawn above that image."""
    if titles is None:
        return {}
    if isinstance(titles, Mapping):
        if not by_key:
            raise TypeError("titles is a dict, so rows must be a dict with the same keys.")
        unknown = [key for key in titles if key not in labels]
        if unknown:
            raise ValueError(f"titles has keys {unknown} that rows does not have.")
        per_row = [titles.get(label) for label in labels]
    else:
        titles = list(titles)
        nested = bool(titles) and all(
            isinstance(t, (Sequence, np.ndarray)) and not isinstance(t, str) for t in titles
        )
        if not nested:
            n_cols = max(len(row) for row in rows)
            if len(titles) < n_cols:
                raise ValueError(
                    f"titles has {len(titles)} entries, but the grid has {n_cols} columns; "
                    "pass one title per column."
                )
            # Each column's title goes above its top-most image.
            return {
                (next(r for r, row in enumerate(rows) if len(row) > c), c): str(titles[c])
                for c in range(n_cols)
            }
        if len(titles) != len(rows):
            raise ValueError(
                f"titles holds {len(titles)} sequences, but there are {len(rows)} rows; "
                "pass one sequence of titles per row, or one flat sequence for the columns."
            )
        per_row = titles
    positions = {}
    for r, (row_titles, row) in enumerate(zip(per_row, rows, strict=True)):
        if row_titles is None:
            continue
        if len(row_titles) < len(row):
            raise ValueError(
                f"titles for {_row_name(labels[r], r)} has {len(row_titles)} entries, but "
                f"{len(row)} images are drawn; pass one title per image."
            )
        positions.update({(r, c): str(row_titles[c]) for c in range(len(row))})
    return positions


def _draw_grid(
    rows: list[_Row],
    labels: list[Any],
    titles: dict[tuple[int, int], str],
    *,
    cmap: str | Colormap = "gray",
    vmin: float | None,
    vmax: float | None,
) -> Figure:
    n_cols = max(len(row) for row in rows)
    cell_width = max(_cell_width(row) for row in rows)
    label_width = max(
        (0.3 + 0.08 * len(str(label)) for label in labels if label is not None), default=0
    )
    title_height = 0.25 if titles else 0.0
    fig = plt.figure(
        figsize=(n_cols * cell_width + label_width, len(rows) * (1.0 + title_height)),
        layout="constrained",
    )
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.02, hspace=0.02)
    grid = fig.add_gridspec(len(rows), n_cols)
    for r, (row, label) in enumerate(zip(rows, labels, strict=True)):
        default_low, default_high = _default_limits(row)
        low = default_low if vmin is None else vmin
        high = default_high if vmax is None else vmax
        for c in range(len(row)):
            ax = fig.add_subplot(grid[r, c])
            _draw_one(ax, row.kind, row.data[c], cmap, low, high)
            if (r, c) in titles:
                ax.set_title(titles[r, c], fontsize="small")
        if label is not None:
            fig.axes[-len(row)].set_ylabel(str(label), rotation=0, ha="right", va="center")
    return fig


def _cell_width(row: _Row) -> float:
    if row.kind == "signal":
        return 2.0
    height, width = row.data.shape[1:3]
    return float(np.clip(width / height, 0.5, 3.0))


def _draw_one(ax: Axes, kind: str, image: np.ndarray, cmap, low: float, high: float) -> None:
    if kind == "signal":
        ax.plot(np.arange(len(image)), image, linewidth=1.0, color="C0")
        margin = 0.05 * (high - low) or 0.5
        ax.set_ylim(low - margin, high + margin)
        ax.set_xlim(0, max(len(image) - 1, 1))
    elif kind == "grey":
        ax.imshow(image, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
    else:
        span = (high - low) or 1.0
        colours = np.clip((np.asarray(image, dtype=np.float32) - low) / span, 0.0, 1.0)
        ax.imshow(np.nan_to_num(colours), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if kind != "signal":
        for spine in ax.spines.values():
            spine.set_visible(False)


def _training_history(estimator):
    """The skorch history of a fitted skconvae estimator or of a skorch net."""
    if hasattr(estimator, "net_"):
        net = estimator.net_
    elif hasattr(estimator, "history"):
        net = estimator
    elif isinstance(estimator, BaseEstimator):
        check_is_fitted(estimator)  # NotFittedError for an unfitted estimator
        raise TypeError(
            f"plot_history needs a skconvae estimator or a skorch net, but "
            f"{type(estimator).__name__} has no training history (no net_ or history)."
        )
    else:
        raise TypeError(
            "plot_history needs a fitted skconvae estimator or a skorch net; got "
            f"{type(estimator).__name__}."
        )
    history = getattr(net, "history", None)
    if history is None or len(history) == 0:
        raise NotFittedError(
            f"This {type(estimator).__name__} has not been trained yet: its training history "
            "is empty. Call fit before plot_history."
        )
    return history


def _figure_and_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure.figure, ax  # the root figure, also for axes in a subfigure


def _scatter_by_label(fig: Figure, ax: Axes, points: np.ndarray, y, size: float) -> None:
    name = getattr(y, "name", None) or "label"
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != len(points):
        raise ValueError(
            f"y must hold one label per sample of X: {len(points)} labels, 1-D; got shape "
            f"{labels.shape}."
        )
    classes, index = np.unique(labels, return_inverse=True)
    if len(classes) <= _MAX_LEGEND_CLASSES:
        palette = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"].colors
        colours = np.asarray(palette)[index]
        ax.scatter(points[:, 0], points[:, 1], s=size, c=colours, alpha=0.8, linewidths=0)
        handles = [
            Line2D([], [], linestyle="none", marker="o", color=palette[i], label=str(cls))
            for i, cls in enumerate(classes)
        ]
        ax.legend(
            handles=handles,
            title=str(name),
            loc="center left",
            bbox_to_anchor=(1.01, 0.5),
            frameon=False,
        )
        return
    numeric = np.issubdtype(labels.dtype, np.number)
    values = labels if numeric else index
    scatter = ax.scatter(
        points[:, 0], points[:, 1], s=size, c=values, cmap="viridis", alpha=0.8, linewidths=0
    )
    fig.colorbar(scatter, ax=ax, label=str(name) if numeric else f"{name} (class index)")
