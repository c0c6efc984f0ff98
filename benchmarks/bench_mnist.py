"""MNIST benchmark: ConvAutoencoderTransformer vs PCA as a reconstruction and as SVC features.

Data: the 10k MNIST test set stored at ``../shared/data/mnist_test10k.npz`` (relative
to the project root): ``images`` (10000, 28, 28) uint8 and ``labels`` (10000,).
The first 8000 images train, the last 2000 are held out.

Measures, on the held-out images:

1. PCA(32) reconstruction MSE on the [0, 1] scale (the baseline).
2. ConvAutoencoderTransformer(latent_dim=32) reconstruction MSE on the [0, 1] scale,
   and its ratio to PCA(32).
3. SVC accuracy on raw pixels, on PCA(32) codes and on the autoencoder's codes
   (``ConvAE(32) -> StandardScaler -> SVC`` as one sklearn Pipeline).

Run from the project root::

    python benchmarks/bench_mnist.py                # full run (about 2-4 min on 2 CPU cores)
    python benchmarks/bench_mnist.py --quick        # smoke run (seconds)
    python benchmarks/bench_mnist.py --json results.json --threads 1

On a shared machine ``--threads 1`` gives steadier timings: with 2 torch threads on 2
busy cores the autoencoder fit was up to 5x slower than with 1 thread. The MSE does
not depend on the thread count; the SVC accuracy can move by about 0.002.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
import skorch
import torch
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from skorch.callbacks import LRScheduler

import skconvae
from skconvae import ConvAutoencoderTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST_PATH, N_TRAIN, cpu_model

DEFAULT_DATA = MNIST_PATH
LATENT_DIM = 32

# The tuned configuration (see the table in the module's output). Cosine annealing
# of the learning rate over all epochs is added in ``make_autoencoder``.
AE_CONFIG = dict(
    # Tuned before the defaults adapted to the data: the plain network (no batch norm,
    # classic decoder rule, codes as they come) with an explicit dense code.
    architecture="classic",
    filters=(16, 32),
    kernel_size=3,
    latent_dim=LATENT_DIM,
    loss="bce",
    scaling="minmax",
    max_epochs=15,
    batch_size=64,
    lr=2e-3,
    optimizer="adam",
)


def make_autoencoder(
    max_epochs: int, random_state: int, device: str = "cpu"
) -> ConvAutoencoderTransformer:
    config = dict(AE_CONFIG, max_epochs=max_epochs)
    return ConvAutoencoderTransformer(
        **config,
        callbacks=[("lr", LRScheduler(policy="CosineAnnealingLR", T_max=max_epochs))],
        random_state=random_state,
        device=device,
    )


def timed_fit(estimator, X, y=None):
    start = time.perf_counter()
    estimator.fit(X, y)
    return time.perf_counter() - start


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path of mnist_test10k.npz")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2000 train / 500 test images and 2 epochs (numbers not meaningful)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override max_epochs")
    parser.add_argument("--seed", type=int, default=0, help="random_state of the autoencoder")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device of the autoencoder ('cpu', 'auto', 'cuda')"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    wall_start = time.perf_counter()

    data = np.load(args.data)
    images, labels = data["images"], data["labels"]
    X_train, y_train = images[:N_TRAIN], labels[:N_TRAIN]
    X_test, y_test = images[N_TRAIN:], labels[N_TRAIN:]
    max_epochs = args.epochs or AE_CONFIG["max_epochs"]
    if args.quick:
        X_train, y_train, X_test, y_test = (
            X_train[:2000],
            y_train[:2000],
            X_test[:500],
            y_test[:500],
        )
        max_epochs = args.epochs or 2

    # Flat [0, 1] pixels for PCA and the raw-pixel SVC.
    F_train = X_train.reshape(len(X_train), -1).astype(np.float64) / 255.0
    F_test = X_test.reshape(len(X_test), -1).astype(np.float64) / 255.0
    results = {}

    print(
        f"train {len(X_train)} / held-out {len(X_test)} images; torch threads "
        f"{torch.get_num_threads()}",
        flush=True,
    )

    # 1. SVC on raw pixels.
    svc_raw = SVC()
    t = timed_fit(svc_raw, F_train, y_train)
    results["SVC on raw pixels"] = dict(
        mse=None, accuracy=float(svc_raw.score(F_test, y_test)), fit_s=t, transformer_fit_s=None
    )
    print("raw-pixel SVC done", flush=True)

    # 2. PCA(32): reconstruction, then PCA -> SVC.
    pca = PCA(LATENT_DIM, random_state=0)
    t_pca = timed_fit(pca, F_train)
    pca_mse = float(np.mean((pca.inverse_transform(pca.transform(F_test)) - F_test) ** 2))
    pca_svc = make_pipeline(PCA(LATENT_DIM, random_state=0), SVC())
    t = timed_fit(pca_svc, F_train, y_train)
    results[f"PCA({LATENT_DIM}) -> SVC"] = dict(
        mse=pca_mse, accuracy=float(pca_svc.score(F_test, y_test)), fit_s=t, transformer_fit_s=t_pca
    )
    print("PCA done", flush=True)

    # 3. Conv autoencoder: one Pipeline fit trains the AE once; its first step gives the MSE.
    ae_svc = make_pipeline(
        make_autoencoder(max_epochs, args.seed, args.device), StandardScaler(), SVC()
    )
    t = timed_fit(ae_svc, X_train, y_train)  # uint8 (N, 28, 28) images directly
    ae = ae_svc[0]
    ae_mse = -ae.score(X_test) / 255.0**2  # score is in 0..255 units
    t_ae = float(sum(ae.net_.history[:, "dur"]))
    results[f"ConvAE({LATENT_DIM}) -> StandardScaler -> SVC"] = dict(
        mse=float(ae_mse),
        accuracy=float(ae_svc.score(X_test, y_test)),
        fit_s=t,
        transformer_fit_s=t_ae,
    )
    print("autoencoder done", flush=True)

    # Report.
    print()
    print("| method | held-out MSE [0,1] | ratio to PCA(32) | SVC accuracy | fit time (s) |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        mse = "-" if r["mse"] is None else f"{r['mse']:.5f}"
        ratio = "-" if r["mse"] is None else f"{r['mse'] / pca_mse:.3f}"
        fit = f"{r['fit_s']:.1f}"
        if r["transformer_fit_s"] is not None:
            fit += f" (transformer alone {r['transformer_fit_s']:.1f})"
        print(f"| {name} | {mse} | {ratio} | {r['accuracy']:.4f} | {fit} |")

    ae_params = {k: v for k, v in ae.get_params().items() if k != "callbacks"}
    ae_params["callbacks"] = (
        f"[('lr', LRScheduler(policy='CosineAnnealingLR', T_max={max_epochs}))]"
    )
    env = dict(
        torch=torch.__version__,
        sklearn=sklearn.__version__,
        skorch=skorch.__version__,
        skconvae=getattr(skconvae, "__version__", "?"),
        python=platform.python_version(),
        threads=torch.get_num_threads(),
        cpu=cpu_model(),
    )
    print()
    print("Fit time: whole pipeline (transformer + SVC) on the training images.")
    print(f"ConvAutoencoderTransformer config: {ae_params}")
    print("SVC: sklearn defaults (RBF, C=1); PCA: PCA(32) on pixels / 255.")
    print("Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    wall = time.perf_counter() - wall_start
    print(
        f"Total benchmark wall time: {wall:.1f} s" + ("  [--quick smoke run]" if args.quick else "")
    )

    if args.json:
        payload = dict(
            quick=args.quick,
            n_train=len(X_train),
            n_test=len(X_test),
            pca_mse=pca_mse,
            results=results,
            autoencoder_config=ae_params,
            environment=env,
            wall_s=wall,
        )
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
