"""Per-channel affine scaling of the data to the network's units, learned at ``fit``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scaling:
    """Affine map ``x * scale + shift`` per channel, and what it implies downstream.

    Attributes
    ----------
    shift, scale : ndarray of shape (channels,)
    activation : {"sigmoid", "tanh", "identity"}
        Output activation matching the scaled range.
    bounds : tuple of float
        Range of the training data in the network's units.
    """

    shift: np.ndarray
    scale: np.ndarray
    activation: str
    bounds: tuple[float, float]


def channel_extremes(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel minimum and maximum of ``(N, C, H, W)`` images, as float64."""
    axes = (0, 2, 3)
    return images.min(axis=axes).astype(np.float64), images.max(axis=axes).astype(np.float64)


def channel_means(images: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Per-channel mean of ``(N, C, H, W)`` images, in float64, batch by batch."""
    total = np.zeros(images.shape[1])
    for start in range(0, len(images), batch_size):
        total += images[start : start + batch_size].sum(axis=(0, 2, 3), dtype=np.float64)
    return total / (len(images) * images.shape[2] * images.shape[3])


def output_bias_for(scaling: Scaling, data_mean: np.ndarray) -> list[float]:
    """Pre-activation output bias that makes a blank code decode to the data's mean."""
    mean = data_mean * scaling.scale + scaling.shift
    if scaling.activation == "sigmoid":
        mean = np.clip(mean, 1e-3, 1 - 1e-3)
        return np.log(mean / (1 - mean)).tolist()
    if scaling.activation == "tanh":
        return np.arctanh(np.clip(mean, -0.999, 0.999)).tolist()
    return mean.tolist()


def fit_scaling(data_min: np.ndarray, data_max: np.ndarray, scaling: str | None, loss: str):
    """Scaling for ``scaling`` in {"minmax", "symmetric", None} and a loss.

    Raises a ValueError for combinations that cannot train: binary cross-entropy
    needs targets in [0, 1].
    """
    if scaling is None:
        if loss == "bce" and (data_min.min() < 0 or data_max.max() > 1):
            raise ValueError(
                f"loss='bce' needs data in [0, 1], but X spans [{data_min.min():g}, "
                f"{data_max.max():g}] and scaling=None. Use scaling='minmax' or loss='mse'."
            )
        ones = np.ones_like(data_min)
        bounds = (float(data_min.min()), float(data_max.max()))
        return Scaling(0 * ones, ones, "sigmoid" if loss == "bce" else "identity", bounds)
    if scaling == "symmetric" and loss == "bce":
        raise ValueError(
            "loss='bce' needs targets in [0, 1], but scaling='symmetric' maps the data "
            "to [-1, 1]. Use scaling='minmax' with loss='bce', or loss='mse'."
        )
    span = data_max - data_min
    span[span == 0] = 1.0
    if scaling == "minmax":
        scale = 1.0 / span
        return Scaling(-data_min * scale, scale, "sigmoid", (0.0, 1.0))
    scale = 2.0 / span
    return Scaling(-data_min * scale - 1.0, scale, "tanh", (-1.0, 1.0))


class ChannelStats:
    """Per-channel minimum, maximum and mean of images seen block by block.

    The streaming form of :func:`channel_extremes` and :func:`channel_means`:
    blocks of up to 4096 images give the same float64 sums as ``channel_means``.
    """

    def __init__(self):
        self.min = self.max = self.total = None
        self.count = 0

    @classmethod
    def of(cls, images: np.ndarray) -> ChannelStats:
        """The statistics of in-memory images, in one call."""
        stats = cls()
        stats.min, stats.max = channel_extremes(images)
        stats.total, stats.count = channel_means(images), 1
        return stats

    def update(self, images: np.ndarray) -> None:
        """Add a block of ``(n, C, H, W)`` images."""
        if not len(images):
            return
        low, high = channel_extremes(images)
        block_sum = images.sum(axis=(0, 2, 3), dtype=np.float64)
        if self.min is None:
            self.min, self.max, self.total = low, high, np.zeros(images.shape[1])
        else:
            self.min, self.max = np.minimum(self.min, low), np.maximum(self.max, high)
        self.total += block_sum
        self.count += images.shape[0] * images.shape[2] * images.shape[3]

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count


# Integer dtypes whose full range is the natural scale of image data (8- and 16-bit).
_IMAGE_INTEGER_KINDS = ("u", "i")


def incremental_range(
    dtype: np.dtype, data_min: np.ndarray, data_max: np.ndarray, data_range=None
) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel range that scaling maps from when data arrives in chunks.

    ``data_range=(low, high)`` when given; else the full range of 8- and 16-bit
    integer dtypes (0..255 for uint8), which any later chunk respects; else the
    first chunk's own per-channel extremes.
    """
    if data_range is not None:
        return _full(data_min, data_range[0]), _full(data_min, data_range[1])
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return _full(data_min, 0.0), _full(data_min, 1.0)
    if dtype.kind in _IMAGE_INTEGER_KINDS and dtype.itemsize <= 2:
        info = np.iinfo(dtype)
        return _full(data_min, info.min), _full(data_min, info.max)
    return data_min, data_max


def _full(like: np.ndarray, value) -> np.ndarray:
    return np.full(like.shape, float(value))


def check_data_range(data_range) -> tuple[float, float] | None:
    """Return ``data_range`` as ``(low, high)`` floats, or raise a ValueError."""
    if data_range is None:
        return None
    try:
        low, high = (float(v) for v in data_range)
        valid = np.isfinite([low, high]).all() and low < high
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            "data_range must be None or (low, high) with finite low < high, the range of "
            f"values the data can take (such as (0, 255) or (0.0, 1.0)); got {data_range!r}."
        )
    return low, high


def out_of_range_message(what: str, low, high, data_min, data_max, fix: str) -> str | None:
    """A warning text if ``[data_min, data_max]`` leaves ``[low, high]`` in any channel.

    ``fix`` is the sentence that tells the user how to avoid the clipping.
    """
    if np.all(data_min >= low) and np.all(data_max <= high):
        return None
    return (
        f"{what} spans [{np.min(data_min):g}, {np.max(data_max):g}], outside the range "
        f"[{np.min(low):g}, {np.max(high):g}] the model's scaling was set up with (by fit "
        "or the first partial_fit call); values outside it are clipped to it for "
        f"training. {fix}"
    )
