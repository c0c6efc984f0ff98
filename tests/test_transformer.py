"""ConvAutoencoderTransformer on real images: layouts, units, sklearn workflows."""

import io
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits, load_sample_images
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from skconvae import ConvAutoencoderTransformer
from skconvae._data import HoldoutSplit, ImageBatches

from .conftest import FAST


@pytest.fixture(scope="module")
def fitted(digits):
    X, _ = digits
    return ConvAutoencoderTransformer(**FAST).fit(X)


@pytest.fixture(scope="module")
def photo_patches():
    """32 real RGB patches of 11x13 pixels cut from china.jpg, uint8 NHWC."""
    china = load_sample_images().images[0]
    rows = np.arange(0, 32 * 11, 11)
    return np.stack([china[r : r + 11, 100 : 100 + 13] for r in rows])


def test_classic_architecture_is_the_classic_network(digits):
    X, _ = digits
    ae = ConvAutoencoderTransformer(architecture="classic", max_epochs=1, random_state=0).fit(X)
    module = ae.net_.module_
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 16, (3, 3)),
        (16, 8, (3, 3)),
        (8, 8, (3, 3)),
        (8, 1, (3, 3)),
    ]
    assert all(c.padding == "same" for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in module.modules()) == 1
    assert sum(isinstance(m, torch.nn.Upsample) for m in module.modules()) == 1
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
    # The code is the flattened 8-channel 4x4 feature map of an 8x8 digit, as it comes.
    assert ae.code_shape_ == (8, 4, 4)
    assert (ae.filters_, ae.latent_dim_) == ((16, 8), None)
    assert ae.transform(X[:5]).shape == (5, 128)
    assert ae.transform(X[:5]).min() >= 0  # ReLU features, not standardised


def test_default_network_follows_the_auto_rules(digits):
    X, _ = digits
    ae = ConvAutoencoderTransformer(max_epochs=2, random_state=0).fit(X)
    module = ae.net_.module_
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    # (16, 32) encoder, mirrored decoder, batch norm after every hidden convolution.
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (1, 16),
        (16, 32),
        (32, 16),
        (16, 1),
    ]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules()) == 3
    assert (ae.filters_, ae.latent_dim_, ae.loss_, ae.max_epochs_) == ((16, 32), 32, "bce", 2)
    # The user's parameters stay "auto".
    params = ae.get_params()
    assert [params[k] for k in ("filters", "latent_dim", "loss")] == ["auto"] * 3
    # Codes come out standardised on the training data...
    Z = ae.transform(X)
    assert Z.shape == (len(X), 32)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(Z.std(axis=0), 1, atol=1e-3)
    # ... and inverse_transform undoes the standardisation exactly.
    np.testing.assert_allclose(ae.inverse_transform(Z), ae.reconstruct(X), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "n_samples, side, epochs, filters, latent_dim",
    [
        (8000, 28, 16, (16, 32), 32),  # MNIST-sized: about 2000 steps
        (300, 8, 100, (16, 32), 32),  # few samples: capped at 100 epochs
        (64000, 64, 10, (16, 32, 64), 32),  # many: at least 10; 64 px: a third stage
        (5, 4, 100, (16, 32), 8),  # 16 values: the code is half of them
    ],
)
def test_auto_rules(n_samples, side, epochs, filters, latent_dim):
    from skconvae._auto import auto_filters, auto_latent_dim, auto_max_epochs

    assert auto_max_epochs(n_samples, 64) == epochs
    assert auto_filters((side, side)) == filters
    assert auto_latent_dim(side * side) == latent_dim


def test_fit_learns_to_reconstruct_digits(digits):
    X, _ = digits
    ae = ConvAutoencoderTransformer(max_epochs=15, random_state=0).fit(X)
    losses = ae.net_.history[:, "train_loss"]
    # Binary cross-entropy (loss="auto" with minmax scaling) has a floor above 0:
    # the entropy of the grey levels. What falls is the excess above it.
    assert losses[-1] < 0.8 * losses[0]
    # Better than predicting the mean image for every digit.
    baseline = np.mean((X - X.mean(axis=0)) ** 2)
    assert -ae.score(X) < 0.5 * baseline


def test_transform_dtype_shape_and_feature_names(fitted, digits):
    X, _ = digits
    Z = fitted.transform(X[:7])
    assert Z.dtype == np.float32
    assert Z.shape == (7, 32)  # latent_dim="auto": 32 features
    names = fitted.get_feature_names_out()
    assert names[0] == "convautoencodertransformer0"
    assert len(names) == Z.shape[1]


