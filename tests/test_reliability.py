"""Reliability: a table of bad inputs over every public method, training faults
(non-finite loss, Ctrl-C, out-of-memory in inference), determinism and threads."""

import copy
import pickle
import threading
import time
import warnings
from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import Callback

import skconvae
from skconvae import (
    AutoencoderNet,
    ConvAutoencoderRegressor,
    ConvAutoencoderTransformer,
    FitInterruptedWarning,
    ModelFileError,
    NonFiniteLossError,
    NotFittedError,
    SkconvaeError,
)
from skconvae import _net as net_module

from .conftest import FAST, MNIST_PATH

REGRESSOR_FAST = {"filters": (4, 8), "max_epochs": 1, "batch_size": 64, "random_state": 0}


@pytest.fixture(scope="module")
def data(digits, tmp_path_factory):
    X, _ = digits
    images = X.reshape(-1, 8, 8)
    noisy = images + np.random.default_rng(0).normal(0, 2, images.shape)
    folder = tmp_path_factory.mktemp("bad-files")
    (folder / "notes.txt").write_text("not a model")
    ConvAutoencoderTransformer(**FAST).fit(X).save(folder / "model.safetensors")
    full = (folder / "model.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(full[: len(full) // 2])
    return SimpleNamespace(
        X=X,
        images=images,
        noisy=noisy,
        rgb=np.repeat(images[..., None], 3, axis=3),
        codes=np.linspace(-1, 1, 8 * 8, dtype=np.float32).reshape(8, 8),
        folder=folder,
    )


@pytest.fixture(scope="module")
def models(data):
    return SimpleNamespace(
        ae=ConvAutoencoderTransformer(**FAST, latent_dim=8).fit(data.X[:500]),
        conv=ConvAutoencoderTransformer(**FAST, latent_dim=None).fit(data.X[:500]),
        reg=ConvAutoencoderRegressor(**REGRESSOR_FAST).fit(data.noisy[:500], data.images[:500]),
    )


def _outputs(m, d) -> dict:
    """Everything the fitted models give, to compare bit for bit."""
    return {
        "ae.transform": m.ae.transform(d.X[:64]),
        "ae.inverse_transform": m.ae.inverse_transform(d.codes),
        "ae.score_samples": m.ae.score_samples(d.X[:64]),
        "ae.reconstruct": m.ae.reconstruct(d.images[:16]),
        "ae.sample": m.ae.sample(3, random_state=0),
        "conv.transform": m.conv.transform(d.X[:16]),
        "reg.predict": m.reg.predict(d.noisy[:16]),
        "params": [m.ae.get_params(), m.conv.get_params(), m.reg.get_params()],
        "attributes": [sorted(vars(m.ae)), sorted(vars(m.conv)), sorted(vars(m.reg))],
    }


@pytest.fixture(scope="module")
def reference(models, data):
    return _outputs(models, data)


def refit(model: str, data: str = "X", transform=None, **params):
    """A failing ``fit`` of a fitted model with ``params``, which are then restored."""

    def call(m, d):
        estimator = getattr(m, model)
        original = estimator.get_params()
        X = getattr(d, data)
        try:
            estimator.set_params(**params).fit(transform(X) if transform else X)
        finally:
            estimator.set_params(**original)

    return call


def _with(value):
    def make(X):
        X = X.astype(float)
        X[3, 5] = value
        return X

    return make


def _frame_with(column, values):
    def make(X):
        frame = pd.DataFrame(X, columns=[f"px{i}" for i in range(X.shape[1])])
        frame[column] = values(len(frame))
        return frame

    return make


class MyAdam(torch.optim.Adam):
    """An optimizer class from outside torch.optim."""


def _save_with_custom_optimizer(m, d):
    m.ae.set_params(optimizer=MyAdam)
    try:
        m.ae.save(d.folder / "custom.safetensors")
    finally:
        m.ae.set_params(optimizer="adam")


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
PARAM = r"parameter of ConvAutoencoderTransformer must be"
RANGE = rf"{PARAM} an int in the range \[1, inf\)"

Case = namedtuple("Case", "id method call exc match")

# (id, public method, the failing call on the fitted models and data, exception, message)
BAD_CALLS = [
    # -- fit: bad data, on a fitted estimator (which must stay as it was) --------------------
    Case("nan", "fit", refit("ae", transform=_with(np.nan)), ValueError, "Input X contains NaN"),
    Case("+inf", "fit", refit("ae", transform=_with(np.inf)), ValueError, "contains infinity"),
    Case("-inf", "fit", refit("ae", transform=_with(-np.inf)), ValueError, "contains infinity"),
    Case("complex", "fit", refit("ae", transform=lambda X: X + 1j), ValueError, "Complex data"),
    Case("sparse", "fit", refit("ae", transform=sp.csr_matrix), TypeError,
         r"Sparse data was passed.*dense data is required.*toarray"),
    Case("object strings", "fit",
         refit("ae", transform=lambda X: np.full(X.shape, "a", dtype=object)),
         ValueError, "could not convert string to float"),
    Case("unicode strings", "fit", refit("ae", transform=lambda X: X.astype(str)), ValueError,
         "not compatible with arrays of bytes/strings.*Convert your data to numeric"),
    Case("string column", "fit", refit("ae", transform=_frame_with("label", lambda n: ["x"] * n)),
         ValueError, r"1 non-numeric column\(s\): 'label'.*select_dtypes\('number'\)"),
    Case("datetime column", "fit",
         refit("ae", transform=_frame_with("when", lambda n: pd.date_range("2020", periods=n))),
         ValueError, r"non-numeric column\(s\): 'when'"),
    Case("empty", "fit", refit("ae", transform=lambda X: X[:0]), ValueError,
         r"0 sample\(s\) \(shape=\(0, 64\)\) while a minimum of 1 is required"),
    Case("0 features", "fit", refit("ae", transform=lambda X: X[:, :0]), ValueError,
         r"0 feature\(s\) \(shape=\(1797, 0\)\) while a minimum of 1 is required"),
    Case("1-D", "fit", refit("ae", transform=lambda X: X[0]), ValueError,
         r"got an array of shape \(64,\).*X.reshape\(1, -1\) for a single sample"),
    Case("5-D", "fit", refit("ae", transform=lambda X: X.reshape(-1, 2, 2, 2, 8)), ValueError,
         r"Expected a 2-D array .* got an array of shape \(1797, 2, 2, 2, 8\)"),
    Case("scalar", "fit", refit("ae", transform=lambda X: 5.0), ValueError,
         "Expected 2D array, got scalar array instead"),
    Case("ragged list", "fit", refit("ae", transform=lambda X: [[1.0, 2.0], [3.0]]), ValueError,
         "inhomogeneous shape"),
    # -- fit: parameters that contradict the data or each other --------------------------
    Case("image_shape vs features", "fit", refit("ae", image_shape=(7, 7)), ValueError,
         r"image_shape=\(7, 7\) holds 49 values .* X has 64 features.*product is 64"),
    Case("image_shape vs channels", "fit", refit("ae", "rgb", image_shape=(8, 8, 1)), ValueError,
         r"image_shape=\(8, 8, 1\) does not match .* is \(8, 8, 3\).*image_shape=None"),
    Case("image_shape zero", "fit", refit("ae", image_shape=(8, 8, 0)), ValueError,
         r"\(height, width, channels\) with positive integers; got \(8, 8, 0\)"),
    Case("image_shape negative", "fit", refit("ae", image_shape=(-8, -8)), ValueError,
         r"positive integers; got \(-8, -8\)"),
    Case("image_shape fractional", "fit", refit("ae", image_shape=(8.5, 8)), ValueError,
         r"positive integers; got \(8.5, 8\)"),
    Case("image_shape string", "fit", refit("ae", image_shape="8x8"), InvalidParameterError,
         rf"'image_shape' {PARAM} None, an instance of 'tuple'.*Got '8x8'"),
    Case("filters empty", "fit", refit("ae", filters=()), ValueError,
         r"non-empty sequence of positive integers, such as \(16, 8\); got \(\)"),
    Case("filters zero", "fit", refit("ae", filters=(4, 0)), ValueError,
         r"positive integers, such as \(16, 8\); got \(4, 0\)"),
    Case("filters negative", "fit", refit("ae", filters=(16, -8)), ValueError,
         r"got \(16, -8\)"),
    Case("kernel_size 0", "fit", refit("ae", kernel_size=0), InvalidParameterError,
         rf"'kernel_size' {PARAM} an int in the range \[1, inf\). Got 0"),
    Case("latent_dim 0", "fit", refit("ae", latent_dim=0), InvalidParameterError,
         rf"'latent_dim' {PARAM} None, a str among {{'auto'}} or an int in the range \[1, inf\). "
         "Got 0"),
    Case("latent_dim negative", "fit", refit("ae", latent_dim=-4), InvalidParameterError,
         r"'latent_dim' .* Got -4"),
    Case("max_epochs 0", "fit", refit("ae", max_epochs=0), InvalidParameterError,
         rf"'max_epochs' {PARAM} a str among {{'auto'}} or an int in the range \[1, inf\). Got 0"),
    Case("batch_size 0", "fit", refit("ae", batch_size=0), InvalidParameterError,
         rf"'batch_size' {RANGE}. Got 0"),
    Case("lr 0", "fit", refit("ae", lr=0), InvalidParameterError,
         r"'lr' .* a float in the range \(0.0, inf\). Got 0"),
    Case("lr negative", "fit", refit("ae", lr=-1e-3), InvalidParameterError, r"'lr' .* Got -0.001"),
    Case("validation_fraction 1", "fit", refit("ae", validation_fraction=1.0),
         InvalidParameterError, r"'validation_fraction' .* range \(0.0, 1.0\). Got 1.0"),
    Case("n_iter_no_change 0", "fit", refit("ae", n_iter_no_change=0), InvalidParameterError,
         rf"'n_iter_no_change' {RANGE}"),
    Case("noise_level negative", "fit", refit("ae", noise_level=-0.1), InvalidParameterError,
         r"'noise_level' .* range \[0.0, inf\). Got -0.1"),
    Case("kl_weight negative", "fit", refit("ae", kl_weight=-1), InvalidParameterError,
         r"'kl_weight' .* Got -1"),
    Case("loss", "fit", refit("ae", loss="l1"), InvalidParameterError,
         r"'loss' .* a str among \{.*'bce'.*\}. Got 'l1'"),
    Case("scaling", "fit", refit("ae", scaling="zscore"), InvalidParameterError,
         r"'scaling' .* Got 'zscore'"),
    Case("optimizer name", "fit", refit("ae", optimizer="lbfgs-ish"), InvalidParameterError,
         r"'optimizer' .* a str among \{.*'adam'.*\} or an instance of 'type'"),
    Case("channels", "fit", refit("ae", channels="middle"), InvalidParameterError,
         r"'channels' .* Got 'middle'"),
    Case("bce on data outside [0, 1]", "fit", refit("ae", loss="bce", scaling=None), ValueError,
         r"loss='bce' needs data in \[0, 1\], but X spans \[0, 16\].*Use scaling='minmax'"),
    Case("bce with symmetric scaling", "fit", refit("ae", loss="bce", scaling="symmetric"),
         ValueError, r"maps the data to \[-1, 1\]. Use scaling='minmax' with loss='bce'"),
    Case("variational without latent_dim", "fit",
         refit("ae", variational=True, latent_dim=None), ValueError,
         "variational=True needs a dense bottleneck: set latent_dim"),
    Case("mask noise share above 1", "fit", refit("ae", noise="mask", noise_level=2.0),
         ValueError, r"must lie in \[0, 1\]; got noise_level=2.0"),
    Case("device not torch", "fit", refit("ae", device="tpu:banana"), ValueError,
         r"device='tpu:banana' is not a torch device. Use 'auto', 'cpu'"),
    pytest.param(Case("device cuda without GPU", "fit", refit("ae", device="cuda"), ValueError,
                      r"CUDA is not available .* Use device='auto'"), marks=NO_CUDA),
    Case("early stopping on 1 sample", "fit",
         refit("ae", transform=lambda X: X[:1], early_stopping=True), ValueError,
         "needs at least 2 samples to hold out a validation set; got 1"),
    Case("nan", "fit_transform", lambda m, d: m.ae.fit_transform(_with(np.nan)(d.X)),
         ValueError, "Input X contains NaN"),
    # -- transform and the other methods that read images ---------------------------------
    Case("nan", "transform", lambda m, d: m.ae.transform(_with(np.nan)(d.X)), ValueError,
         "Input X contains NaN"),
    Case("inf", "transform", lambda m, d: m.ae.transform(_with(np.inf)(d.X)), ValueError,
         "contains infinity"),
    Case("feature count", "transform", lambda m, d: m.ae.transform(d.X[:, :60]), ValueError,
         "X has 60 features, but ConvAutoencoderTransformer is expecting 64 features"),
    Case("image size", "transform", lambda m, d: m.ae.transform(d.images[:, :7, :7]), ValueError,
         r"samples of shape \(7, 7\), but .* per-sample shapes \[\(8, 8\)"),
    Case("channels last", "transform", lambda m, d: m.ae.transform(d.rgb), ValueError,
         r"samples of shape \(8, 8, 3\).*flat rows of 64 features"),
    Case("channels first", "transform", lambda m, d: m.ae.transform(np.zeros((3, 2, 8, 8))),
         ValueError, r"samples of shape \(2, 8, 8\).*Pass images of the fitted size"),
    Case("string column", "transform",
         lambda m, d: m.ae.transform(_frame_with("label", lambda n: ["x"] * n)(d.X)),
         ValueError, r"non-numeric column\(s\): 'label'"),
    Case("sparse", "transform", lambda m, d: m.ae.transform(sp.csr_matrix(d.X)), TypeError,
         "dense data is required"),
    Case("complex", "transform", lambda m, d: m.ae.transform(d.X + 1j), ValueError,
         "Complex data not supported"),
    Case("empty", "transform", lambda m, d: m.ae.transform(d.X[:0]), ValueError,
         r"0 sample\(s\)"),
    Case("1-D", "transform", lambda m, d: m.ae.transform(d.X[0]), ValueError,
         "Reshape your data"),
    Case("nan", "score", lambda m, d: m.ae.score(_with(np.nan)(d.X)), ValueError, "NaN"),
    Case("feature count", "score", lambda m, d: m.ae.score(d.X[:, 1:]), ValueError,
         "X has 63 features, but .* expecting 64"),
    Case("nan", "score_samples", lambda m, d: m.ae.score_samples(_with(np.nan)(d.X)),
         ValueError, "Input X contains NaN"),
    Case("channels", "score_samples", lambda m, d: m.ae.score_samples(d.rgb), ValueError,
         r"\(8, 8, 3\)"),
    Case("inf", "reconstruct", lambda m, d: m.ae.reconstruct(_with(-np.inf)(d.X)), ValueError,
         "infinity"),
    Case("image size", "reconstruct", lambda m, d: m.ae.reconstruct(np.zeros((2, 9, 9))),
         ValueError, r"samples of shape \(9, 9\)"),
    # -- inverse_transform: latent codes ---------------------------------------------------
    Case("code width", "inverse_transform", lambda m, d: m.ae.inverse_transform(d.codes[:, :5]),
         ValueError, "X has 5 features, but this ConvAutoencoderTransformer decodes codes of 8"),
    Case("images instead of codes", "inverse_transform",
         lambda m, d: m.ae.inverse_transform(d.X), ValueError,
         "X has 64 features, .* codes of 8 features .* Pass the output of transform"),
    Case("nan", "inverse_transform", lambda m, d: m.ae.inverse_transform(_with(np.nan)(d.codes)),
         ValueError, "Input X contains NaN"),
    Case("inf", "inverse_transform", lambda m, d: m.ae.inverse_transform(_with(np.inf)(d.codes)),
         ValueError, "contains infinity"),
    Case("1-D", "inverse_transform", lambda m, d: m.ae.inverse_transform(d.codes[0]), ValueError,
         "Expected 2D array, got 1D array instead"),
    Case("3-D", "inverse_transform", lambda m, d: m.ae.inverse_transform(d.codes[:, :, None]),
         ValueError, "Found array with dim 3, while dim <= 2 is required"),
    Case("strings", "inverse_transform", lambda m, d: m.ae.inverse_transform(np.full((2, 8), "a")),
         ValueError, "could not convert string to float"),
    Case("empty", "inverse_transform", lambda m, d: m.ae.inverse_transform(d.codes[:0]),
         ValueError, r"0 sample\(s\)"),
    Case("sparse", "inverse_transform", lambda m, d: m.ae.inverse_transform(sp.eye(8).tocsr()),
         TypeError, "dense data is required"),
    Case("complex", "inverse_transform", lambda m, d: m.ae.inverse_transform(d.codes + 1j),
         ValueError, "Complex data not supported"),
    # -- sample -------------------------------------------------------------------------------
    Case("zero", "sample", lambda m, d: m.ae.sample(0), ValueError,
         "n_samples must be a positive integer; got 0"),
    Case("negative", "sample", lambda m, d: m.ae.sample(-3), ValueError, "got -3"),
    Case("fractional", "sample", lambda m, d: m.ae.sample(2.5), ValueError, "got 2.5"),
    Case("string", "sample", lambda m, d: m.ae.sample("10"), ValueError, "got '10'"),
    Case("random_state", "sample", lambda m, d: m.ae.sample(2, random_state="abc"), ValueError,
         "'abc' cannot be used to seed"),
    Case("conv code", "sample", lambda m, d: m.conv.sample(2), ValueError,
         r"sample needs a dense latent space: refit with latent_dim set"),
    # -- save and load --------------------------------------------------------------------
    Case("folder", "save", lambda m, d: m.ae.save(d.folder), IsADirectoryError,
         "is a folder; pass the path of a file"),
    Case("missing folder", "save", lambda m, d: m.ae.save(d.folder / "no" / "m.safetensors"),
         FileNotFoundError, "the folder .* does not exist"),
    Case("custom optimizer", "save", _save_with_custom_optimizer, ValueError,
         r"MyAdam cannot be saved: .* in torch.optim, .* set_params\(optimizer='adam'\)"),
    Case("not an estimator", "save", lambda m, d: skconvae.save(m.ae.net_, d.folder / "n"),
         TypeError, "skconvae.save saves the estimators of skconvae .* got skconvae"),
    Case("missing file", "load", lambda m, d: skconvae.load(d.folder / "absent.safetensors"),
         FileNotFoundError, "No model file at"),
    Case("text file", "load", lambda m, d: skconvae.load(d.folder / "notes.txt"),
         ModelFileError, "not a readable model file .* never opens pickle"),
    Case("truncated file", "load", lambda m, d: skconvae.load(d.folder / "truncated.safetensors"),
         ModelFileError, "truncated or corrupted"),
    Case("folder", "load", lambda m, d: skconvae.load(d.folder), IsADirectoryError,
         "reads the single file written by skconvae.save"),
    # -- the regressor ----------------------------------------------------------------------
    Case("y nan", "ConvAutoencoderRegressor.fit",
         lambda m, d: m.reg.fit(d.noisy, _with(np.nan)(d.X)), ValueError, "Input y contains NaN"),
    Case("y length", "ConvAutoencoderRegressor.fit",
         lambda m, d: m.reg.fit(d.noisy, d.images[:-1]), ValueError,
         r"inconsistent numbers of samples: \[1797, 1796\]"),
    Case("y size", "ConvAutoencoderRegressor.fit",
         lambda m, d: m.reg.fit(d.noisy, np.zeros((1797, 12, 12))), ValueError,
         r"\(12, 12\) are not an integer multiple of the input images' \(8, 8\)"),
    Case("y strings", "ConvAutoencoderRegressor.fit",
         lambda m, d: m.reg.fit(d.noisy, d.images.astype(str)), ValueError,
         "not compatible with arrays of bytes/strings"),
    Case("y 1-D", "ConvAutoencoderRegressor.fit", lambda m, d: m.reg.fit(d.noisy, d.X[:, 0]),
         ValueError, r"got an array of shape \(1797,\)"),
    Case("y missing", "ConvAutoencoderRegressor.fit", lambda m, d: m.reg.fit(d.noisy, None),
         ValueError, r"y is None: pass target images paired with X"),
    Case("loss", "ConvAutoencoderRegressor.fit",
         refit("reg", "noisy", loss="bce"), InvalidParameterError,
         r"'loss' parameter of ConvAutoencoderRegressor must be a str among"),
    Case("nan", "ConvAutoencoderRegressor.predict",
         lambda m, d: m.reg.predict(_with(np.nan)(d.X)), ValueError, "Input X contains NaN"),
    Case("channels", "ConvAutoencoderRegressor.predict",
         lambda m, d: m.reg.predict(np.zeros((2, 9, 9, 3))), ValueError,
         r"samples of shape \(9, 9, 3\), but .* shape \(height, width\), any height and width"),
    Case("image size, flat", "ConvAutoencoderRegressor.predict",
         lambda m, d: m.reg.predict(d.X[:, :49]), ValueError,
         "X has 49 features, but ConvAutoencoderRegressor is expecting 64"),
    Case("sparse", "ConvAutoencoderRegressor.predict",
         lambda m, d: m.reg.predict(sp.csr_matrix(d.X)), TypeError, "dense data is required"),
    Case("y width", "ConvAutoencoderRegressor.score",
         lambda m, d: m.reg.score(d.noisy, d.X[:, :32]), ValueError,
         r"different number of output \(32!=64\)"),
    # -- use before fit -----------------------------------------------------------------------
    *(
        Case("unfitted", method, call, SklearnNotFittedError, "not fitted yet")
        for method, call in [
            ("transform", lambda m, d: ConvAutoencoderTransformer().transform(d.X)),
            ("inverse_transform",
             lambda m, d: ConvAutoencoderTransformer().inverse_transform(d.codes)),
            ("score", lambda m, d: ConvAutoencoderTransformer().score(d.X)),
            ("score_samples", lambda m, d: ConvAutoencoderTransformer().score_samples(d.X)),
            ("reconstruct", lambda m, d: ConvAutoencoderTransformer().reconstruct(d.X)),
            ("sample", lambda m, d: ConvAutoencoderTransformer().sample(2)),
            ("get_feature_names_out",
             lambda m, d: ConvAutoencoderTransformer().get_feature_names_out()),
            ("ConvAutoencoderRegressor.predict",
             lambda m, d: ConvAutoencoderRegressor().predict(d.X)),
        ]
    ),
    Case("unfitted", "save",
         lambda m, d: ConvAutoencoderTransformer().save(d.folder / "unfitted.safetensors"),
         NotFittedError, "not fitted yet, so there is nothing to save. Call fit before save"),
]  # fmt: skip

PUBLIC_METHODS = {
    "fit", "fit_transform", "transform", "inverse_transform", "score", "score_samples",
    "reconstruct", "sample", "save", "load", "get_feature_names_out",
    "ConvAutoencoderRegressor.fit", "ConvAutoencoderRegressor.predict",
    "ConvAutoencoderRegressor.score",
}  # fmt: skip


def _case_id(case: Case) -> str:
    return f"{case.method}-{case.id}"


def test_the_table_covers_every_public_method_with_at_least_40_bad_inputs():
    cases = [c.values[0] if isinstance(c, type(pytest.param(0))) else c for c in BAD_CALLS]
    assert len(cases) >= 40
    assert {c.method for c in cases} == PUBLIC_METHODS
    assert len({_case_id(c) for c in cases}) == len(cases)


@pytest.mark.parametrize("case", BAD_CALLS, ids=_case_id)
def test_bad_input_gets_a_specific_error_and_changes_nothing(models, data, reference, case):
    m = copy.deepcopy(models)
    with pytest.raises(case.exc, match=case.match) as caught:
        case.call(m, data)
    # The specific class, not merely a subclass of the expected one.
    assert type(caught.value) is case.exc
    after = _outputs(m, data)
    assert after.keys() == reference.keys()
    for key, value in reference.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(after[key], value, err_msg=key)
        else:
            assert after[key] == value, key


# -- training faults: non-finite loss ---------------------------------------------------------


@pytest.mark.parametrize(
    "params, scale, match",
    [
        ({"scaling": None}, 1e20, r"loss became inf at epoch 1, batch 1.*try lr=0.0002"),
        ({"scaling": None, "optimizer": "sgd", "lr": 10.0}, 1, r"loss became (inf|nan).*lr=10;"),
    ],
    ids=["huge-values-unscaled", "learning-rate-too-high"],
)
def test_non_finite_loss_stops_training_with_a_fix(digits, params, scale, match):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST, **params)
    with pytest.raises(NonFiniteLossError, match=match) as caught:
        ae.fit(X * scale)
    message = str(caught.value)
    assert "Lower the learning rate" in message and "scaling='minmax'" in message
    assert isinstance(caught.value, SkconvaeError) and isinstance(caught.value, FloatingPointError)
    # No silently NaN model: the estimator is still unfitted.
    assert not hasattr(ae, "net_")
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(ae)


