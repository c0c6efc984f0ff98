"""Inference runs the network with each batch norm folded into the convolution before it."""

import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from skconvae import ConvAutoencoderTransformer
from skconvae._folding import BatchNormFolding

from .conftest import FAST


def _norms(module):
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


def _unfolded_codes(ae, images):
    """Codes computed by the trained module itself, batch norms and all."""
    module = ae.net_.module_.eval()
    with torch.inference_mode():
        x = torch.from_numpy(images[:, None]).float()
        return module.encode(module.normalize(x)).numpy()


@pytest.fixture(scope="module")
def fitted(mnist):
    images, _ = mnist
    return ConvAutoencoderTransformer(**FAST, latent_dim=8).fit(images[:600])


def test_inference_runs_the_folded_network_and_gives_the_trained_ones_codes(fitted, mnist):
    images, _ = mnist
    ae = pickle.loads(pickle.dumps(fitted))
    codes = ae.transform(images[:300])
    trained = ae.net_.module_
    folded = ae.net_._folding(trained)
    assert len(_norms(trained)) == 3 and _norms(folded) == []
    # Only the folded pairs are new: every other layer is the trained one.
    assert folded.to_latent is trained.to_latent
    assert folded.encoder[2] is trained.encoder[2]  # the ReLU after the first pair
    assert isinstance(folded.encoder[1], nn.Identity)
    np.testing.assert_allclose(codes, _unfolded_codes(ae, images[:300]), rtol=1e-5, atol=1e-5)
    # The trained module keeps its own layers and memory format.
    assert isinstance(trained.encoder[1], nn.BatchNorm2d)
    assert folded.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_the_folded_network_follows_every_change_of_the_weights(fitted, mnist):
    images, _ = mnist
    ae = pickle.loads(pickle.dumps(fitted))
    first = ae.transform(images[:200])
    folded = ae.net_._folding(ae.net_.module_)
    ae.partial_fit(images[600:900])  # optimizer steps and new running statistics
    after_steps = ae.transform(images[:200])
    assert not np.allclose(after_steps, first, atol=1e-3)
    np.testing.assert_allclose(after_steps, _unfolded_codes(ae, images[:200]), rtol=1e-5, atol=1e-5)
    # The same folded object, refreshed in place (a compiled copy of it stays valid).
    assert ae.net_._folding(ae.net_.module_) is folded
    # Weights loaded in place, and a running statistic changed by hand.
    ae.net_.module_.load_state_dict(fitted.net_.module_.state_dict())
    np.testing.assert_allclose(ae.transform(images[:200]), first, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        ae.net_.module_.encoder[1].running_var.mul_(4.0)
    np.testing.assert_allclose(
        ae.transform(images[:200]), _unfolded_codes(ae, images[:200]), rtol=1e-5, atol=1e-5
    )


def test_folding_under_a_callers_inference_mode_leaves_later_refreshes_working(fitted, mnist):
    images, _ = mnist
    ae = pickle.loads(pickle.dumps(fitted))
    with torch.inference_mode():
        ae.transform(images[:100])
    ae.partial_fit(images[600:700])
    np.testing.assert_allclose(
        ae.transform(images[:100]), _unfolded_codes(ae, images[:100]), rtol=1e-5, atol=1e-5
    )


def test_only_fixed_batch_norms_right_after_a_convolution_fold():
    folding = BatchNormFolding()
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    assert folding(plain) is plain  # nothing to fold: the module itself runs
    training = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))  # normalises by the batch
    assert folding(training) is training
    unbound = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    assert folding(unbound.eval()) is unbound.eval()
    apart = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    assert folding(apart) is apart
    signal = nn.Sequential(nn.Conv1d(2, 3, 5, padding="same"), nn.BatchNorm1d(3)).eval()
    with torch.no_grad():
        signal[1].running_mean.uniform_(-1, 1)
        signal[1].running_var.uniform_(0.5, 2)
    folded = folding(signal)
    assert isinstance(folded[1], nn.Identity)
    x = torch.randn(4, 2, 16)
    torch.testing.assert_close(folded(x), signal(x), rtol=1e-5, atol=1e-5)
