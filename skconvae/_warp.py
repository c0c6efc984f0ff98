"""Warped training inputs: one small random affine warp of each image, never of the target.

Like the corruptions of denoising (``_noise.py``), a warp changes what the
network sees and not what it must reconstruct: to undo small rotations, zooms
and shifts of its input, the encoder learns codes that change little under them.
Warps keep the batch's shape, and use bilinear sampling with edge values
repeated beyond the border.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

WARP_KINDS = ("affine",)

# The warps of warp="affine": rotations up to 10 degrees either way, zooms up to
# 10% in or out, shifts up to one pixel along each axis, drawn uniformly.
MAX_ROTATION = 10.0
MAX_ZOOM = 0.1
MAX_SHIFT = 1.0


def check_warp(warp: str | None, spatial_size: tuple[int, ...]) -> None:
    """Raise if ``warp`` cannot warp images of ``spatial_size``."""
    if warp is not None and len(spatial_size) != 2:
        raise ValueError(
            f"warp={warp!r} warps 2-D images, but these are 1-D signals of length "
            f"{spatial_size[0]}: set warp=None (or pass image_shape=(height, width) if "
            "the rows are images)."
        )


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    rotation: float = MAX_ROTATION,
    zoom: float = MAX_ZOOM,
    shift: float = MAX_SHIFT,
) -> torch.Tensor:
    """A copy of a batch of images, each under its own random affine warp.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C, H, W)
        Images, in any units.
    generator : torch.Generator or None, default=None
        Source of the warps, on ``x``'s device; ``None`` draws from torch's global
        generator.
    rotation : float, default=10.0
        Largest rotation about the image centre, in degrees either way.
    zoom : float, default=0.1
        Largest relative change of size either way (0.1: from 90% to 110%).
    shift : float, default=1.0
        Largest shift along each axis, in pixels either way.

    Returns
    -------
    warped : torch.Tensor of the shape, dtype and memory format of ``x``
    """
    n = len(x)

    def uniform(*size):  # in [-1, 1)
        return 2 * torch.rand(*size, generator=generator, device=x.device, dtype=x.dtype) - 1

    angle = uniform(n) * math.radians(rotation)
    scale = 1 + uniform(n) * zoom
    return affine_warp(x, angle, scale, uniform(n, 2) * shift)


def affine_warp(
    x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """Each image of a batch rotated, scaled about its centre, then shifted.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C, H, W)
    angle : torch.Tensor of shape (N,)
        Rotations in radians, from the width axis towards the height axis.
    scale : torch.Tensor of shape (N,)
        Size factors (above 1 zooms in).
    shift : torch.Tensor of shape (N, 2)
        Shifts in pixels along the width and the height.

    Returns
    -------
    warped : torch.Tensor of the shape, dtype and memory format of ``x``
    """
    height, width = x.shape[-2:]
    # affine_grid maps each output pixel to where it samples the input, in
    # coordinates from -1 to 1 along each axis: the inverse warp, and the terms
    # that mix the axes rescaled by the image's aspect.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    cos_shift = -(cos * shift[:, 0] + sin * shift[:, 1])
    sin_shift = sin * shift[:, 0] - cos * shift[:, 1]
    theta = torch.stack(
        [
            torch.stack([cos, sin * height / width, cos_shift * 2 / width], dim=1),
            torch.stack([-sin * width / height, cos, sin_shift * 2 / height], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # In the batch's memory layout: the network's convolutions run channels-last.
    if x.is_contiguous(memory_format=torch.channels_last):
        return warped.contiguous(memory_format=torch.channels_last)
    return warped