@pytest.mark.parametrize("warm_start", [False, True])
def test_diverging_refit_leaves_the_fitted_model_unchanged(digits, warm_start):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST, scaling=None, warm_start=warm_start).fit(X)
    before, codes = pickle.dumps(ae), ae.transform(X)
    with pytest.raises(NonFiniteLossError):
        ae.fit(X * 1e20)
    assert pickle.dumps(ae) == before
    np.testing.assert_array_equal(ae.transform(X), codes)
    assert all(torch.isfinite(p).all() for p in ae.net_.module_.parameters())


class _PoisonWeights(Callback):
    """Set a weight to NaN at the end of the last epoch, after every loss was finite."""

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == net.max_epochs:
            with torch.no_grad():
                next(net.module_.parameters()).view(-1)[0] = float("nan")


def test_non_finite_weights_at_the_end_of_training_are_refused(digits):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST, callbacks=[("poison", _PoisonWeights())])
    with pytest.raises(NonFiniteLossError, match="the weights became non-finite"):
        ae.fit(X)
    assert not hasattr(ae, "net_")


# -- training faults: Ctrl-C ----------------------------------------------------------------------


class _CtrlC(Callback):
    """Raise KeyboardInterrupt, as Ctrl-C does, at the end of an epoch or mid-epoch."""

    def __init__(self, epoch=None, batch=None):
        self.epoch = epoch
        self.batch = batch

    def on_epoch_end(self, net, **kwargs):
        if self.epoch is not None and len(net.history) == self.epoch:
            raise KeyboardInterrupt

    def on_batch_end(self, net, training=False, **kwargs):
        if self.batch is not None and training and len(net.history[-1, "batches"]) == self.batch:
            raise KeyboardInterrupt


