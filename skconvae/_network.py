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
        (not after the output convolution).
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
        norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[spatial] if batch_norm else None
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
        """
        std = torch.as_tensor(std, dtype=torch.float32)
        self.code_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.code_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    @property
    def n_features_out(self) -> int:
        """Width of the code returned by :meth:`encode`."""
        return self.latent_dim or math.prod(self.conv_code_shape)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs from data units to the network's units."""
        return x * self.input_scale + self.input_shift

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        """Map reconstructions from the network's units back to data units."""
        return (y - self.input_shift) / self.input_scale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encode normalised inputs into flat codes of width ``n_features_out``.

        For a variational model this is the mean of the latent distribution.
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

        ``generator`` (on ``x``'s device) is the source of the sample; ``None`` draws
        from torch's global generator.
        """
        code = self.encoder(_pad_to(x, self.input_size, self.padded_size)).flatten(1)
        mean, log_var = self.to_latent(code).chunk(2, dim=1)
        log_var = log_var.clamp(-20, 20)
        z = mean + torch.randn_like(mean, generator=generator) * torch.exp(0.5 * log_var)
        kl = -0.5 * (1 + log_var - mean.square() - log_var.exp()).sum(1).mean()
        return self.decode_logits(z), kl

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decode codes to reconstructions before the output activation."""
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
        """Apply the output activation."""
        return _ACTIVATIONS[self.output_activation](logits)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode codes to reconstructions in normalised units."""
        return self.activate(self.decode_logits(z))

    def reconstruct_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct normalised inputs, before the output activation."""
        if self.latent_dim is None and not self.standardize_code:
            # The code is the feature map itself: skip flattening it and back.
            return self._decode_map(self.encoder(_pad_to(x, self.input_size, self.padded_size)))
        return self.decode_logits(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct normalised inputs, in normalised units."""
        return self.decode(self.encode(x))


def _pad_to(x: torch.Tensor, size: tuple[int, ...], padded: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad the trailing spatial axes of ``x`` from ``size`` to ``padded``, centred."""
    pad = []
    for s, p in zip(reversed(size), reversed(padded), strict=True):
        pad += [(p - s) // 2, p - s - (p - s) // 2]
    return F.pad(x, pad) if any(pad) else x


def _crop_to(x: torch.Tensor, size: tuple[int, ...], offsets: tuple[int, ...]) -> torch.Tensor:
    """Crop the trailing spatial axes of ``x`` to ``size`` starting at ``offsets``."""
    for dim, (s, o) in enumerate(zip(size, offsets, strict=True), start=2):
        if x.shape[dim] != s:
            x = x.narrow(dim, o, s)
    return x


class ImageToImageNet(nn.Module):
    """U-Net-style conv network mapping images to images, optionally upscaling.

    The encoder is ``len(filters)`` stages of two convolutions with a max-pool
    between stages; the decoder upsamples back, concatenating the encoder's
    feature map of the same size (skip connections); with ``scale > 1`` the output
    convolution predicts ``scale**2`` values per pixel that a pixel shuffle
    interleaves into the larger image. With ``residual=True`` the
    network predicts the difference to the input, or to its bicubic (linear for
    1-D) interpolation when upscaling -- the known way to beat classical filters.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of input and output images.
    input_size : tuple of int
        ``(height, width)``, or ``(length,)`` for 1-D signals, of the training
        images; the network is fully convolutional and accepts other sizes too.
    scale : int, default=1
        Integer upscaling factor from input to output.
    filters : sequence of int, default=(32, 64)
        Width of each encoder stage.
    kernel_size : int, default=3
    skip_connections : bool, default=True
    residual : bool, default=True
        Add the (interpolated) input to the output; needs ``in_channels == out_channels``.
    input_shift, input_scale, target_shift, target_scale : sequence of float or None
        Per-channel affine maps from data units to normalised units.

    Examples
    --------
    >>> import torch
    >>> from skconvae.nn import ImageToImageNet
    >>> net = ImageToImageNet(in_channels=3, out_channels=3, input_size=(15, 20), scale=2)
    >>> net(torch.zeros(2, 3, 15, 20)).shape
    torch.Size([2, 3, 30, 40])
    >>> net(torch.zeros(1, 3, 41, 64)).shape            # any size: fully convolutional
    torch.Size([1, 3, 82, 128])
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        input_size: Sequence[int],
        scale: int = 1,
        filters: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        skip_connections: bool = True,
        residual: bool = True,
        input_shift: Sequence[float] | None = None,
        input_scale: Sequence[float] | None = None,
        target_shift: Sequence[float] | None = None,
        target_scale: Sequence[float] | None = None,
    ):
        super().__init__()
        self.input_size = tuple(int(s) for s in input_size)
        self.scale = scale
        self.skip_connections = skip_connections
        self.residual = residual and in_channels == out_channels
        spatial = len(self.input_size)
        conv = {1: nn.Conv1d, 2: nn.Conv2d}[spatial]
        self._pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d}[spatial](2)
        self._interpolation = {1: "linear", 2: "bicubic"}[spatial]
        self._factor = 2 ** (len(filters) - 1)

        def block(c_in, c_out):
            return nn.Sequential(
                conv(c_in, c_out, kernel_size, padding="same"),
                nn.ReLU(),
                conv(c_out, c_out, kernel_size, padding="same"),
                nn.ReLU(),
            )

        self.down = nn.ModuleList()
        channels = in_channels
        for width in filters:
            self.down.append(block(channels, width))
            channels = width
        self.up = nn.ModuleList()
        for width in reversed(filters[:-1]):
            self.up.append(block(channels + (width if skip_connections else 0), width))
            channels = width
        # Sub-pixel upscaling (Shi et al. 2016, ESPCN): the head predicts
        # ``scale ** spatial`` values per output channel at the input's resolution
        # and a pixel shuffle interleaves them, so every convolution runs on the
        # small grid.
        self.head = conv(channels, out_channels * scale**spatial, kernel_size, padding="same")

        stats_shape = (1, -1) + (1,) * spatial
        for name, values, channels_ in [
            ("input_shift", input_shift, in_channels),
            ("input_scale", input_scale, in_channels),
            ("target_shift", target_shift, out_channels),
            ("target_scale", target_scale, out_channels),
        ]:
            default = torch.ones(channels_) if name.endswith("scale") else torch.zeros(channels_)
            tensor = default if values is None else torch.as_tensor(values)
            self.register_buffer(name, tensor.float().reshape(stats_shape))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs from data units to the network's units."""
        return x * self.input_scale + self.input_shift

    def normalize_target(self, y: torch.Tensor) -> torch.Tensor:
        """Map targets from data units to the network's units."""
        return y * self.target_scale + self.target_shift

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        """Map outputs from the network's units back to target units."""
        return (y - self.target_shift) / self.target_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised inputs to outputs in normalised target units.

        The network is fully convolutional: inputs of any size work, not only
        ``input_size``; each output side is ``scale`` times the input's.
        """
        size = tuple(x.shape[2:])
        padded = tuple(math.ceil(s / self._factor) * self._factor for s in size)
        h = _pad_to(x, size, padded)
        skips = []
        for i, stage in enumerate(self.down):
            if i:
                h = self._pool(h)
            h = stage(h)
            skips.append(h)
        for stage, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            h = F.interpolate(h, size=skip.shape[2:], mode="nearest")
            h = stage(torch.cat([h, skip], dim=1) if self.skip_connections else h)
        out = _pixel_shuffle(self.head(h), self.scale)
        offsets = tuple((p - s) // 2 * self.scale for s, p in zip(size, padded, strict=True))
        out = _crop_to(out, tuple(s * self.scale for s in size), offsets)
        if self.residual:
            base = x
            if self.scale > 1:
                base = F.interpolate(
                    x, scale_factor=self.scale, mode=self._interpolation, align_corners=False
                )
            # Carry the input over from its own units to the target's.
            base = (base - self.input_shift) / self.input_scale
            out = out + self.normalize_target(base)
        return out


def _pixel_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Rearrange ``(N, C * scale**d, *size)`` into ``(N, C, *(size * scale))``, d = 1 or 2."""
    if scale == 1:
        return x
    if x.dim() == 4:
        return F.pixel_shuffle(x, scale)
    n, channels, length = x.shape
    x = x.reshape(n, channels // scale, scale, length)
    return x.transpose(2, 3).reshape(n, channels // scale, length * scale)


class ReconstructionLoss(nn.Module):
    """Reconstruction loss computed from decoder logits.

    Parameters
    ----------
    loss : {"mse", "l1", "bce"}
        Mean squared or absolute error of the activated output, or binary
        cross-entropy computed stably from the logits (targets must lie in [0, 1]).
    output_activation : {"sigmoid", "tanh", "identity"}
        The decoder's output activation, applied before the MSE.
    """

    def __init__(self, loss: str = "mse", output_activation: str = "sigmoid"):
        super().__init__()
        self.loss = loss
        self.output_activation = output_activation

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits.float(), target)
        output = _ACTIVATIONS[self.output_activation](logits.float())
        if self.loss == "l1":
            return F.l1_loss(output, target)
        return F.mse_loss(output, target)
