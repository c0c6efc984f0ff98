"""ConvAutoencoderRegressor: image-to-image regression, scikit-learn style."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    validate_data,
)

from ._base import (
    SHARED_CONSTRAINTS,
    check_filters,
    continue_training,
    network_input_size,
    skorch_training_kwargs,
    validate_images,
)
from ._data import as_compact_tensor
from ._layout import flatten_samples, infer_layout, infer_target_layout
from ._net import AutoencoderNet, cuda_autotune
from ._network import ImageToImageNet, ReconstructionLoss
from ._persistence import PersistenceMixin
from ._scaling import channel_extremes, fit_scaling
from ._utils import draw_seed, resolve_device, restore_on_error, seeded_torch


class ConvAutoencoderRegressor(PersistenceMixin, RegressorMixin, BaseEstimator):
    """Image-to-image regression with a convolutional encoder-decoder.

    ``fit(X, y)`` learns to map images ``X`` to paired images ``y``: noisy to
    clean (denoising), low to high resolution (``y`` larger than ``X`` by an
    integer factor: the last convolution predicts ``factor**2`` values per input
    pixel, interleaved by a pixel shuffle), or other translations. The network
    is U-Net-like: encoder stages with max-pooling, a decoder that upsamples and
    concatenates the encoder's feature maps (skip connections), and, by default,
    a residual output over the input -- or over its bicubic interpolation when
    upscaling -- so the network learns only the correction. It is fully
    convolutional: ``predict`` takes images of any size, so a model trained on
    patches processes whole images.

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
    filters : tuple of int, default=(32, 64)
        Width of each encoder stage (two convolutions each), with 2x max-pooling
        between stages.
    kernel_size : int, default=3
    skip_connections : bool, default=True
        Concatenate encoder feature maps into the decoder (U-Net).
    residual : bool, default=True
        Predict the difference to the (interpolated) input; used when input and
        target have the same number of channels.
    loss : {"mse", "l1"}, default="mse"
    scaling : {"minmax", "symmetric"} or None, default="minmax"
        Per-channel scaling of inputs and targets, each learned at ``fit``.
        Predictions are clipped to the range of the training targets.
    max_epochs : int, default=30
    batch_size : int, default=32
    lr : float, default=1e-3
    optimizer : {"adam", "adamw", "sgd", "rmsprop"} or torch optimizer class, default="adam"
    early_stopping : bool, default=False
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=5
    device : str, default="auto"
    precision : {"float32", "bfloat16"}, default="float32"
    compile : bool, default=False
    random_state : int, RandomState instance or None, default=None
    verbose : int, default=0
    callbacks : list of skorch callbacks or None, default=None
    warm_start : bool, default=False
        See :class:`ConvAutoencoderTransformer` for these training parameters.

    Attributes
    ----------
    net_ : skconvae.AutoencoderNet
        The trained skorch net; ``net_.module_`` is a :class:`skconvae.nn.ImageToImageNet`.
    image_shape_, target_shape_ : tuple of int
        ``(channels, height, width)`` of inputs and targets.
    scale_ : int
        Upscaling factor from inputs to targets.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from skconvae import ConvAutoencoderRegressor
    >>> clean = load_digits().images                     # (1797, 8, 8), values 0..16
    >>> noisy = clean + np.random.default_rng(0).normal(0, 4, clean.shape)
    >>> model = ConvAutoencoderRegressor(filters=(8, 16), max_epochs=2, random_state=0)
    >>> model.fit(noisy, clean).predict(noisy[:5]).shape
    (5, 8, 8)
    """

    _parameter_constraints: ClassVar[dict] = {
        **SHARED_CONSTRAINTS,
        "target_shape": [None, tuple, list],
        "skip_connections": ["boolean"],
        "residual": ["boolean"],
        "loss": [StrOptions({"mse", "l1"})],
        "scaling": [None, StrOptions({"minmax", "symmetric"})],
    }

    def __init__(
        self,
        *,
        image_shape=None,
        target_shape=None,
        channels="auto",
        filters=(32, 64),
        kernel_size=3,
        skip_connections=True,
        residual=True,
        loss="mse",
        scaling="minmax",
        max_epochs=30,
        batch_size=32,
        lr=1e-3,
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
    ):
        self.image_shape = image_shape
        self.target_shape = target_shape
        self.channels = channels
        self.filters = filters
        self.kernel_size = kernel_size
        self.skip_connections = skip_connections
        self.residual = residual
        self.loss = loss
        self.scaling = scaling
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
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

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Learn to map images ``X`` to images ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or N-D images
            Input images (flat rows, ``(N, H, W)`` or 4-D with channels).
        y : array-like of shape (n_samples, n_target_features) or N-D images
            Target images, the same size as ``X``'s or larger by an integer factor.

        Returns
        -------
        self : ConvAutoencoderRegressor
        """
        with restore_on_error(self):
            self._fit(X, y)
        return self

    def _fit(self, X, y):
        filters = check_filters(self.filters)
        flat, sample_shape = flatten_samples(X)
        flat = validate_data(self, flat, reset=True, dtype="numeric")
        layout = infer_layout(sample_shape or flat.shape[1:], self.image_shape, self.channels)
        targets_flat, target_sample_shape = _validate_targets(y)
        check_consistent_length(flat, targets_flat)
        target_layout, scale = infer_target_layout(
            layout, target_sample_shape or targets_flat.shape[1:], self.target_shape, self.channels
        )
        images, targets = layout.to_nchw(flat), target_layout.to_nchw(targets_flat)
        x_scaling = fit_scaling(*channel_extremes(images), self.scaling, self.loss)
        y_min, y_max = channel_extremes(targets)
        y_scaling = fit_scaling(y_min, y_max, self.scaling, self.loss)
        device = resolve_device(self.device)
        seed = draw_seed(self.random_state)
        continuing = (
            self.warm_start
            and hasattr(self, "net_")
            and (self._layout, self._target_layout) == (layout, target_layout)
        )
        with seeded_torch(seed, device), cuda_autotune(device.startswith("cuda")):
            if continuing:
                net = continue_training(self.net_, self, seed)
            else:
                net = AutoencoderNet(
                    ImageToImageNet,
                    module__in_channels=layout.channels,
                    module__out_channels=target_layout.channels,
                    module__input_size=network_input_size(layout),
                    module__scale=scale,
                    module__filters=filters,
                    module__kernel_size=self.kernel_size,
                    module__skip_connections=self.skip_connections,
                    module__residual=self.residual,
                    module__input_shift=x_scaling.shift.tolist(),
                    module__input_scale=x_scaling.scale.tolist(),
                    module__target_shift=y_scaling.shift.tolist(),
                    module__target_scale=y_scaling.scale.tolist(),
                    criterion=ReconstructionLoss,
                    criterion__loss=self.loss,
                    criterion__output_activation="identity",
                    **skorch_training_kwargs(self, device, seed),
                )
                net.initialize()
            net.partial_fit(as_compact_tensor(images), as_compact_tensor(targets))

        self.net_ = net
        self._layout, self._target_layout = layout, target_layout
        self.image_shape_, self.target_shape_ = layout.chw, target_layout.chw
        self.scale_ = scale
        if not continuing:
            self.target_min_, self.target_max_ = y_min, y_max
        self.device_ = device

    def predict(self, X):
        """Predict target images for ``X``.

        The network is fully convolutional, so 3-D or 4-D images of another
        height and width than at ``fit`` (same channels and layout) work too: a
        model trained on patches upscales or cleans whole images. Flat rows must
        have the fitted number of features.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or N-D images
            Input images in the layout used at ``fit``.

        Returns
        -------
        y_pred : ndarray, dtype float32
            Images in the layout and units of the training targets, clipped to
            their range; each side ``scale_`` times the input's.
        """
        images, target_layout = self._validate_inputs(X)
        predicted = self.net_.reconstruct(images, target_layout.chw)
        low = self.target_min_.astype(np.float32)[None, :, None, None]
        high = self.target_max_.astype(np.float32)[None, :, None, None]
        np.clip(predicted, low, high, out=predicted)
        return target_layout.from_nchw(predicted)

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

        Returns
        -------
        score : float
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