def test_score_is_negative_mse_in_input_units(fitted, digits):
    X, _ = digits
    recon = fitted.inverse_transform(fitted.transform(X))
    expected = -np.mean((recon.astype(np.float64) - X) ** 2)
    assert fitted.score(X) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("latent_dim", [None, 3])
def test_latent_dim_sets_code_width(digits, latent_dim):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**{**FAST, "latent_dim": latent_dim}).fit(X)
    width = 3 if latent_dim else 2 * 4 * 4
    assert ae.transform(X).shape == (len(X), width)
    assert ae.inverse_transform(np.zeros((2, width))).shape == (2, 64)


def test_deeper_network_and_kernel_size(mnist):
    images, _ = mnist
    ae = ConvAutoencoderTransformer(
        filters=(4, 4, 2), latent_dim=None, kernel_size=5, max_epochs=1, random_state=0
    ).fit(images[:256])
    # Two poolings: 28 -> 14 -> 7.
    assert ae.code_shape_ == (2, 7, 7)
    assert ae.inverse_transform(ae.transform(images[:3])).shape == (3, 28, 28)


# -- layouts and units -----------------------------------------------------------------


def _round_trip(X, **params):
    ae = ConvAutoencoderTransformer(**{**FAST, **params}).fit(X)
    return ae, ae.inverse_transform(ae.transform(X))


def test_flat_in_flat_out(digits):
    X, _ = digits
    ae, recon = _round_trip(X)
    assert recon.shape == X.shape
    assert ae.image_shape_ == (1, 8, 8)


def test_uint8_images_come_back_in_0_255(mnist):
    images, _ = mnist
    ae, recon = _round_trip(images[:500], max_epochs=3, filters=(8, 8), lr=3e-3)
    assert recon.shape == (500, 28, 28)
    assert recon.dtype == np.float32
    assert 0 <= recon.min() and recon.max() <= 255
    # In 0-255 units: far above the [0, 1] range.
    assert recon.max() > 50
    np.testing.assert_allclose(ae.data_min_, [0])
    np.testing.assert_allclose(ae.data_max_, [255])


def test_nhwc_in_nhwc_out(photo_patches):
    ae, recon = _round_trip(photo_patches)
    assert ae.image_shape_ == (3, 11, 13)
    assert recon.shape == photo_patches.shape
    assert ae.net_.module_.encoder[0].in_channels == 3


def test_nchw_in_nchw_out(photo_patches):
    nchw = photo_patches.transpose(0, 3, 1, 2)
    ae, recon = _round_trip(nchw)
    assert ae.image_shape_ == (3, 11, 13)
    assert recon.shape == nchw.shape


def test_channels_parameter_overrides_auto(photo_patches):
    # Read as channels-first, the 11x13x3 patches become 11 channels of 13x3.
    ae = ConvAutoencoderTransformer(**FAST, channels="first").fit(photo_patches)
    assert ae.image_shape_ == (11, 13, 3)


def test_flat_rgb_with_image_shape(photo_patches):
    flat = photo_patches.reshape(len(photo_patches), -1)
    ae, recon = _round_trip(flat, image_shape=(11, 13, 3))
    assert ae.image_shape_ == (3, 11, 13)
    assert recon.shape == flat.shape
    # The same weights seen through NHWC input give the same codes as flat rows.
    np.testing.assert_array_equal(ae.transform(photo_patches), ae.transform(flat))


def test_nd_and_flat_input_are_interchangeable(mnist):
    images, _ = mnist
    ae = ConvAutoencoderTransformer(**FAST).fit(images[:200])
    np.testing.assert_array_equal(
        ae.transform(images[:50]), ae.transform(images[:50].reshape(50, -1))
    )


def test_dataframe_input_keeps_feature_names_and_index(digits):
    X, _ = digits
    columns = [f"px{i}" for i in range(64)]
    df = pd.DataFrame(X[:300], columns=columns, index=np.arange(1000, 1300))
    ae = ConvAutoencoderTransformer(**FAST).set_output(transform="pandas").fit(df)
    np.testing.assert_array_equal(ae.feature_names_in_, columns)
    out = ae.transform(df)
    assert isinstance(out, pd.DataFrame)
    pd.testing.assert_index_equal(out.index, df.index)
    assert list(out.columns) == list(ae.get_feature_names_out())
    # inverse_transform accepts the DataFrame of codes.
    assert ae.inverse_transform(out).shape == (300, 64)