def test_ctrl_c_keeps_the_weights_so_far_with_a_warning(digits):
    X, _ = digits
    # A constant rate and a conv code: the interrupted fit is comparable to a 2-epoch one.
    params = {**FAST, "lr_schedule": "constant", "latent_dim": None}
    ae = ConvAutoencoderTransformer(**{**params, "max_epochs": 5}, callbacks=[("c", _CtrlC(2))])
    with pytest.warns(FitInterruptedWarning, match=r"interrupted .* after 2 of 5 epochs") as rec:
        assert ae.fit(X) is ae
    assert len(rec) == 1
    check_is_fitted(ae)
    assert ae.image_shape_ == (1, 8, 8) and ae.n_features_in_ == 64
    assert ae.code_shape_ == (2, 4, 4) and ae.device_ == "cpu"
    assert len(ae.net_.history) == 2
    # Exactly the weights of two epochs: the same codes as a 2-epoch fit.
    two_epochs = ConvAutoencoderTransformer(**params).fit(X)
    np.testing.assert_array_equal(ae.transform(X), two_epochs.transform(X))
    assert ae.score(X) == two_epochs.score(X)


def test_ctrl_c_mid_epoch_leaves_a_usable_model(digits):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST, latent_dim=4, callbacks=[("c", _CtrlC(batch=5))])
    with pytest.warns(FitInterruptedWarning, match="after 0 of 2 epochs"):
        ae.fit(X)
    codes = ae.transform(X)
    assert codes.shape == (len(X), 4) and np.isfinite(codes).all()
    assert ae.inverse_transform(codes).shape == X.shape
    assert np.isfinite(ae.score(X))
    assert ae.sample(2, random_state=0).shape == (2, 64)
    assert len(ae.net_.history[-1, "batches"]) == 5


