"""Batch-level data path for training: whole batches by slicing a permuted index.

skorch's default ``DataLoader`` fetches samples one by one and collates them; an
image autoencoder trains faster when each batch is one indexing operation on a
tensor kept in its compact dtype (uint8 stays uint8) and converted on the device.
"""

from __future__ import annotations

import mmap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

# dtypes torch indexes and converts directly; anything else trains as float32.
_COMPACT_DTYPES = (np.uint8, np.float32, np.float16)


def as_compact_tensor(images: np.ndarray) -> torch.Tensor:
    """Return ``images`` as a CPU tensor, keeping uint8/float16/float32 as they are."""
    if images.dtype not in _COMPACT_DTYPES:
        images = images.astype(np.float32)
    images = np.ascontiguousarray(images)
    if not images.flags.writeable:
        images = images.copy()
    return torch.from_numpy(images)


class ImageBatches:
    """Inputs, and optional targets, held as tensors with a common first axis.

    Parameters
    ----------
    X : torch.Tensor
        Inputs, ``(N, C, ...)``.
    y : torch.Tensor or None
        Targets (for image-to-image training); None means "reconstruct X".
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor | None = None):
        self.X = X
        self.y = y

    def __len__(self) -> int:
        return len(self.X)

    def subset(self, index: torch.Tensor) -> ImageBatches:
        return ImageBatches(self.X[index], None if self.y is None else self.y[index])

    def shuffled_order(self, generator=None) -> torch.Tensor:
        """A random permutation of the samples, on the device that holds them."""
        order = torch.randperm(len(self), generator=generator, device="cpu")
        return order.to(self.X.device)

    def take(self, index):
        """The batch ``(X, y)`` at ``index`` (a slice or a tensor of positions)."""
        return self.X[index], None if self.y is None else self.y[index]


class BatchIterator:
    """Iterate over ``(X_batch, y_batch)`` pairs of a batch source, reshuffled on every pass.

    Parameters
    ----------
    dataset : batch source
        ``ImageBatches`` or any source of ``skconvae._sources`` (see there for the
        interface: ``len``, ``shuffled_order``, ``take``, ``subset``).
    batch_size : int
    shuffle : bool
    generator : torch.Generator or None
        Source of the permutations, so that training is reproducible.
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool, generator=None):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self):
        return read_ahead(self.batch_indices(), self.dataset.take, reads_slowly(self.dataset))

    def batch_indices(self):
        """Each batch's index into the dataset, in order: parts of a new
        ``shuffled_order`` per pass when shuffling, slices otherwise (a sharded
        iterator cuts its share of each)."""
        n = len(self.dataset)
        if self.shuffle:
            return iter(self.dataset.shuffled_order(self.generator).split(self.batch_size))
        return (
            slice(start, min(start + self.batch_size, n)) for start in range(0, n, self.batch_size)
        )

    def take(self, index) -> tuple:
        """The ``(X, y)`` batch at ``index`` (a slice or a tensor of positions)."""
        return self.dataset.take(index)


def reads_slowly(dataset) -> bool:
    """Whether taking a batch from ``dataset`` reads storage (memmap, zarr, Dask blocks)
    rather than indexing tensors already in memory."""
    return getattr(dataset, "reads_storage", False)


def read_ahead(indices, take, enabled: bool = True):
    """Yield ``take(index)`` for each index, reading the next batch in a background
    thread while the caller trains on this one.

    A batch of a memory-mapped file is a gather of scattered rows; when the file's
    pages are not in the page cache, each row waits on the disk, and that wait
    would otherwise stall the network. NumPy releases the GIL while it copies, so
    the read overlaps the network's work. One batch is read ahead at most, in
    order, by one thread: what is read and the order it is handed out in are those
    of the plain loop, so results do not change. ``enabled=False`` is that loop.
    """
    if not enabled:
        for index in indices:
            yield take(index)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="skconvae-read-ahead") as reader:
        pending = None
        for index in indices:
            upcoming = reader.submit(take, index)
            if pending is not None:
                yield pending.result()
            pending = upcoming
        if pending is not None:
            yield pending.result()


class HoldoutSplit:
    """skorch ``train_split``: hold out a random fraction of samples for validation.

    Parameters
    ----------
    fraction : float
        Share of samples held out, in (0, 1). At least one sample is held out and
        at least one is kept for training.
    seed : int
        Seed of the split.
    """

    def __init__(self, fraction: float, seed: int):
        self.fraction = fraction
        self.seed = seed

    def __call__(self, dataset, y=None, **kwargs):
        n = len(dataset)
        if n < 2:
            raise ValueError(
                f"early_stopping=True needs at least 2 samples to hold out a validation "
                f"set; got {n}. Pass more samples or set early_stopping=False."
            )
        n_valid = min(max(1, round(self.fraction * n)), n - 1)
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(n, generator=generator)
        return dataset.subset(order[n_valid:]), dataset.subset(order[:n_valid])


