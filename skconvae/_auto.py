"""The ``"auto"`` rules of ConvAutoencoderTransformer: hyperparameters from the data's shape.

Like scikit-learn's ``"auto"`` parameters, each rule reads only what ``fit`` sees
(image size, channels, number of samples) and the estimator's other parameters;
the resolved values become fitted attributes and the user's parameters stay as
they were. The rules were chosen by ``benchmarks/bench_defaults.py`` on MNIST and
scikit-learn's 8x8 digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The classic network: Conv(16)-MaxPool-Conv(8) / Conv(8)-Upsample-Conv(C), conv code.
CLASSIC_FILTERS = (16, 8)

# Width of the first stage of the default network; each further stage doubles it.
AUTO_BASE_WIDTH = 16
# One extra pooling stage each time the smaller image side doubles beyond this.
AUTO_STAGE_SIDE = 28
AUTO_MAX_STAGES = 5

# Features of the default dense code, and the share of the input's values it may
# reach on tiny inputs.
AUTO_LATENT_DIM = 32
AUTO_LATENT_SHARE = 0.5

# Optimizer steps the default training aims for, and the bounds on its epochs.
AUTO_STEPS = 2000
AUTO_MIN_EPOCHS = 10
AUTO_MAX_EPOCHS = 100

# Warped training inputs by default for 2-D images whose smaller side has at least
# this many pixels: a warp of a smaller image blurs away much of what it holds.
AUTO_WARP_MIN_SIDE = 16


@dataclass(frozen=True)
class Resolved:
    """Values of the ``"auto"`` parameters for one fit."""

    filters: tuple[int, ...]
    decoder_filters: tuple[int, ...] | None
    latent_dim: int | None
    loss: str
    max_epochs: int
    warp: str | None
    warp_epochs: int
    batch_norm: bool
    standardize_code: bool


def auto_filters(spatial_size: tuple[int, ...]) -> tuple[int, ...]:
    """Widths ``(16, 32, ...)``: two stages, one more per doubling of the side beyond 28."""
    side = min(spatial_size)
    extra = max(0, math.floor(math.log2(side / AUTO_STAGE_SIDE))) if side > 0 else 0
    n_stages = min(2 + extra, AUTO_MAX_STAGES)
    return tuple(AUTO_BASE_WIDTH * 2**i for i in range(n_stages))


def auto_latent_dim(n_values: int) -> int:
    """32 features, or half the values of one sample when that is fewer (at least 1)."""
    return max(1, min(AUTO_LATENT_DIM, math.floor(AUTO_LATENT_SHARE * n_values)))


def auto_max_epochs(n_samples: int, batch_size: int) -> int:
    """About 2000 optimizer steps, within 10 to 100 epochs."""
    steps_per_epoch = math.ceil(n_samples / batch_size)
    return min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, math.ceil(AUTO_STEPS / steps_per_epoch)))


def auto_loss(scaling: str | None) -> str:
    """Binary cross-entropy on data scaled to [0, 1], else the mean squared error."""
    return "bce" if scaling == "minmax" else "mse"


def auto_warp(spatial_size: tuple[int, ...], noise: str | None) -> str | None:
    """``"affine"`` for 2-D images of at least 16 pixels a side without ``noise``, else None.

    Denoising (``noise``) must reconstruct each image where it is, not undo a warp.
    """
    two_d = len(spatial_size) == 2
    big = two_d and min(spatial_size) >= AUTO_WARP_MIN_SIDE
    return "affine" if big and noise is None else None


def resolve(estimator, spatial_size: tuple[int, ...], n_values: int, n_samples: int) -> Resolved:
    """Resolve the ``"auto"`` parameters of ``estimator`` for images of ``spatial_size``
    with ``n_values`` values each (pixels x channels), ``n_samples`` of them."""
    classic = estimator.architecture == "classic"
    filters = estimator.filters
    if isinstance(filters, str):  # "auto"
        filters = CLASSIC_FILTERS if classic else auto_filters(spatial_size)
    latent_dim = estimator.latent_dim
    if isinstance(latent_dim, str):  # "auto"
        latent_dim = None if classic else auto_latent_dim(n_values)
    loss = auto_loss(estimator.scaling) if estimator.loss == "auto" else estimator.loss
    max_epochs = estimator.max_epochs
    if isinstance(max_epochs, str):  # "auto"
        max_epochs = auto_max_epochs(n_samples, estimator.batch_size)
    warp = estimator.warp
    if warp == "auto":
        warp = None if classic else auto_warp(spatial_size, estimator.noise)
    warp_epochs = max(1, math.floor(estimator.warp_fraction * max_epochs))
    filters = tuple(filters)
    return Resolved(
        filters=filters,
        decoder_filters=None if classic else tuple(reversed(filters[:-1])),
        latent_dim=latent_dim,
        loss=loss,
        max_epochs=max_epochs,
        warp=warp,
        warp_epochs=warp_epochs,
        batch_norm=not classic,
        standardize_code=not classic and not estimator.variational,
    )