def test_ctrl_c_while_continuing_keeps_both_fits(digits):
    X, _ = digits
    # The callback goes with the net that warm_start continues: it fires in epoch 3.
    ae = ConvAutoencoderTransformer(**FAST, warm_start=True, callbacks=[("c", _CtrlC(epoch=3))])
    first = ae.fit(X).net_
    with pytest.warns(FitInterruptedWarning, match="after 1 of 2 epochs"):
        ae.fit(X)
    assert ae.net_ is not first and len(ae.net_.history) == 3
    assert np.isfinite(ae.transform(X)).all()


def test_early_stopping_is_not_taken_for_ctrl_c(digits):
    # skorch's EarlyStopping stops training by raising KeyboardInterrupt itself. With a
    # vanishing learning rate the validation loss never improves by its 1e-4 threshold.
    ae = ConvAutoencoderTransformer(
        **{**FAST, "max_epochs": 15}, early_stopping=True, n_iter_no_change=1,
        optimizer="sgd", lr=1e-9,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitInterruptedWarning)
        ae.fit(digits[0][:300])
    assert len(ae.net_.history) == 2


def test_ctrl_c_before_training_starts_leaves_the_estimator_as_it_was(digits, monkeypatch):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST).fit(X)
    before = pickle.dumps(ae)

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(AutoencoderNet, "initialize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ae.fit(X)
    assert pickle.dumps(ae) == before


# -- training faults: out of memory in inference ----------------------------------------------


def _oom_above(limit, seen):
    original = AutoencoderNet._run

    def run(self, method, x, **kwargs):
        seen.append(len(x))
        if len(x) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, method, x, **kwargs)

    return run


