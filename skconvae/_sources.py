"""Batch sources: where the net's training batches come from.

The net asks a *batch source* for batches and does not know where they come from.
A batch source is any object with

- ``len(source)``: the number of samples;
- ``source.shuffled_order(generator)``: a permutation of ``range(len(source))`` as an
  int64 tensor, the order of one training epoch (a source may constrain it for
  locality: blocked sources shuffle their blocks, then the samples within each);
- ``source.take(index)``: the batch ``(X, y)`` at ``index``, a slice or a tensor of
  positions from ``shuffled_order``: raw ``(n, C, H, W)`` tensors in a compact dtype
  (``y`` is None when the input is its own target);
- ``source.subset(index)``: a source over the positions ``index`` (the validation
  split of ``HoldoutSplit``).

:class:`skconvae._data.BatchIterator` cuts ``shuffled_order`` into batches and calls
``take``; a sharded iterator (one rank of several) would cut its share of the same
order. Sources:

- :class:`skconvae._data.ImageBatches`: tensors in memory (or on the GPU);
- :class:`ArraySource`: any sliceable array-like read lazily, a batch at a time:
  ``np.memmap``, ``h5py``/``zarr`` datasets. Each batch's rows are read in sorted
  order (locality on disk) and handed out in the epoch's order, so a fit from a
  memmap trains on exactly the batches a fit from the loaded array would;
- :class:`BlockedSource`: a Dask array chunked along samples, computed one block at
  a time.

Which inputs ``fit`` streams (:func:`streams`): memory-mapped NumPy arrays and
array-likes that are not NumPy arrays (``h5py``, ``zarr``, Dask). In-memory arrays,
DataFrames and lists are validated and trained on in memory, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils import assert_all_finite
from sklearn.utils.validation import validate_data

from ._base import validate_images
from ._data import MappedPages, as_compact_tensor, is_memory_mapped
from ._layout import ImageLayout, check_sample_shape, flatten_samples, infer_layout
from ._scaling import ChannelStats

# Rows of a statistics pass: as ``channel_means``, bounded in bytes for large images.
_SCAN_ROWS = 4096
_SCAN_BYTES = 32 * 2**20


def streams(X) -> bool:
    """Whether ``fit`` reads ``X`` lazily, batch by batch, instead of loading it.

    True for memory-mapped NumPy arrays (``np.memmap``, ``np.load(mmap_mode="r")``)
    and for array-likes with ``shape``, a NumPy ``dtype`` and slicing that are not
    NumPy arrays (``h5py`` and ``zarr`` datasets, Dask arrays). In-memory arrays,
    DataFrames, sparse matrices and lists are loaded.
    """
    if isinstance(X, np.ndarray):
        return is_memory_mapped(X)
    if hasattr(X, "iloc") or hasattr(X, "tocsr") or hasattr(X, "to_dense"):
        return False
    if not all(hasattr(X, name) for name in ("shape", "dtype", "__getitem__")):
        return False
    try:
        np.dtype(X.dtype)
    except TypeError:  # torch tensors and other dtype systems
        return False
    return len(X.shape) >= 2


def is_blocked(X) -> bool:
    """Whether ``X`` is a Dask-style array: blocks along samples, computed on demand."""
    return hasattr(X, "blocks") and hasattr(X, "numblocks") and hasattr(X, "compute")


def check_sample_chunks(X, name: str = "X") -> None:
    """Raise a ValueError unless a Dask array is chunked along samples only."""
    split = [axis for axis, chunks in enumerate(X.chunks[1:], start=1) if len(chunks) > 1]
    if split:
        rechunk = "{" + ", ".join(["0: 'auto'"] + [f"{a}: -1" for a in range(1, X.ndim)]) + "}"
        raise ValueError(
            f"{name} is a Dask array chunked along axis {split} as well as along samples "
            f"(chunks {X.chunksize}); skconvae processes whole images, one block of samples "
            f"at a time. Rechunk along samples only: {name}.rechunk({rechunk})."
        )


def validate_head(estimator, X, *, layout: ImageLayout | None = None):
    """Validate the first row of a streamed ``X`` as ``validate_data`` would all of it.

    Returns the per-sample shape of N-D input, else None. Non-numeric dtypes, empty
    and 1-D arrays get scikit-learn's errors. Without ``layout`` (a first fit) this
    sets ``n_features_in_``; with one, the sample shape must match it, as in
    ``transform``. Finiteness is checked by the statistics pass (:meth:`ArraySource.scan`).
    """
    if is_blocked(X):
        check_sample_chunks(X)
    head = X[:1]
    head = head.compute() if hasattr(head, "compute") else np.asarray(head)
    flat, sample_shape = flatten_samples(head)
    if layout is not None:
        check_sample_shape(layout, sample_shape)
    reset = layout is None
    validate_data(estimator, flat, reset=reset, dtype="numeric", ensure_all_finite=False)
    return sample_shape


class ArraySource:
    """A sliceable array-like read lazily, one batch at a time.

    Parameters
    ----------
    inputs : array-like of shape (n_samples, ...)
        In the user's layout: flat rows or N-D images. Anything that supports
        ``inputs[start:stop]`` and ``inputs[sorted_rows]`` (``zarr``: ``oindex``).
    layout : ImageLayout
        How a sample folds into ``(C, H, W)``.
    targets, target_layout : array-like and ImageLayout, optional
        Paired target images (image-to-image training).
    rows : ndarray of int or None
        The rows of ``inputs`` this source covers, in its order; None for all.
    """

    # Taking a batch reads storage: training reads the next batch ahead (_data.read_ahead).
    reads_storage = True

    def __init__(self, inputs, layout: ImageLayout, targets=None, target_layout=None, rows=None):
        self.inputs = inputs
        self.layout = layout
        self.targets = targets
        self.target_layout = target_layout
        self.rows = rows
        # Per-channel (low, high) of inputs and targets, or None: set to clip values.
        self.clip = self.target_clip = None
        self._pages = MappedPages(inputs)

    def __len__(self) -> int:
        return len(self.inputs) if self.rows is None else len(self.rows)

    def shuffled_order(self, generator=None) -> torch.Tensor:
        return torch.randperm(len(self), generator=generator, device="cpu")

    def take(self, index):
        if isinstance(index, slice):
            start, stop, _ = index.indices(len(self))
            if self.rows is None:
                return self._tensors(self._read(slice(start, stop)))
            return self._take_rows(self.rows[start:stop])
        index = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        return self._take_rows(index if self.rows is None else self.rows[index])

    def subset(self, index) -> ArraySource:
        index = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        rows = index if self.rows is None else self.rows[index]
        return self._with_rows(rows)

    def attach_targets(self, targets, target_layout, estimator_name: str) -> TrainingImages:
        """Read ``targets`` (same length, sliceable) with the inputs; one pass checks
        they are finite and computes their statistics."""
        self.targets, self.target_layout = targets, target_layout
        stats = ChannelStats()
        for _, block in self.blocks(inputs=False):
            assert_all_finite(block, input_name="y", estimator_name=estimator_name)
            stats.update(block)
        return TrainingImages(None, target_layout, stats, np.dtype(targets.dtype), None, self)

    def _with_rows(self, rows) -> ArraySource:
        source = type(self)(self.inputs, self.layout, self.targets, self.target_layout, rows)
        source.clip, source.target_clip = self.clip, self.target_clip
        return source

    # -- reading --------------------------------------------------------------------

    def _take_rows(self, rows: np.ndarray):
        """Read rows in sorted order, hand them out in the given order."""
        order = np.argsort(rows, kind="stable")
        inputs, targets = self._read(rows[order])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return self._tensors((inputs[inverse], None if targets is None else targets[inverse]))

    def _read(self, rows):
        """Raw ``(inputs, targets)`` NumPy arrays of ``rows`` (a slice or sorted ints)."""
        inputs = _read_rows(self.inputs, rows)
        self._pages.consumed(inputs.nbytes)
        targets = None if self.targets is None else _read_rows(self.targets, rows)
        return inputs, targets

    def _tensors(self, raw):
        inputs, targets = raw
        x = _to_nchw(inputs, self.layout, self.clip)
        y = None if targets is None else _to_nchw(targets, self.target_layout, self.target_clip)
        return as_compact_tensor(x), None if y is None else as_compact_tensor(y)

    # -- passes over all of it -----------------------------------------------------

    def blocks(self, inputs: bool = True):
        """Yield ``(inputs, targets)`` ``(n, C, H, W)`` NumPy blocks covering the source in
        order (targets None without targets), a bounded number of bytes at a time;
        ``inputs=False`` reads only the targets (inputs None)."""
        if not inputs:
            yield from self._target_blocks()
            return
        n = len(self)
        row_bytes = max(1, self.layout.n_features * np.dtype(self.inputs.dtype).itemsize)
        step = max(1, min(_SCAN_ROWS, _SCAN_BYTES // row_bytes))
        for start in range(0, n, step):
            index = slice(start, min(start + step, n))
            if self.rows is None:
                inputs, targets = self._read(index)
            else:
                rows = self.rows[index]
                order = np.argsort(rows, kind="stable")
                inputs, targets = self._read(rows[order])
                inverse = np.argsort(order, kind="stable")
                inputs = inputs[inverse]
                targets = None if targets is None else targets[inverse]
            yield (
                _to_nchw(inputs, self.layout, None),
                None if targets is None else _to_nchw(targets, self.target_layout, None),
            )

    def _target_blocks(self):
        n = len(self.targets)
        row_bytes = max(1, self.target_layout.n_features * np.dtype(self.targets.dtype).itemsize)
        step = max(1, min(_SCAN_ROWS, _SCAN_BYTES // row_bytes))
        for start in range(0, n, step):
            block = _read_rows(self.targets, slice(start, min(start + step, n)))
            yield None, _to_nchw(block, self.target_layout, None)

    def scan(self, estimator_name: str) -> tuple[ChannelStats, ChannelStats | None]:
        """One pass: per-channel statistics of inputs (and targets), and the check that
        every value is finite (scikit-learn's error otherwise)."""
        x_stats = ChannelStats()
        y_stats = None if self.targets is None else ChannelStats()
        for inputs, targets in self.blocks():
            assert_all_finite(inputs, input_name="X", estimator_name=estimator_name)
            x_stats.update(inputs)
            if targets is not None:
                assert_all_finite(targets, input_name="y", estimator_name=estimator_name)
                y_stats.update(targets)
        return x_stats, y_stats

    def subsample(self, n_max: int, seed: int) -> np.ndarray:
        """Up to ``n_max`` input images ``(n, C, H, W)``: all of them, in order, when there
        are that few, else a random subset (read in sorted order)."""
        if len(self) <= n_max:
            return np.concatenate([inputs for inputs, _ in self.blocks()])
        rng = np.random.default_rng(seed)
        positions = np.sort(rng.choice(len(self), n_max, replace=False))
        return np.concatenate(
            [
                _to_nchw(self._read_positions(positions[i : i + _SCAN_ROWS]), self.layout, None)
                for i in range(0, n_max, _SCAN_ROWS)
            ]
        )

    def _read_positions(self, positions: np.ndarray) -> np.ndarray:
        rows = positions if self.rows is None else self.rows[positions]
        order = np.argsort(rows, kind="stable")
        inputs, _ = self._read(rows[order])
        return inputs[np.argsort(order, kind="stable")]


class BlockedSource(ArraySource):
    """A Dask array chunked along samples, computed one block at a time.

    An epoch visits the blocks in a random order and the samples of each block in a
    random order, so each block is computed once per epoch; the last two computed
    blocks are kept for batches that straddle two.
    """

    def __init__(self, inputs, layout, targets=None, target_layout=None, rows=None):
        super().__init__(inputs, layout, targets, target_layout, rows)
        self.bounds = np.concatenate([[0], np.cumsum(inputs.chunks[0])])
        self._cache: dict = {}

    def _with_rows(self, rows) -> BlockedSource:
        # Sorted: a subset keeps visiting blocks in order.
        return super()._with_rows(np.sort(rows))

    def _all_rows(self) -> np.ndarray:
        return np.arange(len(self.inputs)) if self.rows is None else self.rows

    def shuffled_order(self, generator=None) -> torch.Tensor:
        block = np.searchsorted(self.bounds, self._all_rows(), side="right") - 1
        starts = np.searchsorted(block, np.arange(len(self.bounds)))
        pieces = []
        for b in torch.randperm(len(self.bounds) - 1, generator=generator).tolist():
            lo, hi = int(starts[b]), int(starts[b + 1])
            if hi > lo:
                pieces.append(lo + torch.randperm(hi - lo, generator=generator))
        return torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.int64)

    def _read(self, rows):
        if isinstance(rows, slice):
            rows = np.arange(rows.start, rows.stop)
        block = np.searchsorted(self.bounds, rows, side="right") - 1
        inputs, targets = [], []
        for b in np.unique(block):
            x, y = self._block(int(b))
            local = rows[block == b] - self.bounds[b]
            inputs.append(x[local])
            targets.append(None if y is None else y[local])
        if not inputs:
            return self._block(0)[0][:0], None
        return np.concatenate(inputs), None if self.targets is None else np.concatenate(targets)

    def attach_targets(self, targets, target_layout, estimator_name: str) -> TrainingImages:
        if is_blocked(targets) and targets.chunks[0] != self.inputs.chunks[0]:
            targets = targets.rechunk({0: self.inputs.chunks[0]})
        self._cache.clear()
        return super().attach_targets(targets, target_layout, estimator_name)

    def _block(self, b: int):
        if b not in self._cache:
            import dask

            if self.targets is None:
                (x,) = dask.compute(self.inputs.blocks[b])
                y = None
            elif is_blocked(self.targets):
                x, y = dask.compute(self.inputs.blocks[b], self.targets.blocks[b])
            else:
                (x,) = dask.compute(self.inputs.blocks[b])
                y = _read_rows(self.targets, slice(self.bounds[b], self.bounds[b + 1]))
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[b] = (np.asarray(x), None if y is None else np.asarray(y))
        self._cache[b] = self._cache.pop(b)  # most recently used last
        return self._cache[b]

    def blocks(self, inputs: bool = True):
        if self.rows is not None or not inputs:
            yield from super().blocks(inputs)
            return
        for b in range(len(self.bounds) - 1):
            x, y = self._block(b)
            yield (
                _to_nchw(x, self.layout, None),
                None if y is None else _to_nchw(y, self.target_layout, None),
            )


