"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node=2``.

Every process fits the same models and writes what it ended with to
``<out>/rank<RANK>.pkl`` for the test to compare across processes.
"""

import functools
import os
import pickle
import sys
import threading
from unittest import mock

import torch
from sklearn.datasets import load_digits
from sklearn.mixture import GaussianMixture
from skorch.callbacks import Callback
from torch.nn.parallel import DistributedDataParallel

from skconvae import ConvAutoencoderRegressor, ConvAutoencoderTransformer, _distributed, save
from skconvae._exceptions import NonFiniteLossError
from skconvae._net import AutoencoderNet


class HoldsALock(ValueError):
    """An error that cannot be pickled: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


class CountSamples(Callback):
    """What this process trained on: samples per epoch and steps."""

    def initialize(self):
        self.samples, self.steps = [], []
        return self

    def on_epoch_begin(self, net, **kwargs):
        self.samples.append(0)
        self.steps.append(0)

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training:
            self.samples[-1] += getattr(batch, "n_local", len(batch[0]))
            self.steps[-1] += 1


class SpoilThirdEpoch(Callback):
    """Zero the weights as epoch 3 begins: its validation loss gets worse, so early
    stopping ends the fit and loads epoch 2's weights, batch norm's statistics included."""

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == 3:
            with torch.no_grad():
                for parameter in net.module_.parameters():
                    parameter.zero_()


def counting_buckets(hook, counts):
    """DataParallel's communication hook, counting the buckets it averages."""

    def average(parallel, bucket):
        counts["buckets"] += 1
        counts["steps"] += bucket.is_last()
        return hook(parallel, bucket)

    return average


def weights(estimator):
    return {k: v.detach().cpu().numpy() for k, v in estimator.net_.module_.state_dict().items()}


def main(out):
    rank = int(os.environ["RANK"])
    X, _ = load_digits(return_X_y=True)
    X = X[:1001]  # 900 training samples after the split: an uneven last batch
    result = {"rank": rank, "threads": torch.get_num_threads()}

    ae = ConvAutoencoderTransformer(
        filters=(4, 2),
        latent_dim=4,
        max_epochs=4,
        batch_size=63,
        early_stopping=True,
        n_iter_no_change=1,
        warp="affine",  # each process warps its part of a batch with warps of its own
        random_state=None,  # each process draws its own seed: fit must agree on one
        verbose=1,
        callbacks=[("count", CountSamples())],
    )
    ae.fit(X)
    counter = dict(ae.net_.callbacks_)["count"]
    result["transformer"] = {
        "weights": weights(ae),
        "history": ae.net_.history.to_list(),
        "density_means": ae.code_density_.means_,
        "data_max": ae.data_max_,
        "samples": counter.samples,
        "steps": counter.steps,
        "parallel_left": ae.net_._parallel,
        "transform": ae.transform(X[:5]),
        "device": ae.device_,
    }

    stopped = ConvAutoencoderTransformer(
        filters=(4, 2),
        latent_dim=4,
        max_epochs=6,
        batch_size=63,
        early_stopping=True,
        n_iter_no_change=1,
        random_state=0,
        callbacks=[("spoil", SpoilThirdEpoch())],
    ).fit(X)
    result["stopped"] = {"weights": weights(stopped), "epochs": len(stopped.net_.history)}

    # The same fit with DDP's gradients in buckets of 1 kB (a few hundred gradients
    # each) instead of one: each bucket is averaged as the one was, bit for bit.
    bucketed = {}
    for name, cap in (("one", None), ("several", 0.001)):
        counts = {"buckets": 0, "steps": 0}
        counter = counting_buckets(_distributed.DataParallel._average, counts)
        with (
            mock.patch.object(_distributed.DataParallel, "_average", counter),
            mock.patch.object(
                _distributed,
                "DistributedDataParallel",
                functools.partial(DistributedDataParallel, bucket_cap_mb=cap),
            ),
        ):
            fitted = ConvAutoencoderTransformer(
                filters=(4, 8), latent_dim=8, max_epochs=2, batch_size=63, random_state=0
            ).fit(X)
        bucketed[name] = {
            "weights": weights(fitted),
            "losses": fitted.net_.history[:, "train_loss"],
            "buckets_per_step": counts["buckets"] / counts["steps"],
        }
    result["buckets"] = bucketed

    # On CUDA two processes' encodings of the training images may round differently
    # (batch sizes measured per process). Here the second process's codes are shifted
    # on purpose: the code statistics must still be the first process's.
    encode = AutoencoderNet.encode

    def shifted(net, *args, **kwargs):
        return encode(net, *args, **kwargs) + 1e-3 * rank

    def small_fit():
        return ConvAutoencoderTransformer(
            filters=(4, 2), latent_dim=4, max_epochs=1, batch_size=63, random_state=0
        ).fit(X)

    # The code density's mixture is fitted by the first process alone.
    with (
        mock.patch.object(AutoencoderNet, "encode", shifted),
        mock.patch.object(
            GaussianMixture, "fit", autospec=True, side_effect=GaussianMixture.fit
        ) as mixture_fits,
    ):
        encoded_apart = small_fit()
    result["encoded_apart"] = {
        "weights": weights(encoded_apart),
        "density_means": encoded_apart.code_density_.means_,
        "mixture_fits": mixture_fits.call_count,
    }

    # A mixture that fails on the first process fails the fit on every process, even
    # where its error cannot be pickled to be sent to the others (then by name).
    failures = {
        "mixture_error": (ValueError("mixture failed"), ValueError),
        "unpicklable_error": (HoldsALock("mixture failed"), RuntimeError),
    }
    for key, (error, raised) in failures.items():
        with mock.patch.object(GaussianMixture, "fit", side_effect=error):
            try:
                small_fit()
            except raised as exc:
                result[key] = str(exc)

    images = X.reshape(-1, 8, 8)[:200]
    regressor = ConvAutoencoderRegressor(
        filters=(4,), max_epochs=2, batch_size=32, random_state=1
    ).fit(images, images[:, ::-1])
    result["regressor"] = {
        "weights": weights(regressor),
        "pickle": pickle.dumps(regressor),
        "train_loss": regressor.net_.history[:, "train_loss"],
    }
    if rank == 0:
        ae.set_params(callbacks=None)
        save(ae, os.path.join(out, "transformer.safetensors"))

    solo = ConvAutoencoderTransformer(filters=(4, 2), max_epochs=1, distributed=False)
    result["solo_weights"] = weights(solo.fit(X[: 100 + 50 * rank]))

    try:
        ConvAutoencoderTransformer(
            architecture="classic", scaling=None, lr=1e4, max_epochs=3, random_state=0
        ).fit(X * 1e6)
    except NonFiniteLossError as exc:
        result["diverged"] = str(exc)

    try:
        ConvAutoencoderTransformer(max_epochs=1, random_state=0).fit(X[: 500 + rank])
    except ValueError as exc:
        result["mismatch"] = str(exc)

    with open(os.path.join(out, f"rank{rank}.pkl"), "wb") as file:
        pickle.dump(result, file)


if __name__ == "__main__":
    main(sys.argv[1])
