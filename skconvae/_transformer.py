"""ConvAutoencoderTransformer: a scikit-learn transformer backed by a conv autoencoder."""

from __future__ import annotations

import dataclasses
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
from sklearn.utils.validation import check_array, check_is_fitted
from threadpoolctl import threadpool_limits

from ._auto import Resolved, resolve
from ._base import (
    SHARED_CONSTRAINTS,
    check_filters,
    continue_training,
    network_input_size,
    skorch_training_kwargs,
    validate_images,
)
from ._dask import accepts_dask
from ._distributed import computed_by_first_process, launch_setup
from ._incremental import IncrementalFitMixin, for_chunks, warn_out_of_range
from ._layout import ImageLayout
from ._net import AutoencoderNet, cuda_autotune
from ._network import ConvAutoencoder, ReconstructionLoss
from ._noise import NOISE_KINDS
from ._persistence import PersistenceMixin
from ._scaling import (
    Scaling,
    check_data_range,
    fit_scaling,
    incremental_range,
    output_bias_for,
)
from ._sources import load_training_images
from ._utils import restore_on_error
from ._warp import WARP_KINDS, check_warp

# Mixture components of the code density behind ``sample`` (one per digit class on
# MNIST-like data; more cost time and overfit small training sets).
_N_DENSITY_COMPONENTS = 10
# Codes the density is fitted on when the training data is streamed (a random subset).
_N_DENSITY_SAMPLES = 20_000
_RANGE_FIX = (
    "Pass data_range=(low, high) covering all the data, or start partial_fit with a chunk "
    "that spans the data's full range."
)