@pytest.mark.parametrize("method", ["transform", "score_samples", "reconstruct", "inverse"])
def test_out_of_memory_in_inference_retries_with_smaller_batches(models, data, method, monkeypatch):
    ae = models.ae
    X = np.tile(data.X, (2, 1))  # 3594 samples: four batches of 1024 at first
    call = {
        "transform": lambda: ae.transform(X),
        "score_samples": lambda: ae.score_samples(X),
        "reconstruct": lambda: ae.reconstruct(X),
        "inverse": lambda: ae.inverse_transform(np.tile(data.codes, (400, 1))),
    }[method]
    expected = call()
    seen = []
    monkeypatch.setattr(net_module, "INFERENCE_BATCH_SIZE", 1024)  # one of CUDA's sizes
    monkeypatch.setattr(AutoencoderNet, "_run", _oom_above(100, seen))
    # Equal up to float rounding: a smaller last batch may take other CPU kernels.
    np.testing.assert_allclose(call(), expected, rtol=1e-6, atol=1e-5)
    # 1024, 512, 256 and 128 fail; then batches of 64 cover the data, one attempt each.
    assert seen[:5] == [1024, 512, 256, 128, 64]
    assert max(seen[5:]) <= 64
    n = len(X) if method != "inverse" else 3200
    assert sum(seen[4:]) == n


