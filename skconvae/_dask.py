"""Dask arrays in and out of fitted estimators, block by block.

A method decorated with :func:`accepts_dask` given a ``dask.array.Array`` returns a
lazy Dask array: the method runs on each block of samples with ``map_blocks``, and
the fitted estimator enters the graph once, as a single ``dask.delayed`` task that
every block depends on (a distributed scheduler ships it to each worker once,
rather than pickling it into every block's task). Training on Dask arrays goes
through :class:`skconvae._sources.BlockedSource` instead.

Dask is optional: ``pip install "skconvae[dask]"``.
"""

from __future__ import annotations

import functools
import uuid

import numpy as np

from ._sources import check_sample_chunks


def is_dask_array(X) -> bool:
    """True for a ``dask.array.Array``, without importing Dask."""
    return type(X).__module__.partition(".")[0] == "dask" and hasattr(X, "map_blocks")


def import_dask():
    """Import ``dask.array`` or raise an ImportError naming the extra to install."""
    try:
        import dask
        import dask.array
    except ImportError as exc:  # pragma: no cover - only without the extra
        raise ImportError(
            'Dask support needs dask[array] and distributed: pip install "skconvae[dask]".'
        ) from exc
    return dask


def accepts_dask(method):
    """Let ``method(self, X)`` take a Dask array and return a lazy one (see the module)."""

    @functools.wraps(method)
    def wrapper(self, X, *args, **kwargs):
        if is_dask_array(X):
            return map_samples(self, method.__name__, X)
        return method(self, X, *args, **kwargs)

    return wrapper


def map_samples(estimator, method: str, X):
    """``getattr(estimator, method)`` over each block of samples of the Dask array ``X``.

    Returns a lazy Dask array with ``X``'s chunks along samples and the method's
    per-sample output shape and dtype. Those are read from the method's output on
    one blank sample, which also checks ``X``'s shape and dtype before any block
    is computed.
    """
    dask = import_dask()
    if X.ndim < 2:
        raise ValueError(
            f"Expected a 2-D Dask array (n_samples, n_features) or 3-D/4-D images; got "
            f"an array of shape {X.shape}."
        )
    check_sample_chunks(X)
    probe = getattr(estimator, method)(np.zeros((1, *X.shape[1:]), dtype=X.dtype))
    out_ndim, in_ndim = probe.ndim, X.ndim
    token = uuid.uuid4().hex
    model = dask.delayed(estimator, traverse=False, name=f"skconvae-model-{token}")
    return X.map_blocks(
        _apply,
        model,
        method,
        dtype=probe.dtype,
        chunks=(X.chunks[0], *((size,) for size in probe.shape[1:])),
        drop_axis=list(range(out_ndim, in_ndim)) if out_ndim < in_ndim else None,
        new_axis=list(range(in_ndim, out_ndim)) if out_ndim > in_ndim else None,
        meta=np.empty((0, *probe.shape[1:]), dtype=probe.dtype),
        name=f"skconvae-{method}-{token}",
    )


def _apply(block: np.ndarray, estimator, method: str) -> np.ndarray:
    return getattr(estimator, method)(block)
