"""Exceptions and warnings that skconvae's users may want to catch.

A small hierarchy in skorch's manner: everything skconvae raises on its own
account derives from :class:`SkconvaeError`, and each class also derives from the
built-in (or scikit-learn) exception that code written without skconvae in mind
already catches, so ``except ValueError`` and ``except NotFittedError`` keep
working.
"""

from __future__ import annotations

from sklearn.exceptions import ConvergenceWarning
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError


class SkconvaeError(Exception):
    """Base class of the errors skconvae raises on its own account.

    Examples
    --------
    >>> from skconvae import ModelFileError, SkconvaeError
    >>> issubclass(ModelFileError, SkconvaeError)
    True
    """


class NotFittedError(SkconvaeError, _SklearnNotFittedError):
    """An estimator was used (or saved) before ``fit``.

    Also a :class:`sklearn.exceptions.NotFittedError`, hence a ``ValueError`` and
    an ``AttributeError``.

    Examples
    --------
    >>> import sklearn.exceptions
    >>> from skconvae import NotFittedError
    >>> issubclass(NotFittedError, sklearn.exceptions.NotFittedError)
    True
    """


class ModelFileError(SkconvaeError, ValueError):
    """A model file cannot be loaded: not a skconvae file, truncated, corrupted,
    tampered with, or written by a newer format version.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skconvae import ModelFileError, load
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.safetensors"
    >>> _ = path.write_bytes(b"not a model")
    >>> try:
    ...     load(path)
    ... except ModelFileError as exc:
    ...     print("refused:", type(exc).__name__)
    refused: ModelFileError
    """


class NonFiniteLossError(SkconvaeError, FloatingPointError):
    """Training produced a NaN or infinite loss (or weights) and was stopped.

    A ``fit`` that raises it leaves the estimator as it was before the call.

    Examples
    --------
    >>> from skconvae import NonFiniteLossError
    >>> issubclass(NonFiniteLossError, ArithmeticError)
    True
    """


class FitInterruptedWarning(ConvergenceWarning):
    """``fit`` was interrupted (Ctrl-C) and kept the weights trained so far.

    A :class:`sklearn.exceptions.ConvergenceWarning`: the model is usable but
    was trained for fewer epochs than asked.

    Examples
    --------
    >>> import warnings
    >>> from skconvae import FitInterruptedWarning
    >>> issubclass(FitInterruptedWarning, UserWarning)
    True
    """