def test_non_square_rows_become_1d_signals(digits):
    X, _ = digits
    signals = X[:, :60]  # 60 is not a square: a length-60 signal
    ae, recon = _round_trip(signals)
    assert ae.image_shape_ == (1, 1, 60)
    assert isinstance(ae.net_.module_.encoder[0], torch.nn.Conv1d)
    assert recon.shape == signals.shape


def test_multichannel_signals(digits):
    X, _ = digits
    signals = X.reshape(len(X), 1, 16, 4)  # (N, H=1, W=16, C=4): 4-channel signals
    ae, recon = _round_trip(signals, channels="last")
    assert ae.image_shape_ == (4, 1, 16)
    assert recon.shape == signals.shape


@pytest.mark.parametrize(
    "side, n_filters",
    [(25, 2), (7, 3), (1, 2), (3, 4)],
    ids=["25x25-faces-size", "7x7-three-stages", "1x1", "3x3-four-stages"],
)
def test_odd_and_tiny_sizes_pad_and_crop(mnist, side, n_filters):
    images, _ = mnist
    crops = images[:64, 2 : 2 + side, 3 : 3 + side]
    ae, recon = _round_trip(crops, filters=(3,) * n_filters)
    assert ae.image_shape_ == (1, side, side)
    assert recon.shape == crops.shape


@pytest.mark.parametrize("shape", [(2, 2), (1, 2)], ids=["2x2-images", "length-2-signals"])
def test_a_last_batch_of_one_tiny_image_trains(mnist, shape):
    """65 images in batches of 64: the last batch is one image, whose feature map after
    the pooling is one value per batch-norm channel (torch's batch norm raises there)."""
    images, _ = mnist
    crops = images[:65, 10 : 10 + shape[0], 10 : 10 + shape[1]].reshape(65, -1)
    ae = ConvAutoencoderTransformer(max_epochs=2, random_state=0).fit(crops)
    assert ae.image_shape_ == ((1, *shape) if shape[0] > 1 else (1, 1, 2))
    assert ae.net_.history[-1, "batches"][-1]["train_batch_size"] == 1
    assert np.isfinite(ae.net_.history[:, "train_loss"]).all()
    assert ae.inverse_transform(ae.transform(crops)).shape == crops.shape


@pytest.mark.parametrize("shape", [(1, 3, 1), (1, 3, 1, 1)], ids=["1d", "2d"])
def test_batch_norm_on_one_value_per_channel_uses_the_running_statistics(shape):
    from skconvae._network import BatchNorm1d, BatchNorm2d

    norm = (BatchNorm1d if len(shape) == 3 else BatchNorm2d)(3).train()
    with torch.no_grad():
        norm.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
        norm.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
        norm.weight.copy_(torch.tensor([2.0, 1.0, 3.0]))
    x = torch.tensor([3.0, -1.0, 0.5]).reshape(shape).requires_grad_()
    out = norm(x)
    # (x - running mean) / running std * weight: (3 - 1) / 2 * 2, (-1 + 2) / 0.5 * 1, 0 * 3
    torch.testing.assert_close(out.flatten(), torch.tensor([2.0, 2.0, 0.0]), rtol=1e-4, atol=0)
    out.sum().backward()
    assert norm.weight.grad is not None and norm.bias.grad.tolist() == [1.0, 1.0, 1.0]
    torch.testing.assert_close(norm.running_var, torch.tensor([4.0, 0.25, 1.0]))
    assert int(norm.num_batches_tracked) == 0
    # Two values per channel: torch's batch norm, batch statistics and all.
    pair = torch.cat([x.detach(), x.detach() + 1])
    torch.testing.assert_close(
        norm(pair),
        torch.nn.functional.batch_norm(
            pair, None, None, norm.weight, norm.bias, training=True, eps=norm.eps
        ),
    )


def test_lfw_faces():
    skimage_data = pytest.importorskip("skimage.data")
    faces = skimage_data.lfw_subset()  # 200 real 25x25 grey faces in [0, 1]
    ae, recon = _round_trip(faces, loss="bce", max_epochs=20, filters=(8, 4), batch_size=16)
    assert recon.shape == faces.shape
    # Better than predicting the mean face.
    assert -ae.score(faces) < np.mean((faces - faces.mean(axis=0)) ** 2)


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int16, np.int64, np.float16, np.float32, np.float64]
)
def test_dtypes(digits, dtype):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST).fit(X.astype(dtype))
    Z = ae.transform(X.astype(dtype))
    assert Z.dtype == np.float32
    ref = ConvAutoencoderTransformer(**FAST).fit(X).transform(X)
    np.testing.assert_allclose(Z, ref, rtol=1e-2, atol=1e-2)


