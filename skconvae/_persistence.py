"""Safe persistence: a fitted estimator as one safetensors file, loaded without pickle.

File format, version 3 (``FORMAT_VERSION``): one `safetensors
<https://huggingface.co/docs/safetensors>`_ file holding

- the network weights as tensors named ``"<attribute>.<state_dict key>"``
  (``"net_.encoder.0.weight"``), and every fitted NumPy array as a tensor named by
  its attribute path (``"data_min_"``, ``"code_density_.means_"``);
- metadata ``"skconvae"``: a JSON document with the format name and version, the
  estimator's class name, its parameters and its fitted attributes; arrays appear
  in it as references to tensors, the network as its module's class name and
  constructor arguments (the source of truth for rebuilding it);
- metadata ``"skconvae.sha256"``: a SHA-256 digest of the document and the tensors.

Loading parses JSON and raw tensors only. It never unpickles, and it imports
nothing named in the file: every class it constructs comes from a fixed allow-list
(the estimators in ``skconvae.__all__``, the modules in ``skconvae.nn``,
``torch.optim`` optimizers, ``ImageLayout``, ``GaussianMixture``). The digest
catches accidental corruption; deliberate edits that recompute it still meet
strict checks (names, shapes and dtypes of the weights against the module the
document describes, parameter validation, a trial forward pass), so a tampered
file gives a :class:`ModelFileError`, or at worst a wrong model, never code
execution.

The fitted attributes saved are declared, per class, in ``FITTED_SCHEMA``
(``GaussianMixture``'s in ``MIXTURE_SCHEMA``): a fitted attribute missing from it
makes ``save`` fail, so a new attribute cannot change the file format unnoticed;
adding one to the schema goes with a new ``FORMAT_VERSION``.

``load`` tells the file's faults from the environment's: everything decoded from
the file, including the network rebuilt on the ``meta`` device (no memory, no
device) with its weights checked and a trial pass through it, fails with a
:class:`ModelFileError`. Only then is the network built on its device and run once
on a real sample; an error there (out of memory, a missing CUDA, a torch or
package fault) is raised as it is, with a note that the file passed its checks.
``PersistenceMixin`` adds ``estimator.save(path)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import pathlib
import threading
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted

from ._base import network_input_size, skorch_training_kwargs
from ._exceptions import ModelFileError, NotFittedError
from ._layout import ImageLayout
from ._net import _PRECISIONS, AutoencoderNet
from ._noise import NOISE_KINDS
from ._utils import resolve_device
from ._warp import WARP_KINDS

FORMAT = "skconvae-model"
FORMAT_VERSION = 3

_DOCUMENT_KEY = "skconvae"
_DIGEST_KEY = "skconvae.sha256"

# Fitted scikit-learn objects an estimator may hold, by class name.
_SKLEARN_CLASSES = {"GaussianMixture": GaussianMixture}

# Instance attributes that configure rather than describe a fitted model.
_NOT_SAVED = {"_metadata_request"}


def _is_shape(value) -> bool:
    return isinstance(value, tuple) and all(type(v) is int and v >= 1 for v in value)


def _is_array(value) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in "biuf"


# What a saved value of each kind must be.
_KINDS = {
    "net": lambda v: isinstance(v, (AutoencoderNet, _NetRecipe)),
    "layout": lambda v: isinstance(v, ImageLayout),
    "shape": _is_shape,
    "count": lambda v: type(v) is int and v >= 1,
    "optional_count": lambda v: v is None or (type(v) is int and v >= 1),
    "int": lambda v: type(v) is int,
    "float": lambda v: type(v) in (int, float),
    "bool": lambda v: type(v) is bool,
    "str": lambda v: isinstance(v, str),
    "array": _is_array,
    "strings": lambda v: isinstance(v, np.ndarray) and v.dtype == object,
    "mixture": lambda v: v is None or isinstance(v, GaussianMixture),
    "config": lambda v: isinstance(v, dict),
    "warp": lambda v: v is None or v in WARP_KINDS,
}

# The fitted attributes of each estimator in the file, format version 3: name ->
# (kind, required). Nothing else is written or read. A new fitted attribute goes
# here, with a new FORMAT_VERSION (and a reader of the older versions).
FITTED_SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "ConvAutoencoderTransformer": {
        "net_": ("net", True),
        "code_density_": ("mixture", True),
        "_layout": ("layout", True),
        "image_shape_": ("shape", True),
        "code_shape_": ("shape", True),
        "filters_": ("shape", True),
        "latent_dim_": ("optional_count", True),
        "loss_": ("str", True),
        "max_epochs_": ("count", True),
        "warp_": ("warp", True),
        "data_min_": ("array", True),
        "data_max_": ("array", True),
        "device_": ("str", True),
        "n_features_in_": ("count", True),
        "feature_names_in_": ("strings", False),
        "_sklearn_output_config": ("config", False),
    },
    "ConvAutoencoderRegressor": {
        "net_": ("net", True),
        "_layout": ("layout", True),
        "_target_layout": ("layout", True),
        "image_shape_": ("shape", True),
        "target_shape_": ("shape", True),
        "scale_": ("count", True),
        "target_min_": ("array", True),
        "target_max_": ("array", True),
        "input_min_": ("array", True),
        "input_max_": ("array", True),
        "device_": ("str", True),
        "n_features_in_": ("count", True),
        "feature_names_in_": ("strings", False),
        "_sklearn_output_config": ("config", False),
    },
}

# The fitted attributes of scikit-learn's GaussianMixture that are saved; others it
# may grow in later versions are not (sampling and scoring need none of them).
MIXTURE_SCHEMA: dict[str, tuple[str, bool]] = {
    "weights_": ("array", True),
    "means_": ("array", True),
    "covariances_": ("array", True),
    "precisions_": ("array", True),
    "precisions_cholesky_": ("array", True),
    "converged_": ("bool", False),
    "n_iter_": ("int", False),
    "lower_bound_": ("float", False),
    "lower_bounds_": ("list", False),
    "n_features_in_": ("count", False),
}
_KINDS["list"] = lambda v: isinstance(v, list)

# AutoencoderNet's own keyword arguments (seed, precision, noise, ...), saved with the net.
_NET_OWN_PARAMS = tuple(
    name
    for name, p in inspect.signature(AutoencoderNet.__init__).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
)

# Errors that decoding a damaged or edited document can raise, turned into ModelFileError.
_DECODING_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    RuntimeError,
    OverflowError,
)


class PersistenceMixin:
    """Adds ``save(path)``: write the fitted estimator with :func:`skconvae.save`."""

    def save(self, path: str | os.PathLike) -> None:
        """Save the fitted estimator to one safetensors file, safe to share.

        Read it back with :func:`skconvae.load`, which never unpickles. User
        ``callbacks`` and a ``RandomState`` instance as ``random_state`` are not
        saved (a warning says so); a custom optimizer class is refused.

        Parameters
        ----------
        path : str or path-like
            File to write (conventionally ``*.safetensors``); replaced atomically
            if it exists.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from sklearn.datasets import load_digits
        >>> import skconvae
        >>> X, _ = load_digits(return_X_y=True)
        >>> ae = skconvae.ConvAutoencoderTransformer(max_epochs=1, random_state=0).fit(X)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "digits_ae.safetensors"
        >>> ae.save(path)
        >>> loaded = skconvae.load(path)
        >>> bool((loaded.transform(X[:5]) == ae.transform(X[:5])).all())
        True
        """
        save(self, path)


def save(estimator: BaseEstimator, path: str | os.PathLike) -> None:
    """Save a fitted skconvae estimator to one safetensors file.

    The file holds the network weights and a JSON document of the parameters and
    fitted attributes, with a format version; :func:`load` reads it back without
    unpickling anything, so such files are safe to share. Parameters that cannot
    be stored as data follow one policy: ``callbacks`` are not saved and
    ``random_state`` given as a ``RandomState`` instance is saved as ``None``
    (both matter only for refitting; a warning says so); an ``optimizer`` class
    is saved by name when it is one of ``torch.optim``'s and refused otherwise.

    Parameters
    ----------
    estimator : ConvAutoencoderTransformer or another skconvae estimator
        A fitted estimator.
    path : str or path-like
        File to write (conventionally ``*.safetensors``). An existing file is
        replaced atomically: a failed save leaves it as it was.

    Raises
    ------
    skconvae.NotFittedError
        If the estimator is not fitted.
    TypeError, ValueError
        If the estimator or one of its parameters cannot be stored as data.

    See Also
    --------
    load : Read the file back.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from sklearn.datasets import load_digits
    >>> import skconvae
    >>> X, _ = load_digits(return_X_y=True)
    >>> ae = skconvae.ConvAutoencoderTransformer(max_epochs=1, random_state=0).fit(X)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "digits_ae.safetensors"
    >>> skconvae.save(ae, path)
    >>> skconvae.load(path).transform(X[:2]).shape
    (2, 32)
    """
    cls = type(estimator)
    classes = _estimator_classes()
    if classes.get(cls.__name__) is not cls:
        raise TypeError(
            f"skconvae.save saves the estimators of skconvae ({', '.join(sorted(classes))}); "
            f"got {cls.__module__}.{cls.__qualname__}. Use pickle or joblib for other objects."
        )
    try:
        check_is_fitted(estimator)
    except _SklearnNotFittedError:
        raise NotFittedError(
            f"This {cls.__name__} instance is not fitted yet, so there is nothing to save. "
            "Call fit before save."
        ) from None

    import skconvae

    encoder = _Encoder()
    params = _params_to_save(estimator)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "skconvae_version": skconvae.__version__,
        "torch_version": torch.__version__,
        "estimator": cls.__name__,
        "params": {name: encoder.encode(value, f"params.{name}") for name, value in params.items()},
        "fitted": {
            name: encoder.encode(value, name)
            for name, value in _fitted_to_save(estimator, params).items()
        },
    }
    text = json.dumps(document, allow_nan=False, sort_keys=True, separators=(",", ":"))
    metadata = {_DOCUMENT_KEY: text, _DIGEST_KEY: _digest(text, encoder.tensors)}

    path = pathlib.Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass the path of a file to write.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Cannot save to {path}: the folder {path.parent} does not exist.")
    partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.partial")
    try:
        save_file(encoder.tensors, partial, metadata=metadata)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load(path: str | os.PathLike, *, device: str | None = None) -> BaseEstimator:
    """Load an estimator written by :func:`save`, without unpickling anything.

    Safe for files from untrusted sources: the file is read as JSON and raw
    tensors, and only classes of a fixed allow-list are ever constructed.

    Parameters
    ----------
    path : str or path-like
        File written by :func:`save` or ``estimator.save``.
    device : str or None, default=None
        Device for the network: ``None`` uses the device it was fitted on when
        this machine has it and the CPU otherwise (a GPU-fitted model loads on a
        CPU-only machine); or ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"``.
        The estimator's ``device_`` says where it landed.

    Returns
    -------
    estimator : ConvAutoencoderTransformer or another skconvae estimator
        The fitted estimator, giving the same outputs as the one saved.

    Raises
    ------
    skconvae.ModelFileError
        If the file is not a skconvae model file, is truncated, corrupted or
        tampered with, or was written in a newer format version.
    FileNotFoundError
        If there is no such file.

    See Also
    --------
    save : Write the file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from sklearn.datasets import load_digits
    >>> import skconvae
    >>> X, _ = load_digits(return_X_y=True)
    >>> ae = skconvae.ConvAutoencoderTransformer(
    ...     latent_dim=8, max_epochs=1, random_state=0
    ... ).fit(X)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "digits_ae.safetensors"
    >>> ae.save(path)
    >>> loaded = skconvae.load(path, device="cpu")
    >>> loaded.latent_dim, loaded.device_, loaded.transform(X[:3]).shape
    (8, 'cpu', (3, 8))
    """
    path = pathlib.Path(path)
    text, digest, tensors = _read(path)
    document = _parse_document(path, text)
    if document["format_version"] > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written in format version {document['format_version']} (by skconvae "
            f"{document.get('skconvae_version')}); this skconvae reads format version "
            f"{FORMAT_VERSION} and older. Upgrade skconvae to load it."
        )
    if document["format_version"] < 2:
        # Version 1 was only ever written by development versions, before the "auto"
        # network and partial_fit added fitted attributes; there is no reader for it.
        raise ModelFileError(
            f"{path} was written in format version {document['format_version']} by a "
            f"development version of skconvae ({document.get('skconvae_version')}), whose "
            f"models this version cannot rebuild. Fit the model again and save it."
        )
    if digest != _digest(text, tensors):
        raise ModelFileError(
            f"{path} failed its integrity check (SHA-256 of the document and the weights): it "
            "was corrupted or modified after it was saved. Save the model again from its source."
        )
    if document["format_version"] == 2:
        _read_version_2(document)
    fitted = document.get("fitted")
    saved_device = fitted.get("device_") if isinstance(fitted, dict) else None
    target = resolve_device(device) if device is not None else _available_device(saved_device)
    try:
        estimator = _rebuild(document, tensors, target)
        _check_consistency(estimator)
    except _DECODING_ERRORS as exc:
        detail = str(exc) if isinstance(exc, ModelFileError) else f"{type(exc).__name__}: {exc}"
        raise ModelFileError(
            f"{path} holds an invalid skconvae model: {detail.rstrip('.')}. The file was damaged "
            "or edited after it was saved; save the model again from its source."
        ) from exc
    # The file passed every check: from here on, errors come from the environment (memory,
    # the device, the torch version) or from skconvae itself, and are raised as they are.
    try:
        for attribute, value in list(vars(estimator).items()):
            if isinstance(value, _NetRecipe):
                setattr(estimator, attribute, value.build(estimator, target))
        _check_runs(estimator)
    except ModelFileError:
        raise
    except Exception as exc:
        exc.add_note(
            f"Raised by skconvae.load({str(path)!r}) while building the model on {target!r}, "
            "after the file passed its checks: the cause is the environment (memory, device, "
            "torch version) or a fault of skconvae, not the file."
        )
        raise
    return estimator


# -- reading and checking the file -------------------------------------------------------


def _read(path: pathlib.Path) -> tuple[str, str | None, dict[str, np.ndarray]]:
    """The JSON document, the digest and the tensors of a safetensors file."""
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a folder; skconvae.load reads the single file written by skconvae.save."
        )
    if not path.exists():
        raise FileNotFoundError(f"No model file at {path}.")
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except SafetensorError as exc:
        raise ModelFileError(
            f"{path} is not a readable model file ({exc}): it is truncated or corrupted, or it "
            "was not written by skconvae.save. skconvae.load reads only the safetensors files "
            "of skconvae.save; it never opens pickle or joblib files, by design."
        ) from exc
    text = metadata.get(_DOCUMENT_KEY)
    if text is None:
        raise ModelFileError(
            f"{path} is a safetensors file but holds no skconvae model (no {_DOCUMENT_KEY!r} "
            "metadata). Write model files with skconvae.save or estimator.save."
        )
    return text, metadata.get(_DIGEST_KEY), tensors


def _parse_document(path: pathlib.Path, text: str) -> dict:
    def reject(constant):
        raise ValueError(f"{constant} is not allowed")

    try:
        document = json.loads(text, parse_constant=reject)
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(
            f"{path} has a damaged model document (not valid JSON: {exc})."
        ) from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelFileError(
            f"{path} is not a skconvae model file: its document is not of format {FORMAT!r}."
        )
    version = document.get("format_version")
    if type(version) is not int or version < 1:
        raise ModelFileError(f"{path} has an invalid format version: {version!r}.")
    return document


def _read_version_2(document: dict) -> None:
    """Read a version 2 document as version 3: version 2 predates ``warp``, so its
    transformers trained on their images as they are (``warp=None``)."""
    params, fitted = document.get("params"), document.get("fitted")
    if document.get("estimator") == "ConvAutoencoderTransformer" and isinstance(params, dict):
        params.setdefault("warp", None)
        if isinstance(fitted, dict):
            fitted.setdefault("warp_", None)


def _digest(text: str, tensors: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(text.encode())
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _available_device(saved) -> str:
    """The device a model was fitted on if this machine has it, else the CPU."""
    try:
        device = torch.device(saved)
    except (RuntimeError, TypeError):
        return "cpu"
    if device.type == "cuda" and torch.cuda.is_available():
        if (device.index or 0) < torch.cuda.device_count():
            return str(device)
    return "cpu"


def _rebuild(document: dict, tensors: dict[str, np.ndarray], device: str) -> BaseEstimator:
    name = document.get("estimator")
    cls = _estimator_classes().get(name) if isinstance(name, str) else None
    if cls is None:
        raise ModelFileError(
            f"The model file names the estimator {name!r}, which is not one of skconvae's "
            f"({', '.join(sorted(_estimator_classes()))})."
        )
    params, fitted = document.get("params"), document.get("fitted")
    if not isinstance(params, dict) or not isinstance(fitted, dict):
        raise ModelFileError("The model document lacks its 'params' or 'fitted' section.")
    known = cls().get_params(deep=False)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ModelFileError(
            f"The model file sets parameters {unknown} that {name} does not have (written by "
            "another version of skconvae?)."
        )
    decoder = _Decoder(tensors, device)
    estimator = cls(**{key: decoder.decode(value, key) for key, value in params.items()})
    estimator._validate_params()
    schema = FITTED_SCHEMA[cls.__name__]
    _check_attribute_names(name, fitted, schema)
    for attribute, value in fitted.items():
        setattr(estimator, attribute, _checked(decoder.decode(value, attribute), schema, attribute))
    if "device_" in fitted:
        estimator.device_ = device
    unused = sorted(set(tensors) - decoder.used)
    if unused:
        raise ModelFileError(f"The model file holds tensors that nothing refers to: {unused[:5]}.")
    return estimator


def _check_attribute_names(owner: str, fitted: dict, schema: dict) -> None:
    """The file's attributes are those of the schema: all required ones, nothing else."""
    unknown = sorted(set(fitted) - set(schema), key=str)
    if unknown:
        raise ModelFileError(
            f"The model file sets the attribute {unknown[0]!r} of {owner}, which is not a "
            "fitted attribute of its file format."
        )
    missing = sorted(n for n, (_, required) in schema.items() if required and n not in fitted)
    if missing:
        raise ModelFileError(f"The model file lacks the fitted attributes {missing} of {owner}.")