def test_out_of_memory_while_measuring_batch_sizes_is_not_met_again(models, data, monkeypatch):
    ae = pickle.loads(pickle.dumps(models.ae))  # measures its batch sizes afresh
    X = np.tile(data.X, (3, 1))  # longer than the schedule left for 32 and 64
    expected = ae.transform(X)
    ae.net_._batch_sizes.clear()
    seen = []
    monkeypatch.setattr(AutoencoderNet, "_run", _oom_above(100, seen))
    np.testing.assert_allclose(ae.transform(X), expected, rtol=1e-6, atol=1e-5)
    assert max(seen) == 128 and seen.count(128) == 1  # 128 failed once and left the schedule
    (chooser,) = ae.net_._batch_sizes.values()
    assert chooser.chosen in (32, 64)
    seen.clear()
    np.testing.assert_allclose(ae.transform(X), expected, rtol=1e-6, atol=1e-5)
    assert max(seen) <= 64 + 31  # a short tail joins the last batch


def test_out_of_memory_even_for_one_sample_says_what_to_do(models, data, monkeypatch):
    seen = []
    monkeypatch.setattr(AutoencoderNet, "_run", _oom_above(0, seen))
    with pytest.raises(torch.cuda.OutOfMemoryError, match=r"even for one sample .*device='cpu'"):
        models.ae.transform(data.X[:10])
    assert seen == [10, 5, 2, 1]


