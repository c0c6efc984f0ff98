"""Per-fit random streams: every random draw of a fit comes from its own generators.

A fit never seeds, reads or restores torch's global generator, so fits running
at once in threads (Dask thread workers, joblib's threading backend) neither
disturb each other nor the caller's random state. Each stream (weight
initialisation, input noise, latent sampling) gets its own seed, derived from
the fit's seed with NumPy's ``SeedSequence``; the shuffling order and the
validation split seed their own generators with the fit's seed directly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

_STREAMS = ("init", "noise")

# Random functions, by name, that take a ``generator`` keyword: ``torch.nn.init``'s
# initialisers, tensor methods that fill in place, and factory functions.
_DRAWING = frozenset(
    {
        "uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
        "xavier_uniform_", "xavier_normal_", "orthogonal_", "sparse_",
        "random_", "bernoulli_", "exponential_", "cauchy_", "log_normal_", "geometric_",
        "rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like",
        "normal", "bernoulli", "multinomial", "poisson",
    }
)  # fmt: skip


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named stream of a fit, independent of the other streams."""
    state = np.random.SeedSequence([seed, _STREAMS.index(stream)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def stream_generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` for one named stream of a fit."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))


class DrawingFrom(TorchFunctionMode):
    """Inside, random torch functions called without a generator draw from ``generator``.

    It is how modules built by code that knows nothing of generators (``nn.Conv2d``
    initialises its weights from the global generator) draw their initial weights
    from a fit's own stream. Torch function modes are per thread: other threads
    keep drawing from wherever they drew before.

    Parameters
    ----------
    generator : torch.Generator
    """

    def __init__(self, generator: torch.Generator):
        super().__init__()
        self.generator = generator

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if getattr(func, "__name__", None) in _DRAWING and kwargs.get("generator") is None:
            kwargs["generator"] = self.generator
        return func(*args, **kwargs)
