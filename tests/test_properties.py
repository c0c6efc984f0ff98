"""Property-based tests (hypothesis) over shapes, dtypes and layouts.

Round trips keep the shape and layout of any valid input; any invalid input gets
a ValueError or TypeError from skconvae's or scikit-learn's validation, never an
error from deep inside torch. Examples are few and derandomised so that the suite
stays fast and reproducible.
"""

import os
import traceback

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import skconvae
from skconvae import ConvAutoencoderTransformer

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TINY = {"max_epochs": 1, "batch_size": 8, "random_state": 0}
DTYPES = [np.uint8, np.int16, np.int64, np.float16, np.float32, np.float64, np.bool_]


def _values(rng, shape, dtype):
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 200, shape).astype(dtype)
    return (rng.random(shape) * 4 - 1).astype(dtype)


@st.composite
def datasets(draw):
    """Valid training data: (X, params, expected (C, H, W), expected sample shape)."""
    layout = draw(st.sampled_from(["flat", "flat image_shape", "3-D", "NHWC", "NCHW", "4-D auto"]))
    n = draw(st.integers(2, 12))
    h, w, c = draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    params = {}
    if layout == "flat":
        n_features = h * w
        side = int(np.sqrt(n_features))
        chw = (1, side, side) if side * side == n_features else (1, 1, n_features)
        shape = (n, n_features)
    elif layout == "flat image_shape":
        params["image_shape"] = (h, w, c)
        chw, shape = (c, h, w), (n, h * w * c)
    elif layout == "3-D":
        chw, shape = (1, h, w), (n, h, w)
    elif layout == "NHWC":
        params["channels"] = "last"
        chw, shape = (c, h, w), (n, h, w, c)
    elif layout == "NCHW":
        params["channels"] = "first"
        chw, shape = (c, h, w), (n, c, h, w)
    else:
        # Documented rule: the smaller of axes 1 and 3 holds the channels, last on a tie.
        shape = (n, h, w, c)
        chw = (h, w, c) if h < c else (c, h, w)
    return _values(rng, shape, dtype), params, chw


networks = st.fixed_dictionaries(
    {
        "filters": st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
        "kernel_size": st.integers(1, 4),
        "latent_dim": st.none() | st.integers(1, 5),
        "scaling": st.sampled_from(["minmax", "symmetric", None]),
    }
)


@pytest.mark.filterwarnings(
    # Tiny samples of few distinct rows, and even kernels: harmless, and not under test.
    "ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning",
    "ignore:Using padding='same' with even kernel lengths:UserWarning",
)
@SETTINGS
@given(data=datasets(), network=networks)
def test_round_trips_keep_shape_and_layout(data, network, tmp_path_factory):
    X, params, chw = data
    ae = ConvAutoencoderTransformer(**TINY, **params, **network).fit(X)
    assert ae.image_shape_ == chw
    assert ae.n_features_in_ == int(np.prod(X.shape[1:]))

    codes = ae.transform(X)
    width = network["latent_dim"] or int(np.prod(ae.code_shape_))
    assert codes.shape == (len(X), width) and codes.dtype == np.float32
    assert np.isfinite(codes).all()
    for images in (ae.inverse_transform(codes), ae.reconstruct(X)):
        assert images.shape == X.shape and images.dtype == np.float32
        assert np.isfinite(images).all()
    # N-D input and its flattened rows are the same samples.
    np.testing.assert_array_equal(ae.transform(X.reshape(len(X), -1)), codes)

    path = tmp_path_factory.mktemp("property") / "model.safetensors"
    ae.save(path)
    loaded = skconvae.load(path)
    assert loaded.image_shape_ == chw
    np.testing.assert_array_equal(loaded.transform(X), codes)


@pytest.fixture(scope="module")
def fitted(digits):
    return ConvAutoencoderTransformer(**TINY, filters=(4, 2), latent_dim=3).fit(digits[0][:200])


# torch's own files (not any path with "torch" in it, such as /opt/torch/.venv/...).
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _assert_clear_error(error: BaseException):
    assert isinstance(error, (ValueError, TypeError)), repr(error)
    assert len(str(error)) > 10
    frames = traceback.extract_tb(error.__traceback__)
    deep = [f"{f.filename}:{f.lineno}" for f in frames if f.filename.startswith(_TORCH_DIR)]
    assert not deep, f"{error!r} raised inside torch at {deep}"


