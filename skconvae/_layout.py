"""How a row of features folds into an image, and back.

This module knows only NumPy: it infers the image layout from the data at ``fit``,
checks later inputs against it, and converts between the user's layout and the
``(n_samples, channels, height, width)`` layout the network trains on.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageLayout:
    """Image geometry and the array layout the training data arrived in.

    Parameters
    ----------
    channels, height, width : int
        Geometry of one image. A 1-D signal has ``height == 1``.
    input_ndim : {2, 3, 4}
        Dimensions of the training array: flat rows, ``(N, H, W)`` or 4-D images.
    channels_last : bool
        Whether channels vary fastest, both in a flat row (``H, W, C`` order, as
        produced by ``images.reshape(n, -1)`` on ``(N, H, W, C)``) and in 4-D input.
    """

    channels: int
    height: int
    width: int
    input_ndim: int
    channels_last: bool

    @property
    def n_features(self) -> int:
        return self.channels * self.height * self.width

    @property
    def chw(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def is_signal(self) -> bool:
        """True for 1-D data (height 1), trained with 1-D convolutions."""
        return self.height == 1

    def accepted_sample_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample shapes of N-D input whose flattening matches this layout."""
        c, h, w = self.chw
        shapes = []
        if c == 1:
            shapes.append((h, w))
        if self.channels_last or c == 1:
            shapes.append((h, w, c))
        if not self.channels_last or c == 1:
            shapes.append((c, h, w))
        return shapes

    def resized(self, sample_shape: tuple[int, ...]) -> ImageLayout | None:
        """This layout for N-D samples of another height and width.

        None when ``sample_shape`` cannot be such a sample: flat rows, another
        number of dimensions, or other channels.
        """
        if self.input_ndim == 2 or len(sample_shape) + 1 != self.input_ndim:
            return None
        if self.input_ndim == 3:
            (height, width), channels = sample_shape, 1
        elif self.channels_last:
            height, width, channels = sample_shape
        else:
            channels, height, width = sample_shape
        if channels != self.channels:
            return None
        return dataclasses.replace(self, height=height, width=width)

    def to_nchw(self, flat: np.ndarray) -> np.ndarray:
        """View flat rows ``(N, n_features)`` as ``(N, C, H, W)`` without copying."""
        n = flat.shape[0]
        c, h, w = self.chw
        if self.channels_last:
            return flat.reshape(n, h, w, c).transpose(0, 3, 1, 2)
        return flat.reshape(n, c, h, w)

    def from_nchw(self, images: np.ndarray) -> np.ndarray:
        """Return ``(N, C, H, W)`` images in the layout of the training data."""
        n = images.shape[0]
        if self.channels_last:
            images = images.transpose(0, 2, 3, 1)
        if self.input_ndim == 2:
            return np.ascontiguousarray(images).reshape(n, -1)
        if self.input_ndim == 3:
            return np.ascontiguousarray(images).reshape(n, self.height, self.width)
        return np.ascontiguousarray(images)


def infer_layout(
    sample_shape: tuple[int, ...],
    image_shape: tuple[int, ...] | None,
    channels: str,
    name: str = "image_shape",
    data: str = "X",
) -> ImageLayout:
    """Infer the image layout from the per-sample shape of the training data.

    Parameters
    ----------
    sample_shape : tuple of int
        ``X.shape[1:]`` of the training data before flattening.
    image_shape : tuple of int or None
        The user's ``image_shape`` parameter.
    channels : {"auto", "last", "first"}
        The user's ``channels`` parameter, used for 4-D input.
    name, data : str
        How error messages call the shape parameter and the data.

    Returns
    -------
    layout : ImageLayout
    """
    if image_shape is not None:
        image_shape = _check_image_shape(image_shape, name)
    input_ndim = len(sample_shape) + 1

    if input_ndim == 2:
        (n_features,) = sample_shape
        if image_shape is None:
            side = math.isqrt(n_features)
            if side * side == n_features:
                return ImageLayout(1, side, side, 2, True)
            return ImageLayout(1, 1, n_features, 2, True)
        h, w, c = (*image_shape, 1)[:3]
        if h * w * c != n_features:
            raise ValueError(
                f"{name}={image_shape} holds {h * w * c} values per image, but {data} has "
                f"{n_features} features. Pass a {name} whose product is "
                f"{n_features}, such as (height, width) or (height, width, channels) "
                "in the order of images.reshape(n_samples, -1)."
            )
        return ImageLayout(c, h, w, 2, True)

    if input_ndim == 3:
        h, w = sample_shape
        layout = ImageLayout(1, h, w, 3, True)
    else:
        layout = _layout_4d(sample_shape, channels)
    if image_shape is not None:
        hwc = (layout.height, layout.width, layout.channels)
        if image_shape not in (hwc, hwc[:2] if layout.channels == 1 else hwc):
            raise ValueError(
                f"{name}={image_shape} does not match the images passed, whose "
                f"(height, width, channels) is {hwc}. Pass {name}=None for 3-D "
                "and 4-D input: the shape is read from the array."
            )
    return layout


