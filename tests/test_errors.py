"""Bad input gets a clear error, and a failed call leaves a fitted estimator as it was."""

import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from skconvae import ConvAutoencoderTransformer

from .conftest import FAST


@pytest.fixture(scope="module")
def digits_X(digits):
    return digits[0]


@pytest.fixture(scope="module")
def fitted(digits_X):
    return ConvAutoencoderTransformer(**FAST).fit(digits_X)


def _with_nan(X):
    X = X.astype(float)
    X[3, 5] = np.nan
    return X


def _with_inf(X):
    X = X.astype(float)
    X[0, 0] = np.inf
    return X


def _strings_df(X):
    df = pd.DataFrame(X[:, :64])
    df[7] = "seven"
    return df


# (name, make bad X from the digits, exception type, pattern in the message)
BAD_X = [
    ("nan", _with_nan, ValueError, "NaN"),
    ("inf", _with_inf, ValueError, "infinity"),
    ("complex", lambda X: X + 1j, ValueError, "Complex data not supported"),
    ("sparse", lambda X: sp.csr_matrix(X), TypeError, "dense data is required"),
    ("string column", _strings_df, ValueError, "1 non-numeric column.*7"),
    ("object strings", lambda X: np.full(X.shape, "a", dtype=object), ValueError, "convert"),
    ("1-D", lambda X: X[0], ValueError, "Reshape your data"),
    ("5-D", lambda X: X[:, :8].reshape(-1, 2, 2, 2, 1, 1), ValueError, "Expected a 2-D array"),
    ("empty", lambda X: X[:0], ValueError, "0 sample"),
    ("0 features", lambda X: X[:, :0], ValueError, "0 feature"),
]


@pytest.mark.parametrize("name, make, exc, match", BAD_X, ids=[b[0] for b in BAD_X])
def test_fit_rejects_bad_input(digits_X, name, make, exc, match):
    with pytest.raises(exc, match=match):
        ConvAutoencoderTransformer(**FAST).fit(make(digits_X))


@pytest.mark.parametrize("name, make, exc, match", BAD_X, ids=[b[0] for b in BAD_X])
@pytest.mark.parametrize("method", ["transform", "score"])
def test_fitted_methods_reject_bad_input_and_stay_unchanged(
    fitted, digits_X, method, name, make, exc, match
):
    before = pickle.dumps(fitted)
    reference = fitted.transform(digits_X[:20])
    with pytest.raises(exc, match=match):
        getattr(fitted, method)(make(digits_X))
    np.testing.assert_array_equal(fitted.transform(digits_X[:20]), reference)
    assert pickle.dumps(fitted) == before


SHAPE_ERRORS = [
    ("wrong feature count", lambda X: X[:, :60], "X has 60 features, but"),
    ("wrong image size", lambda X: X.reshape(-1, 8, 8)[:, :7, :7], r"samples of shape \(7, 7\)"),
    ("wrong channels", lambda X: np.repeat(X.reshape(-1, 8, 8, 1), 3, axis=3), r"\(8, 8, 3\)"),
]


@pytest.mark.parametrize("name, make, match", SHAPE_ERRORS, ids=[s[0] for s in SHAPE_ERRORS])
def test_shape_mismatch_names_the_expected_shape(fitted, digits_X, name, make, match):
    reference = fitted.transform(digits_X[:20])
    with pytest.raises(ValueError, match=match):
        fitted.transform(make(digits_X))
    np.testing.assert_array_equal(fitted.transform(digits_X[:20]), reference)


def test_failed_refit_leaves_fitted_estimator_unchanged(fitted, digits_X):
    before = pickle.dumps(fitted)
    reference = fitted.transform(digits_X)
    with pytest.raises(ValueError, match="NaN"):
        fitted.fit(_with_nan(digits_X))
    with pytest.raises(ValueError, match="image_shape"):
        fitted.set_params(image_shape=(7, 7)).fit(digits_X)
    fitted.set_params(image_shape=None)
    assert pickle.dumps(fitted) == before
    np.testing.assert_array_equal(fitted.transform(digits_X), reference)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"image_shape": (7, 7)}, r"image_shape=\(7, 7\) holds 49 values.*64 features"),
        ({"image_shape": (8, 8, 0)}, "positive integers"),
        ({"image_shape": (8,)}, r"\(height, width\)"),
        ({"filters": ()}, "non-empty sequence of positive integers"),
        ({"filters": (16, -8)}, "non-empty sequence of positive integers"),
        ({"filters": (16, 2.5)}, "non-empty sequence of positive integers"),
        ({"loss": "bce", "scaling": "symmetric"}, "scaling='minmax'"),
        ({"loss": "bce", "scaling": None}, r"needs data in \[0, 1\], but X spans \[0, 16\]"),
        ({"device": "tpu:banana"}, "not a torch device"),
    ],
)
def test_bad_parameter_combinations(digits_X, params, match):
    with pytest.raises(ValueError, match=match):
        ConvAutoencoderTransformer(**{**FAST, **params}).fit(digits_X)


def test_cuda_requested_without_gpu(digits_X):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=r"CUDA is not available.*device=.auto."):
        ConvAutoencoderTransformer(**FAST, device="cuda").fit(digits_X)


@pytest.mark.parametrize(
    "params",
    [{"kernel_size": 0}, {"latent_dim": 0}, {"max_epochs": 0}, {"batch_size": -1},
     {"lr": 0}, {"loss": "l1"}, {"scaling": "zscore"}, {"channels": "middle"},
     {"validation_fraction": 1.0}, {"optimizer": "lbfgs-ish"}],
)  # fmt: skip
def test_out_of_range_parameters(digits_X, params):
    with pytest.raises(InvalidParameterError):
        ConvAutoencoderTransformer(**{**FAST, **params}).fit(digits_X)


def test_inverse_transform_checks_code_width(fitted):
    with pytest.raises(ValueError, match=r"X has 5 features, but .* codes of 32 features"):
        fitted.inverse_transform(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        fitted.inverse_transform(np.full((2, 32), np.nan))


@pytest.mark.parametrize("method", ["transform", "inverse_transform", "score"])
def test_unfitted_use(digits_X, method):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(ConvAutoencoderTransformer(), method)(digits_X)
