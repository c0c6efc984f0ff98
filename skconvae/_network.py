"""The convolutional autoencoder as a plain ``torch.nn`` module.

Nothing here knows about scikit-learn or skorch: the module takes float tensors of
shape ``(N, C, H, W)`` (or ``(N, C, L)`` for 1-D signals) in the data's own units and
can be used on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

_ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "identity": lambda t: t}


class _OneValueBatchNorm:
    """Batch norm that also trains on a batch holding one value per channel.

    One image whose feature map is down to 1x1 (or one signal of length 1) leaves
    batch norm no batch statistics, and torch's raises; a fit whose last batch
    is one sample would fail on its last step. Such a batch is normalised with
    the running statistics instead (as in evaluation) and leaves them as they
    are; gradients still reach the scale and shift. Any other batch is torch's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.numel() == x.shape[1]:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, eps=self.eps
            )
        return super().forward(x)


class BatchNorm1d(_OneValueBatchNorm, nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` that trains on one value per channel too."""


class BatchNorm2d(_OneValueBatchNorm, nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` that trains on one value per channel too."""


class ConvAutoencoder(nn.Module):
    """Conv encoder-decoder: ``Conv(f0)-[MaxPool-Conv(fi)]...`` and its mirror.

    With ``filters=(16, 8)`` this is the classic network: Conv(16)-MaxPool-Conv(8)
    encoder and Conv(8)-Upsample-Conv(C) decoder, ``same`` padding, ReLU, and the
    output activation. Inputs are padded so every pooling stage halves an even
    size, and reconstructions are cropped back to the input size.

    Parameters
    ----------
    in_channels : int
        Channels of the input images; the reconstruction has as many.
    input_size : tuple of int
        ``(height, width)`` for images, ``(length,)`` for 1-D signals.
    filters : sequence of int, default=(16, 8)
        Output channels of each encoder convolution; a max-pool sits between
        consecutive ones. The last entry is the width of the convolutional code.
    kernel_size : int, default=3
        Size of every convolution kernel.
    latent_dim : int or None, default=None
        If set, a dense bottleneck of this many features follows the conv encoder.
    output_activation : {"sigmoid", "tanh", "identity"}, default="sigmoid"
        Applied to the decoder output, in normalised units.
    input_shift, input_scale : sequence of float or None, default=None
        Per-channel affine map to normalised units: ``x * scale + shift``.
    variational : bool, default=False
        Make the dense bottleneck a diagonal Gaussian (a VAE): ``encode`` returns
        its mean and :meth:`variational_logits` samples it and returns the KL
        divergence to the standard normal prior. Needs ``latent_dim``.
    output_bias : sequence of float or None, default=None
        Initial bias of the output convolution, per channel (pre-activation).
        Starting at the data's mean keeps a saturating output activation from
        collapsing to a constant image early in training.
    decoder_filters : sequence of int or None, default=None
        Output channels of the decoder's hidden convolutions, one before each
        upsampling (``len(filters) - 1`` of them). ``None``: ``filters[1:]``
        reversed, the classic decoder (Conv(8)-Upsample-Conv(C) for
        ``filters=(16, 8)``); ``filters[:-1]`` reversed mirrors the encoder.
    batch_norm : bool, default=False
        Put a batch normalisation between every hidden convolution and its ReLU
        (not after the output convolution). A training batch that leaves it one
        value per channel (one image, a 1x1 feature map) is normalised with the
        running statistics, where torch's batch norm raises.
    standardize_code : bool, default=False
        Give :meth:`encode` a per-feature affine map ``(code - code_mean) /
        code_std`` and :meth:`decode` its exact inverse. The statistics are
        buffers set by :meth:`set_code_statistics` after training (identity
        until then), so training is unaffected.

    Examples
    --------
    >>> import torch
    >>> from skconvae.nn import ConvAutoencoder
    >>> ae = ConvAutoencoder(in_channels=1, input_size=(28, 28))
    >>> ae.encode(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 1568])
    >>> ae(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 1, 28, 28])
    """

    def __init__(
        self,
        *,
        in_channels: int,
        input_size: Sequence[int],
        filters: Sequence[int] = (16, 8),
        kernel_size: int = 3,
        latent_dim: int | None = None,
        output_activation: str = "sigmoid",
        input_shift: Sequence[float] | None = None,
        input_scale: Sequence[float] | None = None,
        variational: bool = False,
        output_bias: Sequence[float] | None = None,
        decoder_filters: Sequence[int] | None = None,
        batch_norm: bool = False,
        standardize_code: bool = False,
    ):
        super().__init__()
        if variational and latent_dim is None:
            raise ValueError("variational=True needs a dense bottleneck: set latent_dim.")
        self.variational = variational
        self.input_size = tuple(int(s) for s in input_size)
        self.output_activation = output_activation
        spatial = len(self.input_size)
        conv = {1: nn.Conv1d, 2: nn.Conv2d}[spatial]
        pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d}[spatial]
        norm = {1: BatchNorm1d, 2: BatchNorm2d}[spatial] if batch_norm else None
        n_pools = len(filters) - 1
        factor = 2**n_pools
        self.padded_size = tuple(math.ceil(s / factor) * factor for s in self.input_size)
        self.conv_code_shape = (filters[-1], *(s // factor for s in self.padded_size))

        encoder, channels = [], in_channels
        for i, width in enumerate(filters):
            if i:
                encoder.append(pool(2))
            encoder += [conv(channels, width, kernel_size, padding="same")]
            encoder += [norm(width)] if norm else []
            encoder.append(nn.ReLU())
            channels = width
        self.encoder = nn.Sequential(*encoder)

        n_conv_code = math.prod(self.conv_code_shape)
        self.latent_dim = latent_dim
        if latent_dim is not None:
            self.to_latent = nn.Linear(n_conv_code, latent_dim * (2 if variational else 1))
            self.from_latent = nn.Sequential(nn.Linear(latent_dim, n_conv_code), nn.ReLU())

        if decoder_filters is None:
            decoder_filters = tuple(reversed(filters[1:]))
        if len(decoder_filters) != n_pools:
            raise ValueError(
                f"decoder_filters needs one width per upsampling ({n_pools}); "
                f"got {tuple(decoder_filters)!r}."
            )
        decoder = []
        for width in decoder_filters:
            decoder += [conv(channels, width, kernel_size, padding="same")]
            decoder += [norm(width)] if norm else []
            decoder += [nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest")]
            channels = width
        decoder.append(conv(channels, in_channels, kernel_size, padding="same"))
        self.decoder = nn.Sequential(*decoder)
        if output_bias is not None:
            with torch.no_grad():
                self.decoder[-1].bias.copy_(torch.as_tensor(output_bias, dtype=torch.float32))

        stats_shape = (1, in_channels) + (1,) * spatial
        shift = torch.zeros(in_channels) if input_shift is None else torch.as_tensor(input_shift)
        scale = torch.ones(in_channels) if input_scale is None else torch.as_tensor(input_scale)
        self.register_buffer("input_shift", shift.float().reshape(stats_shape))
        self.register_buffer("input_scale", scale.float().reshape(stats_shape))
        self.standardize_code = standardize_code
        if standardize_code:
            self.register_buffer("code_mean", torch.zeros(self.n_features_out))
            self.register_buffer("code_std", torch.ones(self.n_features_out))

    def set_code_statistics(self, mean, std) -> None:
        """Set the per-feature mean and standard deviation that :meth:`encode` removes.

        Needs ``standardize_code=True``. Features with a zero ``std`` are only centred.

        Parameters
        ----------
        mean : array-like of shape (n_features_out,)
            Mean of each feature of the raw codes.
        std : array-like of shape (n_features_out,)
            Standard deviation of each feature of the raw codes; a zero is
            replaced by one.

        Examples
        --------
        >>> from skconvae.nn import ConvAutoencoder
        >>> ae = ConvAutoencoder(
        ...     in_channels=1, input_size=(8, 8), latent_dim=2, standardize_code=True
        ... )
        >>> ae.set_code_statistics([1.0, -1.0], [2.0, 0.0])
        >>> ae.code_mean, ae.code_std
        (tensor([ 1., -1.]), tensor([2., 1.]))
        """
        std = torch.as_tensor(std, dtype=torch.float32)
        self.code_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.code_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    @property
    def n_features_out(self) -> int:
        """Width of the code returned by :meth:`encode`.

        ``latent_dim`` when set, else the size of the flattened last feature map.

        Examples
        --------
        >>> from skconvae.nn import ConvAutoencoder
        >>> ConvAutoencoder(in_channels=1, input_size=(28, 28)).n_features_out  # 8 x 14 x 14
        1568
        >>> ConvAutoencoder(in_channels=1, input_size=(28, 28), latent_dim=32).n_features_out
        32
        """
        return self.latent_dim or math.prod(self.conv_code_shape)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs from data units to the network's units.

        Parameters
        ----------
        x : torch.Tensor of shape (N, C, H, W) or (N, C, L)
            Inputs in data units.

        Returns
        -------
        torch.Tensor
            ``x * input_scale + input_shift``, per channel; the same shape as ``x``.

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ConvAutoencoder
        >>> ae = ConvAutoencoder(
        ...     in_channels=1, input_size=(8, 8), input_shift=[-1.0], input_scale=[0.5]
        ... )
        >>> ae.normalize(torch.tensor([0.0, 2.0, 4.0]).reshape(1, 1, 1, 3)).flatten()
        tensor([-1.,  0.,  1.])
        """
        return x * self.input_scale + self.input_shift

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        """Map reconstructions from the network's units back to data units.

        Parameters
        ----------
        y : torch.Tensor of shape (N, C, H, W) or (N, C, L)
            Reconstructions in the network's (normalised) units.

        Returns
        -------
        torch.Tensor
            ``(y - input_shift) / input_scale``, per channel: the inverse of
            :meth:`normalize`.

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ConvAutoencoder
        >>> ae = ConvAutoencoder(
        ...     in_channels=1, input_size=(8, 8), input_shift=[-1.0], input_scale=[0.5]
        ... )
        >>> ae.denormalize(torch.tensor([-1.0, 0.0, 1.0]).reshape(1, 1, 1, 3)).flatten()
        tensor([0., 2., 4.])
        """
        return (y - self.input_shift) / self.input_scale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encode normalised inputs into flat codes of width ``n_features_out``.

        For a variational model this is the mean of the latent distribution.

        Parameters
        ----------
        x : torch.Tensor of shape (N, C, H, W) or (N, C, L)
            Inputs in the network's units (see :meth:`normalize`).

        Returns
        -------
        torch.Tensor of shape (N, n_features_out)
            The codes (standardised with ``standardize_code=True``).

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ConvAutoencoder
        >>> ae = ConvAutoencoder(in_channels=1, input_size=(8, 8), latent_dim=4)
        >>> ae.encode(torch.rand(3, 1, 8, 8)).shape
        torch.Size([3, 4])
        """
        code = self.encoder(_pad_to(x, self.input_size, self.padded_size)).flatten(1)
        if self.latent_dim is not None:
            code = self.to_latent(code)[:, : self.latent_dim]
        if self.standardize_code:
            code = (code - self.code_mean) / self.code_std
        return code

    def variational_logits(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample the latent, decode it; return logits and the mean KL to the prior.

        The training pass of a variational model (``variational=True``), with the
        reparameterisation trick.

        Parameters
        ----------
        x : torch.Tensor of shape (N, C, H, W) or (N, C, L)
            Inputs in the network's units.
        generator : torch.Generator or None, default=None
            Source of the latent sample, on ``x``'s device; ``None`` draws from
            torch's global generator.

        Returns
        -------
        logits : torch.Tensor of shape (N, C, H, W) or (N, C, L)
            Reconstructions of the sampled codes, before the output activation.
        kl : torch.Tensor of shape ()
            KL divergence of the latent distribution to N(0, I), summed over
            features and averaged over samples.

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ConvAutoencoder
        >>> vae = ConvAutoencoder(in_channels=1, input_size=(8, 8), latent_dim=4, variational=True)
        >>> logits, kl = vae.variational_logits(
        ...     torch.rand(3, 1, 8, 8), generator=torch.Generator().manual_seed(0)
        ... )
        >>> logits.shape, kl.shape
        (torch.Size([3, 1, 8, 8]), torch.Size([]))
        """
        code = self.encoder(_pad_to(x, self.input_size, self.padded_size)).flatten(1)
        mean, log_var = self.to_latent(code).chunk(2, dim=1)
        log_var = log_var.clamp(-20, 20)
        z = mean + torch.randn_like(mean, generator=generator) * torch.exp(0.5 * log_var)
        kl = -0.5 * (1 + log_var - mean.square() - log_var.exp()).sum(1).mean()
        return self.decode_logits(z), kl

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decode codes to reconstructions before the output activation.

        Parameters
        ----------
        z : torch.Tensor of shape (N, n_features_out)
            Codes, as returned by :meth:`encode`.

        Returns
        -------
        torch.Tensor of shape (N, C, H, W) or (N, C, L)
            Logits: apply :meth:`activate` to get reconstructions.

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ConvAutoencoder
        >>> ae = ConvAutoencoder(in_channels=1, input_size=(8, 8), latent_dim=4)
        >>> ae.decode_logits(torch.zeros(3, 4)).shape
        torch.Size([3, 1, 8, 8])
        """
        if self.standardize_code:
            z = z * self.code_std + self.code_mean
        if self.latent_dim is not None:
            z = self.from_latent(z)
        feature_map = z.reshape(-1, *self.conv_code_shape)
        if self.decoder[0].weight.is_contiguous(memory_format=torch.channels_last):
            # Flat codes come back in the default layout: restore the module's format,
            # or the whole decoder runs on the slower path.
            feature_map = feature_map.contiguous(memory_format=torch.channels_last)
        return self._decode_map(feature_map)

    def _decode_map(self, feature_map: torch.Tensor) -> torch.Tensor:
        out = self.decoder(feature_map)
        for dim, (size, padded) in enumerate(
            zip(self.input_size, self.padded_size, strict=True), start=2
        ):
            if padded != size:
                out = out.narrow(dim, (padded - size) // 2, size)
        return out

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply the output activation.

        Parameters
        ----------
        logits : torch.Tensor
            Decoder outputs before the activation.

        Returns
        -------
        torch.Tensor
            ``logits`` through ``output_activation`` (sigmoid, tanh or identity).

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ConvAutoencoder
        >>> ConvAutoencoder(in_channels=1, input_size=(8, 8)).activate(torch.zeros(2))
        tensor([0.5000, 0.5000])
        """
        return _ACTIVATIONS[self.output_activation](logits)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode codes to reconstructions in normalised units.

        Parameters
        ----------
        z : torch.Tensor of shape (N, n_features_out)
            Codes, as returned by :meth:`encode`.

        Returns
        -------
        torch.Tensor of shape (N, C, H, W) or (N, C, L)
            Reconstructions in the network's units (see :meth:`denormalize`).

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ConvAutoencoder
        >>> ae = ConvAutoencoder(in_channels=1, input_size=(8, 8), latent_dim=4)
        >>> images = ae.decode(torch.zeros(3, 4))
        >>> images.shape, bool(((images > 0) & (images < 1)).all())   # sigmoid output
        (torch.Size([3, 1, 8, 8]), True)
        """
        return self.activate(self.decode_logits(z))

    def reconstruct_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct normalised inputs, before the output activation.

        The training pass of a plain model: ``decode_logits(encode(x))``, without
        flattening the code when it is the feature map itself.

        Parameters
        ----------
        x : torch.Tensor of shape (N, C, H, W) or (N, C, L)
            Inputs in the network's units.

        Returns
        -------
        torch.Tensor of shape (N, C, H, W) or (N, C, L)
            Logits of the reconstructions.

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ConvAutoencoder
        >>> ae = ConvAutoencoder(in_channels=1, input_size=(8, 8))
        >>> x = torch.rand(3, 1, 8, 8)
        >>> torch.allclose(ae.activate(ae.reconstruct_logits(x)), ae(x))
        True
        """
        if self.latent_dim is None and not self.standardize_code:
            # The code is the feature map itself: skip flattening it and back.
            return self._decode_map(self.encoder(_pad_to(x, self.input_size, self.padded_size)))
        return self.decode_logits(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct normalised inputs, in normalised units.

        Parameters
        ----------
        x : torch.Tensor of shape (N, C, H, W) or (N, C, L)
            Inputs in the network's units.

        Returns
        -------
        torch.Tensor of shape (N, C, H, W) or (N, C, L)
            ``decode(encode(x))``.

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ConvAutoencoder
        >>> ae = ConvAutoencoder(in_channels=3, input_size=(15, 20))   # odd sizes are padded
        >>> ae(torch.rand(2, 3, 15, 20)).shape
        torch.Size([2, 3, 15, 20])
        """
        return self.decode(self.encode(x))


def _pad_to(x: torch.Tensor, size: tuple[int, ...], padded: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad the trailing spatial axes of ``x`` from ``size`` to ``padded``, centred."""
    pad = []
    for s, p in zip(reversed(size), reversed(padded), strict=True):
        pad += [(p - s) // 2, p - s - (p - s) // 2]
    return F.pad(x, pad) if any(pad) else x


class ReconstructionLoss(nn.Module):
    """Reconstruction loss computed from decoder logits.

    Parameters
    ----------
    loss : {"mse", "l1", "bce"}, default="mse"
        Mean squared or absolute error of the activated output, or binary
        cross-entropy computed stably from the logits (targets must lie in [0, 1]).
    output_activation : {"sigmoid", "tanh", "identity"}, default="sigmoid"
        The decoder's output activation, applied before the MSE or L1 error.

    Examples
    --------
    >>> import torch
    >>> from skconvae.nn import ReconstructionLoss
    >>> logits, target = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5)
    >>> ReconstructionLoss("bce")(logits, target)       # log(2): sigmoid(0) is 0.5
    tensor(0.6931)
    >>> ReconstructionLoss("mse")(logits, target)
    tensor(0.)
    """

    def __init__(self, loss: str = "mse", output_activation: str = "sigmoid"):
        super().__init__()
        self.loss = loss
        self.output_activation = output_activation

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch of decoder logits against their targets.

        Parameters
        ----------
        logits : torch.Tensor
            Decoder outputs before the output activation.
        target : torch.Tensor
            Targets in the network's units, the same shape as ``logits``.

        Returns
        -------
        torch.Tensor of shape ()
            The loss, averaged over every value.

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ReconstructionLoss
        >>> loss = ReconstructionLoss("l1", output_activation="identity")
        >>> loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
        tensor(1.)
        """
        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits.float(), target)
        output = _ACTIVATIONS[self.output_activation](logits.float())
        if self.loss == "l1":
            return F.l1_loss(output, target)
        return F.mse_loss(output, target)
