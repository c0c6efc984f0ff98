"""Photo restoration: ConvAutoencoderRegressor against scikit-image and bicubic.

Training and test photos never overlap: the model trains on random patches (with
flips and rotations, ``skconvae.preprocessing.extract_random_patches``) of the
TRAIN photos and is tested on the whole TEST photos, each as a grey image in [0, 1]
(colour photos through ``skimage.color.rgb2gray``; super-resolution of colour
photos treats each colour channel as a grey image).

1. denoise: additive Gaussian noise, sigma 0.1 and 0.2 (in [0, 1] units, not
   clipped; every output is clipped to [0, 1]). Baselines: every
   ``skimage.restoration`` denoiser (TV Chambolle, NL-means, bilateral, wavelet)
   and BM3D (the ``bm3d`` package), each with its parameters swept and the best
   value picked on each test photo (their best case). PSNR is the mean over the
   test photos.
2. superres: 2x super-resolution (area downsampling). (a) the README protocol:
   trained on china.jpg only, tested on the whole flower.jpg in colour; (b) trained
   on all TRAIN photos, tested on each TEST photo. Baseline: bicubic aligned with
   area downsampling (``scipy.ndimage.zoom(order=3, grid_mode=True, mode="nearest")``).
3. mnist: denoising MNIST digits, Gaussian sigma 0.5 clipped to [0, 1], the model
   trained on noisy/clean pairs of the first 8000 digits, tested on the last 2000.

Every model is ``ConvAutoencoderRegressor()`` with its defaults, except where the
table names a parameter or ``--params`` sets some. Each fitted model is scored twice:
as fitted, and with ``self_ensemble=True`` (the mean prediction over each input's 8
flips and quarter turns; the same weights, no refit). Run from the project root (about 1 h
on 2 quiet cores)::

    python benchmarks/bench_restoration.py                     # seeds 0 1 2, all sections
    python benchmarks/bench_restoration.py --only denoise --seeds 0
    python benchmarks/bench_restoration.py --quick             # smoke run, numbers meaningless
    python benchmarks/bench_restoration.py --only superres --params '{"max_epochs": 30}'  # tuned
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import color, data, restoration
from sklearn.datasets import load_sample_images

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST_PATH, load_mnist, machine, psnr

from skconvae import ConvAutoencoderRegressor
from skconvae.preprocessing import extract_random_patches

SECTIONS = ("denoise", "superres", "mnist")
TRAIN = ("astronaut", "camera", "coffee", "rocket", "coins", "brick", "grass", "gravel", "china")
TEST = ("chelsea", "flower", "moon")
SIGMAS = (0.1, 0.2)
# The MNIST denoiser's parameters besides the defaults: on near-binary digits MSE beats L1,
# and on 28x28 digits the full-resolution grid with eight residual blocks of 32 beats the
# defaults' half-resolution grid (measured: docs/benchmarks.rst, restoration section).
MNIST_PARAMS = {"loss": "mse", "downscale": 1, "filters": (32,) * 8}


def photo(name: str) -> np.ndarray:
    """A photo of skimage.data or load_sample_images as float in [0, 1], colour kept."""
    if name in ("china", "flower"):
        image = load_sample_images().images[("china", "flower").index(name)]
    else:
        image = getattr(data, name)()
    return image.astype(np.float32) / 255


def grey(image: np.ndarray) -> np.ndarray:
    return color.rgb2gray(image).astype(np.float32) if image.ndim == 3 else image


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_fit(model, X, y) -> dict:
    wall, cpu = time.perf_counter(), cpu_seconds()
    model.fit(X, y)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    epochs = len(model.net_.history)
    return {"fit_s": wall, "cpu_s": cpu, "epoch_s": wall / epochs, "epochs": epochs}


# -- 1. denoising ----------------------------------------------------------------------------


def self_ensembled(model, predict):
    """``predict()`` with the model's self-ensemble on: the mean over each input's 8 flips
    and quarter turns (``self_ensemble=True``), from the same fitted network."""
    model.set_params(self_ensemble=True)
    try:
        return predict()
    finally:
        model.set_params(self_ensemble=False)


def baselines(noisy: np.ndarray, sigma: float, quick: bool) -> dict:
    """Each classical denoiser's candidate outputs, one per parameter setting."""
    grids = {
        "TV (denoise_tv_chambolle)": [
            lambda w=w: restoration.denoise_tv_chambolle(noisy, weight=w)
            for w in np.array([0.4, 0.55, 0.7, 0.85, 1.0, 1.2, 1.5]) * sigma
        ],
        "NL-means (denoise_nl_means)": [
            lambda h=h: restoration.denoise_nl_means(
                noisy, h=h, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True
            )
            for h in np.array([0.6, 0.8, 1.0, 1.2]) * sigma
        ],
        "bilateral (denoise_bilateral)": [
            lambda c=c, s=s: restoration.denoise_bilateral(noisy, sigma_color=c, sigma_spatial=s)
            for c in np.array([1.0, 2.0, 3.0]) * sigma
            for s in (1, 2, 3)
        ],
        "wavelet (denoise_wavelet)": [
            lambda m=m, w=w: restoration.denoise_wavelet(
                noisy, sigma=sigma, method=m, wavelet=w, mode="soft", rescale_sigma=True
            )
            for m in ("BayesShrink", "VisuShrink")
            for w in ("db1", "db2", "sym4", "sym8")
        ],
    }
    try:
        import bm3d
    except ImportError:
        warnings.warn("bm3d is not installed (pip install bm3d): no BM3D baseline", stacklevel=1)
    else:
        grids["BM3D (bm3d package)"] = [
            lambda s=s: bm3d.bm3d(noisy, sigma_psd=s) for s in np.array([0.9, 1.0, 1.1]) * sigma
        ]
    if quick:
        grids = {name: grid[:1] for name, grid in grids.items()}
    return grids


