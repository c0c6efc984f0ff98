"""ConvAutoencoderRegressor: image-to-image regression, scikit-learn style."""

from __future__ import annotations

import dataclasses
from numbers import Integral
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
)

from ._base import (
    SHARED_CONSTRAINTS,
    check_filters,
    continue_training,
    network_input_size,
    skorch_training_kwargs,
    validate_images,
)
from ._dask import accepts_dask
from ._distributed import launch_setup
from ._ensemble import ensemble_predict
from ._image_networks import ImageToImageNet, ResidualImageNet
from ._incremental import IncrementalFitMixin, for_chunks, warn_out_of_range
from ._layout import check_sample_shape, flatten_samples, infer_target_layout
from ._net import AutoencoderNet, cuda_autotune
from ._network import ReconstructionLoss
from ._persistence import PersistenceMixin
from ._scaling import fit_scaling, incremental_range
from ._sources import in_memory_images, load_training_images
from ._utils import restore_on_error

NETWORKS = {"resnet": ResidualImageNet, "unet": ImageToImageNet}
# ``filters=None``: each network's measured default (benchmarks/bench_restoration.py);
# the residual network's widths grow with ``downscale`` (see ``_network_settings``).
DEFAULT_FILTERS = {"resnet": (32, 32, 32, 32), "unet": (32, 64)}
DEFAULT_EPOCHS = 10

# How to avoid clipping when data comes in chunks.
_RANGE_FIX = (
    "Start partial_fit with a chunk that spans the data's full range, or pass 8- or "
    "16-bit integer images, whose scaling uses the dtype's range."
)


