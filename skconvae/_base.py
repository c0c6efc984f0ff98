"""What the skconvae estimators share: training parameters, their checks, the skorch setup."""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch.callbacks import Callback, EarlyStopping, LRScheduler, ProgressBar
from skorch.utils import noop

from ._data import HoldoutSplit
from ._distributed import prints_progress
from ._layout import ImageLayout, check_sample_shape, flatten_samples

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}

# Constraints of the parameters every skconvae estimator has.
SHARED_CONSTRAINTS: dict = {
    "image_shape": [None, tuple, list],
    "channels": [StrOptions({"auto", "last", "first"})],
    "filters": [tuple, list],
    "kernel_size": [Interval(Integral, 1, None, closed="left")],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "optimizer": [StrOptions(set(OPTIMIZERS)), type],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "device": [str],
    "precision": [StrOptions({"float32", "bfloat16"})],
    "compile": ["boolean"],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "callbacks": [None, list],
    "warm_start": ["boolean"],
    "distributed": ["boolean", StrOptions({"auto"})],
}


def check_filters(filters) -> tuple[int, ...]:
    """Return ``filters`` as a tuple of positive ints, or raise a ValueError."""
    values = tuple(filters)
    if not values or not all(isinstance(f, Integral) and f >= 1 for f in values):
        raise ValueError(
            f"filters must be a non-empty sequence of positive integers, such as (16, 8); "
            f"got {filters!r}."
        )
    return tuple(int(f) for f in values)


def _check_optimizer_and_callbacks(estimator) -> None:
    optimizer = estimator.optimizer
    if not isinstance(optimizer, str) and not issubclass(optimizer, torch.optim.Optimizer):
        raise ValueError(
            f"optimizer must be one of {sorted(OPTIMIZERS)} or a torch.optim.Optimizer "
            f"subclass such as torch.optim.Adagrad; got {optimizer!r}."
        )
    for entry in estimator.callbacks or []:
        callback = entry[1] if isinstance(entry, tuple) and len(entry) == 2 else entry
        if not isinstance(callback, Callback):
            raise ValueError(
                "callbacks must be a list of skorch callbacks or (name, callback) pairs, "
                f"such as [('lr', skorch.callbacks.LRScheduler(...))]; got {entry!r}."
            )


def skorch_training_kwargs(
    estimator, device: str, seed: int, max_epochs: int | None = None
) -> dict:
    """Keyword arguments of the skorch net that follow from the shared parameters.

    ``max_epochs`` replaces the estimator's own (an ``"auto"`` one resolved; by
    default the fitted ``max_epochs_`` where there is one). An
    estimator with ``lr_schedule="cosine"`` gets a cosine annealing of the learning
    rate over ``max_epochs`` epochs, unless ``callbacks`` hold an ``LRScheduler`` of
    their own.
    """
    _check_optimizer_and_callbacks(estimator)
    if max_epochs is None:
        max_epochs = getattr(estimator, "max_epochs_", estimator.max_epochs)
    verbose = int(estimator.verbose) if prints_progress(estimator.distributed) else 0
    callbacks = []
    if estimator.early_stopping:
        stopper = EarlyStopping(
            patience=estimator.n_iter_no_change,
            load_best=True,
            sink=print if verbose else noop,
        )
        callbacks.append(("early_stopping", stopper))
    if verbose:
        callbacks.append(("progress_bar", ProgressBar()))
    own_schedule = any(
        isinstance(entry[1] if isinstance(entry, tuple) else entry, LRScheduler)
        for entry in estimator.callbacks or []
    )
    if getattr(estimator, "lr_schedule", "constant") == "cosine" and not own_schedule:
        # Estimators may end the cosine above zero (the regressor's _LR_FLOOR = 0.01).
        floor = estimator.lr * getattr(estimator, "_LR_FLOOR", 0.0)
        schedule = LRScheduler(policy="CosineAnnealingLR", T_max=max_epochs, eta_min=floor)
        callbacks.append(("lr_schedule", schedule))
    callbacks += copy.deepcopy(estimator.callbacks or [])
    split = HoldoutSplit(estimator.validation_fraction, seed) if estimator.early_stopping else None
    return {
        "optimizer": OPTIMIZERS.get(estimator.optimizer, estimator.optimizer),
        "lr": estimator.lr,
        "max_epochs": max_epochs,
        "batch_size": estimator.batch_size,
        "train_split": split,
        "callbacks": callbacks,
        "device": device,
        "verbose": verbose,
        "seed": seed,
        "precision": estimator.precision,
        "compile": estimator.compile,
        "distributed": estimator.distributed,
    }


def continue_training(net, estimator, seed: int, max_epochs: int | None = None):
    """A copy of a fitted skorch net that trains on under the estimator's current
    training parameters (``warm_start``).

    Weights, scaling and history carry over, and so does the optimizer's state
    unless ``optimizer`` changed; ``lr``, ``max_epochs``, ``batch_size``,
    ``callbacks``, early stopping and ``verbose`` follow ``set_params``. The net
    stays on the device it was fitted on.
    """
    net = copy.deepcopy(net)
    kwargs = skorch_training_kwargs(estimator, net.device, seed, max_epochs)
    optimizer, lr = kwargs.pop("optimizer"), kwargs.pop("lr")
    names = ("max_epochs", "batch_size", "train_split", "verbose", "seed", "precision")
    for name in (*names, "distributed"):
        setattr(net, name, kwargs[name])
    net.callbacks = kwargs["callbacks"]
    net.initialize_callbacks()
    if optimizer is not net.optimizer:
        net.optimizer, net.lr = optimizer, lr
        net.initialize_optimizer()
    else:
        net.set_params(lr=lr)  # in the optimizer's parameter groups, keeping its state
    return net


def network_input_size(layout: ImageLayout) -> tuple[int, ...]:
    """Spatial size the torch module sees: ``(length,)`` for signals, else ``(H, W)``."""
    return (layout.width,) if layout.is_signal else (layout.height, layout.width)


def validate_images(estimator, X, layout: ImageLayout) -> np.ndarray:
    """Check X against a fitted layout and return ``(N, C, H, W)`` images."""
    check_is_fitted(estimator)
    flat, sample_shape = flatten_samples(X)
    check_sample_shape(layout, sample_shape)
    flat = validate_data(estimator, flat, reset=False, dtype="numeric")
    return layout.to_nchw(flat)
