"""Inference runs the trained network rewritten: batch norm folded, ReLU after max pooling,
2x2 max pooling as pairwise maxima, and nearest upsampling with the convolution after it
as one sub-pixel convolution."""

import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from skconvae import ConvAutoencoderTransformer
from skconvae._inference_network import InferenceNetwork, PairwiseMaxPool2d, SubPixelConv

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
    folded = ae.net_._inference_network(trained)
    assert len(_norms(trained)) == 3 and _norms(folded) == []
    # Only the folded pairs, the moved ReLU, the pooling and the upsampling are new:
    # every other layer is the trained one.
    assert folded.to_latent is trained.to_latent
    assert isinstance(folded.encoder[1], nn.Identity)
    assert isinstance(folded.encoder[2], PairwiseMaxPool2d)  # now before the ReLU
    assert folded.encoder[3].inplace and not trained.encoder[2].inplace
    assert folded.encoder[6] is trained.encoder[6]  # the last ReLU: no pooling after it
    np.testing.assert_allclose(codes, _unfolded_codes(ae, images[:300]), rtol=1e-5, atol=1e-5)
    # The trained module keeps its own layers and memory format.
    assert isinstance(trained.encoder[1], nn.BatchNorm2d)
    assert folded.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_the_folded_network_follows_every_change_of_the_weights(fitted, mnist):
    images, _ = mnist
    ae = pickle.loads(pickle.dumps(fitted))
    first = ae.transform(images[:200])
    folded = ae.net_._inference_network(ae.net_.module_)
    ae.partial_fit(images[600:900])  # optimizer steps and new running statistics
    after_steps = ae.transform(images[:200])
    assert not np.allclose(after_steps, first, atol=1e-3)
    np.testing.assert_allclose(after_steps, _unfolded_codes(ae, images[:200]), rtol=1e-5, atol=1e-5)
    # The same folded object, refreshed in place (a compiled copy of it stays valid).
    assert ae.net_._inference_network(ae.net_.module_) is folded
    # Weights loaded in place, and a running statistic changed by hand.
    ae.net_.module_.load_state_dict(fitted.net_.module_.state_dict())
    np.testing.assert_allclose(ae.transform(images[:200]), first, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        ae.net_.module_.encoder[1].running_var.mul_(4.0)
    np.testing.assert_allclose(
        ae.transform(images[:200]), _unfolded_codes(ae, images[:200]), rtol=1e-5, atol=1e-5
    )


def test_inference_under_a_callers_inference_mode_leaves_later_refreshes_working(fitted, mnist):
    images, _ = mnist
    ae = pickle.loads(pickle.dumps(fitted))
    with torch.inference_mode():
        ae.transform(images[:100])
    ae.partial_fit(images[600:700])
    np.testing.assert_allclose(
        ae.transform(images[:100]), _unfolded_codes(ae, images[:100]), rtol=1e-5, atol=1e-5
    )


def test_only_fixed_batch_norms_right_after_a_convolution_fold():
    folding = InferenceNetwork()
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


def test_the_classic_network_rectifies_after_pooling_with_bit_identical_codes(mnist):
    images, _ = mnist
    ae = ConvAutoencoderTransformer(architecture="classic", max_epochs=1, random_state=0)
    ae.fit(images[:500])
    trained = ae.net_.module_
    fast = ae.net_._inference_network(trained)
    assert _norms(trained) == []
    layers = [type(layer).__name__ for layer in fast.encoder]
    assert layers == ["Conv2d", "PairwiseMaxPool2d", "ReLU", "Conv2d", "ReLU"]
    assert [type(layer).__name__ for layer in trained.encoder][1:3] == ["ReLU", "MaxPool2d"]
    # max(relu(a), relu(b)) == relu(max(a, b)) exactly, and pairwise maxima are the
    # pooling's maxima: not merely close.
    np.testing.assert_array_equal(ae.transform(images[:300]), _unfolded_codes(ae, images[:300]))
    # The decoder's upsampling and last convolution run as one sub-pixel convolution,
    # whose taps are summed into fewer weights: equal up to float rounding.
    layers = [type(layer).__name__ for layer in fast.decoder]
    assert layers == ["Conv2d", "ReLU", "Identity", "SubPixelConv"]
    assert fast.decoder[3].conv.weight.shape == (4, 8, 3, 3)  # 2x2 phases of one channel
    np.testing.assert_allclose(
        ae.score_samples(images[:300]), _unrewritten_scores(ae, images[:300]), rtol=1e-6
    )


def _unrewritten_scores(ae, images):
    module = ae.net_.module_.eval()
    with torch.inference_mode():
        x = torch.from_numpy(images[:, None]).float()
        recon = module.denormalize(module(module.normalize(x)).float())
        return -(recon - x).double().square().flatten(1).mean(1).numpy()


@pytest.mark.parametrize("shape", [(4, 3, 8, 10), (4, 3, 7, 9), (3, 5, 5), (2, 1, 28, 28)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_two_by_two_max_pooling_runs_as_pairwise_maxima_bit_for_bit(shape, channels_last):
    network = nn.Sequential(nn.Conv2d(shape[-3], 3, 1), nn.MaxPool2d(2)).eval()
    fast = InferenceNetwork()(network)
    assert isinstance(fast[1], PairwiseMaxPool2d) and fast[0] is network[0]
    x = torch.randn(shape)
    x.view(-1)[::7] = float("nan")  # NaN wins a pooling window, as in torch's kernel
    if channels_last and x.dim() == 4:
        network.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = fast(x)
    torch.testing.assert_close(y, network(x), rtol=0, atol=0, equal_nan=True)
    # The layout the convolution wrote (channels-last for the next convolution), kept.
    layout = torch.channels_last if x.dim() == 4 else torch.contiguous_format
    convolved = network[0](x).is_contiguous(memory_format=layout)
    assert y.is_contiguous(memory_format=layout) == convolved


@pytest.mark.parametrize(
    "pool",
    [
        nn.MaxPool2d(3),
        nn.MaxPool2d(2, stride=1),
        nn.MaxPool2d(2, padding=1),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.MaxPool2d(2, dilation=2),
        nn.MaxPool2d(2, return_indices=True),
        nn.MaxPool1d(2),
        nn.AvgPool2d(2),
    ],
    ids=["3x3", "stride-1", "padded", "ceil", "dilated", "indices", "1-d", "average"],
)
def test_only_plain_two_by_two_max_pooling_runs_pairwise(pool):
    network = nn.Sequential(pool)
    assert InferenceNetwork()(network) is network


def test_relu_and_max_pooling_swap_only_when_plain():
    network = InferenceNetwork()
    indices = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2, return_indices=True))
    assert network(indices) is indices
    leaky = nn.Sequential(nn.LeakyReLU(), nn.MaxPool2d(2))  # also monotone, but not swapped
    assert network(leaky)[0] is leaky[0]  # (the pooling runs pairwise)
    average = nn.Sequential(nn.ReLU(), nn.AvgPool2d(2))  # not exact: the mean of rectified values
    assert network(average) is average
    signal = nn.Sequential(nn.ReLU(), nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True))
    fast = network(signal)
    assert isinstance(fast[0], nn.MaxPool1d) and fast[1].inplace
    x = torch.randn(4, 3, 17)
    x[0, 0, :3] = float("nan")
    torch.testing.assert_close(fast(x), signal(x), rtol=0, atol=0, equal_nan=True)