class ConvAutoencoderRegressor(
    IncrementalFitMixin, PersistenceMixin, RegressorMixin, BaseEstimator
):
    """Image-to-image regression with a convolutional network: denoising, super-resolution.

    ``fit(X, y)`` learns to map images ``X`` to paired images ``y``: noisy to
    clean (denoising), low to high resolution (``y`` larger than ``X`` by an
    integer factor), or other translations. The default network is a stack of
    residual blocks (DnCNN / EDSR style) that predicts the residual over the
    input -- or over its bicubic interpolation when upscaling -- so the network
    learns only the correction. Denoisers run the blocks on a grid half the
    input's size, reached by a pixel unshuffle (FFDNet style, ``downscale``);
    upscalers at the input's resolution. Upscaling is sub-pixel (the last
    convolution predicts ``factor**2`` values per input pixel, interleaved by a
    pixel shuffle). ``network="unet"`` is the earlier U-Net. Both
    are fully convolutional: ``predict`` takes images of any size, so a model
    trained on patches (:func:`skconvae.preprocessing.extract_random_patches` cuts
    them from photos of any sizes) processes whole images.

    Parameters
    ----------
    image_shape : tuple of int or None, default=None
        How a flat row of ``X`` folds into an image; see
        :class:`ConvAutoencoderTransformer`.
    target_shape : tuple of int or None, default=None
        How a flat row of ``y`` folds into an image, ``(height, width[, channels])``.
        ``None``: with the inputs' channels and each side the same integer multiple
        of the inputs' (the smallest that fits), else a square grey image.
    channels : {"auto", "last", "first"}, default="auto"
        Where 4-D input keeps its channels; see :class:`ConvAutoencoderTransformer`.
    network : {"resnet", "unet"}, default="resnet"
        ``"resnet"``: a convolution, one residual block (two convolutions) per
        entry of ``filters``, and the output convolution, all at the input's
        resolution or ``downscale`` times coarser
        (:class:`skconvae.nn.ResidualImageNet`). ``"unet"``: encoder
        stages of two convolutions with 2x max-pooling between them and a decoder
        with skip connections (:class:`skconvae.nn.ImageToImageNet`).
    filters : tuple of int or None, default=None
        Width of each residual block (``"resnet"``) or encoder stage (``"unet"``).
        ``None``: four blocks of ``32 * downscale`` for ``"resnet"`` (the same
        arithmetic per pixel whatever the downscale), ``(32, 64)`` for ``"unet"``.
    downscale : int or "auto", default="auto"
        ``"resnet"`` only: the residual blocks run on a grid ``downscale`` times
        coarser than the input's, reached without losing information by a pixel
        unshuffle (each ``downscale x downscale`` block of pixels becomes one
        pixel with ``downscale**2`` times the channels; FFDNet, Zhang et al. 2018)
        and left by the output's pixel shuffle. Each convolution then sees
        ``downscale`` times farther for the same cost per pixel. Images whose sides
        are not multiples are padded (edge values repeated) and the output cropped.
        ``"auto"``: 2 when target and input have the same size (denoising), 1
        when upscaling, each the better in ``benchmarks/bench_restoration.py``:
        denoising held-out photos at sigma 0.2, 2 (four blocks of 64) gained 0.31
        and 0.45 dB PSNR over 1 (four blocks of 32) for two training seeds, and
        fit in 15% less time; in 2x super-resolution it lost 0.9 dB. On small
        images with thin strokes full resolution does better: 28x28 MNIST digits
        at sigma 0.5 denoised to 20.57 dB with ``downscale=1, filters=(32,) * 8``
        and 20.36 dB with the defaults (both with ``loss="mse"``). The value used
        is ``net_.module_.downscale``.
    kernel_size : int, default=3
        Size of every (``same``-padded) convolution kernel.
    skip_connections : bool, default=True
        Concatenate encoder feature maps into the decoder (``"unet"`` only).
    residual : bool, default=True
        Predict the difference to the (interpolated) input; used when input and
        target have the same number of channels.
    loss : {"auto", "mse", "l1"}, default="auto"
        Training criterion. ``"auto"``: ``"mse"`` when upscaling (``y`` larger than
        ``X``), ``"l1"`` otherwise, each the better of the two in
        ``benchmarks/bench_restoration.py``: L1 denoised photos about 1 dB better
        (sigma 0.2), while for 2x super-resolution it learned almost no correction
        over the bicubic base and MSE gained 0.9 dB more. Denoising MNIST digits
        (pixels mostly 0 or 1), MSE was 0.55 dB better than L1: try both.
    scaling : {"minmax", "symmetric"} or None, default="minmax"
        Per-channel scaling of inputs and targets, each learned at ``fit``.
        Predictions are clipped to the range of the training targets.
    self_ensemble : bool, default=False
        ``predict`` (and ``score``) average the network's outputs over the 8 flips
        and quarter turns of each input image, each output turned back (EDSR+'s
        self-ensemble; a signal: over itself and its reversal). 8 times the
        prediction work, for sharper results: on held-out photos in
        ``benchmarks/bench_restoration.py``, +0.09 to +0.33 dB PSNR per photo
        (denoising at sigma 0.1 and 0.2, 2x super-resolution). It helps where
        the training images had no preferred orientation (random patches of
        photos, flipped and turned) and hurts where orientation means something:
        denoising upright MNIST digits, -0.20 dB. Training does not change; set
        it on a fitted model with ``set_params``.
    max_epochs : int, default=10
        Number of passes over the training pairs.
    batch_size : int, default=16
        Training mini-batch size. Smaller batches took more steps in the same time
        on the CPU and restored better in ``benchmarks/bench_restoration.py`` (16
        against 32: +0.67 dB denoising at sigma 0.2, +0.04 to +0.14 dB in
        super-resolution); on a GPU, larger batches train faster.
    lr : float, default=1e-3
        Initial learning rate.
    lr_schedule : {"cosine", "constant"}, default="cosine"
        ``"cosine"`` decays the learning rate from ``lr`` to ``lr / 100`` along a
        half cosine over ``max_epochs`` (restarting from ``lr`` when a
        ``warm_start`` fit continues); ``"constant"`` keeps ``lr``.
    optimizer : {"adam", "adamw", "sgd", "rmsprop"} or torch optimizer class, default="adam"
        Optimizer used for training. Adam and AdamW run PyTorch's fused kernel
        (``fused=True``) where the device has one (CUDA; the CPU from torch 2.4).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the pairs, stop when their loss has
        not improved for ``n_iter_no_change`` epochs, and keep the best weights.
    validation_fraction : float, default=0.1
        Share of the training pairs held out when ``early_stopping=True``.
    n_iter_no_change : int, default=5
        Patience of early stopping, in epochs.
    device : str, default="auto"
        Torch device: ``"auto"`` uses CUDA when available, else the CPU.
    precision : {"float32", "bfloat16"}, default="float32"
        ``"bfloat16"`` trains and predicts under autocast (mixed precision).
    compile : bool, default=False
        Compile the network for ``predict`` and ``score`` with ``torch.compile``
        (training stays eager).
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling and the validation split.
    verbose : int, default=0
        0 is silent; 1 prints skorch's per-epoch table and a progress bar.
    callbacks : list of skorch callbacks or None, default=None
        Extra skorch callbacks, copied at each ``fit``.
    warm_start : bool, default=False
        Continue training the fitted network on the next ``fit``.
    distributed : {"auto", True, False}, default="auto"
        Data-parallel training inside a ``torchrun`` launch.

        :class:`ConvAutoencoderTransformer` describes these training parameters
        (``optimizer`` to ``distributed``) in full; they work the same here.

    Attributes
    ----------
    net_ : skconvae.AutoencoderNet
        The trained skorch net; ``net_.module_`` is a :class:`skconvae.nn.ResidualImageNet`
        or :class:`skconvae.nn.ImageToImageNet`.
    image_shape_, target_shape_ : tuple of int
        ``(channels, height, width)`` of inputs and targets.
    scale_ : int
        Upscaling factor from inputs to targets.
    input_min_, input_max_ : ndarray of shape (channels,)
        Per-channel range of the inputs that scaling maps from (the training
        inputs' extremes, or the rule of the first ``partial_fit`` call).
    target_min_, target_max_ : ndarray of shape (target channels,)
        The same for the targets; predictions are clipped to it.
    n_features_in_ : int
        Number of features per sample seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names of a DataFrame passed to ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from skconvae import ConvAutoencoderRegressor
    >>> clean = load_digits().images                     # (1797, 8, 8), values 0..16
    >>> noisy = clean + np.random.default_rng(0).normal(0, 4, clean.shape)
    >>> model = ConvAutoencoderRegressor(filters=(8, 8), max_epochs=2, random_state=0)
    >>> model.fit(noisy, clean).predict(noisy[:5]).shape
    (5, 8, 8)
    """

    # The cosine learning-rate schedule ends at 1% of lr rather than at zero.
    _LR_FLOOR = 0.01

    _parameter_constraints: ClassVar[dict] = {
        **SHARED_CONSTRAINTS,
        "target_shape": [None, tuple, list],
        "network": [StrOptions({"resnet", "unet"})],
        "filters": [None, tuple, list],
        "downscale": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "skip_connections": ["boolean"],
        "residual": ["boolean"],
        "loss": [StrOptions({"auto", "mse", "l1"})],
        "scaling": [None, StrOptions({"minmax", "symmetric"})],
        "self_ensemble": ["boolean"],
        "lr_schedule": [StrOptions({"cosine", "constant"})],
    }

    def __init__(
        self,
        *,
        image_shape=None,
        target_shape=None,
        channels="auto",
        network="resnet",
        filters=None,
        downscale="auto",
        kernel_size=3,
        skip_connections=True,
        residual=True,
        loss="auto",
        scaling="minmax",
        self_ensemble=False,
        max_epochs=DEFAULT_EPOCHS,
        batch_size=16,
        lr=1e-3,
        lr_schedule="cosine",
        optimizer="adam",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        device="auto",
        precision="float32",
        compile=False,
        random_state=None,
        verbose=0,
        callbacks=None,
        warm_start=False,
        distributed="auto",
    ):
        self.image_shape = image_shape
        self.target_shape = target_shape
        self.channels = channels
        self.network = network
        self.filters = filters
        self.downscale = downscale
        self.kernel_size = kernel_size
        self.skip_connections = skip_connections
        self.residual = residual
        self.loss = loss
        self.scaling = scaling
        self.self_ensemble = self_ensemble
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_schedule = lr_schedule
        self.optimizer = optimizer
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.precision = precision
        self.compile = compile
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.warm_start = warm_start
        self.distributed = distributed

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Learn to map images ``X`` to images ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or N-D images
            Input images (flat rows, ``(N, H, W)`` or 4-D with channels).
        y : array-like of shape (n_samples, n_target_features) or N-D images
            Target images, the same size as ``X``'s or larger by an integer factor.
            When ``X`` is a memory-mapped array, another sliceable array-like or a
            Dask array, ``X`` and ``y`` are streamed, never loaded whole.

        Returns
        -------
        self : ConvAutoencoderRegressor
            The fitted regressor.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderRegressor
        >>> clean = load_digits().images                     # (1797, 8, 8), values 0..16
        >>> noisy = clean + np.random.default_rng(0).normal(0, 4, clean.shape)
        >>> model = ConvAutoencoderRegressor(filters=(8,), max_epochs=1, random_state=0)
        >>> model.fit(noisy, clean).image_shape_, model.scale_
        ((1, 8, 8), 1)
        """
        with restore_on_error(self):
            self._fit(X, y)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y):
        """Train one pass over a chunk of image pairs, for data that comes in chunks.

        The first call (on an unfitted regressor) sets up layouts, scaling and
        network from the chunk; later calls check it against them and train one
        more pass, keeping the optimizer's state. Scaling maps from the full range
        of 8- and 16-bit integer dtypes (0..255 for uint8), else from the first
        chunk's per-channel extremes; values of later chunks outside it are
        clipped to it, with a ``UserWarning``. ``max_epochs`` and early stopping
        do not apply. A call that fails leaves the regressor as it was.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or N-D images
            A chunk of input images, as for :meth:`fit`.
        y : array-like of shape (n_samples, n_target_features) or N-D images
            The chunk's target images.

        Returns
        -------
        self : ConvAutoencoderRegressor
            The regressor, trained one more pass.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderRegressor
        >>> clean = (load_digits().images * 15).astype(np.uint8)      # 0..240
        >>> noisy = np.clip(clean + np.random.default_rng(0).normal(0, 40, clean.shape), 0, 255)
        >>> model = ConvAutoencoderRegressor(filters=(8, 16), random_state=0)
        >>> for start in range(0, 1797, 600):
        ...     chunk = slice(start, start + 600)
        ...     model = model.partial_fit(noisy[chunk].astype(np.uint8), clean[chunk])
        >>> model.predict(noisy[:2].astype(np.uint8)).shape
        (2, 8, 8)
        """
        return self._partial_fit(X, y)

    def _training_pairs(self, X, y, fitted: bool):
        """Inputs and targets as ``TrainingImages`` (streamed together when X streams)."""
        layout = self._layout if fitted else None
        inputs = load_training_images(self, X, layout, self.image_shape, self.channels)
        if y is None:
            _validate_targets(y)
        streamed = inputs.images is None
        head = y[:1] if streamed else y
        head = head.compute() if hasattr(head, "compute") else head
        targets_flat, target_sample_shape = _validate_targets(head)
        if streamed:
            check_consistent_length(np.empty(len(X)), np.empty(len(y)))
        else:
            check_consistent_length(inputs.images, targets_flat)
        if fitted:
            target_layout, scale = self._target_layout, self.scale_
            check_sample_shape(target_layout, target_sample_shape)
            if targets_flat.shape[1] != target_layout.n_features:
                raise ValueError(
                    f"y has {targets_flat.shape[1]} features per sample, but this regressor "
                    f"was fitted on targets of {target_layout.n_features}. Pass targets of "
                    "the fitted size and layout."
                )
        else:
            target_layout, scale = infer_target_layout(
                inputs.layout,
                target_sample_shape or targets_flat.shape[1:],
                self.target_shape,
                self.channels,
            )
        if streamed:
            y = y if hasattr(y, "dtype") else np.asarray(y)
            targets = inputs.data.attach_targets(y, target_layout, type(self).__name__)
        else:
            targets = in_memory_images(target_layout.to_nchw(targets_flat), target_layout)
        return inputs, targets, scale

    def _chunk(self, X, y):
        """A later ``partial_fit`` chunk, checked against the fitted layouts and ranges."""
        inputs, targets, _ = self._training_pairs(X, y, fitted=True)
        if self.scaling is not None:
            for what, data, (low, high) in (
                ("This chunk's X", inputs, (self.input_min_, self.input_max_)),
                ("This chunk's y", targets, (self.target_min_, self.target_max_)),
            ):
                if warn_out_of_range(what, low, high, data.stats, _RANGE_FIX):
                    data.clip(low, high)
        return inputs, targets

    def _fit(self, X, y, incremental=False):
        inputs, targets, scale = self._training_pairs(X, y, fitted=False)
        network_kwargs = self._network_settings(scale)
        layout, target_layout = inputs.layout, targets.layout
        ranges = []
        for data in (inputs, targets):
            dtype = data.dtype if incremental else np.float64  # floats: the data's own range
            ranges.append(incremental_range(dtype, data.stats.min, data.stats.max))
        (x_min, x_max), (y_min, y_max) = ranges
        loss = self._loss(scale)
        x_scaling = fit_scaling(x_min, x_max, self.scaling, loss)
        y_scaling = fit_scaling(y_min, y_max, self.scaling, loss)
        device, seed = launch_setup(self.distributed, self.device, self.random_state)
        continuing = (
            self.warm_start
            and hasattr(self, "net_")
            and (self._layout, self._target_layout) == (layout, target_layout)
        )
        with cuda_autotune(device.startswith("cuda")):
            if continuing:
                net = continue_training(self.net_, self, seed)
            else:
                training = skorch_training_kwargs(self, device, seed)
                net = AutoencoderNet(
                    NETWORKS[self.network],
                    module__in_channels=layout.channels,
                    module__out_channels=target_layout.channels,
                    module__input_size=network_input_size(layout),
                    module__scale=scale,
                    module__kernel_size=self.kernel_size,
                    module__residual=self.residual,
                    module__input_shift=x_scaling.shift.tolist(),
                    module__input_scale=x_scaling.scale.tolist(),
                    module__target_shift=y_scaling.shift.tolist(),
                    module__target_scale=y_scaling.scale.tolist(),
                    criterion=ReconstructionLoss,
                    criterion__loss=loss,
                    criterion__output_activation="identity",
                    **network_kwargs,
                    **training,
                )
                if incremental:
                    for_chunks(net)
                net.initialize()
            net.partial_fit(inputs.data, targets.data, epochs=1 if incremental else None)

        self.net_ = net
        self._layout, self._target_layout = layout, target_layout
        self.image_shape_, self.target_shape_ = layout.chw, target_layout.chw
        self.scale_ = scale
        if not continuing:
            self.target_min_, self.target_max_ = y_min, y_max
            self.input_min_, self.input_max_ = x_min, x_max
        self.device_ = device

    def _network_settings(self, scale: int) -> dict:
        """The module's architecture arguments, ``"auto"`` and ``None`` resolved."""
        if self.network == "unet":
            filters = DEFAULT_FILTERS["unet"] if self.filters is None else self.filters
            return {
                "module__filters": check_filters(filters),
                "module__skip_connections": self.skip_connections,
            }
        downscale = self.downscale
        if downscale == "auto":
            downscale = 2 if scale == 1 else 1
        filters = self.filters
        if filters is None:
            filters = tuple(width * downscale for width in DEFAULT_FILTERS["resnet"])
        return {"module__filters": check_filters(filters), "module__downscale": downscale}

    def _loss(self, scale: int) -> str:
        """The training criterion: ``loss``, with ``"auto"`` resolved for this task."""
        if self.loss != "auto":
            return self.loss
        return "mse" if scale > 1 else "l1"

    @accepts_dask
    def predict(self, X):
        """Predict target images for ``X``.

        The network is fully convolutional, so 3-D or 4-D images of another
        height and width than at ``fit`` (same channels and layout) work too: a
        model trained on patches upscales or cleans whole images. Flat rows must
        have the fitted number of features. With ``self_ensemble=True`` the
        prediction is the mean of the predictions for the input's 8 flips and
        quarter turns, each turned back.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or N-D images
            Input images in the layout used at ``fit``.
            A Dask array chunked along samples gives a lazy Dask array.

        Returns
        -------
        y_pred : ndarray, dtype float32
            Images in the layout and units of the training targets, clipped to
            their range; each side ``scale_`` times the input's.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderRegressor
        >>> high = load_digits().images                      # (1797, 8, 8)
        >>> low = high.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4))  # (1797, 4, 4)
        >>> model = ConvAutoencoderRegressor(filters=(8,), max_epochs=1, random_state=0)
        >>> model.fit(low, high).scale_
        2
        >>> model.predict(np.zeros((1, 10, 12))).shape       # any size: fully convolutional
        (1, 20, 24)
        """
        images, target_layout = self._validate_inputs(X)
        if self.self_ensemble:
            image_like = self.net_._is_image_module()
            predicted = ensemble_predict(self._predict_nchw, images, target_layout.chw, image_like)
        else:
            predicted = self._predict_nchw(images, target_layout.chw)
        return target_layout.from_nchw(predicted)

    def _predict_nchw(self, images: np.ndarray, out_chw: tuple[int, int, int]) -> np.ndarray:
        """Predictions for ``(N, C, H, W)`` images, clipped to the targets' range."""
        predicted = self.net_.reconstruct(images, out_chw)
        low = self.target_min_.astype(np.float32)[None, :, None, None]
        high = self.target_max_.astype(np.float32)[None, :, None, None]
        return np.clip(predicted, low, high, out=predicted)

    def _validate_inputs(self, X):
        """``(N, C, H, W)`` inputs and the layout of their predictions."""
        check_is_fitted(self)
        flat, sample_shape = flatten_samples(X)
        fitted = self._layout
        layout = fitted.resized(sample_shape) if sample_shape else None
        if layout is None and sample_shape and fitted.input_ndim > 2:
            if sample_shape not in fitted.accepted_sample_shapes():
                c = fitted.channels
                expected = (
                    "(height, width)"
                    if fitted.input_ndim == 3
                    else f"(height, width, {c})"
                    if fitted.channels_last
                    else f"({c}, height, width)"
                )
                raise ValueError(
                    f"X holds samples of shape {sample_shape}, but this regressor was fitted "
                    f"on images whose samples have shape {expected}, any height and width. "
                    f"Pass images in that layout, with {c} channel(s)."
                )
        if layout is None or layout == fitted:
            return validate_images(self, X, fitted), self._target_layout
        flat = check_array(flat, dtype="numeric")
        # Targets keep their fitted ratio to the inputs (1 along a signal's height).
        target = self._target_layout
        target_layout = dataclasses.replace(
            target,
            height=target.height // fitted.height * layout.height,
            width=target.width // fitted.width * layout.width,
        )
        return layout.to_nchw(flat), target_layout

    def score(self, X, y, sample_weight=None):
        """R^2 of the predicted pixels, each pixel's R^2 weighted by its variance.

        Equivalent to ``1 - SSE / SST`` summed over all pixels, with each pixel's
        mean as the baseline; constant pixels (image borders) do not distort it.

        Parameters
        ----------
        X : array-like or N-D images
            Input images.
        y : array-like or N-D images
            True target images.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Weights of the samples; ``None`` weighs them equally.

        Returns
        -------
        score : float
            The variance-weighted R^2 over pixels; 1 is perfect.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderRegressor
        >>> clean = load_digits().images                     # (1797, 8, 8), values 0..16
        >>> noisy = clean + np.random.default_rng(0).normal(0, 4, clean.shape)
        >>> model = ConvAutoencoderRegressor(filters=(8,), max_epochs=1, random_state=0)
        >>> bool(model.fit(noisy, clean).score(noisy, clean) <= 1)
        True
        """
        predicted = self.predict(X)
        predicted = predicted.reshape(len(predicted), -1)
        truth, _ = _validate_targets(y)
        return float(
            r2_score(truth, predicted, sample_weight=sample_weight, multioutput="variance_weighted")
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        return tags


def _validate_targets(y) -> tuple[np.ndarray, tuple[int, ...] | None]:
    """Flatten N-D target images and check them like ``X``."""
    if y is None:
        raise ValueError(
            "ConvAutoencoderRegressor requires y to be passed, but the target y is None: "
            "pass target images paired with X, as in fit(noisy_images, clean_images)."
        )
    flat, sample_shape = flatten_samples(y)
    flat = check_array(flat, dtype="numeric", input_name="y", ensure_2d=False)
    if flat.ndim == 1:
        flat = flat.reshape(-1, 1)
    return flat, sample_shape
