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
