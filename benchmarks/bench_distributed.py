"""Scaling out: data-parallel training under torchrun, and a search on a Dask cluster.

Sections (each measurement in a fresh process, rounds interleaved, medians reported):

* ``ddp``: training epochs on 8000 MNIST images, global batch 128, same seed, in
  1 process with 1 thread, 1 process with 2 threads, and 2 gloo processes of
  1 thread each under torchrun. Epoch time is the median over epochs after the
  first (warm-up); the final training loss and whether the processes ended with
  bit-identical weights are reported too.
* ``allreduce``: one gloo all-reduce of that network's gradients between 2
  processes, waited for asleep (``work.wait()``) beside skconvae's polled wait.
* ``search``: ``GridSearchCV`` of 8 candidates (autoencoder + logistic regression,
  2-fold) serial with one torch thread, beside the same search inside
  ``joblib.parallel_config(backend="dask")`` on a 2-worker ``LocalCluster``
  (1 thread per worker); the cluster's start-up, with its workers
  importing skconvae (``preload``), is reported apart.
* ``gpu``: epochs on 60000 images resident on each GPU, 1 GPU beside all GPUs
  (nccl), global batch 128 per GPU; images/s and scaling efficiency. Skipped
  without CUDA.

    python benchmarks/bench_distributed.py                     # ddp + search (CPU)
    python benchmarks/bench_distributed.py --sections allreduce
    python benchmarks/bench_distributed.py --sections gpu      # on a machine with GPUs
    python benchmarks/bench_distributed.py --quick             # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST_PATH, ROOT, load_mnist, machine

# warp=None: the training measured before warped inputs became the default on MNIST.
NETWORK = {"filters": (16, 8), "lr": 1e-3, "warp": None, "random_state": 0}


# -- one training run (runs inside the measured process) -------------------------------


def train(config: dict, out: str) -> None:
    import torch

    from skconvae import ConvAutoencoderTransformer

    rank = int(os.environ.get("RANK", 0))
    images = load_mnist(config["data"])[0][0][: config["n"]]
    if config.get("tile", 1) > 1:
        images = np.concatenate([images] * config["tile"])
    ae = ConvAutoencoderTransformer(
        **NETWORK,
        max_epochs=config["epochs"],
        batch_size=config["batch_size"],
        device=config.get("device", "cpu"),
    )
    ae.fit(images)
    history = ae.net_.history
    digest = hashlib.sha256()
    for tensor in ae.net_.module_.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    result = {
        "rank": rank,
        "threads": torch.get_num_threads(),
        "epoch_s": [float(d) for d in history[:, "dur"]],
        "train_loss": float(history[-1, "train_loss"]),
        "samples_per_epoch": len(images) // int(os.environ.get("WORLD_SIZE", 1)),
        "weights_sha256": digest.hexdigest(),
    }
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))


def exchange(config: dict, out: str) -> None:
    """Time one gloo all-reduce of the network's gradients, waited for asleep and polled."""
    import torch
    import torch.distributed as dist

    from skconvae import ConvAutoencoderTransformer
    from skconvae._distributed import _poll

    images = load_mnist(config["data"])[0][0][:128]
    ae = ConvAutoencoderTransformer(**NETWORK, max_epochs=1, distributed=False).fit(images)
    grads = torch.randn(sum(p.numel() for p in ae.net_.module_.parameters()))
    dist.init_process_group("gloo")
    waits = {"asleep (work.wait)": lambda work: work.wait(), "polled (skconvae)": _poll}
    times = {name: [] for name in waits}
    for block in range(2 + 2 * config["blocks"]):  # interleaved blocks; the first two warm up
        name = list(waits)[block % 2]
        for _ in range(config["calls"]):
            start = time.perf_counter()
            waits[name](dist.all_reduce(grads, async_op=True))
            if block >= 2:
                times[name].append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        Path(out, "exchange.json").write_text(json.dumps({"n": grads.numel(), "times": times}))
    dist.destroy_process_group()


# -- the runner ----------------------------------------------------------------------