def open_source(inputs, layout, targets=None, target_layout=None) -> ArraySource:
    """The batch source that reads ``inputs`` (and ``targets``) lazily."""
    cls = BlockedSource if is_blocked(inputs) else ArraySource
    return cls(inputs, layout, targets, target_layout)


@dataclass
class TrainingImages:
    """Validated training images, in memory or streamed, with their statistics.

    Attributes
    ----------
    data : torch.Tensor or ArraySource
        What the net trains on (``net.partial_fit(data)``).
    layout : ImageLayout
    stats : ChannelStats
        Per-channel minimum, maximum and mean, from one pass over the data.
    dtype : numpy.dtype
        The input's dtype.
    images : ndarray or None
        The ``(N, C, H, W)`` images when they are in memory.
    target_of : ArraySource or None
        For streamed targets: the source that reads them with its inputs (``data``
        is then None; the net gets the targets from that source).
    """

    data: object
    layout: ImageLayout
    stats: ChannelStats
    dtype: np.dtype
    images: np.ndarray | None = None
    target_of: ArraySource | None = None

    def clip(self, low: np.ndarray, high: np.ndarray) -> None:
        """Clip these training images to per-channel ``[low, high]``."""
        if self.target_of is not None:
            self.target_of.target_clip = (low, high)
        elif self.images is None:
            self.data.clip = (low, high)
        else:
            self.images = _clip(self.images, low, high)
            self.data = as_compact_tensor(self.images)

    def density_sample(self, n_max: int, seed: int) -> np.ndarray:
        """Images to estimate the code density on: all in-memory images, else at most
        ``n_max`` of the stream chosen at random."""
        return self.images if self.images is not None else self.data.subsample(n_max, seed)