def _layout_4d(sample_shape: tuple[int, ...], channels: str) -> ImageLayout:
    a, b, c = sample_shape
    if channels == "auto":
        # The smaller of axis 1 and axis 3 holds the channels; a tie means
        # channels-last, the layout of PIL, imageio, scikit-image and Keras.
        channels = "first" if a < c else "last"
    if channels == "last":
        return ImageLayout(c, a, b, 4, True)
    return ImageLayout(a, b, c, 4, False)


def _check_image_shape(image_shape, name: str = "image_shape") -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in image_shape)
        valid = (
            len(shape) in (2, 3)
            and all(s == v for s, v in zip(shape, image_shape, strict=True))
            and all(s >= 1 for s in shape)
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            f"{name} must be None, (height, width) or (height, width, channels) "
            f"with positive integers; got {image_shape!r}."
        )
    return shape


def flatten_samples(X):
    """Return ``(X_2d, sample_shape)``: N-D arrays viewed as flat rows.

    Anything that is not an N-D array (DataFrames, lists, sparse matrices) passes
    through untouched for scikit-learn's validation to judge; ``sample_shape`` is
    then None.
    """
    if hasattr(X, "iloc"):
        _check_numeric_columns(X)
        return X, None
    if hasattr(X, "tocsr") or hasattr(X, "to_dense"):
        return X, None
    if not hasattr(X, "shape"):
        X = np.asarray(X)
    if X.ndim == 1 or X.ndim > 4:
        raise ValueError(
            f"Expected a 2-D array (n_samples, n_features), 3-D images (n_samples, "
            f"height, width) or 4-D images with channels; got an array of shape "
            f"{X.shape}. Reshape your data: X.reshape(1, -1) for a single sample, "
            "X.reshape(-1, 1) for a single feature."
        )
    if X.ndim <= 2:
        return X, None
    return X.reshape(X.shape[0], -1), tuple(X.shape[1:])


def _check_numeric_columns(df) -> None:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    bad = [
        name
        for name, dtype in df.dtypes.items()
        if not (is_numeric_dtype(dtype) or is_bool_dtype(dtype))
    ]
    if bad:
        shown = ", ".join(repr(name) for name in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise ValueError(
            f"X has {len(bad)} non-numeric column(s): {shown}. An autoencoder needs "
            "pixel values: drop or encode these columns, e.g. with df.select_dtypes('number')."
        )


def check_sample_shape(layout: ImageLayout, sample_shape: tuple[int, ...] | None) -> None:
    """Raise a ValueError if N-D input does not match the fitted images."""
    if sample_shape is None:
        return
    accepted = layout.accepted_sample_shapes()
    if sample_shape not in accepted:
        raise ValueError(
            f"X holds samples of shape {sample_shape}, but this autoencoder was fitted on "
            f"images that arrive as per-sample shapes {accepted} or as flat rows of "
            f"{layout.n_features} features. Pass images of the fitted size and layout."
        )


def infer_target_layout(
    input_layout: ImageLayout,
    sample_shape: tuple[int, ...],
    target_shape: tuple[int, ...] | None,
    channels: str,
) -> tuple[ImageLayout, int]:
    """Layout of target images and their integer upscaling factor over the inputs.

    Flat targets fold with ``target_shape`` when given; else into images with the
    inputs' channels, each side an integer multiple of the inputs' (the smallest
    factor that fits); else into square grey images.

    Returns
    -------
    layout : ImageLayout
    scale : int
    """
    if len(sample_shape) == 1 and target_shape is None:
        (n_features,) = sample_shape
        c, h, w = input_layout.chw
        factor = 1
        while factor * factor * c * h * w < n_features:
            factor += 1
        if input_layout.is_signal:
            factor = n_features // (c * w) if n_features % (c * w) == 0 else 0
            layout = ImageLayout(c, 1, factor * w, 2, input_layout.channels_last)
        else:
            layout = ImageLayout(c, factor * h, factor * w, 2, input_layout.channels_last)
        if layout.n_features != n_features:
            layout = infer_layout(sample_shape, None, channels, "target_shape", "y")
    else:
        layout = infer_layout(sample_shape, target_shape, channels, "target_shape", "y")
    c, h, w = input_layout.chw
    scale = layout.width // w
    if layout.height != scale * h or layout.width != scale * w or scale < 1:
        raise ValueError(
            f"Target images of (height, width) {(layout.height, layout.width)} are not an "
            f"integer multiple of the input images' {(h, w)}. Pass targets of the same size "
            "as the inputs, or larger by an integer factor, and target_shape for flat targets "
            "that do not fold on their own."
        )
    return layout, scale