# Inference releases the pages of a memory-mapped input every this many bytes read.
RELEASE_INTERVAL_BYTES = 64 * 2**20

# np.memmap modes whose pages can be dropped without losing anything: read-only and
# shared mappings keep every byte in the file's page cache. A copy-on-write ("c")
# mapping keeps the caller's edits only in its private pages: never drop those.
_RELEASABLE_MODES = frozenset({"r", "r+", "w+"})


class MappedPages:
    """Keep a memory-mapped input from filling this process's resident memory.

    Reading an ``np.memmap`` maps its pages into the process; on a file larger
    than RAM they would pile up. Inference reads the input once, front to back:
    every ``every_bytes`` read, the pages of the rows read since the last release
    are dropped (``MADV_DONTNEED``). They stay in the OS page cache and are simply
    mapped again if read again.

    Only pages that cannot hold data of their own are dropped: those of
    read-only (``mode="r"``) or shared (``"r+"``, ``"w+"``) file mappings, whose
    every byte lives in the file's page cache. A copy-on-write mapping
    (``mode="c"``, ``MAP_PRIVATE``) keeps the caller's edits in private pages that
    dropping would discard, and a bare ``mmap`` cannot be classified: for those,
    and for anything not backed by a mapping, this is a no-op. Nothing outside
    the rows read is touched.

    Parameters
    ----------
    array : ndarray
        The input, read along its first axis from the start.
    every_bytes : int or None, default=None
        Release interval; ``None`` means ``RELEASE_INTERVAL_BYTES`` (64 MiB).
    """

    def __init__(self, array, every_bytes: int | None = None):
        self.array = array
        self.mapping = _releasable_mmap(array) if hasattr(mmap, "MADV_DONTNEED") else None
        self.every_bytes = RELEASE_INTERVAL_BYTES if every_bytes is None else every_bytes
        self._row_bytes = array[:1].nbytes if self.mapping is not None and len(array) else 0
        self._pending = 0
        self._rows_read = 0
        self._rows_released = 0

    def consumed(self, nbytes: int) -> None:
        """Record that the next ``nbytes`` of the input (whole rows) were read."""
        if self.mapping is None or not self._row_bytes:
            return
        self._pending += nbytes
        self._rows_read = min(len(self.array), self._rows_read + nbytes // self._row_bytes)
        if self._pending >= self.every_bytes:
            self._release(self._rows_released, self._rows_read)
            self._rows_released = self._rows_read
            self._pending = 0

    def _release(self, first_row: int, stop_row: int) -> None:
        """Drop the whole pages that lie inside the bytes of rows ``[first, stop)``."""
        if stop_row <= first_row or self.mapping.closed:
            return
        low, high = np.lib.array_utils.byte_bounds(self.array[first_row:stop_row])
        base = _address(self.mapping)
        page = mmap.PAGESIZE
        start = -(-(low - base) // page) * page
        stop = min((high - base) // page * page, len(self.mapping))
        if 0 <= start < stop:
            self.mapping.madvise(mmap.MADV_DONTNEED, start, stop - start)


def _base_chain(array):
    """``array``, then the objects its memory comes from (``.base``), 64 at most."""
    for _ in range(64):
        if array is None:
            return
        yield array
        array = getattr(array, "base", None)


def is_memory_mapped(array) -> bool:
    """Whether an ``mmap`` (of any mode) lies behind ``array`` or a view of it."""
    return any(
        isinstance(obj, mmap.mmap) or isinstance(getattr(obj, "_mmap", None), mmap.mmap)
        for obj in _base_chain(array)
    )


def _releasable_mmap(array) -> mmap.mmap | None:
    """The ``mmap`` behind an array (or a view of it) if dropping its pages is safe."""
    for obj in _base_chain(array):
        mapping = getattr(obj, "_mmap", None)
        if isinstance(obj, np.memmap) and isinstance(mapping, mmap.mmap):
            if obj.base is mapping:  # the memmap that owns the mapping knows its mode
                return mapping if obj.mode in _RELEASABLE_MODES else None
        if isinstance(obj, mmap.mmap):
            return None  # a bare mmap, of unknown (possibly private) mapping
    return None


def _address(mapping: mmap.mmap) -> int:
    """Address of the first byte of a mapping."""
    view = np.frombuffer(mapping, dtype=np.uint8, count=1)
    try:
        return view.ctypes.data
    finally:
        del view  # release the buffer export, so the mapping can still be closed