def _checked(value, schema: dict, name: str):
    kind = schema[name][0]
    if not _KINDS[kind](value):
        raise ValueError(f"{name!r} must be of kind {kind!r}, got {type(value).__name__}")
    return value


def _fitted_to_save(estimator, params: dict) -> dict:
    """The estimator's fitted attributes, as its declared schema names them."""
    name = type(estimator).__name__
    schema = FITTED_SCHEMA[name]
    attributes = {k: v for k, v in vars(estimator).items() if k not in params}
    undeclared = sorted(set(attributes) - set(schema) - _NOT_SAVED)
    if undeclared:
        raise TypeError(
            f"{name} has the attributes {undeclared}, which its model file format "
            f"(version {FORMAT_VERSION}) does not declare, so they cannot be saved. Delete "
            "them before saving, or use pickle or joblib."
        )
    return {k: v for k, v in attributes.items() if k in schema}


def _check_consistency(estimator) -> None:
    """Fitted attributes that describe the same thing must agree (before any device use)."""
    layout = estimator._layout
    recipe = estimator.net_
    chw = layout.chw
    problems = []
    if estimator.image_shape_ != chw:
        problems.append(f"image_shape_ {estimator.image_shape_} is not the layout's {chw}")
    if estimator.n_features_in_ != math.prod(chw):
        problems.append(f"n_features_in_ {estimator.n_features_in_} is not {math.prod(chw)}")
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and len(names) != estimator.n_features_in_:
        problems.append("feature_names_in_ does not name every feature")
    kwargs = recipe.module_kwargs
    if kwargs.get("in_channels") != layout.channels:
        problems.append("the network's input channels are not the layout's")
    if tuple(kwargs.get("input_size", ())) != network_input_size(layout):
        problems.append("the network's input size is not the layout's")
    if hasattr(estimator, "code_shape_"):
        if math.prod(estimator.code_shape_) != recipe.meta_module.n_features_out:
            problems.append("code_shape_ is not the network's code")
        extremes = (estimator.data_min_, estimator.data_max_)
        if any(a.shape != (layout.channels,) for a in extremes):
            problems.append("data_min_/data_max_ do not have one value per channel")
        if estimator.code_density_ is not None:
            problems += _mixture_problems(estimator.code_density_, recipe.meta_module)
    if hasattr(estimator, "_target_layout"):
        target = estimator._target_layout
        if estimator.target_shape_ != target.chw:
            problems.append("target_shape_ is not the target layout's")
        if kwargs.get("out_channels") != target.channels or kwargs.get("scale") != estimator.scale_:
            problems.append("the network's output is not the target layout's")
        extremes = (estimator.target_min_, estimator.target_max_)
        if any(a.shape != (target.channels,) for a in extremes):
            problems.append("target_min_/target_max_ do not have one value per channel")
    if problems:
        raise ModelFileError(f"Its fitted attributes disagree: {'; '.join(problems)}.")


