"""Quality of the conv autoencoder's applications, on held-out real images.

1. Denoising MNIST: Gaussian noise sigma=0.5 on [0, 1], clipped. PSNR of the noisy
   input, the best Gaussian blur, ConvAutoencoderRegressor (noisy -> clean pairs)
   and ConvAutoencoderTransformer(noise="gaussian") (a denoising autoencoder).
2. 2x super-resolution of colour photos: trained on patches of china.jpg, tested on
   the whole of flower.jpg area-downsampled by 2, against a correctly aligned
   bicubic (scipy.ndimage.zoom, order=3, grid_mode=True, mode="nearest").
3. One-class anomaly detection on MNIST: for each digit, fit on 80% of that digit's
   training images; score the other 20% against all other digits of the last 2000
   images with score_samples; ROC AUC, mean over the ten digits.
4. Generation: 1000 samples of an autoencoder fit on MNIST (Gaussian-mixture code
   density, and a VAE); an SVC trained on real digits gives each sample's top-class
   probability; report the mean and the share of the rarest class.

MNIST: ../shared/data/mnist_test10k.npz, first 8000 train, last 2000 test.

    python benchmarks/bench_quality.py                  # everything (about 15 min, 2 cores)
    python benchmarks/bench_quality.py --only denoise   # one section
    python benchmarks/bench_quality.py --quick          # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_sample_images
from sklearn.metrics import roc_auc_score
from sklearn.svm import SVC

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST_PATH, load_mnist, machine, psnr

from skconvae import ConvAutoencoderRegressor, ConvAutoencoderTransformer

SECTIONS = ("denoise", "superres", "anomaly", "generate")


def add_noise(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(clean + sigma * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)


# -- 1. denoising ----------------------------------------------------------------------------


def bench_denoise(args) -> dict:
    (train, _), (test, _) = load_mnist(args.data)
    if args.quick:
        train, test = train[:1000], test[:300]
    clean_train = train.astype(np.float32) / 255
    clean_test = test.astype(np.float32) / 255
    noisy_test = add_noise(clean_test, 0.5, seed=1)
    # Two independent noisy copies of every training image.
    copies = 1 if args.quick else 2
    noisy_train = np.concatenate([add_noise(clean_train, 0.5, seed=10 + k) for k in range(copies)])
    paired_clean = np.concatenate([clean_train] * copies)

    results = {"noisy input": psnr(noisy_test, clean_test)}
    blur = {
        s: psnr(ndimage.gaussian_filter(noisy_test, sigma=(0, s, s)), clean_test)
        for s in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    }
    best_sigma = max(blur, key=blur.get)
    results[f"best Gaussian blur (sigma={best_sigma})"] = blur[best_sigma]

    epochs = 1 if args.quick else 15
    regressor = ConvAutoencoderRegressor(
        filters=(16, 32), max_epochs=epochs, batch_size=64, lr=2e-3, random_state=0
    )
    start = time.perf_counter()
    regressor.fit(noisy_train, paired_clean)
    fit_s = time.perf_counter() - start
    results["ConvAutoencoderRegressor (U-Net, residual)"] = psnr(
        regressor.predict(noisy_test), clean_test
    )
    denoising_ae = ConvAutoencoderTransformer(
        filters=(32, 32), loss="bce", noise="gaussian", noise_level=0.5,
        max_epochs=epochs, batch_size=64, lr=2e-3, random_state=0,
    )  # fmt: skip
    start = time.perf_counter()
    denoising_ae.fit(train)
    ae_fit_s = time.perf_counter() - start
    results["ConvAutoencoderTransformer(noise='gaussian', noise_level=0.5)"] = psnr(
        denoising_ae.reconstruct(noisy_test * 255) / 255, clean_test
    )
    print("\n### Denoising MNIST, sigma = 0.5 (held-out 2000 digits)\n")
    print("| method | PSNR (dB) |\n|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:.2f} |")
    print(f"\nfit: regressor {fit_s:.0f} s, denoising autoencoder {ae_fit_s:.0f} s")
    return {"psnr_db": results, "regressor_fit_s": fit_s, "autoencoder_fit_s": ae_fit_s}


# -- 2. super-resolution ---------------------------------------------------------------------


def area_downsample(image: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block (an odd last row or column is dropped)."""
    h, w, c = image.shape
    image = image[: h // 2 * 2, : w // 2 * 2]
    return image.reshape(h // 2, 2, w // 2, 2, c).mean(axis=(1, 3))


def training_patches(hr_image: np.ndarray, size: int, stride: int):
    """LR/HR patch pairs of an image, with horizontal flips."""
    lr_image = area_downsample(hr_image)
    lr, hr = [], []
    for r in range(0, lr_image.shape[0] - size + 1, stride):
        for c in range(0, lr_image.shape[1] - size + 1, stride):
            lr.append(lr_image[r : r + size, c : c + size])
            hr.append(hr_image[2 * r : 2 * r + 2 * size, 2 * c : 2 * c + 2 * size])
    lr, hr = np.stack(lr), np.stack(hr)
    return np.concatenate([lr, lr[:, :, ::-1]]), np.concatenate([hr, hr[:, :, ::-1]])


def predict_tiled(model, lr_image: np.ndarray, size: int, margin: int) -> np.ndarray:
    """Upscale a whole image with a patch model: overlapping tiles, keep their centres."""
    core = size - 2 * margin
    h, w, c = lr_image.shape
    padded = np.pad(
        lr_image, ((margin, margin + core), (margin, margin + core), (0, 0)), mode="reflect"
    )
    tiles, corners = [], []
    for r in range(0, h, core):
        for col in range(0, w, core):
            tiles.append(padded[r : r + size, col : col + size])
            corners.append((r, col))
    upscaled = model.predict(np.stack(tiles))
    out = np.zeros((2 * (h + core), 2 * (w + core), c), dtype=np.float32)
    m, k = 2 * margin, 2 * core
    for tile, (r, col) in zip(upscaled, corners, strict=True):
        out[2 * r : 2 * r + k, 2 * col : 2 * col + k] = tile[m : m + k, m : m + k]
    return out[: 2 * h, : 2 * w]


def bench_superres(args) -> dict:
    china, flower = (img.astype(np.float32) / 255 for img in load_sample_images().images)
    flower = flower[: flower.shape[0] // 2 * 2, : flower.shape[1] // 2 * 2]
    size = 24
    lr_train, hr_train = training_patches(china, size, stride=16 if args.quick else 8)
    if args.quick:
        lr_train, hr_train = lr_train[:200], hr_train[:200]
    flower_lr = area_downsample(flower)
    bicubic = ndimage.zoom(flower_lr, (2, 2, 1), order=3, grid_mode=True, mode="nearest")
    misaligned = ndimage.zoom(flower_lr, (2, 2, 1), order=3)
    model = ConvAutoencoderRegressor(
        filters=(32, 64), max_epochs=1 if args.quick else 40, batch_size=32, lr=1e-3,
        random_state=0,
    )  # fmt: skip
    start = time.perf_counter()
    model.fit(lr_train, hr_train)
    fit_s = time.perf_counter() - start
    predicted = predict_tiled(model, flower_lr, size, margin=4)
    aligned = "bicubic (zoom order=3, grid_mode=True, mode='nearest')"
    ours = "ConvAutoencoderRegressor"
    results = {
        "bicubic, misaligned (scipy zoom default)": psnr(np.clip(misaligned, 0, 1), flower),
        aligned: psnr(np.clip(bicubic, 0, 1), flower),
        f"{ours} (x2, residual over bicubic)": psnr(predicted, flower),
    }
    gain = results[f"{ours} (x2, residual over bicubic)"] - results[aligned]
    print(
        f"\n### 2x super-resolution: trained on {len(lr_train)} china.jpg patches, "
        "tested on flower.jpg\n"
    )
    print("| method | PSNR (dB) |\n|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:.2f} |")
    print(f"\nfit {fit_s:.0f} s; gain over aligned bicubic {gain:+.2f} dB")
    return {"psnr_db": results, "gain_db": gain, "fit_s": fit_s, "n_patches": len(lr_train)}


# -- 3. anomaly detection --------------------------------------------------------------------


def bench_anomaly(args) -> dict:
    (train, train_labels), (test, test_labels) = load_mnist(args.data)
    rng = np.random.default_rng(0)
    aucs, start = {}, time.perf_counter()
    for digit in range(10):
        own = train[train_labels == digit]
        order = rng.permutation(len(own))
        n_fit = int(0.8 * len(own))
        fit_part, held_out = own[order[:n_fit]], own[order[n_fit:]]
        others = test[test_labels != digit]
        if args.quick:
            fit_part, others = fit_part[:200], others[:300]
        model = ConvAutoencoderTransformer(
            filters=(16, 32), latent_dim=16, loss="bce", max_epochs=1 if args.quick else 30,
            batch_size=32, lr=2e-3, random_state=0,
        )  # fmt: skip
        model.fit(fit_part)
        scores = np.concatenate([model.score_samples(held_out), model.score_samples(others)])
        is_normal = np.r_[np.ones(len(held_out)), np.zeros(len(others))]
        aucs[digit] = float(roc_auc_score(is_normal, scores))
    elapsed = time.perf_counter() - start
    print("\n### One-class anomaly detection on MNIST (ROC AUC of score_samples)\n")
    print("| digit | " + " | ".join(map(str, aucs)) + " | mean |")
    print("|---" * (len(aucs) + 2) + "|")
    mean_auc = float(np.mean(list(aucs.values())))
    print("| AUC | " + " | ".join(f"{a:.3f}" for a in aucs.values()) + f" | **{mean_auc:.3f}** |")
    print(f"\nten fits in {elapsed:.0f} s")
    return {"auc": aucs, "mean_auc": mean_auc, "seconds": elapsed}


# -- 4. generation ---------------------------------------------------------------------------


def bench_generate(args) -> dict:
    (train, train_labels), _ = load_mnist(args.data)
    if args.quick:
        train, train_labels = train[:1000], train_labels[:1000]
    start = time.perf_counter()
    judge = CalibratedClassifierCV(SVC(), ensemble=False).fit(
        train.reshape(len(train), -1) / 255, train_labels
    )
    judge_s = time.perf_counter() - start
    results = {}
    for name, params in {
        "Gaussian-mixture code density": {"variational": False},
        "VAE prior (variational=True)": {"variational": True},
    }.items():
        model = ConvAutoencoderTransformer(
            filters=(16, 32), latent_dim=16, loss="bce", max_epochs=1 if args.quick else 20,
            batch_size=64, lr=2e-3, random_state=0, **params,
        )  # fmt: skip
        t = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - t
        samples = model.sample(1000, random_state=0)
        proba = judge.predict_proba(samples.reshape(len(samples), -1) / 255)
        shares = np.bincount(proba.argmax(axis=1), minlength=10) / len(samples)
        results[name] = {
            "mean_top_probability": float(proba.max(axis=1).mean()),
            "min_class_share": float(shares.min()),
            "class_shares": shares.round(3).tolist(),
            "fit_s": fit_s,
        }
    print("\n### Generation: 1000 samples judged by an SVC trained on real digits\n")
    print("| sampler | mean top-class probability | rarest class share | fit (s) |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['mean_top_probability']:.3f} | {r['min_class_share']:.3f} | "
              f"{r['fit_s']:.0f} |")  # fmt: skip
    print(f"\njudge SVC fit {judge_s:.0f} s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(MNIST_PATH))
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="smoke run, numbers meaningless")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    report = {"machine": machine(), "quick": args.quick}
    runners = {
        "denoise": bench_denoise,
        "superres": bench_superres,
        "anomaly": bench_anomaly,
        "generate": bench_generate,
    }
    for section in args.only:
        start = time.perf_counter()
        report[section] = runners[section](args)
        print(f"[{section}: {time.perf_counter() - start:.0f} s]", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
