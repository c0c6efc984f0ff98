"""CUDA paths; every test here skips cleanly on a machine without a GPU."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from skconvae import ConvAutoencoderTransformer
from skconvae import _net as net_module
from skconvae._batch_size import CUDA_CANDIDATES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _copy_on_the_cpu(model):
    """A copy of a CUDA-fitted estimator whose net runs on the CPU."""
    copy = pickle.loads(pickle.dumps(model))
    copy.net_.set_params(device="cpu")
    copy.net_.module_.to("cpu")
    return copy


@pytest.fixture(scope="module")
def gpu_model(mnist):
    images, _ = mnist
    return ConvAutoencoderTransformer(latent_dim=16, max_epochs=2, random_state=0).fit(
        images[:2000]
    )


def test_auto_device_trains_on_cuda_with_data_resident(gpu_model, mnist):
    images, _ = mnist
    assert gpu_model.device_ == "cuda"
    assert next(gpu_model.net_.module_.parameters()).is_cuda
    codes = gpu_model.transform(images[:100])
    assert codes.shape == (100, 16) and codes.dtype == np.float32
    assert -gpu_model.score(images[9000:]) < np.var(images[9000:].astype(float))


def test_bfloat16_on_cuda(mnist):
    images, _ = mnist
    ae = ConvAutoencoderTransformer(max_epochs=2, precision="bfloat16", random_state=0)
    ae.fit(images[:2000])
    assert np.isfinite(ae.transform(images[:10])).all()


def test_cuda_and_cpu_agree(gpu_model, mnist, tmp_path):
    images, _ = mnist
    cpu_copy = _copy_on_the_cpu(gpu_model)
    np.testing.assert_allclose(
        cpu_copy.transform(images[:50]), gpu_model.transform(images[:50]), rtol=1e-3, atol=1e-3
    )


def test_the_rewritten_inference_network_runs_on_cuda_with_the_trained_modules_codes(
    gpu_model, mnist
):
    images, _ = mnist
    codes = gpu_model.transform(images[:200])
    module = gpu_model.net_.module_
    fast = gpu_model.net_._inference_network(module)
    assert fast is not module and all(p.is_cuda for p in fast.parameters())
    with torch.inference_mode():
        x = torch.from_numpy(images[:200, None]).float().cuda()
        x = x.contiguous(memory_format=torch.channels_last)
        expected = module.encode(module.normalize(x)).cpu().numpy()
    # cuDNN may pick other kernels (TF32 among them) for the folded convolutions.
    np.testing.assert_allclose(codes, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("size", [512, None], ids=["forced-512", "measured"])
def test_overlapped_batches_give_the_results_of_one_batch(gpu_model, mnist, size, monkeypatch):
    """Several batches, each result copied out while the next runs (``_transfer.py``),
    and the batch-size measurement's waiting batches, against one batch for all."""
    images, _ = mnist
    X = np.concatenate([images] * 4)  # 40,000: past the measurement's schedule
    ae = pickle.loads(pickle.dumps(gpu_model))
    monkeypatch.setattr(net_module, "INFERENCE_BATCH_SIZE", len(X))
    codes, errors = ae.transform(X), ae.score_samples(X)
    decoded = ae.inverse_transform(codes)
    monkeypatch.setattr(net_module, "INFERENCE_BATCH_SIZE", size)
    # To TF32 rounding, which differs between batch sizes (codes are O(1), images 0-255);
    # a result copied to the wrong rows would be off by far more.
    for _ in range(2):  # measured: the first call measures, the second overlaps
        np.testing.assert_allclose(ae.transform(X), codes, rtol=1e-3, atol=1e-2)
        np.testing.assert_allclose(ae.score_samples(X), errors, rtol=1e-2)
        np.testing.assert_allclose(ae.inverse_transform(codes), decoded, rtol=1e-3, atol=0.5)
    if size is None:
        chosen = {key[0][0]: c.chosen for key, c in ae.net_._batch_sizes.items()}
        assert set(chosen) == {"encode", "errors", "decode"}
        assert set(chosen.values()) <= set(CUDA_CANDIDATES)


def test_gpu_model_unpickles_and_transforms_without_cuda(gpu_model, mnist, tmp_path):
    images, _ = mnist
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(gpu_model))
    np.save(tmp_path / "x.npy", images[:20])
    np.save(tmp_path / "expected.npy", gpu_model.transform(images[:20]))
    script = f"""
import pickle, warnings, numpy as np, torch
assert not torch.cuda.is_available()
warnings.simplefilter("ignore")
ae = pickle.load(open({str(tmp_path / "model.pkl")!r}, "rb"))
codes = ae.transform(np.load({str(tmp_path / "x.npy")!r}))
np.testing.assert_allclose(codes, np.load({str(tmp_path / "expected.npy")!r}), rtol=1e-3, atol=1e-3)
print("ok", ae.net_.device)
"""
    env = {"CUDA_VISIBLE_DEVICES": ""}
    import os

    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok cpu"


# Small enough to learn in three epochs on 1000 digits.
REGRESSOR = {"filters": (16, 16), "max_epochs": 3, "batch_size": 32, "lr": 2e-3}


@pytest.mark.parametrize("upscale", [1, 2], ids=["denoise-coarse-grid", "upscale-2x"])
def test_regressor_restores_on_cuda_as_on_the_cpu(mnist, upscale):
    """The regressor's residual network on CUDA: a denoiser's half-resolution grid (pixel
    unshuffle; 27x27 digits, so odd sides are padded and cropped) and a 2x upscaler."""
    from skconvae import ConvAutoencoderRegressor

    images, _ = mnist
    if upscale == 1:
        clean = images[:1500, :27, :27].astype(np.float32) / 255
        noise = 0.4 * np.random.default_rng(0).standard_normal(clean.shape)
        X = np.clip(clean + noise, 0, 1).astype(np.float32)
        naive = X  # the input itself
    else:
        clean = images[:1500].astype(np.float32) / 255
        X = clean.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4))
        naive = X.repeat(2, axis=1).repeat(2, axis=2)  # nearest-neighbour upscaling
    model = ConvAutoencoderRegressor(**REGRESSOR, random_state=0).fit(X[:1000], clean[:1000])
    assert model.device_ == "cuda" and next(model.net_.module_.parameters()).is_cuda
    assert model.net_.module_.downscale == (2 if upscale == 1 else 1)
    restored = model.predict(X[1000:])
    assert restored.shape == clean[1000:].shape and restored.dtype == np.float32
    mse = np.mean((restored - clean[1000:]) ** 2)
    assert mse < np.mean((naive[1000:] - clean[1000:]) ** 2)
    on_the_cpu = _copy_on_the_cpu(model).predict(X[1000:1100])
    np.testing.assert_allclose(on_the_cpu, restored[:100], atol=2e-3)


def test_regressor_bfloat16_on_cuda(mnist):
    from skconvae import ConvAutoencoderRegressor

    images, _ = mnist
    clean = images[:1000].astype(np.float32) / 255
    noisy = np.clip(clean + 0.4 * np.random.default_rng(0).standard_normal(clean.shape), 0, 1)
    model = ConvAutoencoderRegressor(**REGRESSOR, precision="bfloat16", random_state=0)
    model.fit(noisy[:800].astype(np.float32), clean[:800])
    restored = model.predict(noisy[800:].astype(np.float32))
    assert restored.dtype == np.float32 and np.isfinite(restored).all()
    assert np.mean((restored - clean[800:]) ** 2) < np.mean((noisy[800:] - clean[800:]) ** 2)
