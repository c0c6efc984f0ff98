"""``partial_fit``: training on data that arrives in chunks, for both estimators.

Like scikit-learn's incremental estimators (``IncrementalPCA``, ``MiniBatchKMeans``),
the first call sets everything up from its chunk (image layout, scaling, network)
and trains one pass over it; every later call checks its chunk against the fitted
layout (the same errors as ``transform``) and trains one more pass, keeping the
optimizer's state. A call that fails leaves the estimator, network weights,
optimizer state and history exactly as they were.

Scaling under chunks: the first chunk cannot show the range of all the data, so
the range that scaling maps from is ``data_range=(low, high)`` when the estimator
has one and it is set; else the full range of 8- and 16-bit integer dtypes (0..255
for uint8); else the first chunk's per-channel minimum and maximum. Values of later
chunks outside that range are clipped to it, with a ``UserWarning`` that says how
to avoid it.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import warnings

import torch

from ._distributed import from_first_process, prints_progress
from ._scaling import out_of_range_message
from ._utils import draw_seed, restore_on_error


class IncrementalFitMixin:
    """``partial_fit`` machinery shared by the estimators.

    An estimator provides ``_fit(X, y, incremental=True)`` (the first call: set up
    and train one pass) and ``_chunk(X, y)``: the validated, range-clipped
    ``(inputs, targets)`` of a later chunk, each ``TrainingImages`` (targets None for
    an autoencoder). ``_after_chunk(net, inputs, seed)`` refreshes whatever else the
    estimator derives from its training data.
    """

    def _partial_fit(self, X, y=None):
        with restore_on_error(self), _restore_net_on_error(getattr(self, "net_", None)):
            if not hasattr(self, "net_"):
                self._fit(X, y, incremental=True)
            else:
                self._fit_chunk(X, y)
        return self

    def _fit_chunk(self, X, y):
        inputs, targets = self._chunk(X, y)
        net = self.net_
        if net.train_split is not None:  # fitted by fit(early_stopping=True)
            for_chunks(net).initialize_callbacks()
        # A new shuffling order for every chunk, reproducible with an int random_state.
        seed = (draw_seed(self.random_state) + len(net.history)) % (2**31)
        seed = from_first_process(seed, self.distributed)
        net.seed = seed
        net.batch_size = self.batch_size
        net.verbose = int(self.verbose) if prints_progress(self.distributed) else 0
        if net.lr != self.lr:
            net.set_params(lr=self.lr)  # in the optimizer's parameter groups, keeping its state
        # The net's fit loop draws noise and latent samples from generators seeded by
        # net.seed (skconvae._random), never from torch's global RNG.
        net.partial_fit(inputs.data, None if targets is None else targets.data, epochs=1)
        self._after_chunk(net, inputs, seed)

    def _after_chunk(self, net, inputs, seed) -> None:
        """Hook: update state derived from the training data after a chunk."""


def warn_out_of_range(what: str, low, high, stats, fix: str) -> bool:
    """Warn if a chunk's values leave the fitted range; True if they do."""
    message = out_of_range_message(what, low, high, stats.min, stats.max, fix)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=_caller_outside())
    return message is not None


def _caller_outside() -> int:
    """``stacklevel`` of the first frame outside skconvae and scikit-learn's wrappers."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
        ("skconvae.", "sklearn.")
    ):
        frame, level = frame.f_back, level + 1
    return level


def for_chunks(net):
    """Configure a new net for ``partial_fit``: no validation split, no early stopping
    (there is no held-out set per chunk, as in scikit-learn's ``MLPRegressor``), and a
    constant learning rate (a schedule over ``max_epochs`` means nothing for a stream
    of one-pass chunks)."""
    net.train_split = None
    net.callbacks = [
        entry
        for entry in net.callbacks
        if not (isinstance(entry, tuple) and entry[0] in ("early_stopping", "lr_schedule"))
    ]
    return net


@contextlib.contextmanager
def _restore_net_on_error(net):
    """Put weights, optimizer state and history of ``net`` back if the body raises."""
    if net is None:
        yield
        return
    module = {k: v.detach().clone() for k, v in net.module_.state_dict().items()}
    optimizer = copy.deepcopy(net.optimizer_.state_dict())
    n_epochs = len(net.history)
    settings = {name: getattr(net, name) for name in ("seed", "batch_size", "verbose", "lr")}
    try:
        yield
    except BaseException:
        with torch.no_grad():
            net.module_.load_state_dict(module)
        net.optimizer_.load_state_dict(optimizer)
        del net.history[n_epochs:]
        lr = settings.pop("lr")
        for name, value in settings.items():
            setattr(net, name, value)
        if net.lr != lr:
            net.set_params(lr=lr)
        raise
