"""Small helpers that depend on nothing else in the package."""

from __future__ import annotations

import contextlib

import numpy as np
import torch


def resolve_device(device: str) -> str:
    """Turn the ``device`` parameter into a concrete torch device string.

    ``"auto"`` picks CUDA when it is available and the CPU otherwise.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a torch device. Use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested, but CUDA is not available on this machine. "
            "Use device='auto' to train on the GPU where there is one and on the CPU otherwise."
        )
    return str(resolved)


def draw_seed(random_state) -> int:
    """Draw a 31-bit seed from ``random_state`` without touching NumPy's global RNG.

    ``None`` draws fresh OS entropy; an int is used as it is; a ``RandomState``
    instance is advanced, as scikit-learn does with instances.
    """
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    return int(random_state) % (2**31)


@contextlib.contextmanager
def restore_on_error(estimator):
    """Leave ``estimator``'s attributes exactly as they were if the body raises."""
    saved = dict(vars(estimator))
    try:
        yield
    except BaseException:
        vars(estimator).clear()
        vars(estimator).update(saved)
        raise