def in_memory_images(images: np.ndarray, layout: ImageLayout) -> TrainingImages:
    """``TrainingImages`` over validated in-memory ``(N, C, H, W)`` images."""
    stats = ChannelStats.of(images)
    return TrainingImages(as_compact_tensor(images), layout, stats, images.dtype, images)


def load_training_images(
    estimator, X, layout: ImageLayout | None = None, image_shape=None, channels="auto"
) -> TrainingImages:
    """Validate training images and compute their statistics, streaming if ``streams(X)``.

    Without ``layout`` (a first fit) the layout is inferred from ``X`` with
    ``image_shape`` and ``channels`` and ``n_features_in_`` is set; with a fitted
    ``layout`` (later ``partial_fit`` calls) ``X`` is checked against it with the
    errors of ``transform``.
    """
    name = type(estimator).__name__
    if streams(X):
        sample_shape = validate_head(estimator, X, layout=layout)
        if layout is None:
            layout = infer_layout(
                sample_shape or (estimator.n_features_in_,), image_shape, channels
            )
        source = open_source(X, layout)
        stats, _ = source.scan(name)
        return TrainingImages(source, layout, stats, np.dtype(X.dtype))
    if layout is None:
        flat, sample_shape = flatten_samples(X)
        flat = validate_data(estimator, flat, reset=True, dtype="numeric")
        layout = infer_layout(sample_shape or flat.shape[1:], image_shape, channels)
        return in_memory_images(layout.to_nchw(flat), layout)
    return in_memory_images(validate_images(estimator, X, layout), layout)


def _to_nchw(raw: np.ndarray, layout: ImageLayout, clip) -> np.ndarray:
    images = layout.to_nchw(raw.reshape(len(raw), -1))
    return images if clip is None else _clip(images, *clip)


def _clip(images: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    dtype = images.dtype if images.dtype.kind == "f" else np.float64
    low = low.astype(dtype)[None, :, None, None]
    high = high.astype(dtype)[None, :, None, None]
    return np.clip(images, low, high)


def _read_rows(array, rows) -> np.ndarray:
    """``array[rows]`` as a NumPy array: a contiguous slice when ``rows`` is one."""
    if isinstance(rows, slice):
        return np.asarray(array[rows])
    if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):
        return np.asarray(array[int(rows[0]) : int(rows[-1]) + 1])
    if not isinstance(array, np.ndarray) and hasattr(array, "oindex"):  # zarr
        return np.asarray(array.oindex[rows])
    return np.asarray(array[rows])