def test_read_only_memmap(tmp_path, mnist):
    images, _ = mnist
    path = tmp_path / "images.npy"
    np.save(path, images[:300])
    mm = np.load(path, mmap_mode="r")
    ae = ConvAutoencoderTransformer(**FAST).fit(mm)
    np.testing.assert_array_equal(ae.transform(mm), ae.transform(images[:300]))


@pytest.mark.parametrize("scaling", ["minmax", "symmetric", None])
def test_scaling_modes_reconstruct_in_input_units(digits, scaling):
    X, _ = digits
    ae, recon = _round_trip(X, scaling=scaling, max_epochs=5, filters=(8, 4))
    activation = {"minmax": "sigmoid", "symmetric": "tanh", None: "identity"}[scaling]
    assert ae.net_.module_.output_activation == activation
    if scaling is not None:
        assert -0.01 <= recon.min() and recon.max() <= 16.01
    # Trained, not just initialised: well below the same network before training
    # (measured 0.53-0.70 of it; an untrained network scores about np.var(X)).
    # Mutation checked (for this and the tests below): a fit that skips training
    # (``partial_fit`` replaced by ``initialize``) fails.
    assert -ae.score(X) < 0.85 * -_untrained(scaling=scaling, filters=(8, 4)).score(X)


def test_bce_loss_trains(digits):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**{**FAST, "max_epochs": 5, "filters": (8, 8)}, loss="bce")
    ae.fit(X)
    losses = ae.net_.history[:, "train_loss"]
    assert losses[-1] < losses[0]
    # Measured 0.30 of the untrained network's error.
    untrained = _untrained(filters=(8, 8), loss="bce", batch_size=64)
    assert -ae.score(X) < 0.5 * -untrained.score(X)


def _untrained(**params):
    """The network as initialised: one epoch of SGD at a learning rate of 1e-12."""
    X = load_digits().data
    return ConvAutoencoderTransformer(
        **params, max_epochs=1, optimizer="sgd", lr=1e-12, random_state=0
    ).fit(X)


# -- training controls --------------------------------------------------------------------


def test_same_random_state_same_output_and_global_rng_untouched(digits):
    X, _ = digits
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state().clone()
    a = ConvAutoencoderTransformer(**FAST).fit(X).transform(X)
    b = ConvAutoencoderTransformer(**FAST).fit(X).transform(X)
    np.testing.assert_array_equal(a, b)
    c = ConvAutoencoderTransformer(**{**FAST, "random_state": 1}).fit(X).transform(X)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)
    ConvAutoencoderTransformer(**{**FAST, "random_state": None}).fit(X)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_silent_by_default_and_verbose_prints_table(digits, capsys):
    X, _ = digits
    ConvAutoencoderTransformer(**FAST, early_stopping=True).fit(X)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    ConvAutoencoderTransformer(**FAST, verbose=1).fit(X)
    captured = capsys.readouterr()
    assert "train_loss" in captured.out and "epoch" in captured.out


def test_early_stopping_holds_out_and_keeps_best(digits):
    """The model kept is the best epoch's: its loss on the held-out samples is the
    best recorded validation loss, not the last epoch's.

    Mutation checked: ``EarlyStopping(load_best=False)`` in ``_base.py`` keeps the
    last epoch's weights, whose held-out loss is the last recorded one, and fails.
    """
    X, _ = digits
    ae = ConvAutoencoderTransformer(
        **{**FAST, "max_epochs": 30},
        early_stopping=True,
        n_iter_no_change=2,
        lr=0.05,
        lr_schedule="constant",
        loss="mse",
    ).fit(X)
    history = ae.net_.history
    valid = np.array(history[:, "valid_loss"])
    batches = history[-1, "batches"]
    n_valid = sum(b.get("valid_batch_size", 0) for b in batches)
    n_train = sum(b.get("train_batch_size", 0) for b in batches)
    assert (n_train, n_valid) == (len(X) - 180, 180)
    # Stopped early: the best epoch is n_iter_no_change before the end, and worse ones follow.
    assert len(valid) < 30
    assert np.argmin(valid) == len(valid) - 3 and valid[-1] > valid.min() * (1 + 1e-3)
    # The held-out samples, as the split drew them; their loss in the network's units
    # (minmax scaling of 0..16) is that of the weights kept.
    _, held_out = HoldoutSplit(0.1, FAST["random_state"])(ImageBatches(torch.from_numpy(X)))
    images = held_out.X.numpy()
    loss = np.mean((ae.reconstruct(images).astype(np.float64) - images) ** 2) / 16**2
    assert loss == pytest.approx(valid.min(), rel=1e-4)


