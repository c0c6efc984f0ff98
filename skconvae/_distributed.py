"""Training beyond one process: data-parallel under ``torchrun``, fits on Dask workers.

**torchrun (DDP).** Inside a launch (``torchrun --nproc_per_node=N script.py``)
every process runs the same script on the same data. :func:`launch_setup` joins
the process group (starting it when the launcher's environment asks for one),
gives each process its GPU by ``LOCAL_RANK`` and the first process's seed. While
the net trains, :func:`data_parallel` lends it a :class:`DataParallel`, its only
contact with the other processes:

* :meth:`DataParallel.shard` splits every global batch of the shuffled order
  (the same order everywhere, from the shared seed) into one part per process,
  so ``batch_size`` stays the global batch and every process takes the same
  number of steps;
* :meth:`DataParallel.forward` runs the training forward pass through
  ``DistributedDataParallel``, which averages the gradients in the backward
  pass; the module itself is never replaced, so after ``fit`` every process
  holds the same plain module;
* :meth:`DataParallel.backward` and :meth:`DataParallel.batch_mean` make each
  batch's recorded loss the mean over the whole global batch, so ``history``,
  early stopping and the non-finite-loss stop agree on every process. On the
  CPU the loss is summed in the same all-reduce as the gradients (DDP's
  communication hook :meth:`DataParallel._average`), one collective a step.

**Dask.** ``GridSearchCV`` inside ``joblib.parallel_config(backend="dask")``
needs nothing from the package but picklable estimators; :func:`task_threads`
keeps a fit running in a Dask worker's task to its share of the cores.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
import pickle
import sys
import zlib

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ._data import read_ahead, reads_slowly
from ._random import stream_generator
from ._utils import draw_seed, resolve_device

# What torchrun (and torch.distributed's other launchers) export to every process.
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# Samples hashed to check that every process trains on the same data.
_FINGERPRINT_SAMPLES = 64

# DDP's switch for not broadcasting buffers before every forward pass: renamed in
# torch 2.13, where the old name warns. The new one still broadcasts them once as
# DDP starts, which changes nothing here: every process starts from the same buffers
# (the shared seed, or a model whose buffers the last fit shared).
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


def _launched() -> bool:
    return all(name in os.environ for name in _LAUNCH_VARIABLES) and (
        int(os.environ["WORLD_SIZE"]) > 1
    )


def joins_process_group(distributed) -> bool:
    """Whether a fit with this ``distributed`` parameter trains data-parallel.

    Starts the default process group when a launcher's environment asks for one
    (``RANK``, ``WORLD_SIZE`` > 1, ``MASTER_ADDR``, ``MASTER_PORT``) and none
    exists: gloo for CPU tensors, nccl for CUDA ones.
    """
    if distributed is False or not dist.is_available():
        return False
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if not _launched():
        if distributed is True:
            raise ValueError(
                "distributed=True trains data-parallel inside a torchrun launch, but this "
                "process was not started by one (RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT "
                "are not all set). Run the script with `torchrun --nproc_per_node=N script.py`, "
                "or use distributed='auto' to train in one process when not launched."
            )
        return False
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda and local_rank < torch.cuda.device_count():
        torch.cuda.set_device(local_rank)
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    atexit.register(_leave_process_group)
    return True


def _leave_process_group():
    if dist.is_initialized():
        dist.destroy_process_group()


def _process_device(device: str) -> str:
    """This process's GPU in a launch: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
    if not device.startswith("cuda") or torch.device(device).index is not None:
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"This torchrun launch runs process LOCAL_RANK={local_rank} on a node with "
            f"{torch.cuda.device_count()} GPU(s): start one process per GPU "
            "(--nproc_per_node=<number of GPUs>), or train on the CPU with device='cpu'."
        )
    return f"cuda:{local_rank}"


def _collective_device() -> torch.device:
    """Where small tensors for a collective live: the CPU unless the group is nccl only."""
    if "gloo" in str(dist.get_backend()):
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def launch_setup(distributed, device: str, random_state) -> tuple[str, int]:
    """The device and seed of a fit.

    Outside a torchrun launch (or with ``distributed=False``) these are
    ``resolve_device(device)`` and ``draw_seed(random_state)``. Inside one, the
    process group is joined, ``"auto"``/``"cuda"`` mean this process's GPU
    (``cuda:LOCAL_RANK``), and every process gets the first process's seed, so
    that weights, shuffling, the validation split and the code density agree.
    """
    parallel = joins_process_group(distributed)
    device = resolve_device(device)
    seed = draw_seed(random_state)
    if not parallel:
        return device, seed
    shared = torch.tensor([seed], dtype=torch.int64, device=_collective_device())
    dist.broadcast(shared, src=0)
    return _process_device(device), int(shared.item())


