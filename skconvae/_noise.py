"""Corruptions for denoising training: applied to network inputs only, never targets."""

from __future__ import annotations

import torch

NOISE_KINDS = ("gaussian", "salt_pepper", "mask")


def corrupt(
    x: torch.Tensor,
    kind: str,
    level: float,
    low: float,
    high: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return a corrupted copy of a batch in the network's units.

    Parameters
    ----------
    x : torch.Tensor
        Clean batch, already normalised.
    kind : {"gaussian", "salt_pepper", "mask"}
        ``"gaussian"`` adds noise of standard deviation ``level``; ``"salt_pepper"``
        sets a share ``level`` of values to ``low`` or ``high`` at random;
        ``"mask"`` sets a share ``level`` of values to ``low`` (dropped pixels).
    level : float
        Noise standard deviation, or share of corrupted values.
    low, high : float
        Range of clean data in the network's units; results are clipped to it.
    generator : torch.Generator or None, default=None
        Source of the noise, on ``x``'s device; ``None`` draws from torch's global
        generator.

    Returns
    -------
    corrupted : torch.Tensor
    """
    if kind == "gaussian":
        noisy = x + level * torch.randn_like(x, generator=generator)
    elif kind == "salt_pepper":
        hit = torch.rand_like(x, generator=generator) < level
        salt = torch.rand_like(x, generator=generator) < 0.5
        noisy = torch.where(hit, torch.where(salt, high, low), x)
    elif kind == "mask":
        noisy = torch.where(torch.rand_like(x, generator=generator) < level, low, x)
    else:
        raise ValueError(f"noise must be one of {NOISE_KINDS}; got {kind!r}.")
    return noisy.clamp(low, high)
