"""The skorch net that trains a :class:`ConvAutoencoder` and runs it in batches.

It overrides a few of skorch's small hooks: ``get_dataset``/``get_iterator`` for
the batch-level data path, ``train_step_single``/``validation_step`` to feed the
input as its own target (or a paired target image), and ``initialize_module``
for the memory format. The estimator hands it ``(N, C, H, W)`` NumPy arrays and
gets NumPy arrays back; devices stay in here.
"""

from __future__ import annotations

import numpy as np
import torch
from skorch import NeuralNet

from ._data import BatchIterator, ImageBatches, as_compact_tensor

INFERENCE_BATCH_SIZE = 1024


class AutoencoderNet(NeuralNet):
    """skorch ``NeuralNet`` for image reconstruction with a batch-level data path.

    Parameters
    ----------
    *args, **kwargs
        Passed to :class:`skorch.NeuralNet`.
    seed : int, default=0
        Seed of the shuffling order of training batches.
    """

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = seed

    # -- skorch hooks -------------------------------------------------------------

    def initialize_module(self):
        super().initialize_module()
        if self._is_image_module():
            self.module_.to(memory_format=torch.channels_last)
        return self

    def on_train_end(self, net, X=None, y=None, **kwargs):
        # Leave the module in eval mode: inference must not change the fitted state.
        self._set_training(False)

    def get_dataset(self, X, y=None):
        if isinstance(X, ImageBatches):
            return X
        return ImageBatches(X, y)

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

    # -- tensors in and out of the network ----------------------------------------

    def _is_image_module(self) -> bool:
        return len(self.module_.input_size) == 2

    def _to_network(self, images: torch.Tensor) -> torch.Tensor:
        """Raw ``(N, C, H, W)`` batch on any device -> normalised network input."""
        x = images.to(self.device).float()
        if self._is_image_module():
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = x.flatten(2)
        return self.module_.normalize(x)

    def _from_network(self, y: torch.Tensor) -> torch.Tensor:
        """Network output in normalised units -> ``(N, C, H, W)`` in data units."""
        y = self.module_.denormalize(y)
        return y if self._is_image_module() else y.unsqueeze(2)

    def _batch_loss(self, batch, training: bool):
        images, targets = batch
        x = self._to_network(images)
        target = x if targets is None else self._to_network(targets)
        logits = self.module_.decode_logits(self.module_.encode(x))
        return self.get_loss(logits, target, X=x, training=training), logits

    # -- batched inference ---------------------------------------------------------

    def _map_batches(self, inputs: np.ndarray, out: np.ndarray, fn) -> np.ndarray:
        self._set_training(False)
        with torch.inference_mode():
            for start in range(0, len(inputs), INFERENCE_BATCH_SIZE):
                stop = start + INFERENCE_BATCH_SIZE
                out[start:stop] = fn(as_compact_tensor(inputs[start:stop])).cpu().numpy()
        return out

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Codes of ``(N, C, H, W)`` images, float32 ``(N, n_features_out)``."""
        out = np.empty((len(images), self.module_.n_features_out), dtype=np.float32)
        return self._map_batches(images, out, lambda xb: self.module_.encode(self._to_network(xb)))

    def decode(self, codes: np.ndarray, image_chw: tuple[int, int, int]) -> np.ndarray:
        """Reconstructions decoded from codes, float32 ``(N, C, H, W)`` in data units."""
        out = np.empty((len(codes), *image_chw), dtype=np.float32)
        return self._map_batches(
            codes,
            out,
            lambda zb: self._from_network(self.module_.decode(zb.to(self.device).float())),
        )

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Reconstructions of ``(N, C, H, W)`` images, float32, in data units."""
        out = np.empty(images.shape, dtype=np.float32)
        return self._map_batches(
            images, out, lambda xb: self._from_network(self.module_(self._to_network(xb)))
        )

    def reconstruction_errors(self, images: np.ndarray) -> np.ndarray:
        """Per-sample mean squared reconstruction error in data units, ``(N,)``."""

        def errors(xb):
            x = xb.to(self.device).float()
            recon = self._from_network(self.module_(self._to_network(xb)))
            return (recon - x).square().flatten(1).mean(1)

        out = np.empty(len(images), dtype=np.float64)
        return self._map_batches(images, out, errors)
