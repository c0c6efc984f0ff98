"""The skorch net that trains a :class:`ConvAutoencoder` and runs it in batches.

It overrides a few of skorch's small hooks: ``get_dataset``/``get_iterator`` for
the batch-level data path, ``train_step_single``/``validation_step`` to feed the
input as its own target (or a paired target image), ``initialize_module`` for the
memory format and ``torch_compile`` to compile the module's methods rather than
wrap it. The estimator hands it ``(N, C, H, W)`` NumPy arrays and gets NumPy
arrays back; devices, precision and memory formats stay in here.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from skorch import NeuralNet

from ._data import BatchIterator, ImageBatches, as_compact_tensor

INFERENCE_BATCH_SIZE = 1024

# Share of free GPU memory the training data may take to live on the GPU; larger
# data stays in pinned host memory and is copied batch by batch.
GPU_RESIDENT_FRACTION = 0.5

_PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


class AutoencoderNet(NeuralNet):
    """skorch ``NeuralNet`` for image reconstruction with a batch-level data path.

    Parameters
    ----------
    *args, **kwargs
        Passed to :class:`skorch.NeuralNet`. With ``compile=True`` the module's
        encode/decode methods are compiled with ``torch.compile`` (the module
        itself stays a plain module, so it pickles and loads as usual).
    seed : int, default=0
        Seed of the shuffling order of training batches.
    precision : {"float32", "bfloat16"}, default="float32"
        ``"bfloat16"`` runs the network under autocast (mixed precision).
    """

    def __init__(self, *args, seed: int = 0, precision: str = "float32", **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = seed
        self.precision = precision

    # -- skorch hooks -------------------------------------------------------------

    def initialize_module(self):
        super().initialize_module()
        if self._is_image_module():
            self.module_.to(memory_format=torch.channels_last)
        self._compiled = {}
        return self

    def torch_compile(self, module, name):
        # Methods are compiled lazily in _run instead of wrapping the module.
        return module

    def on_train_end(self, net, X=None, y=None, **kwargs):
        # Leave the module in eval mode: inference must not change the fitted state.
        self._set_training(False)

    def get_dataset(self, X, y=None):
        if isinstance(X, ImageBatches):
            return X
        return ImageBatches(self._stage(X), None if y is None else self._stage(y))

    def get_iterator(self, dataset, training=False):
        generator = torch.Generator().manual_seed(self.seed) if training else None
        return BatchIterator(dataset, self.batch_size, shuffle=training, generator=generator)

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        loss, logits = self._batch_loss(batch, training=True)
        loss.backward()
        return {"loss": loss, "y_pred": logits}

    def validation_step(self, batch, **fit_params):
        self._set_training(False)
        with torch.no_grad():
            loss, logits = self._batch_loss(batch, training=False)
        return {"loss": loss, "y_pred": logits}

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_compiled", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._compiled = {}

    # -- tensors in and out of the network ----------------------------------------

    def _is_image_module(self) -> bool:
        return len(self.module_.input_size) == 2

    def _on_cuda(self) -> bool:
        return str(self.device).startswith("cuda")

    def _stage(self, data: torch.Tensor) -> torch.Tensor:
        """Put training data on the GPU when it fits, else in pinned host memory."""
        if not self._on_cuda():
            return data
        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        if data.nbytes < GPU_RESIDENT_FRACTION * free:
            return data.to(self.device)
        return data.pin_memory()

    def _to_network(self, images: torch.Tensor) -> torch.Tensor:
        """Raw ``(N, C, H, W)`` batch on any device -> normalised network input."""
        x = images.to(self.device, non_blocking=True).float()
        if self._is_image_module():
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = x.flatten(2)
        return self.module_.normalize(x)

    def _from_network(self, y: torch.Tensor) -> torch.Tensor:
        """Network output in normalised units -> ``(N, C, H, W)`` in data units."""
        y = self.module_.denormalize(y.float())
        return y if self._is_image_module() else y.unsqueeze(2)

    def _run(self, method: str, x: torch.Tensor) -> torch.Tensor:
        """Call a module method under the configured precision and compilation."""
        fn = getattr(self.module_, method)
        if self.compile:
            if method not in self._compiled:
                self._compiled[method] = torch.compile(fn, **self.get_params_for("compile"))
            fn = self._compiled[method]
        dtype = _PRECISIONS[self.precision]
        device_type = torch.device(self.device).type
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            return fn(x)

    def _batch_loss(self, batch, training: bool):
        images, targets = batch
        x = self._to_network(images)
        target = x if targets is None else self._to_network(targets)
        logits = self._run("reconstruct_logits", x)
        return self.get_loss(logits, target, X=x, training=training), logits

    # -- batched inference ---------------------------------------------------------

    def _map_batches(self, inputs: np.ndarray, out: np.ndarray, fn) -> np.ndarray:
        self._set_training(False)
        with torch.inference_mode(), cuda_autotune(self._on_cuda()):
            for start in range(0, len(inputs), INFERENCE_BATCH_SIZE):
                stop = start + INFERENCE_BATCH_SIZE
                out[start:stop] = fn(as_compact_tensor(inputs[start:stop])).cpu().numpy()
        return out

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Codes of ``(N, C, H, W)`` images, float32 ``(N, n_features_out)``."""
        out = np.empty((len(images), self.module_.n_features_out), dtype=np.float32)
        return self._map_batches(
            images, out, lambda xb: self._run("encode", self._to_network(xb)).float()
        )

    def decode(self, codes: np.ndarray, image_chw: tuple[int, int, int]) -> np.ndarray:
        """Reconstructions decoded from codes, float32 ``(N, C, H, W)`` in data units."""
        out = np.empty((len(codes), *image_chw), dtype=np.float32)
        return self._map_batches(
            codes,
            out,
            lambda zb: self._from_network(self._run("decode", zb.to(self.device).float())),
        )

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Reconstructions of ``(N, C, H, W)`` images, float32, in data units."""
        out = np.empty(images.shape, dtype=np.float32)
        return self._map_batches(
            images, out, lambda xb: self._from_network(self._run("forward", self._to_network(xb)))
        )

    def reconstruction_errors(self, images: np.ndarray) -> np.ndarray:
        """Per-sample mean squared reconstruction error in data units, ``(N,)``."""

        def errors(xb):
            x = xb.to(self.device).float()
            recon = self._from_network(self._run("forward", self._to_network(xb)))
            return (recon - x).square().flatten(1).mean(1)

        out = np.empty(len(images), dtype=np.float64)
        return self._map_batches(images, out, errors)


@contextlib.contextmanager
def cuda_autotune(enabled: bool):
    """Let cuDNN pick the fastest kernels inside, restoring the global flag after."""
    if not enabled:
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
