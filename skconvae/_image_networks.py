"""Image-to-image networks of the regressor, as plain ``torch.nn`` modules.

Both map images ``(N, C, H, W)`` (or signals ``(N, C, L)``) in normalised units to
images ``scale`` times larger in normalised target units, are fully convolutional
(any input size works) and, with ``residual=True``, predict only the correction to
the input -- or to its bicubic (linear for 1-D) interpolation when upscaling.
Upscaling is sub-pixel (Shi et al. 2016, ESPCN): the last convolution predicts
``scale ** d`` values per output channel at the input's resolution and a pixel
shuffle interleaves them, so every convolution runs on the small grid.

- :class:`ResidualImageNet`, the default: a plain stack of residual blocks at the
  input's resolution (DnCNN / EDSR style) or, with ``downscale``, on a coarser grid
  reached by a pixel unshuffle (FFDNet style).
- :class:`ImageToImageNet`: a U-Net (max-pooling encoder, decoder with skip
  connections); a larger receptive field for the same cost, but a weaker
  restorer of fine detail in the measurements of ``benchmarks/bench_restoration.py``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ._network import _pad_to


class _ImageToImageBase(nn.Module):
    """Unit conversions and the residual base shared by the image-to-image networks."""

    def _init_units(self, in_channels, out_channels, input_size, scale, residual, units):
        self.input_size = tuple(int(s) for s in input_size)
        self.scale = scale
        self.residual = residual and in_channels == out_channels
        spatial = len(self.input_size)
        self._conv = {1: nn.Conv1d, 2: nn.Conv2d}[spatial]
        self._interpolation = {1: "linear", 2: "bicubic"}[spatial]
        stats_shape = (1, -1) + (1,) * spatial
        for name, channels in [
            ("input_shift", in_channels),
            ("input_scale", in_channels),
            ("target_shift", out_channels),
            ("target_scale", out_channels),
        ]:
            values = units[name]
            default = torch.ones(channels) if name.endswith("scale") else torch.zeros(channels)
            tensor = default if values is None else torch.as_tensor(values)
            self.register_buffer(name, tensor.float().reshape(stats_shape))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs from data units to the network's units.

        Parameters
        ----------
        x : torch.Tensor of shape (N, in_channels, H, W) or (N, in_channels, L)
            Inputs in data units.

        Returns
        -------
        torch.Tensor
            ``x * input_scale + input_shift``, per channel.

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ResidualImageNet
        >>> net = ResidualImageNet(
        ...     in_channels=1, out_channels=1, input_size=(8, 8), input_scale=[1 / 16]
        ... )
        >>> net.normalize(torch.full((1, 1, 8, 8), 16.0)).unique()
        tensor([1.])
        """
        return x * self.input_scale + self.input_shift

    def normalize_target(self, y: torch.Tensor) -> torch.Tensor:
        """Map targets from data units to the network's units.

        Parameters
        ----------
        y : torch.Tensor of shape (N, out_channels, H, W) or (N, out_channels, L)
            Targets in data units.

        Returns
        -------
        torch.Tensor
            ``y * target_scale + target_shift``, per channel.

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ResidualImageNet
        >>> net = ResidualImageNet(
        ...     in_channels=1, out_channels=1, input_size=(8, 8), target_shift=[-1.0]
        ... )
        >>> net.normalize_target(torch.ones(1, 1, 8, 8)).unique()
        tensor([0.])
        """
        return y * self.target_scale + self.target_shift

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        """Map outputs from the network's units back to target units.

        Parameters
        ----------
        y : torch.Tensor of shape (N, out_channels, H, W) or (N, out_channels, L)
            Network outputs, in normalised target units.

        Returns
        -------
        torch.Tensor
            ``(y - target_shift) / target_scale``, per channel: the inverse of
            :meth:`normalize_target`.

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ResidualImageNet
        >>> net = ResidualImageNet(
        ...     in_channels=1, out_channels=1, input_size=(8, 8), target_scale=[0.5]
        ... )
        >>> net.denormalize(torch.ones(1, 1, 8, 8)).unique()
        tensor([2.])
        """
        return (y - self.target_shift) / self.target_scale

    def _add_base(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out`` plus the (interpolated) input carried over to target units."""
        if not self.residual:
            return out
        base = x
        if self.scale > 1:
            base = F.interpolate(
                x, scale_factor=self.scale, mode=self._interpolation, align_corners=False
            )
        base = (base - self.input_shift) / self.input_scale
        return out + self.normalize_target(base)


class _ResidualBlock(nn.Module):
    """``x + conv(relu(conv(x)))``; the second convolution starts at zero (identity block)."""

    def __init__(self, conv, in_width: int, width: int, kernel_size: int):
        super().__init__()
        self.first = conv(in_width, width, kernel_size, padding="same")
        self.second = conv(width, width, kernel_size, padding="same")
        self.shortcut = nn.Identity() if in_width == width else conv(in_width, width, 1)
        nn.init.zeros_(self.second.weight)
        nn.init.zeros_(self.second.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.second(F.relu(self.first(x)))


class ResidualImageNet(_ImageToImageBase):
    """Residual conv network mapping images to images, optionally upscaling.

    ``Conv(filters[0])`` then one residual block per entry of ``filters`` (two
    convolutions of that width with a ReLU between, plus the block's input), a
    ReLU and the output convolution; every convolution runs at the input's
    resolution, or ``downscale`` times coarser. Blocks start as identities and
    the output convolution at zero, so with ``residual=True`` an untrained
    network returns the input (or its bicubic interpolation) and training learns
    the correction, as in DnCNN (Zhang et al. 2017) and EDSR (Lim et al. 2017).

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of input and output images.
    input_size : tuple of int
        ``(height, width)``, or ``(length,)`` for 1-D signals, of the training
        images; the network is fully convolutional and accepts other sizes too.
    scale : int, default=1
        Integer upscaling factor from input to output.
    filters : sequence of int, default=(32, 32, 32, 32)
        Width of each residual block; the receptive field grows by
        ``2 * (kernel_size - 1)`` per block.
    kernel_size : int, default=3
        Size of every convolution kernel.
    residual : bool, default=True
        Add the (interpolated) input to the output; needs ``in_channels == out_channels``.
    downscale : int, default=1
        Run the convolutions on a grid ``downscale`` times coarser: a pixel
        unshuffle turns each ``downscale``-sided block of pixels into one pixel
        with ``downscale**d`` times the channels (no information lost), and the
        output convolution predicts ``(scale * downscale)**d`` values per coarse
        pixel and output channel, interleaved back by a pixel shuffle (FFDNet,
        Zhang et al. 2018). Each convolution sees ``downscale`` times farther;
        widths ``downscale`` times larger keep the cost per pixel. Sides that
        are not multiples of ``downscale`` are padded (edge values repeated) and
        the output cropped.
    input_shift, input_scale, target_shift, target_scale : sequence of float or None
        Per-channel affine maps from data units to normalised units.

    Examples
    --------
    >>> import torch
    >>> from skconvae.nn import ResidualImageNet
    >>> net = ResidualImageNet(in_channels=1, out_channels=1, input_size=(24, 24), scale=2)
    >>> net(torch.zeros(2, 1, 24, 24)).shape
    torch.Size([2, 1, 48, 48])
    >>> x = torch.rand(1, 1, 37, 50)                    # any size: fully convolutional
    >>> torch.equal(ResidualImageNet(in_channels=1, out_channels=1, input_size=(8, 8))(x), x)
    True
    >>> coarse = ResidualImageNet(
    ...     in_channels=1, out_channels=1, input_size=(8, 8), filters=(64, 64), downscale=2
    ... )
    >>> coarse(x).shape                                 # odd sides: padded, then cropped
    torch.Size([1, 1, 37, 50])
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        input_size: Sequence[int],
        scale: int = 1,
        filters: Sequence[int] = (32, 32, 32, 32),
        kernel_size: int = 3,
        residual: bool = True,
        downscale: int = 1,
        input_shift: Sequence[float] | None = None,
        input_scale: Sequence[float] | None = None,
        target_shift: Sequence[float] | None = None,
        target_scale: Sequence[float] | None = None,
    ):
        super().__init__()
        units = {
            "input_shift": input_shift,
            "input_scale": input_scale,
            "target_shift": target_shift,
            "target_scale": target_scale,
        }
        self._init_units(in_channels, out_channels, input_size, scale, residual, units)
        conv, spatial = self._conv, len(self.input_size)
        self.downscale = int(downscale)
        self.stem = conv(in_channels * downscale**spatial, filters[0], kernel_size, padding="same")
        widths = [filters[0], *filters]
        self.blocks = nn.Sequential(
            *(_ResidualBlock(conv, w_in, w, kernel_size) for w_in, w in itertools.pairwise(widths))
        )
        out_per_pixel = out_channels * (scale * downscale) ** spatial
        self.head = conv(filters[-1], out_per_pixel, kernel_size, padding="same")
        if self.residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised inputs to outputs in normalised target units.

        Inputs of any size work, not only ``input_size``; each output side is
        ``scale`` times the input's.

        Parameters
        ----------
        x : torch.Tensor of shape (N, in_channels, H, W) or (N, in_channels, L)
            Inputs in the network's units (see :meth:`normalize`).

        Returns
        -------
        torch.Tensor of shape (N, out_channels, scale * H, scale * W)
            Outputs in normalised target units (``(N, out_channels, scale * L)``
            for signals); :meth:`denormalize` maps them to target units.

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ResidualImageNet
        >>> net = ResidualImageNet(in_channels=3, out_channels=3, input_size=(16, 16), scale=2)
        >>> net(torch.rand(2, 3, 20, 30)).shape
        torch.Size([2, 3, 40, 60])
        """
        d = self.downscale
        size = tuple(x.shape[2:])
        padded = tuple(math.ceil(s / d) * d for s in size)
        pad = [p for s, q in zip(reversed(size), reversed(padded), strict=True) for p in (0, q - s)]
        h = F.pad(x, pad, mode="replicate") if any(pad) else x
        h = F.relu(self.blocks(self.stem(_pixel_unshuffle(h, d))))
        out = _pixel_shuffle(self.head(h), self.scale * d)
        out = _crop_to(out, tuple(s * self.scale for s in size), (0,) * len(size))
        return self._add_base(x, out)


class ImageToImageNet(_ImageToImageBase):
    """U-Net-style conv network mapping images to images, optionally upscaling.

    The encoder is ``len(filters)`` stages of two convolutions with a max-pool
    between stages; the decoder upsamples back, concatenating the encoder's
    feature map of the same size (skip connections); with ``scale > 1`` the output
    convolution predicts ``scale**2`` values per pixel that a pixel shuffle
    interleaves into the larger image. With ``residual=True`` the
    network predicts the difference to the input, or to its bicubic (linear for
    1-D) interpolation when upscaling.

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
        Size of every convolution kernel.
    skip_connections : bool, default=True
        Concatenate each encoder stage's feature map into the decoder stage of
        the same size.
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
        units = {
            "input_shift": input_shift,
            "input_scale": input_scale,
            "target_shift": target_shift,
            "target_scale": target_scale,
        }
        self._init_units(in_channels, out_channels, input_size, scale, residual, units)
        self.skip_connections = skip_connections
        conv, spatial = self._conv, len(self.input_size)
        self._pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d}[spatial](2)
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
        self.head = conv(channels, out_channels * scale**spatial, kernel_size, padding="same")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised inputs to outputs in normalised target units.

        The network is fully convolutional: inputs of any size work, not only
        ``input_size``; each output side is ``scale`` times the input's.

        Parameters
        ----------
        x : torch.Tensor of shape (N, in_channels, H, W) or (N, in_channels, L)
            Inputs in the network's units (see :meth:`normalize`).

        Returns
        -------
        torch.Tensor of shape (N, out_channels, scale * H, scale * W)
            Outputs in normalised target units (``(N, out_channels, scale * L)``
            for signals); :meth:`denormalize` maps them to target units.

        Examples
        --------
        >>> import torch
        >>> from skconvae.nn import ImageToImageNet
        >>> net = ImageToImageNet(in_channels=1, out_channels=1, input_size=(16, 16))
        >>> net(torch.rand(2, 1, 21, 13)).shape            # odd sizes: padded, then cropped
        torch.Size([2, 1, 21, 13])
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
        return self._add_base(x, out)