def bench_denoise(args, seed: int, cache: dict) -> dict:
    clean_test = {name: grey(photo(name)) for name in TEST}
    train = [grey(photo(name)) for name in TRAIN]
    results = {}
    for sigma in args.sigmas:
        noisy_test = {
            name: image + sigma * np.random.default_rng(1000 + i).standard_normal(image.shape)
            for i, (name, image) in enumerate(clean_test.items())
        }
        if sigma not in cache:  # baselines do not depend on the training seed
            cache[sigma] = {"noisy input": [psnr(noisy_test[n], clean_test[n]) for n in TEST]}
            for name in TEST:
                for method, grid in baselines(noisy_test[name], sigma, args.quick).items():
                    best = max(psnr(np.clip(f(), 0, 1), clean_test[name]) for f in grid)
                    cache[sigma].setdefault(method, []).append(best)
        n_patches = 200 if args.quick else args.denoise_patches
        clean = extract_random_patches(train, 40, n_patches, random_state=seed)
        noisy = clean + sigma * np.random.default_rng(seed).standard_normal(clean.shape)
        model = ConvAutoencoderRegressor(random_state=seed, **_quick(args))
        timing = timed_fit(model, noisy.astype(np.float32), clean)

        def scores(model=model, noisy_test=noisy_test):
            return [psnr(model.predict(noisy_test[n][None])[0], clean_test[n]) for n in TEST]

        ours, ensembled = scores(), self_ensembled(model, scores)
        results[sigma] = {
            "baselines": cache[sigma],
            "skconvae": ours,
            "self_ensemble": ensembled,
            **timing,
        }
        best = max(np.mean(v) for k, v in cache[sigma].items() if k != "noisy input")
        print(
            f"denoise sigma {sigma}, seed {seed}: {np.mean(ours):.2f} dB "
            f"({np.mean(ensembled):.2f} self-ensembled), best classical "
            f"{best:.2f} dB; fit {timing['fit_s']:.0f} s, {timing['cpu_s']:.0f} CPU s",
            flush=True,
        )
    return results


