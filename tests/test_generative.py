"""Denoising training, reconstruct, anomaly scores and generation on the transformer."""

import numpy as np
import pytest
import torch

from skconvae import ConvAutoencoderTransformer
from skconvae._noise import corrupt

from .conftest import FAST

TRAIN = {"max_epochs": 3, "batch_size": 32, "lr": 3e-3, "random_state": 0}


@pytest.fixture(scope="module")
def dense_model(mnist):
    images, _ = mnist
    return ConvAutoencoderTransformer(latent_dim=8, **TRAIN).fit(images[:1500])


@pytest.fixture(scope="module")
def vae(mnist):
    images, _ = mnist
    return ConvAutoencoderTransformer(latent_dim=8, variational=True, loss="bce", **TRAIN).fit(
        images[:1500]
    )


# -- corruption ------------------------------------------------------------------------


def test_gaussian_noise_has_the_level_and_is_clipped():
    torch.manual_seed(0)
    x = torch.full((64, 1, 28, 28), 0.5)
    noisy = corrupt(x, "gaussian", 0.1, 0.0, 1.0)
    assert noisy.std().item() == pytest.approx(0.1, rel=0.05)
    clipped = corrupt(x, "gaussian", 2.0, 0.0, 1.0)
    assert clipped.min() == 0 and clipped.max() == 1


def test_salt_pepper_and_mask_hit_the_requested_share():
    torch.manual_seed(0)
    x = torch.full((64, 1, 28, 28), 0.5)
    sp = corrupt(x, "salt_pepper", 0.3, 0.0, 1.0)
    assert ((sp == 0) | (sp == 1)).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert (sp == 1).float().mean().item() == pytest.approx(0.15, abs=0.01)
    masked = corrupt(x, "mask", 0.25, -1.0, 1.0)
    assert (masked == -1).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert set(masked.unique().tolist()) == {-1.0, 0.5}


def test_noise_corrupts_inputs_but_not_targets(digits, monkeypatch):
    X, _ = digits
    from skconvae import _net

    seen = []
    original = _net.corrupt

    def spy(x, *args, **kwargs):
        out = original(x, *args, **kwargs)
        seen.append((x.clone(), out.clone(), args, kwargs))
        return out

    monkeypatch.setattr(_net, "corrupt", spy)
    ae = ConvAutoencoderTransformer(**FAST, noise="salt_pepper", noise_level=0.4).fit(X)
    # Once per training batch: 2 epochs of ceil(1797 / 64) batches; never in inference.
    assert len(seen) == 2 * 29
    ae.transform(X)
    ae.score(X)
    assert len(seen) == 2 * 29
    clean, noisy, args, kwargs = seen[0]
    assert args == ("salt_pepper", 0.4, 0.0, 1.0)
    # Drawn from the fit's own generator, never torch's global one.
    assert isinstance(kwargs["generator"], torch.Generator)
    assert not torch.equal(clean, noisy)


def test_noisy_training_is_reproducible_and_inference_deterministic(digits):
    X, _ = digits
    params = {**FAST, "noise": "gaussian", "noise_level": 0.3}
    a = ConvAutoencoderTransformer(**params).fit(X)
    b = ConvAutoencoderTransformer(**params).fit(X)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    np.testing.assert_array_equal(a.transform(X), a.transform(X))