def test_warm_start_continues_training(digits):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST, warm_start=True).fit(X)
    net = ae.net_
    ae.fit(X)
    assert len(ae.net_.history) == 2 * FAST["max_epochs"]
    assert ae.net_ is not net  # trained on a copy, swapped in on success
    cold = ConvAutoencoderTransformer(**FAST).fit(X)
    cold.fit(X)
    assert len(cold.net_.history) == FAST["max_epochs"]


def test_warm_start_follows_changed_training_params(digits):
    """set_params between warm fits changes how training continues, as in scikit-learn."""
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST, warm_start=True, lr_schedule="constant").fit(X)
    adam_steps = _adam_steps(ae)
    ae.set_params(lr=0.01, max_epochs=3, batch_size=256).fit(X)
    assert len(ae.net_.history) == FAST["max_epochs"] + 3
    assert {g["lr"] for g in ae.net_.optimizer_.param_groups} == {0.01}
    assert len(ae.net_.history[-1, "batches"]) == -(-len(X) // 256)
    # Same optimizer: Adam's moment estimates carry over.
    assert _adam_steps(ae) == adam_steps + 3 * -(-len(X) // 256)
    ae.set_params(optimizer="sgd", max_epochs=1).fit(X)
    assert isinstance(ae.net_.optimizer_, torch.optim.SGD)
    assert ae.net_.optimizer_.param_groups[0]["lr"] == 0.01
    assert len(ae.net_.history) == FAST["max_epochs"] + 4


def test_cosine_lr_schedule_by_default(digits):
    from skorch.callbacks import LRScheduler

    X, _ = digits
    params = {**FAST, "max_epochs": 4, "lr": 0.01}
    cosine = ConvAutoencoderTransformer(**params).fit(X)
    # Stepped after each epoch: after the last one of 4 the half cosine reaches 0.
    assert cosine.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(0, abs=1e-12)
    assert "lr_schedule" in dict(cosine.net_.callbacks_)
    constant = ConvAutoencoderTransformer(**params, lr_schedule="constant").fit(X)
    assert constant.net_.optimizer_.param_groups[0]["lr"] == 0.01
    # A scheduler of the user's own replaces the built-in one.
    own = LRScheduler(policy="StepLR", step_size=1, gamma=0.5)
    stepped = ConvAutoencoderTransformer(**params, callbacks=[("own", own)]).fit(X)
    assert stepped.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**4)
    assert "lr_schedule" not in dict(stepped.net_.callbacks_)


def _adam_steps(ae) -> int:
    state = ae.net_.optimizer_.state
    return int(next(iter(state.values()))["step"])


def test_callbacks_are_passed_to_skorch(digits):
    from skorch.callbacks import Callback

    class CountEpochs(Callback):
        def initialize(self):
            self.count = 0
            return self

        def on_epoch_end(self, net, **kwargs):
            self.count += 1

    counter = CountEpochs()
    ae = ConvAutoencoderTransformer(**FAST, callbacks=[("count", counter)]).fit(X := digits[0])
    assert dict(ae.net_.callbacks_)["count"].count == FAST["max_epochs"]
    assert not hasattr(counter, "count")  # the user's instance is left untouched
    assert ae.transform(X).shape[0] == len(X)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "rmsprop", torch.optim.Adagrad])
def test_optimizers(digits, optimizer):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST, optimizer=optimizer).fit(X)
    expected = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}.get(
        optimizer, optimizer if not isinstance(optimizer, str) else torch.optim.RMSprop
    )
    assert isinstance(ae.net_.optimizer_, expected)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_adam_uses_its_fused_kernel_and_other_optimizers_are_left_alone(digits, optimizer):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST, optimizer=optimizer).fit(X)
    (group,) = ae.net_.optimizer_.param_groups
    assert group.get("fused") is (True if optimizer != "sgd" else None)
    # A refit and a continued fit run the same update.
    again = ConvAutoencoderTransformer(**FAST, optimizer=optimizer).fit(X)
    np.testing.assert_array_equal(ae.transform(X), again.transform(X))
    ae.set_params(warm_start=True, max_epochs=1).fit(X)
    assert ae.net_.optimizer_.param_groups[0].get("fused") is group.get("fused")


