"""ConvAutoencoderTransformer: a scikit-learn transformer backed by a conv autoencoder."""

from __future__ import annotations

from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._base import (
    SHARED_CONSTRAINTS,
    check_filters,
    continue_training,
    network_input_size,
    skorch_training_kwargs,
    validate_images,
)
from ._data import as_compact_tensor
from ._layout import ImageLayout, flatten_samples, infer_layout
from ._net import AutoencoderNet, cuda_autotune
from ._network import ConvAutoencoder, ReconstructionLoss
from ._noise import NOISE_KINDS
from ._persistence import PersistenceMixin
from ._scaling import Scaling, channel_extremes, channel_means, fit_scaling, output_bias_for
from ._utils import draw_seed, resolve_device, restore_on_error, seeded_torch

# Mixture components of the code density behind ``sample`` (one per digit class on
# MNIST-like data; more cost time and overfit small training sets).
_N_DENSITY_COMPONENTS = 10


class ConvAutoencoderTransformer(
    PersistenceMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Convolutional autoencoder as a scikit-learn transformer.

    ``fit`` trains a conv encoder-decoder (a PyTorch module, trained by a skorch
    net) to reconstruct its input; ``transform`` returns the encoder's code as
    features; ``inverse_transform`` decodes codes back to images in the units and
    layout of the training data.

    Parameters
    ----------
    image_shape : tuple of int or None, default=None
        How a flat row folds into an image: ``(height, width)`` or
        ``(height, width, channels)``, in the order ``images.reshape(n, -1)``
        produces from ``(n, height, width, channels)`` images. ``None``: a square
        number of features becomes a square grey image, any other number a 1-D
        signal of height 1 (trained with 1-D convolutions). Ignored for 3-D and
        4-D input, whose shape is read from the array (it must agree if given).
    channels : {"auto", "last", "first"}, default="auto"
        Where 4-D input keeps its channels: ``"last"`` for ``(N, H, W, C)``,
        ``"first"`` for ``(N, C, H, W)``. ``"auto"`` takes the smaller of axes 1
        and 3 as channels, and channels-last on a tie.
    filters : tuple of int, default=(16, 8)
        Output channels of the encoder's convolutions, with a 2x max-pool between
        consecutive ones; the decoder mirrors them with 2x upsampling. The
        default is the classic Conv(16)-MaxPool-Conv(8) / Conv(8)-Upsample-Conv(C)
        network.
    kernel_size : int, default=3
        Size of every (``same``-padded) convolution kernel.
    latent_dim : int or None, default=None
        ``None``: the code is the flattened last feature map
        (``filters[-1] * height * width / 4 ** (len(filters) - 1)`` features).
        An int adds a dense bottleneck of that many features.
    loss : {"mse", "bce"}, default="mse"
        Reconstruction loss: mean squared error, or binary cross-entropy (for
        data in [0, 1] after scaling).
    scaling : {"minmax", "symmetric"} or None, default="minmax"
        ``"minmax"`` maps each channel to [0, 1] with the minimum and maximum
        learned at ``fit`` (sigmoid output); ``"symmetric"`` maps to [-1, 1]
        (tanh output); ``None`` trains on the data as it is (linear output, or
        sigmoid with ``loss="bce"``).
    noise : {"gaussian", "salt_pepper", "mask"} or None, default=None
        Denoising training: corrupt the training inputs (never the targets, which
        stay the clean images) with Gaussian noise of standard deviation
        ``noise_level``, salt-and-pepper noise on a share ``noise_level`` of the
        values, or masking (a share ``noise_level`` of values set to the minimum).
        Noisy values are clipped to the data range. Clean images with
        :meth:`reconstruct`.
    noise_level : float, default=0.2
        Strength of the noise, in scaled units: with ``scaling="minmax"``, 0.5 is
        half the data range.
    variational : bool, default=False
        Train a variational autoencoder: the ``latent_dim`` bottleneck becomes a
        diagonal Gaussian regularised towards N(0, I) by a KL term; ``transform``
        returns its mean and :meth:`sample` decodes draws from the prior.
    kl_weight : float, default=1.0
        Weight of the KL term (``1`` is the ELBO; smaller values give sharper
        reconstructions and a less regular latent space).
    max_epochs : int, default=20
        Number of passes over the training data.
    batch_size : int, default=128
        Training mini-batch size.
    lr : float, default=1e-3
        Learning rate.
    optimizer : {"adam", "adamw", "sgd", "rmsprop"} or torch optimizer class, default="adam"
        Optimizer used for training.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, stop when its loss
        has not improved for ``n_iter_no_change`` epochs, and keep the best weights.
    validation_fraction : float, default=0.1
        Share of the training data held out when ``early_stopping=True``.
    n_iter_no_change : int, default=5
        Patience of early stopping, in epochs.
    device : str, default="auto"
        Torch device: ``"auto"`` uses CUDA when available (decided at ``fit``),
        else the CPU; or ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    precision : {"float32", "bfloat16"}, default="float32"
        ``"bfloat16"`` trains and encodes under autocast (mixed precision): faster
        on GPUs with bf16 tensor cores; weights and outputs stay float32.
    compile : bool, default=False
        Compile the network's encode/decode with ``torch.compile`` at first use.
        Compilation takes tens of seconds; it pays off for long fits.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling and the validation split. With an
        int, refits on the CPU give identical results. ``fit`` leaves the global
        NumPy and torch random states as it found them.
    verbose : int, default=0
        0 is silent; 1 prints skorch's per-epoch table and a progress bar.
    callbacks : list of skorch callbacks or None, default=None
        Extra skorch callbacks (instances or ``(name, callback)`` pairs), copied
        at each ``fit``.
    warm_start : bool, default=False
        Continue training the fitted network on the next ``fit`` instead of
        starting afresh (when the image geometry is unchanged). Training
        parameters changed with ``set_params`` in between (``lr``,
        ``max_epochs``, ``batch_size``, ``optimizer``, ``callbacks``, early
        stopping) apply to the continued training; the optimizer's state carries
        over unless ``optimizer`` changed. The network's architecture, scaling and
        device stay those of the first fit.

    Attributes
    ----------
    net_ : skconvae.AutoencoderNet
        The trained skorch net; ``net_.module_`` is the
        :class:`skconvae.nn.ConvAutoencoder` and ``net_.history`` its training log.
    image_shape_ : tuple of int
        ``(channels, height, width)`` of the images as trained.
    code_shape_ : tuple of int
        Shape of the code: ``(latent_dim,)`` or the conv code's ``(C, H, W)``.
    data_min_, data_max_ : ndarray of shape (channels,)
        Per-channel extremes of the training data, used by ``scaling``.
    device_ : str
        The device the network was trained on.
    n_features_in_ : int
        Number of features per sample seen during ``fit`` (pixels x channels).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names of a DataFrame passed to ``fit``.

    See Also
    --------
    sklearn.decomposition.PCA : Linear, much faster, a good baseline.
    sklearn.neural_network.BernoulliRBM : A shallow, dense generative model.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skconvae import ConvAutoencoderTransformer
    >>> X, _ = load_digits(return_X_y=True)
    >>> ae = ConvAutoencoderTransformer(latent_dim=16, max_epochs=2, random_state=0)
    >>> ae.fit_transform(X).shape
    (1797, 16)
    >>> ae.inverse_transform(ae.transform(X[:3])).shape
    (3, 64)
    >>> ae.image_shape_
    (1, 8, 8)
    """

    _parameter_constraints: ClassVar[dict] = {
        **SHARED_CONSTRAINTS,
        "latent_dim": [None, Interval(Integral, 1, None, closed="left")],
        "loss": [StrOptions({"mse", "bce"})],
        "scaling": [None, StrOptions({"minmax", "symmetric"})],
        "noise": [None, StrOptions(set(NOISE_KINDS))],
        "noise_level": [Interval(Real, 0, None, closed="left")],
        "variational": ["boolean"],
        "kl_weight": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        *,
        image_shape=None,
        channels="auto",
        filters=(16, 8),
        kernel_size=3,
        latent_dim=None,
        loss="mse",
        scaling="minmax",
        noise=None,
        noise_level=0.2,
        variational=False,
        kl_weight=1.0,
        max_epochs=20,
        batch_size=128,
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
        self.channels = channels
        self.filters = filters
        self.kernel_size = kernel_size
        self.latent_dim = latent_dim
        self.loss = loss
        self.scaling = scaling
        self.noise = noise
        self.noise_level = noise_level
        self.variational = variational
        self.kl_weight = kl_weight
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

    # -- fitting ---------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the autoencoder to reconstruct ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), (n_samples, height, width) \
                or 4-D images
            Training images: flat rows (ndarray or DataFrame), grey images, or
            images with channels (see ``channels``). Any numeric dtype.
        y : None
            Ignored; accepted so the transformer can sit before a classifier.

        Returns
        -------
        self : ConvAutoencoderTransformer
            The fitted transformer.
        """
        with restore_on_error(self):
            self._fit(X)
        return self

    def _fit(self, X):
        filters = check_filters(self.filters)
        self._check_generative_params()
        flat, sample_shape = flatten_samples(X)
        flat = validate_data(self, flat, reset=True, dtype="numeric")
        layout = infer_layout(sample_shape or flat.shape[1:], self.image_shape, self.channels)
        images = layout.to_nchw(flat)
        data_min, data_max = channel_extremes(images)
        scaling = fit_scaling(data_min, data_max, self.scaling, self.loss)
        device = resolve_device(self.device)
        seed = draw_seed(self.random_state)
        continuing = (
            self.warm_start and hasattr(self, "net_") and getattr(self, "_layout", None) == layout
        )

        with seeded_torch(seed, device), cuda_autotune(device.startswith("cuda")):
            if continuing:
                net = continue_training(self.net_, self, seed)
            else:
                net = self._build_net(layout, filters, scaling, images, device, seed)
                net.initialize()
            net.partial_fit(as_compact_tensor(images))
            density = self._fit_code_density(net, images, seed)

        self.net_ = net
        self.code_density_ = density
        self._layout = layout
        self.image_shape_ = layout.chw
        self.code_shape_ = (
            (self.latent_dim,) if self.latent_dim else tuple(net.module_.conv_code_shape)
        )
        if not continuing:
            self.data_min_, self.data_max_ = data_min, data_max
        self.device_ = device

    def _check_generative_params(self):
        if self.variational and self.latent_dim is None:
            raise ValueError(
                "variational=True needs a dense bottleneck: set latent_dim, e.g. latent_dim=16."
            )
        if self.noise in ("salt_pepper", "mask") and self.noise_level > 1:
            raise ValueError(
                f"noise={self.noise!r} corrupts a share noise_level of the values, which must "
                f"lie in [0, 1]; got noise_level={self.noise_level}."
            )

    def _fit_code_density(self, net, images, seed):
        """Gaussian mixture over the training codes, for :meth:`sample` (dense codes only)."""
        if self.latent_dim is None or self.variational:
            return None
        codes = net.encode(images).astype(np.float64)
        n_components = min(_N_DENSITY_COMPONENTS, len(codes))
        return GaussianMixture(
            n_components, covariance_type="full", reg_covar=1e-4, random_state=seed % (2**31)
        ).fit(codes)

    def _build_net(
        self, layout: ImageLayout, filters, scaling: Scaling, images, device: str, seed: int
    ):
        return AutoencoderNet(
            ConvAutoencoder,
            module__in_channels=layout.channels,
            module__input_size=network_input_size(layout),
            module__filters=filters,
            module__kernel_size=self.kernel_size,
            module__latent_dim=self.latent_dim,
            module__output_activation=scaling.activation,
            module__input_shift=scaling.shift.tolist(),
            module__input_scale=scaling.scale.tolist(),
            module__variational=self.variational,
            module__output_bias=output_bias_for(scaling, channel_means(images)),
            criterion=ReconstructionLoss,
            criterion__loss=self.loss,
            criterion__output_activation=scaling.activation,
            **skorch_training_kwargs(self, device, seed),
            noise=self.noise,
            noise_level=self.noise_level,
            noise_bounds=scaling.bounds,
            kl_weight=self.kl_weight,
        )

    # -- using the fitted model ----------------------------------------------------------

    def _validate_images(self, X) -> np.ndarray:
        return validate_images(self, X, getattr(self, "_layout", None))

    def transform(self, X):
        """Encode ``X`` into the autoencoder's code.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or N-D images
            Images in the layout used at ``fit`` (or flattened rows of them).

        Returns
        -------
        codes : ndarray of shape (n_samples, n_features_out), dtype float32
        """
        images = self._validate_images(X)
        return self.net_.encode(images)

    def inverse_transform(self, X):
        """Decode codes back to images in the units and layout of the training data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_out)
            Codes, as returned by :meth:`transform`.

        Returns
        -------
        images : ndarray, dtype float32
            ``(n_samples, n_features_in_)`` if the training data was flat, else
            images shaped like the training data's samples.
        """
        check_is_fitted(self)
        codes = check_array(X, dtype=np.float32, input_name="X")
        if codes.shape[1] != self._n_features_out:
            raise ValueError(
                f"X has {codes.shape[1]} features, but this {type(self).__name__} decodes "
                f"codes of {self._n_features_out} features (the width of transform's "
                "output). Pass the output of transform."
            )
        return self._layout.from_nchw(self.net_.decode(codes, self.image_shape_))

    def score(self, X, y=None):
        """Negative mean squared reconstruction error, in the units of ``X``.

        Higher is better, so ``GridSearchCV`` can tune the autoencoder alone.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or N-D images
            Images to reconstruct.
        y : None
            Ignored.

        Returns
        -------
        score : float
        """
        images = self._validate_images(X)
        return -float(np.mean(self.net_.reconstruction_errors(images)))

    def reconstruct(self, X):
        """Reconstruct ``X``: ``inverse_transform(transform(X))`` in one pass.

        With denoising training (``noise``), this cleans noisy images.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or N-D images
            Images in the layout used at ``fit`` (or flattened rows of them).

        Returns
        -------
        images : ndarray, dtype float32
            Reconstructions in the units and layout of the training data.
        """
        images = self._validate_images(X)
        return self._layout.from_nchw(self.net_.reconstruct(images))

    def score_samples(self, X):
        """Negative per-sample mean squared reconstruction error, in the units of ``X``.

        Higher means more normal (scikit-learn's outlier-detector convention):
        use it as an anomaly score.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or N-D images

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        images = self._validate_images(X)
        return -self.net_.reconstruction_errors(images)

    def sample(self, n_samples=1, random_state=None):
        """Generate new images by decoding random latent codes.

        A variational model (``variational=True``) decodes draws from its N(0, I)
        prior, the distribution its training pulled the codes towards. A plain
        model with ``latent_dim`` decodes draws from a Gaussian mixture
        (``code_density_``, 10 full-covariance components) fitted to the codes of
        the training images at ``fit``: its codes follow no known distribution,
        so one is estimated. Without ``latent_dim`` the code is a large feature
        map whose density cannot be estimated well, and sampling is refused.

        Parameters
        ----------
        n_samples : int, default=1
            Number of images to generate.
        random_state : int, RandomState instance or None, default=None
            Seeds the draws.

        Returns
        -------
        images : ndarray, dtype float32
            ``n_samples`` images in the units and layout of the training data.
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
        rng = check_random_state(random_state)
        if self.variational:
            codes = rng.standard_normal((n_samples, self.latent_dim))
        elif self.code_density_ is not None:
            codes = _sample_mixture(self.code_density_, n_samples, rng)
        else:
            raise ValueError(
                "sample needs a dense latent space: refit with latent_dim set (for example "
                "latent_dim=16), optionally with variational=True."
            )
        decoded = self.net_.decode(codes.astype(np.float32), self.image_shape_)
        return self._layout.from_nchw(decoded)

    @property
    def _n_features_out(self) -> int:
        return int(np.prod(self.code_shape_))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def _sample_mixture(mixture: GaussianMixture, n_samples: int, rng) -> np.ndarray:
    """Draw from a fitted full-covariance Gaussian mixture with a given RNG."""
    counts = rng.multinomial(n_samples, mixture.weights_)
    draws = [
        rng.multivariate_normal(mean, cov, size=count)
        for mean, cov, count in zip(mixture.means_, mixture.covariances_, counts, strict=True)
        if count
    ]
    return rng.permutation(np.concatenate(draws))