def _mixture_problems(mixture: GaussianMixture, module) -> list[str]:
    k, d = mixture.n_components, module.n_features_out
    expected = {
        "weights_": (k,),
        "means_": (k, d),
        "covariances_": (k, d, d),
        "precisions_": (k, d, d),
        "precisions_cholesky_": (k, d, d),
    }
    return [
        f"code_density_.{name} has shape {getattr(mixture, name).shape}, not {shape}"
        for name, shape in expected.items()
        if getattr(mixture, name).shape != shape
    ]


def _check_runs(estimator) -> None:
    """Run one all-zero sample through the loaded model, both ways: outputs must be finite."""
    probe = np.zeros((1, estimator.n_features_in_), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a model fitted on a DataFrame warns on arrays
        if hasattr(estimator, "transform"):
            codes = estimator.transform(probe)
            outputs = [codes, estimator.inverse_transform(codes)]
        else:
            outputs = [estimator.predict(probe)]
    if not all(np.isfinite(np.asarray(out, dtype=np.float64)).all() for out in outputs):
        raise ModelFileError("The loaded model gives non-finite outputs.")


# -- the document's values ------------------------------------------------------------------


def _estimator_classes() -> dict[str, type]:
    import skconvae

    return {
        name: obj
        for name in skconvae.__all__
        if isinstance(obj := getattr(skconvae, name), type)
        and issubclass(obj, BaseEstimator)
        and not issubclass(obj, AutoencoderNet)
    }


def _module_classes() -> dict[str, type]:
    from skconvae import nn

    return {
        name: obj
        for name in nn.__all__
        if isinstance(obj := getattr(nn, name), type) and issubclass(obj, torch.nn.Module)
    }


def _optimizers() -> dict[str, type]:
    return {
        name: obj
        for name, obj in vars(torch.optim).items()
        if isinstance(obj, type)
        and issubclass(obj, torch.optim.Optimizer)
        and obj is not torch.optim.Optimizer
        and not name.startswith("_")
    }


def _params_to_save(estimator) -> dict:
    """Parameters as they will be stored, after the policy for non-data values."""
    params = estimator.get_params(deep=False)
    name = type(estimator).__name__
    if params.get("callbacks"):
        warnings.warn(
            f"{name}.callbacks are not saved (a model file holds data, not code); the loaded "
            "estimator has callbacks=None. They matter only for training: pass them again "
            "with set_params(callbacks=...) before refitting.",
            UserWarning,
            stacklevel=3,
        )
        params["callbacks"] = None
    random_state = params.get("random_state")
    if random_state is not None and not isinstance(random_state, Integral):
        warnings.warn(
            f"{name}.random_state={type(random_state).__name__} instance is not saved; the "
            "loaded estimator has random_state=None. Use an int random_state for "
            "reproducible refits.",
            UserWarning,
            stacklevel=3,
        )
        params["random_state"] = None
    optimizer = params.get("optimizer")
    if isinstance(optimizer, type) and _optimizers().get(optimizer.__name__) is not optimizer:
        raise ValueError(
            f"optimizer={optimizer.__module__}.{optimizer.__qualname__} cannot be saved: "
            "a model file stores an optimizer only by its name in torch.optim, and loading "
            "constructs nothing else. Before saving, set_params(optimizer='adam') (or another "
            "name or torch.optim class; it matters only for refitting), or use pickle/joblib "
            "for files you trust."
        )
    return params


class _Encoder:
    """Turn values into JSON, and numeric arrays and weights into named tensors."""

    def __init__(self):
        self.tensors: dict[str, np.ndarray] = {}

    def encode(self, value, path: str):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, Integral):
            return int(value)
        if isinstance(value, Real):
            value = float(value)
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return {"__dict__": {key: self.encode(v, f"{path}.{key}") for key, v in value.items()}}
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            return {"__array__": self._add_tensor(path, value)}
        if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "OU":
            if all(isinstance(v, str) for v in value.tolist()):
                return {"__strings__": value.tolist()}
        if isinstance(value, ImageLayout):
            return {"__layout__": {k: self.encode(v, path) for k, v in vars(value).items()}}
        if isinstance(value, type) and _optimizers().get(value.__name__) is value:
            return {"__optimizer__": value.__name__}
        if isinstance(value, AutoencoderNet):
            return {"__net__": self._net(value, path)}
        if _SKLEARN_CLASSES.get(type(value).__name__) is type(value):
            params = value.get_params(deep=False)
            return {
                "__sklearn__": {
                    "class": type(value).__name__,
                    "params": self.encode(params, f"{path}.params"),
                    "fitted": self.encode(
                        {k: v for k, v in vars(value).items() if k in MIXTURE_SCHEMA}, path
                    ),
                }
            }
        raise TypeError(
            f"{path} = {type(value).__module__}.{type(value).__qualname__} cannot be stored in a "
            "model file, which holds data only (numbers, strings, arrays, the network's "
            "weights). Use pickle or joblib for files you trust."
        )

    def _add_tensor(self, name: str, array: np.ndarray) -> str:
        if name in self.tensors:
            raise ValueError(f"Two arrays would be saved under the name {name!r}.")
        # asarray, not ascontiguousarray: that makes 0-d tensors (BatchNorm counters) 1-d.
        self.tensors[name] = np.asarray(array, order="C")
        return name

    def _net(self, net: AutoencoderNet, path: str) -> dict:
        modules = _module_classes()
        for role in ("module", "criterion"):
            cls = getattr(net, role)
            if not isinstance(cls, type) or modules.get(cls.__name__) is not cls:
                raise TypeError(
                    f"{path}.{role} = {cls!r} cannot be saved: a model file rebuilds only the "
                    "modules of skconvae.nn. Use pickle or joblib for files you trust."
                )
        for key, tensor in net.module_.state_dict().items():
            self._add_tensor(f"{path}.{key}", tensor.detach().cpu().contiguous().numpy())
        return {
            "module": net.module.__name__,
            "module_kwargs": self.encode(net.get_params_for("module"), f"{path}.module"),
            "criterion": net.criterion.__name__,
            "criterion_kwargs": self.encode(net.get_params_for("criterion"), f"{path}.criterion"),
            "net_kwargs": self.encode(
                {name: getattr(net, name) for name in _NET_OWN_PARAMS}, f"{path}.net"
            ),
        }