def test_device_auto_is_decided_at_fit(digits):
    ae = ConvAutoencoderTransformer(**FAST)
    assert ae.device == "auto"
    ae.fit(digits[0])
    assert ae.device == "auto"
    assert ae.device_ == ("cuda" if torch.cuda.is_available() else "cpu")


# -- scikit-learn workflows -------------------------------------------------------------


def test_pipeline_with_svc_classifies_digits(digits):
    X, y = digits
    pipe = Pipeline(
        [
            ("ae", ConvAutoencoderTransformer(max_epochs=10, random_state=0)),
            ("scale", StandardScaler()),
            ("clf", SVC()),
        ]
    )
    pipe.fit(X[:1200], y[:1200])
    assert pipe.score(X[1200:], y[1200:]) > 0.8
    # Accuracy alone cannot tell a trained network: random conv features classify
    # digits as well (0.93 both, measured). The autoencoder in the pipeline was trained
    # (measured 0.34 of the untrained network's error).
    untrained = _untrained()
    assert -pipe["ae"].score(X[1200:]) < 0.8 * -untrained.score(X[1200:])


def test_cross_val_score(digits):
    X, y = digits
    # lr=0.01: FAST's two epochs at the default rate leave the network at 0.99 of its
    # initial error, which SVC accuracy cannot tell from a trained one.
    pipe = Pipeline([("ae", ConvAutoencoderTransformer(**FAST, lr=0.01)), ("clf", SVC())])
    scores = cross_validate(pipe, X, y, cv=3, return_estimator=True)
    assert scores["test_score"].shape == (3,)
    assert scores["test_score"].min() > 0.5
    # Each fold's autoencoder was trained (accuracy alone would pass an untrained one):
    # measured 0.57-0.60 of the untrained network's error.
    untrained = -_untrained(filters=FAST["filters"], batch_size=64).score(X)
    for fold in scores["estimator"]:
        assert -fold["ae"].score(X) < 0.75 * untrained


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_on_reconstruction_score(digits, n_jobs):
    X, _ = digits
    # The classic network: batch norm's running statistics lag behind the weights
    # in a 2-epoch fit, which blurs the comparison on held-out folds.
    search = GridSearchCV(
        ConvAutoencoderTransformer(**{**FAST, "filters": (8, 4)}, architecture="classic"),
        {"latent_dim": [2, 24]},
        cv=2,
        n_jobs=n_jobs,
    )
    search.fit(X)
    # A wider code reconstructs better.
    assert search.best_params_ == {"latent_dim": 24}
    assert search.best_estimator_.transform(X[:4]).shape == (4, 24)


def test_clone_is_unfitted_with_same_params(fitted):
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "net_")


@pytest.mark.parametrize("dump, load", [(pickle.dumps, pickle.loads), ("joblib", "joblib")])
def test_pickle_and_joblib_round_trip(fitted, digits, dump, load):
    X, _ = digits
    if dump == "joblib":
        buffer = io.BytesIO()
        joblib.dump(fitted, buffer)
        buffer.seek(0)
        restored = joblib.load(buffer)
    else:
        restored = load(dump(fitted))
    np.testing.assert_array_equal(restored.transform(X), fitted.transform(X))
    Z = fitted.transform(X[:5])
    np.testing.assert_array_equal(restored.inverse_transform(Z), fitted.inverse_transform(Z))


def test_mnist_held_out_reconstruction(mnist):
    """A short fit on real MNIST reconstructs unseen digits far better than the mean."""
    images, _ = mnist
    train, test = images[:2000], images[9000:]
    ae = ConvAutoencoderTransformer(
        architecture="classic", max_epochs=3, batch_size=32, lr=3e-3, random_state=0
    )
    ae.fit(train)
    assert ae.transform(test).shape == (1000, 8 * 14 * 14)
    flat = test.reshape(len(test), -1).astype(np.float64)
    mean_image_mse = np.mean((flat - train.reshape(len(train), -1).mean(axis=0)) ** 2)
    assert -ae.score(test) < 0.25 * mean_image_mse