def test_other_errors_are_not_retried(models, data, monkeypatch):
    calls = []

    def broken(self, method, x, **kwargs):
        calls.append(len(x))
        raise RuntimeError("a bug, not a lack of memory")

    monkeypatch.setattr(AutoencoderNet, "_run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        models.ae.transform(data.X)
    assert len(calls) == 1


# -- determinism and threads ------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [{}, {"latent_dim": 8, "noise": "gaussian", "early_stopping": True}],
    ids=["default", "latent-noise-early-stopping"],
)
def test_refits_with_the_same_random_state_are_identical(digits, params):
    X = digits[0][:600]
    first = ConvAutoencoderTransformer(**FAST, **params).fit(X)
    second = ConvAutoencoderTransformer(**FAST, **params).fit(X)
    np.testing.assert_array_equal(first.transform(X), second.transform(X))
    if params:
        np.testing.assert_array_equal(
            first.sample(5, random_state=0), second.sample(5, random_state=0)
        )
    assert first.net_.history[:, "train_loss"] == second.net_.history[:, "train_loss"]
    for (name, a), (_, b) in zip(
        first.net_.module_.state_dict().items(),
        second.net_.module_.state_dict().items(),
        strict=True,
    ):
        assert torch.equal(a, b), name
    # Refitting the same estimator gives the same model again.
    np.testing.assert_array_equal(first.fit(X).transform(X), second.transform(X))


