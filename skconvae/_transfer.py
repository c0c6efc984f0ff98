"""Inference batches between host memory and the device, with the GPU kept busy.

Inference reads NumPy batches and writes NumPy results. On the CPU the result is
copied straight into the output array by NumPy's assignment, not by torch's
``copy_``, which was slower into this fresh memory (faulted in page by page as it is
written; torch's copy may split a batch over its threads, ours is one). Measured in
one process on the 2-core CPU, writing the classic encoder's codes (1,568 floats an
image) at batch 128 that way made ``transform`` 0.85x a hand-written loop that
assigns with NumPy; NumPy's assignment gave 0.97x (batch 256: 1.00x and 1.03x).

On CUDA, a copy between the device and ordinary (pageable) host memory makes the
host wait: the driver stages it through a pinned buffer of its own, and the next
batch is not prepared until it is done.
Measured on an H200, encoding from host arrays ran at 0.66-0.96x a loop whose
inputs already lived on the GPU, and the gap was the waiting, not the arithmetic.

So on CUDA each batch is copied into pinned (page-locked) host memory and sent
without waiting, its result comes back into pinned memory without waiting, and the
host copies a batch's result into the output array only after it has queued the
next batch: the GPU computes batch ``i + 1`` while the host copies out batch ``i``.
Pinned buffers come from PyTorch's caching host allocator, which reuses a buffer
only after the copies recorded on it have finished. What the arrays hold does not
change, only when the host waits.

While the batch size is still being measured (``_batch_size.py``), each batch is
finished before the next starts, so that its time is its own.
"""

from __future__ import annotations

import numpy as np
import torch


class HostTransfers:
    """Batches to the device and results back into a NumPy array, overlapped on CUDA.

    Parameters
    ----------
    device : str or torch.device
        Where the module runs.
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.overlap = self.device.type == "cuda"
        self.pin = self.overlap  # page-locked staging (needs CUDA)
        # The result waiting to be copied out: (copy finished event, pinned tensor, view).
        self._pending = None

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """``batch`` (a CPU tensor) on the device; on CUDA the copy is not waited for."""
        if not self.overlap:
            return batch.to(self.device)
        staged = torch.empty(batch.shape, dtype=batch.dtype, pin_memory=self.pin)
        staged.copy_(batch)
        return staged.to(self.device, non_blocking=True)

    def to_host(self, result: torch.Tensor, out: np.ndarray, wait: bool = True) -> None:
        """Copy ``result`` into ``out`` (same shape), now or, with ``wait=False`` on
        CUDA, at the next call or at :meth:`finish`, while the device works on."""
        if not self.overlap:
            out[...] = result.numpy(force=True)
            return
        staged = torch.empty(result.shape, dtype=result.dtype, pin_memory=self.pin)
        staged.copy_(result, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        self.finish()
        self._pending = (copied, staged, out)
        if wait:
            self.finish()

    def finish(self) -> None:
        """Wait for the result still on its way and copy it out."""
        if self._pending is None:
            return
        copied, staged, out = self._pending
        self._pending = None
        copied.synchronize()
        torch.from_numpy(out).copy_(staged)