def run(commands: list[list[str]], threads: int) -> tuple[float, float]:
    """Run commands at once, each in a fresh process tree; their wall and CPU seconds."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": path}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    children = [
        subprocess.Popen(
            command,
            env={**env, "RANK": str(i)} if len(commands) > 1 else env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i, command in enumerate(commands)
    ]
    for child, command in zip(children, commands, strict=True):
        _, err = child.communicate()
        if child.returncode:
            raise subprocess.CalledProcessError(child.returncode, command, stderr=err)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def training_command(config: dict, out: str, processes: int) -> list[str]:
    worker = [str(Path(__file__).resolve()), "--train", json.dumps(config), out]
    if processes == 1:
        return [sys.executable, *worker]
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return [sys.executable, *launch, *worker]


def measure_training(config: dict, entries: dict, rounds: int) -> dict:
    """entries: name -> (processes, threads per process, launch); launch "torchrun" is
    one data-parallel run, "apart" that many plain runs at once on 1/processes of the
    data and of the batch, without communicating. Medians over interleaved rounds."""
    runs = {name: [] for name in entries}
    for _ in range(rounds):
        for name, (processes, threads, launch) in entries.items():
            with tempfile.TemporaryDirectory() as out:
                if launch == "apart":
                    share = {
                        **config,
                        "n": config["n"] // processes,
                        "batch_size": config["batch_size"] // processes,
                    }
                    commands = [training_command(share, out, 1)] * processes
                else:
                    commands = [training_command(config, out, processes)]
                wall, cpu = run(commands, threads)
                ranks = [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]
            epochs = ranks[0]["epoch_s"][1:] or ranks[0]["epoch_s"]
            runs[name].append(
                {
                    "epoch_s": statistics.median(epochs),
                    "train_loss": ranks[0]["train_loss"],
                    "samples": ranks[0]["samples_per_epoch"],
                    "identical": len({r["weights_sha256"] for r in ranks}) == 1,
                    "process_s": wall,
                    "cpu_s": cpu,
                }
            )
    summary = {}
    for name, rows in runs.items():
        summary[name] = {
            key: statistics.median(row[key] for row in rows)
            for key in ("epoch_s", "train_loss", "samples", "process_s", "cpu_s")
        }
        summary[name]["identical"] = all(row["identical"] for row in rows)
    return summary


def ddp_section(args) -> list[str]:
    n = 2000 if args.quick else 8000
    config = {"data": str(args.data), "n": n, "epochs": 2 if args.quick else 4, "batch_size": 128}
    entries = {
        "1 process x 1 thread": (1, 1, None),
        "1 process x 2 threads": (1, 2, None),
        "2 gloo processes x 1 thread (torchrun)": (2, 1, "torchrun"),
        # What two processes get from this machine's cores with nothing to exchange:
        # the floor under the torchrun row's epoch time.
        "2 independent processes x 1 thread, half the data each, no communication": (
            2,
            1,
            "apart",
        ),
    }
    summary = measure_training(config, entries, args.rounds)
    base = summary["1 process x 1 thread"]
    lines = [
        f"Data-parallel training, {n} MNIST images, global batch 128, "
        f"{config['epochs']} epochs, CPU (median of {args.rounds} interleaved rounds):",
        "",
        "| run | samples per process per epoch | epoch time (s) | vs 1 x 1 thread "
        "| final train loss | loss vs 1 x 1 | CPU s (whole run) | weights identical |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        if entries[name][2] == "apart":  # separate fits: their losses and weights say nothing
            loss, versus, identical = "-", "-", "-"
        else:
            loss = f"{row['train_loss']:.5f}"
            versus = f"{100 * (row['train_loss'] / base['train_loss'] - 1):+.2f}%"
            identical = "yes" if row["identical"] else "NO"
        lines.append(
            f"| {name} | {row['samples']} | {row['epoch_s']:.2f} "
            f"| {row['epoch_s'] / base['epoch_s']:.2f}x | {loss} | {versus} "
            f"| {row['cpu_s']:.1f} | {identical} |"
        )
    return lines


def allreduce_section(args) -> list[str]:
    config = {"data": str(args.data), "blocks": 2 if args.quick else 10, "calls": 50}
    with tempfile.TemporaryDirectory() as out:
        worker = [str(Path(__file__).resolve()), "--exchange", json.dumps(config), out]
        launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        run([[sys.executable, *launch, *worker]], threads=1)
        result = json.loads(Path(out, "exchange.json").read_text())
    lines = [
        f"One gloo all-reduce of the benchmark network's {result['n']:,} gradients, "
        "2 processes x 1 thread, nothing else running; "
        f"{len(next(iter(result['times'].values())))} calls each way, in interleaved blocks:",
        "",
        "| wait | median (ms) | mean (ms) | 90th percentile (ms) |",
        "|---|---|---|---|",
    ]
    for name, times in result["times"].items():
        times = sorted(times)
        lines.append(
            f"| {name} | {1e3 * statistics.median(times):.2f} "
            f"| {1e3 * statistics.fmean(times):.2f} | {1e3 * times[int(0.9 * len(times))]:.2f} |"
        )
    return lines


def gpu_section(args) -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return ["GPU section skipped: CUDA is not available on this machine."]
    gpus = torch.cuda.device_count()
    config = {
        "data": str(args.data),
        "n": 6000 if args.quick else 8000,
        "tile": 10 if args.quick else 8,  # 64000 images: an MNIST-sized epoch
        "epochs": 3 if args.quick else 6,
        "device": "auto",
    }
    rows = []
    for processes in sorted({1, gpus}):
        run_config = {**config, "batch_size": 128 * processes}
        summary = measure_training(
            run_config, {f"{processes} GPU": (processes, 4, "torchrun")}, args.rounds
        )
        row = summary[f"{processes} GPU"]
        images = config["n"] * config["tile"]
        rows.append((processes, images / row["epoch_s"], row))
    single = rows[0][1]
    lines = [
        f"Data-parallel training on GPUs ({torch.cuda.get_device_name()} x {gpus}), "
        f"{config['n'] * config['tile']} images resident on each GPU, 128 images per GPU "
        "per step, nccl:",
        "",
        "| GPUs | epoch time (s) | images/s | scaling efficiency | final train loss "
        "| weights identical |",
        "|---|---|---|---|---|---|",
    ]
    for processes, speed, row in rows:
        lines.append(
            f"| {processes} | {row['epoch_s']:.2f} | {speed:,.0f} "
            f"| {speed / (processes * single):.2f} | {row['train_loss']:.5f} "
            f"| {'yes' if row['identical'] else 'NO'} |"
        )
    if gpus == 1:
        lines.append("")
        lines.append("Only one GPU here: rerun on a machine with several for the scaling line.")
    return lines


# -- the search ----------------------------------------------------------------------


def search(args) -> list[str]:
    import torch
    from joblib import parallel_config
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    from skconvae import ConvAutoencoderTransformer

    try:
        import distributed
    except ImportError as exc:
        raise ImportError('The search section needs Dask: pip install "skconvae[dask]"') from exc

    (X, y), _ = load_mnist(args.data)
    n = 600 if args.quick else 2000
    X, y = X[:n].reshape(n, -1), y[:n]
    pipeline = make_pipeline(
        ConvAutoencoderTransformer(**NETWORK, max_epochs=1 if args.quick else 3),
        LogisticRegression(max_iter=1000),
    )
    grid = {
        "convautoencodertransformer__latent_dim": [8, 16],
        "convautoencodertransformer__lr": [1e-3, 3e-3],
        "logisticregression__C": [0.1, 1.0],
    }
    torch.set_num_threads(1)
    # Workers run with the default warning filters: keep their reports out of the table.
    # Python reads PYTHONWARNINGS before sklearn can be imported, so a filter naming
    # sklearn's warning class is rejected ("Invalid -W option"): name the module instead.
    os.environ["PYTHONWARNINGS"] = "ignore:::sklearn.linear_model._logistic"
    rows, scores = {}, {}
    for _ in range(args.rounds):
        start = time.perf_counter()
        serial = GridSearchCV(pipeline, grid, cv=2, refit=False).fit(X, y)
        rows.setdefault("serial", []).append(time.perf_counter() - start)
        scores["serial"] = serial.cv_results_["mean_test_score"]

        start = time.perf_counter()
        with (
            # Workers import skconvae (and torch) as they start and build a first
            # optimizer (skconvae's Dask hook), as the serial run's process has before
            # its timed rounds: about 6.5 CPU seconds each.
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, dashboard_address=":0", preload=["skconvae"]
            ) as cluster,
            distributed.Client(cluster),
        ):
            rows.setdefault("start", []).append(time.perf_counter() - start)
            start = time.perf_counter()
            with parallel_config(backend="dask"):
                spread = GridSearchCV(pipeline, grid, cv=2, refit=False, n_jobs=-1).fit(X, y)
            rows.setdefault("dask", []).append(time.perf_counter() - start)
        scores["dask"] = spread.cv_results_["mean_test_score"]
    serial_s, dask_s = statistics.median(rows["serial"]), statistics.median(rows["dask"])
    same = np.array_equal(scores["serial"], scores["dask"])
    return [
        f"GridSearchCV, 8 candidates x 2 folds (16 fits), {n} MNIST images, "
        f"median of {args.rounds} rounds:",
        "",
        "| run | wall time (s) | vs serial | mean_test_score identical to serial |",
        "|---|---|---|---|",
        f"| serial, 1 torch thread | {serial_s:.1f} | 1.00x | - |",
        f"| Dask LocalCluster, 2 workers x 1 thread | {dask_s:.1f} | {dask_s / serial_s:.2f}x "
        f"| {'yes' if same else 'NO'} |",
        "",
        f"Starting the 2-worker LocalCluster, whose workers import skconvae as they start "
        f"and build a first optimizer (`preload=['skconvae']`), took "
        f"{statistics.median(rows['start']):.1f} s more (not counted above).",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", default=["ddp", "search"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=MNIST_PATH)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--train", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--exchange", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train or args.exchange:
        worker, (config, out) = (train, args.train) if args.train else (exchange, args.exchange)
        worker(json.loads(config), out)
        return
    if args.quick:
        args.rounds = 1
    load = os.getloadavg()[0]
    sections = {
        "ddp": ddp_section,
        "allreduce": allreduce_section,
        "search": search,
        "gpu": gpu_section,
    }
    print(f"Machine: {machine()}")
    print(f"Command: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}".rstrip())
    for name in args.sections:
        print()
        print("\n".join(sections[name](args)))
    print()
    print(f"Load average (1 min) at start {load:.2f}, at end {os.getloadavg()[0]:.2f}.")


if __name__ == "__main__":
    main()
