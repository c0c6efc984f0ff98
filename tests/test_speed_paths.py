"""The fast paths: batch-level data, compact dtypes, batched inference, precision, compile."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_images

from skconvae import ConvAutoencoderTransformer
from skconvae import _net as net_module
from skconvae._data import BatchIterator, ImageBatches, as_compact_tensor

from .conftest import FAST


@pytest.mark.parametrize(
    "dtype, expected",
    [(np.uint8, torch.uint8), (np.float16, torch.float16), (np.float64, torch.float32),
     (np.int64, torch.float32)],
)  # fmt: skip
def test_training_data_keeps_its_compact_dtype(mnist, dtype, expected):
    images, _ = mnist
    assert as_compact_tensor(images[:10, None].astype(dtype)).dtype == expected


def test_batch_iterator_slices_a_fresh_permutation_each_epoch(mnist):
    images, _ = mnist
    data = ImageBatches(torch.from_numpy(images[:300, None]))
    iterator = BatchIterator(data, 128, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(iterator) == 3
    epochs = [list(iterator) for _ in range(2)]
    for batches in epochs:
        assert [len(x) for x, _ in batches] == [128, 128, 44]
        assert all(x.dtype == torch.uint8 and y is None for x, y in batches)
        seen = torch.cat([x for x, _ in batches]).flatten(1).sum(1).sort().values
        assert torch.equal(seen, data.X.flatten(1).sum(1).sort().values)
    assert not torch.equal(epochs[0][0][0], epochs[1][0][0])


def test_inference_runs_in_bounded_batches(mnist, monkeypatch):
    images, _ = mnist
    ae = ConvAutoencoderTransformer(**FAST).fit(images[:500])
    monkeypatch.setattr(net_module, "INFERENCE_BATCH_SIZE", 96)
    seen = []
    original = net_module.as_compact_tensor

    def spy(batch):
        seen.append(len(batch))
        return original(batch)

    monkeypatch.setattr(net_module, "as_compact_tensor", spy)
    codes = ae.transform(images[:1000])
    assert max(seen) == 96 and sum(seen) == 1000
    seen.clear()
    score = ae.score(images[:1000])
    assert max(seen) == 96 and sum(seen) == 1000
    monkeypatch.undo()
    # Batching does not change the result.
    np.testing.assert_allclose(codes, ae.transform(images[:1000]), rtol=1e-5, atol=1e-6)
    assert score == pytest.approx(ae.score(images[:1000]), rel=1e-6)


def test_channels_last_training_on_cpu():
    """Every 2-D convolution of a 3-channel model keeps its weights channels_last.

    Mutation checked: dropping ``module_.to(memory_format=torch.channels_last)`` in
    ``AutoencoderNet.initialize_module`` fails (a grey model's first weight, with
    its size-1 input dimension, passed either way).
    """
    china = load_sample_images().images[0]
    patches = np.stack([china[r : r + 12, 100:112] for r in range(0, 12 * 32, 12)])
    ae = ConvAutoencoderTransformer(**FAST, channels="last").fit(patches)
    convs = [m for m in ae.net_.module_.modules() if isinstance(m, torch.nn.Conv2d)]
    assert ae.image_shape_ == (3, 12, 12) and convs[0].in_channels == 3
    for conv in convs:
        assert conv.weight.shape[1] > 1 and conv.weight.shape[2] > 1
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert not conv.weight.is_contiguous()


def test_bfloat16_precision_runs_in_bfloat16_and_trains_close_to_float32(mnist):
    """bf16 is really used: the same weights give different (close) codes under it, and
    its training differs from float32's; its quality stays close.

    Mutation checked: ``_PRECISIONS["bfloat16"] = None`` (precision ignored) makes
    the codes and the trained weights bit-identical to float32's and fails.
    """
    images, _ = mnist
    params = {"max_epochs": 2, "batch_size": 32, "lr": 3e-3, "random_state": 0}
    fp32 = ConvAutoencoderTransformer(**params).fit(images[:1000])
    bf16 = ConvAutoencoderTransformer(**params, precision="bfloat16").fit(images[:1000])
    assert bf16.transform(images[:5]).dtype == np.float32
    codes32 = fp32.transform(images[:200])
    fp32.net_.precision = "bfloat16"  # the same weights, run under bf16 autocast
    codes16 = fp32.transform(images[:200])
    fp32.net_.precision = "float32"
    assert not np.array_equal(codes16, codes32)
    # bf16 keeps 8 bits of mantissa: relative errors of order 2**-8, not 1e-7.
    error = np.abs(codes16 - codes32).max() / np.abs(codes32).max()
    assert 1e-5 < error < 0.05
    weight32, weight16 = fp32.net_.module_.encoder[0].weight, bf16.net_.module_.encoder[0].weight
    assert weight16.dtype == torch.float32 and not torch.equal(weight16, weight32)
    mse32, mse16 = -fp32.score(images[9000:]), -bf16.score(images[9000:])
    assert abs(mse16 - mse32) < 0.15 * mse32


@pytest.mark.slow
def test_compile_gives_the_eager_result(digits):
    X, _ = digits
    eager = ConvAutoencoderTransformer(**FAST).fit(X)
    compiled = ConvAutoencoderTransformer(**FAST, compile=True).fit(X)
    np.testing.assert_allclose(compiled.transform(X), eager.transform(X), rtol=1e-4, atol=1e-5)


def test_memmapped_input_pages_are_released_during_inference(tmp_path, mnist, monkeypatch):
    from skconvae import _data
    from skconvae import _net as net

    images, _ = mnist
    path = tmp_path / "images.npy"
    np.save(path, images[:3000])
    mm = np.load(path, mmap_mode="r")
    ae = ConvAutoencoderTransformer(**FAST).fit(images[:300])
    drops = []

    class CountingPages(_data.MappedPages):
        def __init__(self, array):
            super().__init__(array, every_bytes=1)
            drops.append(self.mapping is not None)

        def consumed(self, nbytes):
            super().consumed(nbytes)
            drops.append(nbytes)

    monkeypatch.setattr(net, "MappedPages", CountingPages)
    codes = ae.transform(mm)
    # The memmap is found behind the validated view; every batch's bytes are released.
    assert drops[0] is True
    assert sum(drops[1:]) == mm.nbytes
    np.testing.assert_array_equal(codes, ae.transform(images[:3000]))
    assert _data.MappedPages(images).mapping is None


def test_train_and_eval_modes_switch_only_when_they_change(mnist, monkeypatch):
    """The mode is set once per switch, not walked over every submodule per batch,
    and every batch still runs in the right mode, dropout and batch norm included."""
    from skorch import NeuralNet
    from skorch.callbacks import Callback

    images, _ = mnist
    walks, modes = [], []
    original = NeuralNet._set_training

    def counting(net, training=True):
        walks.append(training)
        return original(net, training)

    class Modes(Callback):
        def on_batch_end(self, net, training=False, **kwargs):
            submodules = [m.training for m in net.module_.modules()]
            modes.append((training, set(submodules)))

    monkeypatch.setattr(NeuralNet, "_set_training", counting)
    params = {**FAST, "max_epochs": 2, "batch_size": 50}
    params.update(early_stopping=True, validation_fraction=0.2)
    ae = ConvAutoencoderTransformer(**params, callbacks=[Modes()]).fit(images[:500])
    # 8 training and 2 validation batches per epoch. A new module starts in training
    # mode: the switches are to eval for validation, back to training, to eval again.
    assert [training for training, _ in modes] == ([True] * 8 + [False] * 2) * 2
    assert all(submodules == {training} for training, submodules in modes)
    assert walks == [False, True, False]
    assert not any(m.training for m in ae.net_.module_.modules())
