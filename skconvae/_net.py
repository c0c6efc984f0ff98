"""The skorch net that trains a :class:`ConvAutoencoder` and runs it in batches.

It overrides a few of skorch's small hooks: ``get_dataset``/``get_iterator`` for
the batch-level data path, ``train_step_single``/``validation_step`` to feed the
input as its own target (or a paired target image), ``initialize_module`` for the
memory format and ``torch_compile`` to compile the module's methods rather than
wrap it; ``on_batch_end``/``on_train_end`` stop training on a non-finite loss or
weights, and ``fit_loop`` warns when Ctrl-C cuts training short. The estimator
hands it ``(N, C, H, W)`` NumPy arrays and gets NumPy arrays back; devices,
precision and memory formats stay in here, and inference halves its batches
when the device runs out of memory.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
import warnings
from typing import ClassVar

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping

from ._allocator import keep_batch_memory
from ._batch_size import MIN_BATCH_SIZE, BatchSizeChooser, batch_size_candidates
from ._data import BatchIterator, ImageBatches, MappedPages, as_compact_tensor
from ._distributed import data_parallel, task_threads
from ._exceptions import FitInterruptedWarning, NonFiniteLossError
from ._inference_network import InferenceNetwork
from ._noise import corrupt
from ._random import DrawingFrom, stream_generator
from ._transfer import HostTransfers
from ._warp import random_affine

# None: inference batch sizes are measured per device and model (see _batch_size.py);
# an int forces that size everywhere.
INFERENCE_BATCH_SIZE: int | None = None

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
        encode/decode methods are compiled with ``torch.compile`` for inference
        only, with a dynamic batch size (the module itself stays a plain module, so
        it pickles and loads as usual). Training stays eager: compiled, it ran
        slower on the CPU, and compiling costs more than a short fit gains.
    seed : int, default=0
        Seed of the fit's random streams: initial weights, shuffling order, input
        warps and noise, and latent sampling each draw from their own generator,
        never from torch's global one (see ``skconvae._random``).
    precision : {"float32", "bfloat16"}, default="float32"
        ``"bfloat16"`` runs the network under autocast (mixed precision).
    warp : {"affine"} or None, default=None
        Warp of training inputs (the targets stay as they are): each image of a
        training batch under its own small random affine warp (see
        ``skconvae._warp``), before any ``noise``. Only for 2-D images.
    warp_epochs : int or None, default=None
        Number of epochs of each fit, from its first, whose inputs are warped;
        ``None``: every epoch.
    noise : {"gaussian", "salt_pepper", "mask"} or None, default=None
        Corruption of training inputs (the targets stay clean): denoising training.
    noise_level : float, default=0.0
        Strength of the corruption, in the network's units (see ``corrupt``).
    noise_bounds : tuple of float, default=(0.0, 1.0)
        Range of clean data in the network's units; corrupted inputs are clipped to it.
    kl_weight : float, default=1.0
        Weight of the KL term for a variational module, relative to the ELBO.
    distributed : {"auto", True, False}, default="auto"
        Train data-parallel with the other processes of a ``torchrun`` launch
        (``"auto"``: when there is one; ``True``: require one); see
        ``skconvae._distributed``.

    See Also
    --------
    ConvAutoencoderTransformer : Builds, fits and holds one as ``net_``.

    Examples
    --------
    The estimators build and fit the net; ``ae.net_`` is the fitted one:

    >>> from sklearn.datasets import load_digits
    >>> from skconvae import AutoencoderNet, ConvAutoencoderTransformer
    >>> X, _ = load_digits(return_X_y=True)
    >>> ae = ConvAutoencoderTransformer(filters=(4, 8), max_epochs=1, random_state=0).fit(X)
    >>> isinstance(ae.net_, AutoencoderNet), type(ae.net_.module_).__name__
    (True, 'ConvAutoencoder')

    It can also be built and trained on ``(N, C, H, W)`` tensors directly:

    >>> import torch
    >>> from skconvae.nn import ConvAutoencoder, ReconstructionLoss
    >>> net = AutoencoderNet(
    ...     ConvAutoencoder,
    ...     module__in_channels=1,
    ...     module__input_size=(8, 8),
    ...     module__latent_dim=4,
    ...     criterion=ReconstructionLoss,
    ...     optimizer=torch.optim.Adam,
    ...     max_epochs=2,
    ...     train_split=None,
    ...     device="cpu",
    ...     verbose=0,
    ... )
    >>> net = net.fit(torch.rand(100, 1, 8, 8))       # images in [0, 1] are their own target
    >>> len(net.history)
    2
    """

    # The other processes of a torchrun launch, lent while training (see data_parallel).
    _parallel = None

    # skorch pickles these apart and maps their tensors to the CPU when a model trained
    # on a GPU is unpickled where there is none. The callbacks hold such tensors too: the
    # LR scheduler holds the optimizer, early stopping the best epoch's weights.
    cuda_dependent_attributes_: ClassVar[list[str]] = [
        *NeuralNet.cuda_dependent_attributes_,
        "callbacks",
    ]

    def __init__(
        self,
        *args,
        seed: int = 0,
        precision: str = "float32",
        warp: str | None = None,
        warp_epochs: int | None = None,
        noise: str | None = None,
        noise_level: float = 0.0,
        noise_bounds: tuple[float, float] = (0.0, 1.0),
        kl_weight: float = 1.0,
        distributed: bool | str = "auto",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.seed = seed
        self.precision = precision
        self.warp = warp
        self.warp_epochs = warp_epochs
        self.noise = noise
        self.noise_level = noise_level
        self.noise_bounds = noise_bounds
        self.kl_weight = kl_weight
        self.distributed = distributed

    # -- skorch hooks -------------------------------------------------------------

    def initialize_module(self):
        # Layers initialise their weights from the global generator: route those draws
        # to this fit's own stream, so that concurrent fits cannot interleave them.
        with DrawingFrom(stream_generator(self.seed, "init")):
            super().initialize_module()
        if self._is_image_module():
            self.module_.to(memory_format=torch.channels_last)
        self._compiled = {}
        self._batch_sizes = {}
        self._inference_network = InferenceNetwork()
        return self

    def get_params_for_optimizer(self, prefix, named_parameters):
        """skorch's optimizer arguments, with ``fused=True`` for Adam and AdamW where
        the device has the fused kernel.

        The fused kernel updates each tensor in one pass instead of a Python loop of
        small operations: 3-5% of an epoch on the CPU (see the speed guide).

        Parameters
        ----------
        prefix : str
            The optimizer's name (``"optimizer"``).
        named_parameters : iterator of (str, torch.nn.Parameter)
            The module's parameters.

        Returns
        -------
        args : tuple
            Positional arguments of the optimizer.
        kwargs : dict
            Keyword arguments of the optimizer.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = ConvAutoencoderTransformer(filters=(4, 8), max_epochs=1, random_state=0).fit(X)
        >>> ae.net_.optimizer_.param_groups[0]["fused"]
        True
        """
        args, kwargs = super().get_params_for_optimizer(prefix, named_parameters)
        if self.optimizer in (torch.optim.Adam, torch.optim.AdamW) and _fused_on(self.device):
            kwargs.setdefault("fused", True)
        return args, kwargs

    def _set_training(self, training=True):
        # skorch sets the mode before every batch; walking every submodule to set it
        # took 0.1 ms on a 2-core CPU, a twentieth of a small GPU step. Set it only
        # when it changes.
        modules = (self.module_, self.criterion_)
        if any(getattr(m, "training", training) != training for m in modules):
            super()._set_training(training)

    def torch_compile(self, module, name):
        # Methods are compiled lazily in _run instead of wrapping the module.
        return module

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        """skorch's pass over the training or validation batches; under a ``torchrun``
        launch, a training pass ends by giving every process the first process's
        buffers (batch norm's running statistics).

        Parameters
        ----------
        iterator : iterable of batches or None
            The batches of this pass; ``None`` skips it.
        training : bool
            Whether this is the training pass (else validation).
        prefix : str
            ``"train"`` or ``"valid"``: the prefix of the history's keys.
        step_fn : callable
            Called with each batch (``train_step`` or ``validation_step``).
        **fit_params : dict
            Passed on to ``step_fn``.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = ConvAutoencoderTransformer(filters=(4, 8), max_epochs=1, random_state=0).fit(X)
        >>> ae.net_.history[-1, "train_batch_count"]           # 1797 digits in batches of 64
        29
        """
        super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)
        if training and self._parallel is not None:
            # Under a launch, validation and the best epoch's weights that early
            # stopping keeps must be the same on every process, batch norm's too.
            self._parallel.share_buffers(self.module_)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        # Leave the module in eval mode: inference must not change the fitted state.
        self._set_training(False)
        finite = torch.stack([p.isfinite().all() for p in self.module_.parameters()]).all()
        if not finite:
            raise NonFiniteLossError(self._diverged_message("the weights became non-finite"))

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        epochs_before = len(self.history)
        self._draws = stream_generator(self.seed, "noise", torch.device(self.device))
        # Epochs are numbered in the history from 1: this fit's first is epochs_before + 1.
        last = math.inf if self.warp_epochs is None else epochs_before + self.warp_epochs
        self._last_warped_epoch = last if self.warp is not None else 0
        try:
            with data_parallel(self), task_threads(), self._batch_memory():
                return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except KeyboardInterrupt:
            # skorch's partial_fit swallows the interrupt silently and keeps the weights.
            # skorch's EarlyStopping raises it too, to stop: that one is no interruption.
            if any(
                isinstance(cb, EarlyStopping) and cb.misses_ >= cb.patience
                for _, cb in self.callbacks_
            ):
                raise
            done = sum("train_loss" in row for row in self.history[epochs_before:])
            warnings.warn(
                f"Training was interrupted (KeyboardInterrupt) after {done} of "
                f"{epochs or self.max_epochs} epochs; the model keeps the weights trained so "
                "far and is usable. Fit again to train fully (warm_start=True continues "
                "from these weights).",
                FitInterruptedWarning,
                stacklevel=2,
            )
            raise
        finally:
            del self._draws  # a generator neither pickles nor deep-copies
            del self._last_warped_epoch
            # Fused Adam changes weights without counting it in their versions.
            self._inference_network.invalidate()

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        # The loss is already on the host, in the history: checking it costs nothing.
        if self._parallel is not None:
            # Data-parallel: the recorded loss is the global batch's, so is its size.
            self.history.record_batch(
                f"{'train' if training else 'valid'}_batch_size", batch.n_global
            )
        if training:
            loss = self.history[-1]["batches"][-1]["train_loss"]
            if not math.isfinite(loss):
                epoch, batch_index = len(self.history), len(self.history[-1, "batches"])
                raise NonFiniteLossError(
                    self._diverged_message(
                        f"the training loss became {loss} at epoch {epoch}, batch {batch_index}"
                    )
                )

    def _diverged_message(self, what: str) -> str:
        return (
            f"Training stopped: {what}; the data or the updates are too large for the "
            f"network. Lower the learning rate (lr={self.lr:g}; try lr={self.lr / 10:g}), and "
            "give the network data of order 1: keep scaling='minmax' or 'symmetric' rather "
            "than scaling=None when X holds large values."
        )

    def get_dataset(self, X, y=None):
        if hasattr(X, "take") and hasattr(X, "shuffled_order"):
            return X  # a batch source (see skconvae._sources)
        return ImageBatches(self._stage(X), None if y is None else self._stage(y))

    def get_iterator(self, dataset, training=False):
        generator = torch.Generator().manual_seed(self.seed) if training else None
        batches = BatchIterator(dataset, self.batch_size, shuffle=training, generator=generator)
        return batches if self._parallel is None else self._parallel.shard(batches)

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        loss, logits = self._batch_loss(batch, training=True)
        if self._parallel is not None:
            return {"loss": self._parallel.backward(loss, batch), "y_pred": logits}
        loss.backward()
        return {"loss": loss, "y_pred": logits}

    def validation_step(self, batch, **fit_params):
        self._set_training(False)
        with torch.no_grad():
            loss, logits = self._batch_loss(batch, training=False)
            if self._parallel is not None:
                loss = self._parallel.batch_mean(loss, batch)
        return {"loss": loss, "y_pred": logits}

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_compiled", None)
        # Measured batch sizes belong to this machine, not to the model.
        state.pop("_batch_sizes", None)
        state.pop("_parallel", None)
        state.pop("_inference_network", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._compiled = {}
        self._batch_sizes = {}
        self._inference_network = InferenceNetwork()

    # -- tensors in and out of the network ----------------------------------------

    def _is_image_module(self) -> bool:
        return len(self.module_.input_size) == 2

    def _on_cuda(self) -> bool:
        return str(self.device).startswith("cuda")

    def _batch_memory(self):
        """On the CPU, keep glibc from unmapping each batch's memory (see _allocator.py)."""
        return contextlib.nullcontext() if self._on_cuda() else keep_batch_memory()

    def _stage(self, data: torch.Tensor) -> torch.Tensor:
        """Put training data on the GPU when it fits, else in pinned host memory."""
        if not self._on_cuda():
            return data
        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        if data.nbytes < GPU_RESIDENT_FRACTION * free:
            return data.to(self.device)
        return data.pin_memory()

    def _to_network_layout(self, images: torch.Tensor) -> torch.Tensor:
        """Raw ``(N, C, H, W)`` batch on any device -> float on the device, in the module's
        layout: ``channels_last`` images, or ``(N, C, L)`` signals."""
        x = images.to(self.device, non_blocking=True).float()
        if self._is_image_module():
            return x.contiguous(memory_format=torch.channels_last)
        return x.flatten(2)

    def _to_network(self, images: torch.Tensor) -> torch.Tensor:
        """Raw ``(N, C, H, W)`` batch on any device -> normalised network input."""
        return self.module_.normalize(self._to_network_layout(images))

    def _target_to_network(self, targets: torch.Tensor) -> torch.Tensor:
        """Raw target batch -> normalised units (the module's target scaling if it has one)."""
        normalize = getattr(self.module_, "normalize_target", self.module_.normalize)
        return normalize(self._to_network_layout(targets))

    def _from_network(self, y: torch.Tensor) -> torch.Tensor:
        """Network output in normalised units -> ``(N, C, H, W)`` in data units."""
        y = self.module_.denormalize(y.float())
        return y if self._is_image_module() else y.unsqueeze(2)

    def _run(
        self, method: str, x: torch.Tensor, compiled: bool = False, module=None, **kwargs
    ) -> torch.Tensor:
        """Call a method of ``module`` (default: the trained module) under the configured
        precision, compiled if asked."""
        module = self.module_ if module is None else module
        fn = getattr(module, method)
        if compiled:
            # A compiled method holds its module, whose id then stays its own.
            key = (method, id(module))
            if key not in self._compiled:
                # Dynamic batch: the measured batch sizes and last batches compile once.
                params = {"dynamic": True, **self.get_params_for("compile")}
                self._compiled[key] = torch.compile(fn, **params)
            fn = self._compiled[key]
        if self._parallel is not None and torch.is_grad_enabled():
            fn = functools.partial(self._parallel.forward, fn)
        dtype = _PRECISIONS[self.precision]
        device_type = torch.device(self.device).type
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            return fn(x, **kwargs)

    def _batch_loss(self, batch, training: bool):
        images, targets = batch
        x = self._to_network(images)
        target = x if targets is None else self._target_to_network(targets)
        if training and len(self.history) <= self._last_warped_epoch:
            x = random_affine(x, generator=self._draws)
        if training and self.noise is not None:
            x = corrupt(x, self.noise, self.noise_level, *self.noise_bounds, generator=self._draws)
        if getattr(self.module_, "variational", False):
            logits, kl = self._run("variational_logits", x, generator=self._draws)
            loss = self.get_loss(logits, target, X=x, training=training)
            # The reconstruction loss is a per-value mean: scale the per-sample KL alike.
            return loss + self.kl_weight * kl / target[0].numel(), logits
        method = "reconstruct_logits" if hasattr(self.module_, "reconstruct_logits") else "forward"
        logits = self._run(method, x)
        return self.get_loss(logits, target, X=x, training=training), logits

    # -- batched inference ---------------------------------------------------------

    def _map_batches(self, kind: tuple, inputs: np.ndarray, out: np.ndarray, fn) -> np.ndarray:
        """Fill ``out`` with ``fn`` of batches of ``inputs``, halving batches on out-of-memory.

        ``kind`` names the pass for the batch-size measurement (see ``_batch_size.py``);
        ``fn`` runs the network that :meth:`_inference_run` set up, in eval mode.
        """
        chooser = self._batch_size_chooser(kind, inputs)
        chooser.start_call()
        start, cap = 0, len(inputs)
        pages = MappedPages(inputs)
        transfers = HostTransfers(self.device)
        with torch.inference_mode(), cuda_autotune(self._on_cuda()), self._batch_memory():
            while start < len(inputs):
                size = min(chooser.next_size(), cap)
                # A tail shorter than the smallest candidate joins this batch: fewer
                # samples can take other CPU kernels, and results must not depend on
                # how calls were cut into batches.
                tail = len(inputs) - start - size
                if 0 < tail < MIN_BATCH_SIZE and size + tail <= cap:
                    size += tail
                batch = inputs[start : start + size]
                began = time.perf_counter()
                try:
                    result = fn(transfers.to_device(as_compact_tensor(batch)))
                    # While measuring, each batch finishes before its time is taken.
                    waits = chooser.chosen is None
                    transfers.to_host(result, out[start : start + len(batch)], wait=waits)
                except torch.cuda.OutOfMemoryError as exc:
                    if len(batch) == 1:
                        raise torch.cuda.OutOfMemoryError(
                            f"{self.device} ran out of memory even for one sample at a time. "
                            "Free device memory (other models, other processes), or run "
                            "the model on the CPU: save it and skconvae.load(path, "
                            "device='cpu')."
                        ) from exc
                    cap = len(batch) // 2
                    chooser.out_of_memory(len(batch))
                else:
                    chooser.record(size, len(batch), time.perf_counter() - began)
                    start += len(batch)
                    pages.consumed(batch.nbytes)
                    continue
                # Outside the except block, so the failed batch's tensors are released.
                if self._on_cuda():
                    torch.cuda.empty_cache()
            transfers.finish()
        return out

    def _batch_size_chooser(self, kind: tuple, inputs: np.ndarray) -> BatchSizeChooser:
        """The chooser for this pass, kept on the net so it measures only once."""
        candidates = batch_size_candidates(self._on_cuda(), INFERENCE_BATCH_SIZE)
        if len(candidates) == 1:
            return BatchSizeChooser(candidates)
        key = (kind, inputs.shape[1:], inputs.dtype.str, str(self.device), self.precision,
               torch.get_num_threads())  # fmt: skip
        choosers = self.__dict__.setdefault("_batch_sizes", {})
        chooser = choosers.get(key)
        if chooser is None:  # built once: its schedule is a list of some hundred batches
            chooser = BatchSizeChooser(candidates, every_turn=not self._on_cuda())
            chooser = choosers.setdefault(key, chooser)  # another thread's, if it came first
        return chooser

    def _inference_run(self, eager: bool = False):
        """``(run, compiled)``: ``_run`` for inference on the module in eval mode with its
        exact rewrites (see ``_inference_network.py``), compiled when ``compile=True`` unless
        ``eager``."""
        self._set_training(False)
        compiled = bool(self.compile and not eager)
        network = self._inference_network(self.module_)
        run = functools.partial(self._run, compiled=compiled, module=network)
        return run, compiled

    def encode(self, images: np.ndarray, eager: bool = False) -> np.ndarray:
        """Codes of ``(N, C, H, W)`` images, float32 ``(N, n_features_out)``.

        Runs in batches and never needs the whole input in memory at once.

        Parameters
        ----------
        images : ndarray of shape (N, C, H, W)
            Images in data units (any numeric dtype; memory-mapped arrays stream).
        eager : bool, default=False
            Never compile, even with ``compile=True`` (for passes inside ``fit``,
            which must not pay for compilation).

        Returns
        -------
        ndarray of shape (N, n_features_out), dtype float32
            The module's codes.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = ConvAutoencoderTransformer(filters=(4, 8), max_epochs=1, random_state=0).fit(X)
        >>> ae.net_.encode(X[:3].reshape(3, 1, 8, 8)).shape
        (3, 32)
        """
        run, compiled = self._inference_run(eager)
        out = np.empty((len(images), self.module_.n_features_out), dtype=np.float32)
        return self._map_batches(
            ("encode", compiled),
            images,
            out,
            lambda xb: run("encode", self._to_network(xb)).float(),
        )

    def decode(self, codes: np.ndarray, image_chw: tuple[int, int, int]) -> np.ndarray:
        """Reconstructions decoded from codes, float32 ``(N, C, H, W)`` in data units.

        Parameters
        ----------
        codes : ndarray of shape (N, n_features_out)
            Codes, as returned by :meth:`encode`.
        image_chw : tuple of int
            ``(C, H, W)`` of one decoded image.

        Returns
        -------
        ndarray of shape (N, C, H, W), dtype float32
            Decoded images, in data units.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = ConvAutoencoderTransformer(filters=(4, 8), max_epochs=1, random_state=0).fit(X)
        >>> ae.net_.decode(np.zeros((3, 32), dtype=np.float32), (1, 8, 8)).shape
        (3, 1, 8, 8)
        """
        run, compiled = self._inference_run()
        out = np.empty((len(codes), *image_chw), dtype=np.float32)
        return self._map_batches(
            ("decode", compiled),
            codes,
            out,
            lambda zb: self._from_network(run("decode", zb.to(self.device).float())),
        )

    def reconstruct(self, images: np.ndarray, out_chw: tuple[int, ...] | None = None) -> np.ndarray:
        """Network outputs for ``(N, C, H, W)`` images, float32, in data units.

        Parameters
        ----------
        images : ndarray of shape (N, C, H, W)
            Images in data units.
        out_chw : tuple of int or None, default=None
            ``(C, H, W)`` of one output when it differs from an input's (an
            upscaling regressor's); ``None``: the input's.

        Returns
        -------
        ndarray of shape (N, C, H, W), dtype float32
            The module's outputs (reconstructions, or predicted target images),
            in data units; each of shape ``out_chw`` when given.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = ConvAutoencoderTransformer(filters=(4, 8), max_epochs=1, random_state=0).fit(X)
        >>> ae.net_.reconstruct(X[:3].reshape(3, 1, 8, 8)).shape
        (3, 1, 8, 8)
        """
        run, compiled = self._inference_run()
        out = np.empty((len(images), *(out_chw or images.shape[1:])), dtype=np.float32)
        return self._map_batches(
            ("reconstruct", compiled),
            images,
            out,
            lambda xb: self._from_network(run("forward", self._to_network(xb))),
        )

    def reconstruction_errors(self, images: np.ndarray) -> np.ndarray:
        """Per-sample mean squared reconstruction error in data units, ``(N,)``.

        Parameters
        ----------
        images : ndarray of shape (N, C, H, W)
            Images in data units.

        Returns
        -------
        ndarray of shape (N,), dtype float64
            The mean squared error of each image's reconstruction, reduced in
            float64 so that it does not depend on the batch size.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = ConvAutoencoderTransformer(filters=(4, 8), max_epochs=1, random_state=0).fit(X)
        >>> errors = ae.net_.reconstruction_errors(X[:3].reshape(3, 1, 8, 8))
        >>> errors.shape, bool((errors == -ae.score_samples(X[:3])).all())
        ((3,), True)
        """
        run, compiled = self._inference_run()

        def errors(xb):
            x = self._to_network_layout(xb)
            recon = self.module_.denormalize(run("forward", self.module_.normalize(x)).float())
            # float64 reduction: the result must not depend on the batch's composition.
            return (recon - x).double().square().flatten(1).mean(1)

        out = np.empty(len(images), dtype=np.float64)
        return self._map_batches(("errors", compiled), images, out, errors)


def _fused_on(device) -> bool:
    """Whether this torch has fused Adam kernels for ``device`` (CUDA's since 2.0,
    the CPU's since 2.4)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # older torch: CUDA only
        return torch.device(device).type == "cuda"
    return torch.device(device).type in _get_fused_kernels_supported_devices()


_autotune_lock = threading.Lock()
_autotune_done = False


@contextlib.contextmanager
def cuda_autotune(enabled: bool):
    """Let cuDNN pick the fastest convolution kernels: switched on once per process.

    ``torch.backends.cudnn.benchmark`` is process-wide, and no scope of it can be
    safe under threads: restoring it on exit would switch it off under another
    thread's fit, or undo a choice its caller made meanwhile. So the first use on
    CUDA turns it on, once, and nothing ever sets it again: a later
    ``torch.backends.cudnn.benchmark = False`` by the caller stands. It is left
    alone when ``torch.backends.cudnn.deterministic`` is set, where the caller asked
    for reproducible kernels.
    """
    global _autotune_done
    if enabled and not _autotune_done:
        with _autotune_lock:
            if not _autotune_done:
                if not torch.backends.cudnn.deterministic:
                    torch.backends.cudnn.benchmark = True
                _autotune_done = True
    yield