class _Decoder:
    """Inverse of ``_Encoder``, constructing allow-listed classes only."""

    def __init__(self, tensors: dict[str, np.ndarray], device: str):
        self.tensors = tensors
        self.device = device
        self.estimator = None
        self.used: set[str] = set()

    def decode(self, value, path: str):
        if value is None or isinstance(value, (bool, str, int, float)):
            return value
        if isinstance(value, list):
            return [self.decode(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if not (isinstance(value, dict) and len(value) == 1):
            raise ModelFileError(f"The model file has a malformed entry at {path!r}.")
        ((kind, body),) = value.items()
        handler = {
            "__float__": self._decode_float,
            "__tuple__": self._decode_tuple,
            "__dict__": self._decode_dict,
            "__array__": self._decode_array,
            "__strings__": self._decode_strings,
            "__layout__": self._decode_layout,
            "__optimizer__": self._decode_optimizer,
            "__sklearn__": self._decode_sklearn,
            "__net__": self._decode_net,
        }.get(kind)
        if handler is None:
            raise ModelFileError(f"The model file has an unknown entry {kind!r} at {path!r}.")
        return handler(body, path)

    def _decode_float(self, body, path):
        if body not in ("inf", "-inf", "nan"):
            raise ValueError(f"invalid float {body!r} at {path!r}")
        return float(body)

    def _decode_tuple(self, body, path):
        return tuple(self.decode(_expect(body, list, path), path))

    def _decode_dict(self, body, path):
        body = _expect(body, dict, path)
        return {key: self.decode(v, f"{path}.{key}") for key, v in body.items()}

    def _decode_array(self, body, path):
        if not isinstance(body, str) or body not in self.tensors or body in self.used:
            raise ModelFileError(f"The model file refers to a missing tensor {body!r} at {path!r}.")
        self.used.add(body)
        return np.array(self.tensors[body])

    def _decode_strings(self, body, path):
        body = _expect(body, list, path)
        if not all(isinstance(v, str) for v in body):
            raise ValueError(f"{path!r} must be a list of strings")
        return np.asarray(body, dtype=object)

    def _decode_layout(self, body, path):
        body = _expect(body, dict, path)
        fields = {f.name for f in dataclasses.fields(ImageLayout)}
        ints = ("channels", "height", "width")
        valid = (
            set(body) == fields
            and all(type(body[k]) is int and body[k] >= 1 for k in ints)
            and body["input_ndim"] in (2, 3, 4)
            and type(body["channels_last"]) is bool
        )
        if not valid:
            raise ValueError(f"invalid image layout at {path!r}: {body!r}")
        return ImageLayout(**body)

    def _decode_optimizer(self, body, path):
        optimizer = _optimizers().get(body) if isinstance(body, str) else None
        if optimizer is None:
            raise ModelFileError(
                f"The model file names the optimizer {body!r}, which is not a torch.optim class."
            )
        return optimizer

    def _decode_sklearn(self, body, path):
        body = _expect(body, dict, path)
        cls = _SKLEARN_CLASSES.get(body.get("class"))
        if cls is None:
            raise ModelFileError(f"The model file names an unknown class at {path!r}.")
        params = self.decode(_expect(body.get("params"), dict, path), f"{path}.params")
        obj = cls(**params)
        obj._validate_params()
        fitted = self.decode(_expect(body.get("fitted"), dict, path), path)
        _check_attribute_names(f"{path} ({cls.__name__})", fitted, MIXTURE_SCHEMA)
        for name, value in fitted.items():
            setattr(obj, name, _checked(value, MIXTURE_SCHEMA, name))
        return obj

    def _decode_net(self, body, path):
        body = _expect(body, dict, path)
        modules = _module_classes()
        module_cls = modules.get(body.get("module"))
        criterion_cls = modules.get(body.get("criterion"))
        if module_cls is None or criterion_cls is None:
            raise ModelFileError(f"The model file names an unknown network module at {path!r}.")
        module_kwargs = self.decode(_expect(body.get("module_kwargs"), dict, path), path)
        criterion_kwargs = self.decode(_expect(body.get("criterion_kwargs"), dict, path), path)
        net_kwargs = self.decode(_expect(body.get("net_kwargs"), dict, path), path)
        unknown = sorted(set(net_kwargs) - set(_NET_OWN_PARAMS))
        if unknown:
            raise ValueError(f"unknown net settings {unknown}")

        _check_net_settings(net_kwargs)

        prefix = f"{path}."
        weights = {
            name[len(prefix) :]: torch.from_numpy(np.array(tensor))
            for name, tensor in self.tensors.items()
            if name.startswith(prefix) and name not in self.used
        }
        self.used.update(prefix + key for key in weights)
        # Build the module on the meta device: the document's arguments cannot allocate
        # memory or touch a device before its weights' names, shapes and dtypes are
        # checked, and a trial pass shows that the network it describes runs.
        with torch.device("meta"):
            meta_module = module_cls(**module_kwargs)
            _check_weights(meta_module.state_dict(), weights, path)
            channels = module_kwargs.get("in_channels")
            size = tuple(module_kwargs.get("input_size", ()))
            # In eval mode, as inference runs it: batch norm refuses one value per channel
            # in training mode.
            meta_module.eval()(torch.empty((1, channels, *size)))
        return _NetRecipe(
            module_cls, module_kwargs, criterion_cls, criterion_kwargs, net_kwargs, weights,
            meta_module,
        )  # fmt: skip


@dataclasses.dataclass
class _NetRecipe:
    """A network decoded and checked on the meta device, built on a device by ``build``."""

    module_cls: type
    module_kwargs: dict
    criterion_cls: type
    criterion_kwargs: dict
    net_kwargs: dict
    weights: dict
    meta_module: torch.nn.Module

    def build(self, estimator, device: str) -> AutoencoderNet:
        seed = self.net_kwargs.get("seed", 0)
        net = AutoencoderNet(
            self.module_cls,
            criterion=self.criterion_cls,
            **{f"module__{key}": v for key, v in self.module_kwargs.items()},
            **{f"criterion__{key}": v for key, v in self.criterion_kwargs.items()},
            **{**skorch_training_kwargs(estimator, device, seed), **self.net_kwargs},
        )
        net.initialize()  # draws the initial weights from the net's own generator
        net.module_.load_state_dict(self.weights, strict=True)
        net.module_.eval()
        return net


def _check_net_settings(settings: dict) -> None:
    """The net's own settings that inference and refitting read, checked before use."""
    checks = {
        "seed": lambda v: type(v) is int,
        "precision": lambda v: v in _PRECISIONS,
        "warp": _KINDS["warp"],
        "warp_epochs": _KINDS["optional_count"],
        "noise": lambda v: v is None or v in NOISE_KINDS,
        "noise_level": lambda v: type(v) in (int, float) and v >= 0,
        "kl_weight": lambda v: type(v) in (int, float) and v >= 0,
        "noise_bounds": lambda v: (
            isinstance(v, tuple) and len(v) == 2 and all(type(b) in (int, float) for b in v)
        ),
    }
    for name, value in settings.items():
        if name in checks and not checks[name](value):
            raise ValueError(f"invalid net setting {name}={value!r}")


def _expect(value, kind: type, path: str):
    if not isinstance(value, kind):
        raise ValueError(f"{path!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _check_weights(expected: dict, weights: dict, path: str) -> None:
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise ModelFileError(
            f"The weights of {path} do not fit the network the file describes: missing "
            f"{missing[:5]}, unexpected {extra[:5]}."
        )
    for key, meta in expected.items():
        tensor = weights[key]
        if tensor.shape != meta.shape or tensor.dtype != meta.dtype:
            raise ModelFileError(
                f"The weight {path}.{key} is {_dtype(tensor)} of shape {tuple(tensor.shape)}, "
                f"but the network the file describes needs {_dtype(meta)} of shape "
                f"{tuple(meta.shape)}."
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ModelFileError(f"The weight {path}.{key} holds NaN or infinite values.")


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")