class ConvAutoencoderTransformer(
    IncrementalFitMixin,
    PersistenceMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    BaseEstimator,
):
    """Convolutional autoencoder as a scikit-learn transformer.

    ``fit`` trains a conv encoder-decoder (a PyTorch module, trained by a skorch
    net) to reconstruct its input; ``transform`` returns the encoder's code as
    features; ``inverse_transform`` decodes codes back to images in the units and
    layout of the training data.

    The defaults are meant to be used as they are: ``Pipeline([("ae",
    ConvAutoencoderTransformer()), ("clf", SVC())])`` beats an SVC on raw pixels
    on MNIST (median accuracy 0.984 against 0.977 over three seeds, 8000 images
    fit, 2000 held out) and on scikit-learn's 8x8 digits (0.990 against 0.987,
    5-fold CV; ``benchmarks/bench_defaults.py``).
    Parameters set to ``"auto"`` are resolved at ``fit`` from the data's shape,
    by the rules written below; the values used are the fitted attributes
    ``filters_``, ``latent_dim_``, ``loss_``, ``max_epochs_`` and ``warp_``.
    ``architecture="classic"`` selects the classic conv autoencoder instead.

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
    architecture : {"auto", "classic"}, default="auto"
        The network family. ``"auto"``: batch normalisation between every hidden
        convolution and its ReLU, a dense code (``latent_dim="auto"``), and codes
        that come out standardised (zero mean and unit variance per feature on
        the training images, undone exactly by ``inverse_transform``; not for
        ``variational=True``, whose codes follow its prior). ``"classic"``: the
        classic conv autoencoder, Conv(16)-MaxPool-Conv(8) encoder and
        Conv(8)-Upsample-Conv(C) decoder, 3x3 kernels, ``same`` padding, ReLU,
        no normalisation, and the flattened 8-channel feature map as the code
        (``filters="auto"`` becomes ``(16, 8)`` and ``latent_dim="auto"``
        becomes ``None``), codes as they come. Explicit ``filters`` and
        ``latent_dim`` apply to either family.
    filters : "auto" or tuple of int, default="auto"
        Output channels of the encoder's convolutions, with a 2x max-pool between
        consecutive ones; the decoder mirrors them with 2x upsampling. ``"auto"``
        with ``architecture="auto"``: ``(16, 32)``, and one more stage of twice
        the width each time the smaller image side (the length of a 1-D signal)
        doubles beyond 28, up to 5 stages: ``(16, 32, 64)`` from 56 pixels,
        ``(16, 32, 64, 128)`` from 112. With ``architecture="classic"``: ``(16, 8)``.
    kernel_size : int, default=3
        Size of every (``same``-padded) convolution kernel.
    latent_dim : "auto", int or None, default="auto"
        An int adds a dense bottleneck of that many features. ``None``: the code
        is the flattened last feature map (``filters[-1] * height * width / 4 **
        (len(filters) - 1)`` features). ``"auto"`` with ``architecture="auto"``:
        32, or half the values of one sample (pixels x channels) when that is
        fewer; with ``architecture="classic"``: ``None``.
    loss : {"auto", "mse", "bce"}, default="auto"
        Reconstruction loss: mean squared error, or binary cross-entropy (for
        data in [0, 1] after scaling). ``"auto"``: ``"bce"`` with
        ``scaling="minmax"``, else ``"mse"``.
    scaling : {"minmax", "symmetric"} or None, default="minmax"
        ``"minmax"`` maps each channel to [0, 1] with the minimum and maximum
        learned at ``fit`` (sigmoid output); ``"symmetric"`` maps to [-1, 1]
        (tanh output); ``None`` trains on the data as it is (linear output, or
        sigmoid with ``loss="bce"``).
    data_range : tuple of float or None, default=None
        ``(low, high)``, the range of values the data can take, which ``scaling``
        then maps from in every channel (values outside it are clipped, with a
        warning). ``None``: ``fit`` uses each channel's minimum and maximum; the
        first ``partial_fit`` call uses the full range of 8- and 16-bit integer
        dtypes (0..255 for uint8), else its chunk's extremes.
    warp : {"auto", "affine"} or None, default="auto"
        Warp the training inputs, never the targets, in the first
        ``warp_fraction`` of the epochs: ``"affine"`` rotates (up to 10 degrees
        either way), zooms (up to 10% in or out) and shifts (up to one pixel along
        each axis) each image of those epochs' batches at random, and the network
        learns to reconstruct the image as it was. Its codes then change less
        under such small variations of an image, which helps a classifier on
        them (``benchmarks/bench_defaults.py``: on MNIST, 0.002 more accuracy
        for the default pipeline on average over five splits of 8000 fit and
        2000 scored, between 0.0005 and 0.004 on each). ``transform`` and
        the other inference methods never warp; neither does ``partial_fit``,
        which cannot tell the first passes from the last. 2-D images only.
        ``"auto"``: ``"affine"`` with ``architecture="auto"``, ``noise=None`` and
        2-D images whose smaller side has 16 pixels or more, else ``None``: 1-D
        signals, small images such as 8x8 digits, denoising (whose
        reconstructions must stay where the image is) and the classic network
        train on the images as they are. The value used is ``warp_``.
    warp_fraction : float, default=0.25
        Share of the epochs of each ``fit``, from the first, whose inputs are
        warped (``floor(warp_fraction * max_epochs)``, at least one); the later
        epochs train on the images as they are, so that reconstructions stay
        faithful. ``1.0`` warps every epoch: codes change least under warps,
        and reconstructions lose most (on MNIST the held-out reconstruction
        error tripled, against 5% more at ``0.25``; the accuracy gain above
        grew to 0.006).
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
    max_epochs : "auto" or int, default="auto"
        Number of passes over the training data. ``"auto"``: enough epochs for
        about 2000 optimizer steps (``ceil(2000 / ceil(n_samples / batch_size))``),
        at least 10 and at most 100: 16 epochs for 8000 images at the default
        ``batch_size``, 100 for 1280 images or fewer.
    batch_size : int, default=64
        Training mini-batch size.
    lr : float, default=2e-3
        Initial learning rate.
    optimizer : {"adam", "adamw", "sgd", "rmsprop"} or torch optimizer class, default="adam"
        Optimizer used for training. Adam and AdamW run PyTorch's fused kernel
        (``fused=True``) where the device has one (CUDA; the CPU from torch 2.4).
    lr_schedule : {"cosine", "constant"}, default="cosine"
        ``"cosine"`` anneals the learning rate from ``lr`` towards 0 along a half
        cosine over the ``max_epochs`` epochs (skorch's ``LRScheduler`` with
        ``CosineAnnealingLR``, stepped each epoch); ``"constant"`` keeps ``lr``.
        A skorch ``LRScheduler`` passed in ``callbacks`` replaces the cosine one.
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
        Compile the network for inference (``transform``, ``inverse_transform``,
        ``reconstruct``, ``score``, ``score_samples``) with ``torch.compile`` at
        its first use, with a dynamic batch size. Training is never compiled, so
        ``fit`` is never slower than without it: measured on the CPU, a compiled
        training step ran slower than eager and the compilation cost tens of
        seconds on top. On a 2-core CPU, compiled encoding ran 0.88-1.48x the
        eager speed after a first call of about 4 s (eager inference already runs
        a rewritten network; see the speed guide).
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
        ``max_epochs``, ``batch_size``, ``optimizer``, ``warp``, ``warp_fraction``,
        ``callbacks``, early stopping) apply to the continued training; the
        optimizer's state carries over unless ``optimizer`` changed. The network's
        architecture, scaling and device stay those of the first fit.
    distributed : {"auto", True, False}, default="auto"
        Data-parallel training across the processes of a ``torchrun`` launch
        (``torchrun --nproc_per_node=N script.py``): ``"auto"`` trains
        data-parallel inside a launch and in one process otherwise; ``True``
        requires a launch; ``False`` trains each process on its own. In a launch
        every process passes the same ``X`` and trains on its share of each
        (global) ``batch_size`` batch, on its own GPU (``LOCAL_RANK``) with
        ``device="auto"``; after ``fit`` all hold the same model, and only the
        first prints progress. See the user guide's "Scaling out".

    Attributes
    ----------
    net_ : skconvae.AutoencoderNet
        The trained skorch net; ``net_.module_`` is the
        :class:`skconvae.nn.ConvAutoencoder` and ``net_.history`` its training log.
    image_shape_ : tuple of int
        ``(channels, height, width)`` of the images as trained.
    code_shape_ : tuple of int
        Shape of the code: ``(latent_dim_,)`` or the conv code's ``(C, H, W)``.
    filters_ : tuple of int
        The encoder's widths used (``filters`` with ``"auto"`` resolved).
    latent_dim_ : int or None
        Width of the dense code used, or ``None`` for a conv code.
    loss_ : {"mse", "bce"}
        The reconstruction loss used.
    max_epochs_ : int
        The number of epochs of the last ``fit`` (``max_epochs`` resolved).
    warp_ : {"affine"} or None
        The warp of the training inputs of the last ``fit`` (``warp`` resolved).
    data_min_, data_max_ : ndarray of shape (channels,)
        Per-channel range that ``scaling`` maps from: the training data's extremes,
        or ``data_range``, or the rule of the first ``partial_fit`` call.
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
    >>> ae = ConvAutoencoderTransformer(max_epochs=2, random_state=0)
    >>> ae.fit_transform(X).shape
    (1797, 32)
    >>> ae.inverse_transform(ae.transform(X[:3])).shape
    (3, 64)
    >>> ae.image_shape_, ae.filters_, ae.latent_dim_, ae.loss_
    ((1, 8, 8), (16, 32), 32, 'bce')
    >>> classic = ConvAutoencoderTransformer(architecture="classic", max_epochs=2)
    >>> classic.fit(X).code_shape_            # the 8-channel 4x4 feature map
    (8, 4, 4)
    """

    _parameter_constraints: ClassVar[dict] = {
        **SHARED_CONSTRAINTS,
        "architecture": [StrOptions({"auto", "classic"})],
        "filters": [StrOptions({"auto"}), tuple, list],
        "latent_dim": [None, StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "loss": [StrOptions({"auto", "mse", "bce"})],
        "max_epochs": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "lr_schedule": [StrOptions({"cosine", "constant"})],
        "scaling": [None, StrOptions({"minmax", "symmetric"})],
        "data_range": [None, tuple, list],
        "warp": [None, StrOptions({"auto", *WARP_KINDS})],
        "warp_fraction": [Interval(Real, 0, 1, closed="right")],
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
        architecture="auto",
        filters="auto",
        kernel_size=3,
        latent_dim="auto",
        loss="auto",
        scaling="minmax",
        data_range=None,
        warp="auto",
        warp_fraction=0.25,
        noise=None,
        noise_level=0.2,
        variational=False,
        kl_weight=1.0,
        max_epochs="auto",
        batch_size=64,
        lr=2e-3,
        optimizer="adam",
        lr_schedule="cosine",
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
        self.channels = channels
        self.architecture = architecture
        self.filters = filters
        self.kernel_size = kernel_size
        self.latent_dim = latent_dim
        self.loss = loss
        self.scaling = scaling
        self.data_range = data_range
        self.warp = warp
        self.warp_fraction = warp_fraction
        self.noise = noise
        self.noise_level = noise_level
        self.variational = variational
        self.kl_weight = kl_weight
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
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
            Memory-mapped arrays (``np.memmap``), other sliceable array-likes
            (``h5py``/``zarr`` datasets) and Dask arrays are streamed: read in
            shuffled mini-batches, never loaded whole (the code density behind
            :meth:`sample` is then fitted on 20,000 random training images).
        y : None
            Ignored; accepted so the transformer can sit before a classifier.

        Returns
        -------
        self : ConvAutoencoderTransformer
            The fitted transformer.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = ConvAutoencoderTransformer(max_epochs=2, random_state=0).fit(X)
        >>> ae.image_shape_, ae.max_epochs_, len(ae.net_.history)
        ((1, 8, 8), 2, 2)
        """
        with restore_on_error(self):
            self._fit(X)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Train one pass over a chunk of images, for data that comes in chunks.

        The first call (on an unfitted transformer) sets up the image layout,
        the scaling and the network from ``X``; later calls check ``X`` against
        them (the errors of :meth:`transform`) and train one more pass, keeping
        the optimizer's state. The scaling's range is ``data_range`` when set,
        else the full range of 8- and 16-bit integer dtypes (0..255 for uint8),
        else the first chunk's per-channel extremes; values of later chunks
        outside it are clipped to it, with a ``UserWarning``. ``max_epochs`` and
        early stopping do not apply. A call that fails leaves the transformer as
        it was.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or N-D images
            A chunk of training images, as for :meth:`fit`.
        y : None
            Ignored.

        Returns
        -------
        self : ConvAutoencoderTransformer
            The transformer, trained one more pass.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = ConvAutoencoderTransformer(latent_dim=8, data_range=(0, 16), random_state=0)
        >>> for chunk in (X[:900], X[900:]):
        ...     ae = ae.partial_fit(chunk)
        >>> ae.transform(X[:2]).shape
        (2, 8)
        """
        return self._partial_fit(X)

    def _fit(self, X, y=None, incremental=False):
        data_range = check_data_range(self.data_range)
        data = load_training_images(self, X, None, self.image_shape, self.channels)
        layout, stats = data.layout, data.stats
        spatial_size = network_input_size(layout)
        auto = resolve(self, spatial_size, layout.n_features, len(data.data))
        filters = check_filters(auto.filters)
        self._check_generative_params(auto.latent_dim)
        check_warp(auto.warp, spatial_size)
        if incremental:  # partial_fit: one pass per call, with no last passes to spare
            auto = dataclasses.replace(auto, warp=None)
        dtype = data.dtype if incremental else np.float64  # floats: the data's own range
        data_min, data_max = incremental_range(dtype, stats.min, stats.max, data_range)
        if warn_out_of_range("X", data_min, data_max, stats, _RANGE_FIX):
            data.clip(data_min, data_max)
        scaling = fit_scaling(data_min, data_max, self.scaling, auto.loss)
        device, seed = launch_setup(self.distributed, self.device, self.random_state)
        continuing = (
            self.warm_start and hasattr(self, "net_") and getattr(self, "_layout", None) == layout
        )

        with cuda_autotune(device.startswith("cuda")):
            if continuing:
                net = continue_training(self.net_, self, seed, auto.max_epochs)
                net.warp, net.warp_epochs = auto.warp, auto.warp_epochs
            else:
                net = self._build_net(layout, filters, auto, scaling, stats.mean, device, seed)
                if incremental:
                    for_chunks(net)
                net.initialize()
            net.partial_fit(data.data, epochs=1 if incremental else None)
            density = self._fit_code_density(net, data, seed)

        self.net_ = net
        self.code_density_ = density
        self._layout = layout
        self.image_shape_ = layout.chw
        module = net.module_
        self.latent_dim_ = module.latent_dim
        self.max_epochs_ = auto.max_epochs
        self.warp_ = auto.warp
        self.code_shape_ = (
            (module.latent_dim,) if module.latent_dim else tuple(module.conv_code_shape)
        )
        if not continuing:  # the network and its loss stay those of the first fit
            self.filters_, self.loss_ = filters, auto.loss
            self.data_min_, self.data_max_ = data_min, data_max
        self.device_ = device

    def _check_generative_params(self, latent_dim):
        if self.variational and latent_dim is None:
            raise ValueError(
                "variational=True needs a dense bottleneck: set latent_dim, e.g. latent_dim=16."
            )
        if self.noise in ("salt_pepper", "mask") and self.noise_level > 1:
            raise ValueError(
                f"noise={self.noise!r} corrupts a share noise_level of the values, which must "
                f"lie in [0, 1]; got noise_level={self.noise_level}."
            )

    def _chunk(self, X, y=None):
        """A later ``partial_fit`` chunk, checked against the fitted layout and range."""
        data = load_training_images(self, X, self._layout)
        if (self.scaling is not None or self.loss == "bce") and warn_out_of_range(
            "This chunk", self.data_min_, self.data_max_, data.stats, _RANGE_FIX
        ):
            data.clip(self.data_min_, self.data_max_)
        return data, None

    def _after_chunk(self, net, inputs, seed):
        if len(inputs.data) < 2:
            # One image gives no spread: the code statistics and density stay those
            # of the last chunk of two or more.
            return
        self.code_density_ = self._fit_code_density(net, inputs, seed)

    def _fit_code_density(self, net, data, seed):
        """Set the code statistics (``standardize_code``) and fit the Gaussian mixture
        over the training codes behind :meth:`sample` (dense codes only).

        Both come from the codes of all in-memory training images, or of at most
        20,000 random images of streamed data (or of the chunk, for ``partial_fit``).
        In a launch the first process computes both and the others take them: each
        process would encode on its own, and on CUDA two processes may batch or pick
        kernels differently (a batch size measured per process), which changes the
        codes' rounding.
        """
        module = net.module_
        images = data.density_sample(_N_DENSITY_SAMPLES, seed)
        dense = module.latent_dim is not None and not self.variational

        def first_process():
            codes, statistics = _standardize_codes(net, images)
            return statistics, _code_mixture(codes, seed) if dense else None

        statistics, density = computed_by_first_process(first_process, self.distributed)
        if statistics is not None:  # the first process has them set already
            module.set_code_statistics(*statistics)
        return density

    def _build_net(
        self,
        layout: ImageLayout,
        filters,
        auto: Resolved,
        scaling: Scaling,
        data_mean,
        device: str,
        seed: int,
    ):
        return AutoencoderNet(
            ConvAutoencoder,
            module__in_channels=layout.channels,
            module__input_size=network_input_size(layout),
            module__filters=filters,
            module__kernel_size=self.kernel_size,
            module__latent_dim=auto.latent_dim,
            module__output_activation=scaling.activation,
            module__input_shift=scaling.shift.tolist(),
            module__input_scale=scaling.scale.tolist(),
            module__variational=self.variational,
            module__output_bias=output_bias_for(scaling, data_mean),
            module__decoder_filters=auto.decoder_filters,
            module__batch_norm=auto.batch_norm,
            module__standardize_code=auto.standardize_code,
            criterion=ReconstructionLoss,
            criterion__loss=auto.loss,
            criterion__output_activation=scaling.activation,
            **skorch_training_kwargs(self, device, seed, auto.max_epochs),
            warp=auto.warp,
            warp_epochs=auto.warp_epochs,
            noise=self.noise,
            noise_level=self.noise_level,
            noise_bounds=scaling.bounds,
            kl_weight=self.kl_weight,
        )

    # -- using the fitted model ----------------------------------------------------------

    def _validate_images(self, X) -> np.ndarray:
        return validate_images(self, X, getattr(self, "_layout", None))

    @accepts_dask
    def transform(self, X):
        """Encode ``X`` into the autoencoder's code.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or N-D images
            Images in the layout used at ``fit`` (or flattened rows of them).
            A Dask array chunked along samples gives a lazy Dask array.

        Returns
        -------
        codes : ndarray of shape (n_samples, n_features_out), dtype float32
            The codes: ``latent_dim_`` features, or the flattened conv code
            (``code_shape_``). With ``architecture="auto"`` each feature has zero
            mean and unit variance on the training images.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = ConvAutoencoderTransformer(filters=(4, 8), max_epochs=1, random_state=0)
        >>> ae.fit(X).transform(X[:5]).shape
        (5, 32)
        """
        images = self._validate_images(X)
        return self.net_.encode(images)

    @accepts_dask
    def inverse_transform(self, X):
        """Decode codes back to images in the units and layout of the training data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_out)
            Codes, as returned by :meth:`transform`.
            A Dask array chunked along samples gives a lazy Dask array.

        Returns
        -------
        images : ndarray, dtype float32
            ``(n_samples, n_features_in_)`` if the training data was flat, else
            images shaped like the training data's samples.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = ConvAutoencoderTransformer(filters=(4, 8), max_epochs=1, random_state=0).fit(X)
        >>> ae.inverse_transform(ae.transform(X[:5])).shape        # flat in, flat out
        (5, 64)
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
            Minus the mean squared error over all values of ``X``.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = ConvAutoencoderTransformer(filters=(4, 8), max_epochs=1, random_state=0).fit(X)
        >>> bool(ae.score(X) < 0)
        True
        """
        images = self._validate_images(X)
        return -float(np.mean(self.net_.reconstruction_errors(images)))

    @accepts_dask
    def reconstruct(self, X):
        """Reconstruct ``X``: ``inverse_transform(transform(X))`` in one pass.

        With denoising training (``noise``), this cleans noisy images.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or N-D images
            Images in the layout used at ``fit`` (or flattened rows of them).
            A Dask array chunked along samples gives a lazy Dask array.

        Returns
        -------
        images : ndarray, dtype float32
            Reconstructions in the units and layout of the training data.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> images = load_digits().images                       # (1797, 8, 8), values 0..16
        >>> ae = ConvAutoencoderTransformer(
        ...     filters=(4, 8), noise="gaussian", noise_level=0.3, max_epochs=1, random_state=0
        ... ).fit(images)
        >>> noisy = images + np.random.default_rng(0).normal(0, 3, images.shape)
        >>> ae.reconstruct(noisy[:5]).shape                     # (N, H, W) in, (N, H, W) out
        (5, 8, 8)
        """
        images = self._validate_images(X)
        return self._layout.from_nchw(self.net_.reconstruct(images))

    @accepts_dask
    def score_samples(self, X):
        """Negative per-sample mean squared reconstruction error, in the units of ``X``.

        Higher means more normal (scikit-learn's outlier-detector convention):
        use it as an anomaly score.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or N-D images
            A Dask array chunked along samples gives a lazy Dask array.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Minus each sample's mean squared reconstruction error.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = ConvAutoencoderTransformer(filters=(4, 8), max_epochs=1, random_state=0).fit(X)
        >>> scores = ae.score_samples(X[:5])
        >>> scores.shape, bool(abs(scores.mean() - ae.score(X[:5])) < 1e-6)
        ((5,), True)
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

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from skconvae import ConvAutoencoderTransformer
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = ConvAutoencoderTransformer(
        ...     filters=(4, 8), latent_dim=8, max_epochs=1, random_state=0
        ... ).fit(X)
        >>> ae.sample(4, random_state=0).shape
        (4, 64)
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
        rng = check_random_state(random_state)
        if self.variational:
            codes = rng.standard_normal((n_samples, self.latent_dim_))
        elif self.code_density_ is not None:
            codes = _sample_mixture(self.code_density_, n_samples, rng)
        elif self.latent_dim_ is not None:
            raise ValueError(
                "sample draws codes from a density of the training images' codes, which "
                "needs two images at least; this model was fitted on one. Fit it on more "
                "images."
            )
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


def _standardize_codes(net, images) -> tuple[np.ndarray, tuple | None]:
    """``(codes, statistics)`` of the training images; with ``standardize_code``, set
    the module's code statistics ``(mean, std)`` from them first and return the codes
    standardised, else the codes and None."""
    module = net.module_
    if not module.standardize_code:
        return net.encode(images, eager=True), None
    n_features = module.n_features_out
    module.set_code_statistics(np.zeros(n_features), np.ones(n_features))
    raw = net.encode(images, eager=True).astype(np.float64)
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    # A (nearly) constant feature is only centred: scaled up, its rounding noise
    # would become a unit-variance feature of pure noise.
    std = np.where(std > 1e-4 * std.max(), std, 1.0)
    module.set_code_statistics(mean, std)
    return ((raw - mean) / std).astype(np.float32), (mean, std)


def _code_mixture(codes: np.ndarray, seed: int) -> GaussianMixture | None:
    """The Gaussian mixture over the codes behind :meth:`sample`; None for fewer than
    two codes (then ``sample`` decodes prior draws, or refuses)."""
    if len(codes) < 2:
        return None
    n_components = min(_N_DENSITY_COMPONENTS, len(codes))
    mixture = GaussianMixture(
        n_components, covariance_type="full", reg_covar=1e-4, random_state=seed % (2**31)
    )
    # One BLAS thread: beside torch's freshly idle OpenMP threads, two BLAS threads
    # made this fit 3-4x slower on 2 cores (4.2 s against 1.1 s on MNIST's codes),
    # and one thread makes its result independent of the machine's thread count.
    with threadpool_limits(1, user_api="blas"):
        return mixture.fit(codes.astype(np.float64))


def _sample_mixture(mixture: GaussianMixture, n_samples: int, rng) -> np.ndarray:
    """Draw from a fitted full-covariance Gaussian mixture with a given RNG."""
    counts = rng.multinomial(n_samples, mixture.weights_)
    draws = [
        rng.multivariate_normal(mean, cov, size=count)
        for mean, cov, count in zip(mixture.means_, mixture.covariances_, counts, strict=True)
        if count
    ]
    return rng.permutation(np.concatenate(draws))
