"""Data larger than memory: streaming fit from memmaps, partial_fit, Dask-array transform.

Three sections, each printing a Markdown table ready for the README:

- ``memmap``: ``ConvAutoencoderTransformer(latent_dim=16, max_epochs=1)`` fitted on
  uint8 memmaps of 28x28 images (MNIST's 10,000 test images tiled with random
  shifts; written under the temp dir and deleted after) beside the same images
  loaded into RAM. Each fit runs in a fresh subprocess that first fits a small
  model (the baseline: torch and the model in memory), then samples the process's
  anonymous memory (``RssAnon`` in /proc/self/status; page cache of the mapped
  file is not the model's memory) every 5 ms during the fit. Time per epoch is
  skorch's epoch duration; the statistics pass and the code density come on top
  and are reported as the whole fit's time.
- ``partial_fit``: MNIST's first 8000 images in chunks of 1000, 10 passes, beside
  ``fit(max_epochs=10)`` with the same settings; MSE on the last 2000.
- ``dask``: ``transform`` of a Dask array built from ``dask.delayed`` loads of an
  ``.npy`` file (so the workers read the data themselves), on a
  ``LocalCluster(n_workers=2, threads_per_worker=1)`` and with Dask's in-process
  threaded scheduler, beside the NumPy ``transform`` of the same images in RAM.

    python benchmarks/bench_out_of_core.py                        # everything (long)
    python benchmarks/bench_out_of_core.py --sizes 300000         # memmap: one size only
    python benchmarks/bench_out_of_core.py --sections dask partial_fit
    python benchmarks/bench_out_of_core.py --sections dask --dask-images 50000 --rounds 1
    python benchmarks/bench_out_of_core.py --quick                # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST_PATH, load_mnist, machine

# warp=None: the training measured before warped inputs became the default on MNIST.
NETWORK = {"latent_dim": 16, "warp": None, "random_state": 0}


def rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakSampler:
    """Peak of ``RssAnon`` sampled in a thread while the block runs."""

    def __enter__(self):
        self.peak, self._stop = rss_anon_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_anon_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_mb())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_avg() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


# -- memmap ----------------------------------------------------------------------------


def write_images(path: Path, n: int, seed: int = 0) -> None:
    """``n`` uint8 28x28 images: MNIST tiled with random shifts, written block by block."""
    source = np.load(MNIST_PATH)["images"]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    rng = np.random.default_rng(seed)
    for start in range(0, n, len(source)):
        block = source[: min(len(source), n - start)]
        shift = rng.integers(-2, 3, size=2)
        out[start : start + len(block)] = np.roll(block, tuple(shift), axis=(1, 2))
    out.flush()
    del out


def memmap_worker(path: str, mode: str) -> dict:
    from skconvae import ConvAutoencoderTransformer

    params = {**NETWORK, "max_epochs": 1}
    warm = np.load(MNIST_PATH)["images"][:2000]
    ConvAutoencoderTransformer(**params).fit(warm)  # torch, threads and a model in memory
    X = np.load(path, mmap_mode="r") if mode == "memmap" else np.load(path)
    baseline = rss_anon_mb()
    cpu, start = cpu_seconds(), time.perf_counter()
    with PeakSampler() as sampler:
        model = ConvAutoencoderTransformer(**params).fit(X)
    return {
        "fit_s": time.perf_counter() - start,
        "epoch_s": model.net_.history[-1, "dur"],
        "cpu_s": cpu_seconds() - cpu,
        "peak_over_baseline_mb": sampler.peak - baseline,
        "data_mb": X.nbytes / 2**20,
        "load": load_avg(),
    }


def run_worker(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def section_memmap(sizes: list[int], rounds: int) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"images_{n}.npy"
            write_images(path, n)
            results = {"memmap": [], "ram": []}
            for r in range(rounds):  # interleaved, alternating which goes first
                for mode in ("memmap", "ram") if r % 2 == 0 else ("ram", "memmap"):
                    results[mode].append(run_worker("memmap", str(path), mode))
            path.unlink()
            med = {m: {k: _median(v, k) for k in v[0]} for m, v in results.items()}
            for mode in ("memmap", "ram"):
                m = med[mode]
                rows.append(
                    f"| {n:,} | {mode} | {m['epoch_s']:.1f} | {m['fit_s']:.1f} | "
                    f"{m['cpu_s']:.1f} | {m['peak_over_baseline_mb']:.0f} | "
                    f"{m['data_mb']:.0f} | {results[mode][-1]['load']} |"
                )
            ratio = med["memmap"]["epoch_s"] / med["ram"]["epoch_s"]
            rows.append(f"| {n:,} | memmap / RAM epoch time | {ratio:.2f}x | | | | | |")
    header = (
        "| images | data in | s / epoch | fit s | CPU s | peak RssAnon over baseline, MB "
        "| data, MB | load |\n|---|---|---|---|---|---|---|---|"
    )
    return header + "\n" + "\n".join(rows)


def _median(results: list[dict], key: str):
    values = [r[key] for r in results]
    return statistics.median(values) if isinstance(values[0], float) else values[-1]


# -- partial_fit -----------------------------------------------------------------------


def section_partial_fit(passes: int, chunk: int) -> str:
    from skconvae import ConvAutoencoderTransformer

    (train, _), (test, _) = load_mnist()
    params = NETWORK
    rows = []
    cpu, start = cpu_seconds(), time.perf_counter()
    fitted = ConvAutoencoderTransformer(**params, max_epochs=passes).fit(train)
    rows.append(("fit", -fitted.score(test), time.perf_counter() - start, cpu_seconds() - cpu))
    cpu, start = cpu_seconds(), time.perf_counter()
    chunked = ConvAutoencoderTransformer(**params)
    for _ in range(passes):
        for first in range(0, len(train), chunk):
            chunked.partial_fit(train[first : first + chunk])
    rows.append(
        ("partial_fit", -chunked.score(test), time.perf_counter() - start, cpu_seconds() - cpu)
    )
    lines = [
        f"| {name} | {mse:.1f} | {mse / rows[0][1]:.3f} | {wall:.0f} | {cpu:.0f} |"
        for name, mse, wall, cpu in rows
    ]
    return (
        f"MNIST: first 8000 images, {passes} passes (partial_fit: chunks of {chunk}), "
        f"`latent_dim=16`, other parameters default; MSE (0-255 units) on the last 2000; "
        f"load {load_avg()}.\n\n"
        "| training | held-out MSE | / fit | wall s | CPU s |\n|---|---|---|---|---|\n"
        + "\n".join(lines)
    )


# -- dask ------------------------------------------------------------------------------


def _load_rows(path: str, start: int, stop: int) -> np.ndarray:
    return np.load(path, mmap_mode="r")[start:stop].copy()


def section_dask(n: int, block: int, rounds: int) -> str:
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    from skconvae import ConvAutoencoderTransformer

    (train, _), _ = load_mnist()
    model = ConvAutoencoderTransformer(**NETWORK, max_epochs=1).fit(train)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        write_images(path, n)
        in_ram = np.load(path)

        def lazy():
            parts = [
                da.from_delayed(
                    dask.delayed(_load_rows)(str(path), s, min(s + block, n)),
                    (min(block, n - s), 28, 28),
                    np.uint8,
                )
                for s in range(0, n, block)
            ]
            return da.concatenate(parts)

        expected = model.transform(in_ram)
        times = {"numpy": [], "threads": [], "cluster": []}
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            start = time.perf_counter()
            first = client.compute(model.transform(lazy())).result()
            first_s = time.perf_counter() - start
            equal = np.array_equal(first, expected)
            for _ in range(rounds):
                start = time.perf_counter()
                model.transform(in_ram)
                times["numpy"].append(time.perf_counter() - start)
                start = time.perf_counter()
                client.compute(model.transform(lazy())).result()
                times["cluster"].append(time.perf_counter() - start)
                start = time.perf_counter()
                model.transform(lazy()).compute(scheduler="threads")
                times["threads"].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        labels = {
            "numpy": "NumPy array in RAM, in process",
            "threads": "Dask array, threaded scheduler",
            "cluster": "Dask array, LocalCluster(2 workers x 1 thread)",
        }
        for key, label in labels.items():
            rows.append(f"| {label} | {med[key]:.2f} | {med[key] / med['numpy']:.2f}x |")
    return (
        f"`transform` of {n:,} uint8 28x28 images (blocks of {block:,} loaded by "
        f"`dask.delayed`), median of {rounds}; first cluster call (model shipped, workers "
        f"import torch) {first_s:.2f} s; equal to NumPy bit for bit: {equal}; "
        f"load {load_avg()}.\n\n| input | s | / NumPy |\n|---|---|---|\n" + "\n".join(rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["memmap", "partial_fit", "dask"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[300_000, 2_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dask-images", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(memmap_worker(*args.worker[1:])))
        return
    sizes, rounds = (args.sizes, args.rounds) if not args.quick else ([20_000], 1)
    print(f"Machine: {machine()}\n")
    if "memmap" in args.sections:
        print(f"### fit from a memmap vs from RAM (median of {rounds})\n")
        print(section_memmap(sizes, rounds) + "\n", flush=True)
    if "partial_fit" in args.sections:
        print("### partial_fit\n")
        print(section_partial_fit(2 if args.quick else 10, 1000) + "\n", flush=True)
    if "dask" in args.sections:
        print("### Dask transform\n")
        n = 20_000 if args.quick else args.dask_images
        print(section_dask(n, 10_000, 1 if args.quick else rounds), flush=True)


if __name__ == "__main__":
    main()