def _unrewritten_decoded(ae, codes):
    module = ae.net_.module_.eval()
    with torch.inference_mode():
        decoded = module.denormalize(module.decode(torch.from_numpy(codes)))
        return decoded[:, 0].numpy()


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("kernel_size", [(3, 3), (5, 3), (1, 1), (7, 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsampling_then_a_convolution_runs_as_a_sub_pixel_convolution(
    scale, kernel_size, channels_last
):
    network = nn.Sequential(
        nn.Upsample(scale_factor=scale), nn.Conv2d(3, 2, kernel_size, padding="same")
    ).eval()
    x = torch.randn(4, 3, 5, 7)  # odd sides: the zero padding must agree at every edge
    if channels_last:
        network.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    draws = torch.get_rng_state()
    fast = InferenceNetwork()(network)
    assert torch.equal(torch.get_rng_state(), draws)  # weights computed, not drawn
    assert isinstance(fast[0], nn.Identity) and isinstance(fast[1], SubPixelConv)
    assert fast[1].conv.out_channels == 2 * scale**2
    y = fast(x)
    assert y.shape == (4, 2, 5 * scale, 7 * scale)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(y, network(x), rtol=1e-5, atol=1e-5)


def test_the_sub_pixel_convolution_follows_the_trained_one_to_another_dtype():
    network = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(3, 2, 3, padding=1)).eval()
    rewriting = InferenceNetwork()
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(rewriting(network)(x), network(x), rtol=1e-5, atol=1e-5)
    fast = rewriting(network.double())  # new storage: the sub-pixel weights follow
    assert fast[1].conv.weight.dtype == torch.float64
    torch.testing.assert_close(fast(x.double()), network(x.double()))


def test_one_dimensional_upsampling_runs_as_a_sub_pixel_convolution():
    signal = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv1d(3, 2, 5, padding=2)).eval()
    fast = InferenceNetwork()(signal)
    assert isinstance(fast[1], SubPixelConv)
    x = torch.randn(4, 3, 9)
    torch.testing.assert_close(fast(x), signal(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "network",
    [
        nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(2, 2, 3, padding=1)),
        nn.Sequential(nn.Upsample(size=(8, 8)), nn.Conv2d(2, 2, 3, padding=1)),
        nn.Sequential(nn.Upsample(scale_factor=1.5), nn.Conv2d(2, 2, 3, padding=1)),
        nn.Sequential(nn.Upsample(scale_factor=(2, 1)), nn.Conv2d(2, 2, 3, padding=1)),
        nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, padding=0)),
        nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 2, padding="same")),
        nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, stride=2, padding=1)),
        nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, padding=1, groups=2)),
        nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, padding=2, dilation=2)),
        nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")
        ),
        nn.Sequential(nn.Upsample(scale_factor=2), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1)),
    ],
    ids=[
        "bilinear",
        "size",
        "fractional",
        "uneven",
        "valid",
        "even-kernel",
        "strided",
        "grouped",
        "dilated",
        "reflect",
        "apart",
    ],
)
def test_only_nearest_integer_upsampling_before_a_plain_same_convolution_is_rewritten(network):
    network.eval()
    assert InferenceNetwork()(network) is network
    network[-1].train()  # in training mode nothing is rewritten either
    assert InferenceNetwork()(network) is network