def report_denoise(runs: list[dict], patches: int, model: str) -> None:
    for sigma in runs[0]:
        first = runs[0][sigma]
        print(
            f"\n### Denoising grey photos, Gaussian sigma = {sigma} (PSNR in dB, mean over "
            f"{', '.join(TEST)}; trained on {patches} 40x40 patches of {', '.join(TRAIN)})\n"
        )
        print("| method | " + " | ".join(TEST) + " | mean |\n|---|" + "---|" * (len(TEST) + 1))
        for method, values in first["baselines"].items():
            tuned = "" if method == "noisy input" else ", tuned on each test photo"
            cells = " | ".join(f"{v:.2f}" for v in values)
            print(f"| {method}{tuned} | {cells} | {np.mean(values):.2f} |")
        # The target compares with scikit-image's methods; BM3D (another package) apart.
        mean_psnr = {m: np.mean(v) for m, v in first["baselines"].items() if m != "noisy input"}
        best = max((m for m in mean_psnr if not m.startswith("BM3D")), key=mean_psnr.get)
        references = {f"the best skimage.restoration method, {best}": mean_psnr[best]}
        references.update({m: v for m, v in mean_psnr.items() if m.startswith("BM3D")})
        means = {}
        for key, name in (("skconvae", model), ("self_ensemble", "the same, self_ensemble=True")):
            ours = np.array([run[sigma][key] for run in runs])
            cells = " | ".join(f"{v:.2f}" for v in ours.mean(axis=0))
            seeds = ", ".join(f"{v:.2f}" for v in ours.mean(axis=1))
            print(f"| **`{name}`**, mean of seeds ({seeds}) | {cells} | **{ours.mean():.2f}** |")
            means[key] = ours.mean()
        print()
        for reference, value in references.items():
            print(
                f"gain over {reference} ({value:.2f} dB): {means['skconvae'] - value:+.2f} dB "
                f"({means['self_ensemble'] - value:+.2f} dB self-ensembled)"
            )
        print(_timing(runs, sigma))


# -- 2. super-resolution ---------------------------------------------------------------------