def _in_a_launch(distributed) -> bool:
    """Whether this fit trains in a started process group (``distributed`` not False)."""
    return distributed is not False and dist.is_available() and dist.is_initialized()


def from_first_process(value, distributed):
    """``value`` as the first process of a launch computed it, on every process.

    Outside a launch (or with ``distributed=False``) ``value`` itself.
    """
    return computed_by_first_process(lambda: value, distributed)


def computed_by_first_process(compute, distributed):
    """``compute()`` run by the first process of a launch alone, its result on every
    process (the others wait for it). Outside a launch, ``compute()``.

    For work whose result must be the same everywhere and that needs no other
    process, so that the other processes need not repeat it. An error in it is
    raised on every process, not only the first (the others would wait forever).
    """
    if not _in_a_launch(distributed) or dist.get_world_size() == 1:
        return compute()
    box = [(None, None)]
    if dist.get_rank() == 0:
        try:
            box = [(compute(), None)]
        except Exception as error:
            box = [(None, _picklable(error))]
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    value, error = box[0]
    if error is not None:
        raise error
    return value


def _picklable(error: Exception) -> Exception:
    """``error``, or a ``RuntimeError`` naming it where it cannot be pickled.

    An error that cannot be pickled would fail the broadcast on the first process
    only, and leave the others waiting for it.
    """
    try:
        pickle.dumps(error)
    except Exception:
        stand_in = RuntimeError(f"{type(error).__name__}: {error}")
        stand_in.__cause__ = error
        return stand_in
    return error


def prints_progress(distributed) -> bool:
    """False on every process of a launch but the first: only one prints progress."""
    return not _in_a_launch(distributed) or dist.get_rank() == 0


class _Call(torch.nn.Module):
    """A module whose forward calls a function of the wrapped module's parameters.

    ``DistributedDataParallel`` hooks the gradients of a module's forward; the
    net trains through methods other than ``forward`` (``reconstruct_logits``,
    ``variational_logits``), possibly compiled, so DDP wraps this instead.
    """

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, fn, *args):
        return fn(*args)


class Shard(tuple):
    """One process's part ``(X, y)`` of a global batch.

    ``n_local`` samples of it count (0 when the global batch has fewer samples
    than there are processes: the part is then one borrowed sample that weighs
    nothing), out of ``n_global`` in the global batch.
    """

    def __new__(cls, X, y, n_local: int, n_global: int):
        part = super().__new__(cls, (X, y))
        part.n_local, part.n_global = n_local, n_global
        return part


class ShardedBatches:
    """The part of each global batch of ``batches`` that one process trains on.

    Parameters
    ----------
    batches : BatchIterator
        Any batch source with ``batch_indices()`` (each global batch's index:
        an index tensor or a slice) and ``take(index)`` (the ``(X, y)`` batch).
    rank, world_size : int
        This process and the number of processes.
    """

    def __init__(self, batches, rank: int, world_size: int):
        self.batches = batches
        self.dataset = batches.dataset
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        parts = (self._part(n, index) for n, index in enumerate(self.batches.batch_indices()))
        return read_ahead(parts, self._take, reads_slowly(self.dataset))

    def _part(self, number: int, index) -> tuple:
        """``(index of this process's part, n_local, n_global)`` of global batch ``number``."""
        n_global = _index_length(index)
        # Parts differ by one sample at most; which process gets which rotates.
        part_number = (self.rank + number) % self.world_size
        start = n_global * part_number // self.world_size
        stop = n_global * (part_number + 1) // self.world_size
        part = _index_part(index, start, stop) if stop > start else _index_part(index, 0, 1)
        return part, stop - start, n_global

    def _take(self, part: tuple) -> Shard:
        index, n_local, n_global = part
        return Shard(*self.batches.take(index), n_local=n_local, n_global=n_global)


def _index_length(index) -> int:
    return index.stop - index.start if isinstance(index, slice) else len(index)


def _index_part(index, start: int, stop: int):
    if isinstance(index, slice):
        return slice(index.start + start, index.start + stop)
    return index[start:stop]