def test_denoising_autoencoder_cleans_held_out_digits(mnist):
    images, _ = mnist
    clean = images[9000:9400] / 255.0
    noisy = np.clip(clean + 0.3 * np.random.default_rng(1).standard_normal(clean.shape), 0, 1)
    ae = ConvAutoencoderTransformer(
        filters=(16, 16), noise="gaussian", noise_level=0.3, **TRAIN
    ).fit(images[:2000])
    cleaned = ae.reconstruct(noisy * 255) / 255
    assert cleaned.shape == clean.shape
    assert np.mean((cleaned - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)


@pytest.mark.parametrize("params, match", [
    ({"noise": "mask", "noise_level": 1.5}, r"noise_level of the values.*\[0, 1\]"),
    ({"variational": True, "latent_dim": None}, "variational=True needs a dense bottleneck"),
])  # fmt: skip
def test_generative_parameter_errors(digits, params, match):
    with pytest.raises(ValueError, match=match):
        ConvAutoencoderTransformer(**FAST, **params).fit(digits[0])


# -- reconstruct and score_samples -----------------------------------------------------------


def test_reconstruct_is_inverse_transform_of_transform(dense_model, mnist):
    images, _ = mnist
    X = images[9000:9050]
    recon = dense_model.reconstruct(X)
    assert recon.shape == X.shape and recon.dtype == np.float32
    np.testing.assert_allclose(
        recon, dense_model.inverse_transform(dense_model.transform(X)), rtol=1e-4, atol=1e-3
    )


def test_score_samples_is_negative_per_sample_error(dense_model, mnist):
    images, _ = mnist
    X = images[9000:9050]
    scores = dense_model.score_samples(X)
    assert scores.shape == (50,)
    expected = -np.mean((dense_model.reconstruct(X) - X.astype(np.float64)) ** 2, axis=(1, 2))
    np.testing.assert_allclose(scores, expected, rtol=1e-4)
    assert np.mean(scores) == pytest.approx(dense_model.score(X), rel=1e-6)


def test_score_samples_flags_images_unlike_the_training_set(dense_model, mnist):
    images, _ = mnist
    digits = images[9000:9200]
    # The same digits turned upside down and inverted are far from anything seen.
    strange = 255 - digits[:, ::-1]
    assert np.median(dense_model.score_samples(digits)) > np.max(dense_model.score_samples(strange))


# -- generation ------------------------------------------------------------------------------


def test_code_density_is_fitted_with_one_blas_thread(digits, monkeypatch):
    """Beside torch's idle threads, two BLAS threads made the mixture 3-4x slower."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_info

    seen = []
    original = GaussianMixture.fit

    def fit(self, X, y=None):
        seen.append(
            {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
        )
        return original(self, X, y)

    monkeypatch.setattr(GaussianMixture, "fit", fit)
    ae = ConvAutoencoderTransformer(**FAST, latent_dim=4).fit(digits[0])
    assert seen == [{1}] and ae.code_density_.n_components == 10


def test_sample_from_code_density(dense_model):
    assert dense_model.code_density_.means_.shape == (10, 8)
    samples = dense_model.sample(12, random_state=0)
    assert samples.shape == (12, 28, 28) and samples.dtype == np.float32
    assert 0 <= samples.min() and samples.max() <= 255 and samples.max() > 100
    np.testing.assert_array_equal(samples, dense_model.sample(12, random_state=0))
    assert not np.array_equal(samples, dense_model.sample(12, random_state=1))


def test_sample_from_variational_prior(vae, mnist):
    images, _ = mnist
    assert vae.code_density_ is None
    samples = vae.sample(5, random_state=0)
    assert samples.shape == (5, 28, 28)
    np.testing.assert_array_equal(samples, vae.sample(5, random_state=0))
    # transform returns the posterior mean: deterministic.
    np.testing.assert_array_equal(vae.transform(images[:5]), vae.transform(images[:5]))
    # The KL term pulls training codes towards the N(0, I) prior.
    codes = vae.transform(images[:1500])
    assert np.abs(codes.mean(axis=0)).max() < 1.0
    assert codes.std(axis=0).max() < 3.0


def test_sample_needs_a_dense_latent(digits):
    ae = ConvAutoencoderTransformer(**FAST, latent_dim=None).fit(digits[0])
    with pytest.raises(ValueError, match="refit with latent_dim set"):
        ae.sample(3)


def test_fit_on_one_image_transforms_and_sample_says_why(digits):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST, latent_dim=4).fit(X[:1])
    assert ae.code_density_ is None
    np.testing.assert_allclose(ae.transform(X[:1]), 0, atol=1e-5)  # the one code, centred
    assert ae.transform(X[1:4]).shape == (3, 4)
    with pytest.raises(ValueError, match="needs two images at least; this model was fitted"):
        ae.sample(2)


@pytest.mark.parametrize("n_samples", [0, -2, 1.5, "3"])
def test_sample_rejects_bad_counts(dense_model, n_samples):
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        dense_model.sample(n_samples)


def test_sample_returns_the_training_layout(digits):
    X, _ = digits
    ae = ConvAutoencoderTransformer(**FAST, latent_dim=4).fit(X)
    assert ae.sample(3, random_state=0).shape == (3, 64)