def _values_of_kind(draw, shape):
    kind = draw(st.sampled_from(["float", "int", "bool", "complex", "str", "object", "nan", "inf"]))
    size = int(np.prod(shape))
    if kind == "str":
        return np.full(shape, "x")
    if kind == "object":
        return np.array([object() for _ in range(size)], dtype=object).reshape(shape)
    values = np.arange(size, dtype=np.float64).reshape(shape) % 7
    if kind == "int":
        return values.astype(np.int32)
    if kind == "bool":
        return values > 3
    if kind == "complex":
        return values + 1j
    if kind in ("nan", "inf") and size:
        values.flat[draw(st.integers(0, size - 1))] = np.nan if kind == "nan" else -np.inf
    return values


@st.composite
def inputs(draw):
    """Arrays of any rank and size and dtype; some of the fitted shape, most not."""
    n = draw(st.sampled_from([0, 1, 3]))
    fitted_shapes = [(n, 64), (n, 8, 8), (n, 8, 8, 1), (n, 1, 8, 8), (n, 3)]  # (n, 3): codes
    ndim = draw(st.integers(0, 6))
    any_shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 7, 8, 64]), min_size=ndim,
                                    max_size=ndim)))  # fmt: skip
    shape = draw(st.sampled_from([*fitted_shapes, any_shape]))
    if int(np.prod(shape)) > 5000:
        shape = shape[:2]
    return _values_of_kind(draw, shape)


def _is_valid_input(fitted, X, method) -> bool:
    """Inputs every method must accept: samples of a shape it documents, finite numbers."""
    if X.dtype.kind not in "iuf" or X.ndim < 2 or not len(X):
        return False
    if not np.isfinite(X.astype(np.float64)).all():
        return False
    if method == "inverse_transform":
        return X.shape[1:] == (fitted.latent_dim,)
    return X.shape[1:] == (fitted.n_features_in_,)


@SETTINGS
@given(
    X=inputs(),
    method=st.sampled_from(
        ["transform", "inverse_transform", "score", "score_samples", "reconstruct"]
    ),
)
def test_any_input_works_or_gets_a_clear_error(fitted, X, method):
    """Mutation checked: a method that rejects every input with a ValueError (such as
    ``validate_images`` raising at once) fails on the valid inputs drawn."""
    try:
        out = getattr(fitted, method)(X)
    except Exception as error:
        _assert_clear_error(error)
        assert not _is_valid_input(fitted, X, method), f"valid input refused: {error!r}"
    else:
        # Only valid input gets this far: finite numbers in, finite numbers out.
        assert X.dtype.kind in "biuf" and X.size and np.isfinite(X.astype(np.float64)).all()
        assert np.isfinite(np.asarray(out, dtype=np.float64)).all()


@st.composite
def geometries(draw):
    """Sizes, image_shape and filters that often agree, and often do not."""
    h, w, c = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    n_features = draw(st.sampled_from([h * w, h * w * c, draw(st.integers(1, 40))]))
    image_shape = draw(
        st.sampled_from([None, (h, w), (h, w, c)])
        | st.lists(st.integers(-2, 9), max_size=4).map(tuple)
    )
    filters = draw(
        st.lists(st.integers(1, 3), min_size=1, max_size=3)
        | st.lists(st.integers(-1, 3), max_size=3)
    )
    return n_features, image_shape, tuple(filters)


@SETTINGS
@given(geometry=geometries(), ndim=st.sampled_from([2, 3, 4]))
def test_any_geometry_fits_or_gets_a_clear_error(geometry, ndim):
    """Mutation checked: ``check_filters`` rejecting every filters value fails on the
    valid geometries drawn."""
    n_features, image_shape, filters = geometry
    X = np.random.default_rng(0).random((4, n_features))
    if ndim == 3:
        X = X.reshape(4, 1, n_features)
    elif ndim == 4:
        X = X.reshape(4, n_features, 1, 1)
    ae = ConvAutoencoderTransformer(**TINY, image_shape=image_shape, filters=filters)
    # Always valid: positive filters, and no image_shape (flat rows fold on their own,
    # 3-D and 4-D input carry their shape).
    valid = image_shape is None and len(filters) > 0 and min(filters) >= 1
    try:
        ae.fit(X)
    except Exception as error:
        _assert_clear_error(error)
        assert not hasattr(ae, "net_")
        assert not valid, f"valid geometry refused: {error!r}"
    else:
        assert ae.inverse_transform(ae.transform(X)).shape == X.shape