class DataParallel:
    """The other processes of a launch, as the net sees them while it trains.

    Parameters
    ----------
    module : torch.nn.Module
        The net's module; its parameters are broadcast from the first process.
    device : str
        The device it trains on.
    """

    def __init__(self, module: torch.nn.Module, device: str):
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        device = torch.device(device)
        # Buffers (batch norm's running statistics) are not broadcast before every
        # forward pass: training uses the batch's own statistics, and the net shares
        # the first process's after each training pass (see share_buffers), which
        # leaves them as the per-pass broadcast would, one collective a step cheaper.
        self.wrapper = DistributedDataParallel(
            _Call(module),
            device_ids=[device.index] if device.type == "cuda" else None,
            **_NO_BUFFER_SYNC,
        )
        self.device = device
        # On the CPU (gloo) each batch's loss rides in its last gradient bucket's
        # all-reduce (see _average), one collective a step instead of two, and
        # collectives are waited for by polling.
        self._on_cpu = device.type == "cpu"
        self._loss_sum = None  # this step's, while its backward pass runs
        self._pending = []  # this step's all-reduces of the buckets before the last
        if self._on_cpu:
            self.wrapper.register_comm_hook(self, DataParallel._average)

    def shard(self, batches) -> ShardedBatches:
        """This process's part of every global batch of ``batches``."""
        _check_same_data(batches.dataset, self.device)
        return ShardedBatches(batches, self.rank, self.world_size)

    def forward(self, fn, x: torch.Tensor):
        """``fn(x)`` through DDP, so that the backward pass averages gradients."""
        return self.wrapper(fn, x)

    def backward(self, loss: torch.Tensor, part: Shard) -> torch.Tensor:
        """Backpropagate this part's mean ``loss``; return the global batch's mean loss.

        DDP averages gradients over processes; weighing each part's loss by its
        share of the global batch makes the average the gradient of the global
        batch's mean loss, however unevenly the batch splits.
        """
        weighted = loss * (part.n_local * self.world_size / part.n_global)
        if self._on_cpu:
            # _average sums it over the processes with the gradients, in place.
            total = _part_sum(loss, part)
            self._loss_sum = total
            try:
                weighted.backward()
            finally:
                self._loss_sum = None
            return total[0] / part.n_global
        # The loss's all-reduce runs while the backward pass computes.
        total, summing = self._start_sum(loss, part)
        weighted.backward()
        summing.wait()
        return total[0] / part.n_global

    def _average(self, bucket):
        """DDP's communication hook on the CPU: average one bucket of gradients.

        ``bucket`` is a ``torch.distributed.GradBucket``; the return value, a
        ``torch.futures.Future`` of its averaged gradients. (No annotations: DDP
        checks them, and this module's are strings.)

        Each bucket's gradients are summed over the processes after dividing by
        their number, as DDP's own all-reduce does, so the results are the same
        bit for bit. The last bucket carries the batch's loss sum along, and its
        hook waits for the step's all-reduces by polling (see :func:`_poll`).
        """
        grads = bucket.buffer()
        grads.div_(self.world_size)
        if not bucket.is_last():
            work = dist.all_reduce(grads, async_op=True)
            self._pending.append(work)
            return work.get_future().then(lambda done: done.value()[0])
        loss_sum = self._loss_sum
        flat = grads if loss_sum is None else torch.cat([grads, loss_sum.to(grads.dtype)])
        works, self._pending = [*self._pending, dist.all_reduce(flat, async_op=True)], []
        for work in works:
            _poll(work)
        if loss_sum is not None:
            grads.copy_(flat[:-1])
            loss_sum.copy_(flat[-1:])
        done = torch.futures.Future()
        done.set_result(grads)
        return done

    def share_buffers(self, module: torch.nn.Module) -> None:
        """Give every process the first process's buffers.

        Batch norm's running statistics are updated by each process on its own part
        of the batches, so they drift apart while training.
        """
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)

    def batch_mean(self, loss: torch.Tensor, part: Shard) -> torch.Tensor:
        """The mean loss over the global batch, from each process's part mean."""
        total, summing = self._start_sum(loss, part)
        if self._on_cpu:
            _poll(summing)
        else:
            summing.wait()
        return total[0] / part.n_global

    def _start_sum(self, loss: torch.Tensor, part: Shard):
        """``(total, work)``: start summing the loss over the global batch into
        ``total``, in place; it holds the sum once ``work.wait()`` returns."""
        total = _part_sum(loss, part)
        return total, dist.all_reduce(total, async_op=True)