def test_four_threads_transform_at_once_like_one(models, data):
    ae = models.ae
    X = np.tile(data.X, (2, 1))
    codes = np.tile(data.codes, (100, 1))
    expected = (ae.transform(X), ae.inverse_transform(codes), ae.score_samples(X))
    barrier = threading.Barrier(4)
    results, errors = [None] * 4, []

    def work(i):
        try:
            barrier.wait()
            results[i] = [
                (ae.transform(X), ae.inverse_transform(codes), ae.score_samples(X))
                for _ in range(2)
            ]
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for per_thread in results:
        for outputs in per_thread:
            for got, want in zip(outputs, expected, strict=True):
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("deterministic", [False, True])
def test_cuda_autotune_is_switched_on_once_and_never_flipped_back(monkeypatch, deterministic):
    """Threads that enter together and leave one by one all see autotuning on; leaving
    restores nothing (that would switch it off under another thread), and a caller's
    later choice stands. ``cudnn.deterministic`` keeps it off.

    Mutation checked: the landed scoped flag (counted entries, the last one out
    restores) fails ``benchmark is True`` after the threads, and a flag set on every
    entry fails the caller's-choice check.
    """
    monkeypatch.setattr(net_module, "_autotune_done", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", deterministic)
    entered, seen = threading.Barrier(4), []

    def work(i):
        with net_module.cuda_autotune(True):
            entered.wait()
            time.sleep(0.02 * i)
            seen.append(torch.backends.cudnn.benchmark)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [not deterministic] * 4
    assert torch.backends.cudnn.benchmark is (not deterministic)
    torch.backends.cudnn.benchmark = False  # the caller's choice
    with net_module.cuda_autotune(True):
        assert torch.backends.cudnn.benchmark is False
    with net_module.cuda_autotune(False):
        assert torch.backends.cudnn.benchmark is False


# -- the caller's memory -----------------------------------------------------------------------


@pytest.fixture
def mapped_file(tmp_path, monkeypatch):
    """1200 real digits in a file, with a release interval (32 KiB) far below its 0.9 MB
    and small inference batches, so that pages are released many times per call."""
    from skconvae import _data

    images = np.load(MNIST_PATH)["images"][:1200]
    path = tmp_path / "images.u8"
    images.tofile(path)
    monkeypatch.setattr(_data, "RELEASE_INTERVAL_BYTES", 32 * 2**10)
    monkeypatch.setattr(net_module, "INFERENCE_BATCH_SIZE", 64)
    return path, images


@pytest.fixture(scope="module")
def mnist_model():
    images = np.load(MNIST_PATH)["images"][:300]
    return ConvAutoencoderTransformer(**FAST).fit(images)


@pytest.mark.parametrize("mode", ["c", "r+"])
def test_inference_never_loses_the_callers_edits_of_a_mapped_input(mapped_file, mnist_model, mode):
    """Edits inside and outside the transformed slice of a copy-on-write or shared
    memmap all survive ``transform``, ``score_samples`` and ``reconstruct``.

    Mutation checked: ``_releasable_mmap`` returning the mapping whatever its mode
    (and, separately, the landed code's ``madvise`` of the whole mapping): on
    ``mode="c"`` the edited pages fall back to the file's contents.
    """
    path, images = mapped_file
    mm = np.memmap(path, dtype=np.uint8, mode=mode, shape=images.shape)
    mm[:500] = 7  # 300 rows before the slice, 200 inside it
    mm[1100:] = 9  # after it
    edited = np.array(mm)
    inside = mm[300:1000]
    np.testing.assert_array_equal(
        mnist_model.transform(inside), mnist_model.transform(edited[300:1000])
    )
    assert np.isfinite(mnist_model.score_samples(inside)).all()
    lost = int(np.count_nonzero(np.asarray(mm) != edited))
    assert lost == 0, f"{lost} edited values lost"
    if mode == "r+":
        mm.flush()
        np.testing.assert_array_equal(np.fromfile(path, np.uint8).reshape(images.shape), edited)
    else:  # a private mapping never writes to the file
        np.testing.assert_array_equal(np.fromfile(path, np.uint8).reshape(images.shape), images)


@pytest.mark.parametrize("mode, releases", [("r", True), ("r+", True), ("c", False)])
def test_pages_are_released_only_for_safe_mappings_and_only_where_read(
    mapped_file, monkeypatch, mode, releases
):
    """Read-only and shared mappings release the rows read, in order, and nothing
    else; copy-on-write mappings and bare ``mmap`` objects release nothing.

    Mutation checked: releasing ``[0, rows_read)`` (from the start of the
    mapping) instead of the rows read since the last release fails the order
    check; a mode check that also accepts ``"c"`` fails the ``"c"`` case.
    """
    import mmap as mmap_module

    from skconvae import _data

    path, images = mapped_file
    mm = np.memmap(path, dtype=np.uint8, mode=mode, shape=images.shape)
    released = []
    original = _data.MappedPages._release

    def spy(self, first, stop):
        released.append((first, stop))
        original(self, first, stop)

    monkeypatch.setattr(_data.MappedPages, "_release", spy)
    pages = _data.MappedPages(mm[300:1000])
    assert (pages.mapping is not None) is releases
    for start in range(0, 700, 64):
        pages.consumed(mm[300 + start : 300 + start + 64].nbytes)
    if not releases:
        assert released == []
        return
    # 64 rows of 784 bytes pass 32 KiB: every batch is released, right after it is read.
    assert released == [(s, min(s + 64, 700)) for s in range(0, 700, 64)]
    with open(path, "rb") as f:
        bare = mmap_module.mmap(f.fileno(), 0, access=mmap_module.ACCESS_COPY)
    assert _data.MappedPages(np.frombuffer(bare, np.uint8)).mapping is None
    del bare


# -- fits in threads -----------------------------------------------------------------------------

# Every random stream of a fit: initial weights, shuffling, validation split, input noise
# and latent sampling. A tiny network and one epoch keep the 84 fits to a few seconds.
THREADED_FIT = {
    "filters": (2, 2),
    "latent_dim": 2,
    "variational": True,
    "noise": "gaussian",
    "early_stopping": True,
    "max_epochs": 1,
    "batch_size": 32,
}


def _threaded_fit_outputs(X, seed):
    ae = ConvAutoencoderTransformer(**THREADED_FIT, random_state=seed).fit(X)
    state = [t.cpu().numpy().copy() for t in ae.net_.module_.state_dict().values()]
    return [ae.transform(X), *state, np.array(ae.net_.history[:, "train_loss"])]


def test_fits_in_four_threads_are_identical_to_serial_fits(digits):
    """20 rounds of 4 threads fitting 4 seeds at once: every output, weight and loss
    equals the serial fit's, bit for bit, and torch's global generator is untouched.

    Mutation checked: the landed ``seeded_torch`` (seed torch's global generator
    around ``fit`` with ``fork_rng``, and draw initial weights, noise and latent
    samples from it) fails the comparison within the first rounds.
    """
    X = digits[0][:64]
    seeds = [0, 1, 2, 3]
    global_state = torch.get_rng_state()
    serial = {seed: _threaded_fit_outputs(X, seed) for seed in seeds}
    assert not np.array_equal(serial[0][0], serial[1][0])
    mismatches, errors = [], []
    for round_ in range(20):
        results = {}
        barrier = threading.Barrier(len(seeds))

        def work(seed, results=results, barrier=barrier):
            try:
                barrier.wait()
                results[seed] = _threaded_fit_outputs(X, seed)
            except BaseException as exc:  # reported below, in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(seed,)) for seed in seeds]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        for seed in seeds:
            same = all(
                np.array_equal(a, b) for a, b in zip(results[seed], serial[seed], strict=True)
            )
            if not same:
                mismatches.append((round_, seed))
    assert mismatches == [], f"{len(mismatches)} of 80 threaded fits differ from serial ones"
    assert torch.equal(torch.get_rng_state(), global_state)