def test_the_sub_pixel_convolutions_follow_every_change_of_the_weights(mnist):
    """Three blocks with batch norm: the second decoder block's sub-pixel convolution
    comes from a folded one, the last from a trained one."""
    images, _ = mnist
    ae = ConvAutoencoderTransformer(**{**FAST, "filters": (4, 4, 2)}, latent_dim=8)
    ae.fit(images[:600])
    trained = ae.net_.module_
    fast = ae.net_._inference_network(trained)
    subpixels = [m for m in fast.decoder if isinstance(m, SubPixelConv)]
    assert len(subpixels) == 2 and _norms(fast) == []
    codes = ae.transform(images[:200])
    decoded = ae.inverse_transform(codes)
    np.testing.assert_allclose(decoded, _unrewritten_decoded(ae, codes), rtol=1e-4, atol=1e-3)
    ae.partial_fit(images[600:900])
    moved = ae.inverse_transform(codes)
    assert not np.allclose(moved, decoded, atol=1e-2)
    np.testing.assert_allclose(moved, _unrewritten_decoded(ae, codes), rtol=1e-4, atol=1e-3)
    assert ae.net_._inference_network(ae.net_.module_) is fast  # refreshed in place
    with torch.no_grad():
        ae.net_.module_.decoder[-1].weight.mul_(0.5)  # the last, unfolded convolution
        ae.net_.module_.decoder[5].running_var.mul_(4.0)  # the folded one's batch norm
    np.testing.assert_allclose(
        ae.inverse_transform(codes), _unrewritten_decoded(ae, codes), rtol=1e-4, atol=1e-3
    )


@pytest.mark.parametrize(("device", "expected"), [("cpu", "sub-pixel"), ("meta", "trained")])
def test_off_the_cpu_the_trained_layers_run_where_the_rewrites_were_not_measured(device, expected):
    """The pairwise pooling and the sub-pixel convolution were measured on the CPU
    only: on another device (here the meta device, which computes shapes) the
    pooling kernel and the trained convolution on the upsampled input run."""
    network = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.MaxPool2d(2),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(4, 1, 3, padding=1),
    ).eval()
    fast = InferenceNetwork()(network.to(device))
    assert isinstance(fast[1], PairwiseMaxPool2d) and isinstance(fast[3], SubPixelConv)
    used = []
    fast[3].conv.register_forward_hook(lambda *_: used.append("sub-pixel"))
    fast[3].source.register_forward_hook(lambda *_: used.append("trained"))
    assert fast(torch.zeros(2, 1, 8, 8, device=device)).shape == (2, 1, 8, 8)
    assert used == [expected]