def _part_sum(loss: torch.Tensor, part: Shard) -> torch.Tensor:
    """This process's share of the global batch's loss sum: its part's mean loss times
    the samples that count, as a 1-element float tensor to sum over the processes."""
    return (loss.detach().float() * part.n_local).reshape(1)


def _poll(work) -> None:
    """Wait for a gloo collective by polling, giving the core away between polls.

    A process asleep on a collective on the CPU sometimes wakes up late (a slow
    tail of 3-4 ms waits): on the 2-core benchmark machine a gloo all-reduce of
    the benchmark network's gradients took 1.5-1.8 ms on average waited for
    asleep, 1.3-1.5 ms polled (``benchmarks/bench_distributed.py --sections
    allreduce``). Yielding lets the process's own communication threads, and
    anything else ready on this core, run between polls.
    """
    while not work.is_completed():
        os.sched_yield()
    work.wait()  # raises the collective's error, if any


def _check_same_data(dataset, device: torch.device) -> None:
    """Raise if the processes of a launch were given different training data."""
    n = len(dataset)
    rows = np.unique(np.linspace(0, n - 1, min(n, _FINGERPRINT_SAMPLES)).astype(np.int64))
    sample = dataset.take(torch.as_tensor(rows))[0].cpu().numpy()
    fingerprint = torch.tensor([n, zlib.crc32(sample.tobytes())], dtype=torch.int64)
    fingerprint = fingerprint.to(_collective_device())
    gathered = [torch.empty_like(fingerprint) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, fingerprint)
    if any(not torch.equal(other, gathered[0]) for other in gathered):
        sizes = sorted({int(other[0]) for other in gathered})
        raise ValueError(
            "The processes of this torchrun launch were given different training data "
            f"(sample counts {sizes}, or different values). Data-parallel fit shards the "
            "data itself: pass the same X (and y) to fit on every process, or train each "
            "process on its own with distributed=False."
        )


@contextlib.contextmanager
def data_parallel(net):
    """Lend ``net`` a :class:`DataParallel` (as ``net._parallel``) while it trains.

    Outside a launch, or with ``net.distributed=False``, the net is left as it is.
    """
    if not joins_process_group(net.distributed):
        yield
        return
    net._parallel = DataParallel(net.module_, net.device)
    if net._parallel.rank:
        # The seed is shared; the noise of denoising and VAE sampling must not repeat
        # from one process's part of a batch to the next.
        # The net draws them from its own generator (skconvae._random): give this process
        # a stream of its own.
        rank = net._parallel.rank
        seed = (net.seed + 7919 * rank) % 2**31
        net._draws = stream_generator(seed, "noise", torch.device(net.device))
    try:
        yield
        # End with the first process's batch norm statistics, so that every process
        # holds the same model (the net also shares them after every epoch).
        net._parallel.share_buffers(net.module_)
    finally:
        net._parallel = None


@contextlib.contextmanager
def task_threads():
    """Keep torch to this task's share of the cores while it runs on a Dask worker.

    A worker running ``nthreads`` tasks at once (summed over the workers of the
    process) leaves each ``cores // nthreads`` threads; never more than torch
    had (Dask starts worker processes with ``OMP_NUM_THREADS=1``). Torch's
    thread count is per thread here, so concurrent tasks do not interfere.
    Outside a Dask task nothing changes.
    """
    share = _dask_task_share()
    before = torch.get_num_threads()
    if share is None or share >= before:
        yield
        return
    torch.set_num_threads(share)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _dask_task_share() -> int | None:
    if "distributed" not in sys.modules:
        return None
    from distributed import Worker, get_worker

    try:
        get_worker()
    except ValueError:
        return None
    threads = sum(worker.state.nthreads for worker in list(Worker._instances))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, threads))


def dask_setup(server) -> None:
    """Get a Dask worker ready to fit as it starts: Dask's preload hook.

    Dask calls this once a worker (or any server) that preloads skconvae has
    started: ``LocalCluster(preload=["skconvae"])``, ``dask worker --preload
    skconvae``. Importing skconvae has already brought torch in; this builds one
    throwaway optimizer, since torch imports its compiler stack (``torch._dynamo``)
    when a process creates its first optimizer. That takes about 2 s on a 2-core
    CPU; taken here, it falls in the worker's start instead of in the first fit
    the worker runs, which is inside the user's timed search.

    Parameters
    ----------
    server : distributed.Worker or distributed.Nanny or distributed.Scheduler
        The server that preloaded skconvae (unused).
    """
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