def _crop_to(x: torch.Tensor, size: tuple[int, ...], offsets: tuple[int, ...]) -> torch.Tensor:
    """Crop the trailing spatial axes of ``x`` to ``size`` starting at ``offsets``."""
    for dim, (s, o) in enumerate(zip(size, offsets, strict=True), start=2):
        if x.shape[dim] != s:
            x = x.narrow(dim, o, s)
    return x


def _pixel_unshuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Rearrange ``(N, C, *size)`` into ``(N, C * factor**d, *(size / factor))``: the
    inverse of :func:`_pixel_shuffle` (sides must be multiples of ``factor``)."""
    if factor == 1:
        return x
    if x.dim() == 4:
        return F.pixel_unshuffle(x, factor)
    n, channels, length = x.shape
    x = x.reshape(n, channels, length // factor, factor)
    return x.transpose(2, 3).reshape(n, channels * factor, length // factor)


def _pixel_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Rearrange ``(N, C * scale**d, *size)`` into ``(N, C, *(size * scale))``, d = 1 or 2."""
    if scale == 1:
        return x
    if x.dim() == 4:
        return F.pixel_shuffle(x, scale)
    n, channels, length = x.shape
    x = x.reshape(n, channels // scale, scale, length)
    return x.transpose(2, 3).reshape(n, channels // scale, length * scale)