def area_downsample(images: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block over the axes 1 and 2 of ``(N, H, W)`` images (H, W even)."""
    n, h, w = images.shape
    return images.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def channels_as_images(image: np.ndarray) -> np.ndarray:
    """``(H, W[, C])`` with even sides -> ``(C, H, W)`` grey images."""
    image = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]
    return image.transpose(2, 0, 1) if image.ndim == 3 else image[None]


def superresolve(model, images: np.ndarray) -> tuple[float, float, float]:
    """PSNR of bicubic, of the model and of its self-ensemble on ``(C, H, W)``
    high-resolution images."""
    low = area_downsample(images)
    bicubic = ndimage.zoom(low, (1, 2, 2), order=3, grid_mode=True, mode="nearest")
    ensembled = self_ensembled(model, lambda: model.predict(low))
    return (
        psnr(np.clip(bicubic, 0, 1), images),
        psnr(model.predict(low), images),
        psnr(ensembled, images),
    )


def bench_superres(args, seed: int) -> dict:
    n_patches = 200 if args.quick else args.sr_patches
    results = {}
    sources = {"china.jpg -> flower.jpg": (["china"], ["flower"]), "held out": (TRAIN, TEST)}
    if args.sr_protocols != "both":
        sources = {k: v for k, v in sources.items() if k.startswith(args.sr_protocols[:4])}
    for protocol, (train_names, test_names) in sources.items():
        # Each colour channel a grey image (teaches no colour correlations of the train photos).
        train = [channel for n in train_names for channel in channels_as_images(photo(n))]
        high = extract_random_patches(train, 48, n_patches, random_state=seed)
        model = ConvAutoencoderRegressor(random_state=seed, **_quick(args))
        timing = timed_fit(model, area_downsample(high), high)
        scores = {n: superresolve(model, channels_as_images(photo(n))) for n in test_names}
        results[protocol] = {"psnr": scores, **timing}
        gains = ", ".join(
            f"{n} {ours - bicubic:+.2f} ({ensembled - bicubic:+.2f} self-ensembled)"
            for n, (bicubic, ours, ensembled) in scores.items()
        )
        print(
            f"superres {protocol}, seed {seed}: gain over bicubic {gains} dB; "
            f"fit {timing['fit_s']:.0f} s, {timing['cpu_s']:.0f} CPU s",
            flush=True,
        )
    return results


def report_superres(runs: list[dict], patches: int, model: str) -> None:
    print(
        f"\n### 2x super-resolution (PSNR in dB; trained on {patches} 48x48 patches, "
        "each colour channel a grey image)\n"
    )
    print(
        f"| train -> test | aligned bicubic | `{model}` | gain, per seed "
        "| self_ensemble=True | its gain, per seed |"
    )
    print("|---|---|---|---|---|---|")
    for protocol in runs[0]:
        for name in runs[0][protocol]["psnr"]:
            bicubic = runs[0][protocol]["psnr"][name][0]
            train = "china.jpg" if protocol.startswith("china") else "TRAIN photos"
            cells = []
            for column in (1, 2):  # the model, its self-ensemble
                ours = [run[protocol]["psnr"][name][column] for run in runs]
                gains = ", ".join(f"{v - bicubic:+.2f}" for v in ours)
                cells.append(f"{np.mean(ours):.2f} | **{np.mean(ours) - bicubic:+.2f}** ({gains})")
            print(f"| {train} -> {name} | {bicubic:.2f} | {' | '.join(cells)} |")
    for protocol in runs[0]:
        print(f"\n{protocol}: " + _timing(runs, protocol))


# -- 3. MNIST --------------------------------------------------------------------------------


def bench_mnist(args, seed: int) -> dict:
    (train, _), (test, _) = load_mnist(args.data)
    if args.quick:
        train, test = train[:500], test[:200]
    clean_train, clean_test = train.astype(np.float32) / 255, test.astype(np.float32) / 255

    def noisy(images, s):
        rng = np.random.default_rng(s)
        return np.clip(images + 0.5 * rng.standard_normal(images.shape), 0, 1).astype(np.float32)

    copies = 1 if args.quick else 2  # two independent noisy copies of every training digit
    noisy_train = np.concatenate([noisy(clean_train, 10 + k) for k in range(copies)])
    noisy_test = noisy(clean_test, 1)
    model = ConvAutoencoderRegressor(**{**MNIST_PARAMS, **_quick(args)}, random_state=seed)
    timing = timed_fit(model, noisy_train, np.concatenate([clean_train] * copies))
    return {
        "skconvae": psnr(model.predict(noisy_test), clean_test),
        "self_ensemble": psnr(self_ensembled(model, lambda: model.predict(noisy_test)), clean_test),
        "noisy input": psnr(noisy_test, clean_test),
        **timing,
    }


def report_mnist(runs: list[dict], model: str) -> None:
    values = [run["skconvae"] for run in runs]
    ensembled = [run["self_ensemble"] for run in runs]
    print("\n### Denoising MNIST, sigma = 0.5 clipped (PSNR in dB, last 2000 digits)\n")
    print(
        f"noisy input {runs[0]['noisy input']:.2f}; `{model}` "
        f"**{np.mean(values):.2f}** (seeds: {', '.join(f'{v:.2f}' for v in values)}); "
        f"self_ensemble=True **{np.mean(ensembled):.2f}** "
        f"(seeds: {', '.join(f'{v:.2f}' for v in ensembled)}); " + _timing(runs, None)
    )


def _quick(args) -> dict:
    """Parameters every model gets besides the defaults: ``--params``, or one epoch."""
    return {**args.params, **({"max_epochs": 1} if args.quick else {})}


def _label(params: dict) -> str:
    """How the tables name the model: the class and the parameters set."""
    return f"ConvAutoencoderRegressor({', '.join(f'{k}={v!r}' for k, v in params.items())})"


def _timing(runs: list[dict], key) -> str:
    entries = [run if key is None else run[key] for run in runs]
    med = {k: np.median([e[k] for e in entries]) for k in ("fit_s", "cpu_s", "epoch_s", "epochs")}
    return (
        f"fit {med['fit_s']:.0f} s wall, {med['cpu_s']:.0f} CPU s, "
        f"{med['epoch_s']:.1f} s per epoch x {med['epochs']:.0f} (medians over seeds)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--denoise-patches", type=int, default=3000, help="40x40 training patches per denoiser"
    )
    parser.add_argument(
        "--sr-patches", type=int, default=6000, help="48x48 training patches per upscaler"
    )
    parser.add_argument("--sigmas", nargs="+", type=float, default=list(SIGMAS))
    parser.add_argument("--sr-protocols", choices=["both", "china", "held"], default="both")
    parser.add_argument("--data", default=str(MNIST_PATH))
    parser.add_argument(
        "--params",
        type=json.loads,
        default={},
        help="regressor parameters instead of the defaults, as JSON: '{\"max_epochs\": 30}'",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, numbers meaningless")
    parser.add_argument("--json", help="write the raw results here")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    results, cache = {}, {}
    for section in args.only:
        runs = []
        for seed in args.seeds:
            if section == "denoise":
                runs.append(bench_denoise(args, seed, cache))
            elif section == "superres":
                runs.append(bench_superres(args, seed))
            else:
                runs.append(bench_mnist(args, seed))
        results[section] = runs
        if section == "denoise":
            report_denoise(runs, args.denoise_patches, _label(args.params))
        elif section == "superres":
            report_superres(runs, args.sr_patches, _label(args.params))
        else:
            report_mnist(runs, _label({**MNIST_PARAMS, **args.params}))
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
