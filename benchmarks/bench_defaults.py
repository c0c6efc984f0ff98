"""Every default: ``Pipeline([("ae", ConvAutoencoderTransformer()), ("clf", SVC())])``.

Beside an SVC on raw pixels and ``PCA(32) -> SVC``, nothing tuned:

1. MNIST (``mnist_test10k.npz`` as flat uint8 rows): first 8000 images fit, last 2000
   scored; accuracy and fit time of the whole pipeline, per seed.
2. scikit-learn's 8x8 digits: mean accuracy of ``StratifiedKFold(5, shuffle=True,
   random_state=0)`` and fit time per fold, per seed.
3. ``ConvAutoencoderTransformer(latent_dim=32)``, every other parameter default:
   held-out MSE on MNIST ([0, 1] scale) against PCA(32). When the pipeline's
   autoencoder already has a 32-feature code (``latent_dim="auto"`` resolves to 32
   on MNIST), it is that same model and is not fitted again.

Seeds are the autoencoder's ``random_state``; the report gives the median, mean and
worst over seeds. Fit times are wall-clock seconds of ``Pipeline.fit`` (autoencoder
plus SVC) and the process's CPU seconds (user + sys) over the same call. Run from
the project root::

    python benchmarks/bench_defaults.py                  # seeds 0 1 2 (~10 min on 2 quiet cores)
    python benchmarks/bench_defaults.py --quick          # smoke run (seconds)
    python benchmarks/bench_defaults.py --seeds 0 --sections digits --json out.json

Checking a candidate default on more than the issue's split: ``--mnist-split last``
fits the last 8000 images and scores the first 2000, and ``--set`` gives the
autoencoder parameters in place of their defaults (values read as JSON, else as
strings)::

    python benchmarks/bench_defaults.py --sections mnist --mnist-split last \
        --set noise=gaussian noise_level=0.1

``--mnist-split K`` (0 to 4) scores the Kth block of 2000 images and fits the other
8000: run it for each K for five folds (``4`` is the issue's split, ``0`` the reverse).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from skconvae import ConvAutoencoderTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST_PATH, N_TRAIN, machine

N_COMPONENTS = 32
SECTIONS = ("mnist", "digits", "mse")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_fit(model, X, y=None) -> tuple[float, float]:
    """Fit ``model``; return (wall seconds, CPU seconds)."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    model.fit(X, y)
    return time.perf_counter() - wall, cpu_seconds() - cpu


def plain_pipeline(seed: int, params: dict) -> Pipeline:
    ae = ConvAutoencoderTransformer(**params, random_state=seed)
    return Pipeline([("ae", ae), ("clf", SVC())])


def parameter(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` from the command line; the value is read as JSON, else kept a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def references() -> dict[str, Pipeline]:
    return {
        "SVC on raw pixels": Pipeline([("clf", SVC())]),
        f"PCA({N_COMPONENTS}) -> SVC": Pipeline(
            [("pca", PCA(N_COMPONENTS, random_state=0)), ("clf", SVC())]
        ),
    }


def load_mnist_rows(path: Path, quick: bool, split: str = "first"):
    """``split="first"``: fit the first 8000 images, score the last 2000 (the issue's
    split); ``"last"``: fit the last 8000, score the first 2000; ``"0"`` to ``"4"``:
    score the images ``2000 K`` to ``2000 K + 1999`` and fit the other 8000 in their
    order (``"4"`` is ``"first"``, ``"0"`` is ``"last"``): five folds between them."""
    data = np.load(path)
    X = data["images"].reshape(len(data["images"]), -1)  # flat uint8 rows
    y = data["labels"]
    n_test = len(X) - N_TRAIN
    block = int({"first": N_TRAIN // n_test, "last": 0}.get(split, split))
    scored = np.zeros(len(X), dtype=bool)
    scored[block * n_test : (block + 1) * n_test] = True
    X, y = np.concatenate([X[~scored], X[scored]]), np.concatenate([y[~scored], y[scored]])
    train, test = slice(0, N_TRAIN), slice(N_TRAIN, None)
    if quick:
        train, test = slice(0, 2000), slice(N_TRAIN, N_TRAIN + 500)
    return X[train], y[train], X[test], y[test]


def mnist_section(args, log) -> dict:
    X_train, y_train, X_test, y_test = load_mnist_rows(args.data, args.quick, args.mnist_split)
    # The references see pixels in [0, 1], their best units for an RBF SVC at gamma="scale".
    F_train, F_test = X_train / 255.0, X_test / 255.0
    out = {"references": {}, "pipeline": [], "autoencoders": {}}
    for name, model in references().items():
        wall, cpu = timed_fit(model, F_train, y_train)
        out["references"][name] = dict(accuracy=model.score(F_test, y_test), wall_s=wall, cpu_s=cpu)
        log(f"mnist {name}: {out['references'][name]}")
    for seed in args.seeds:
        pipe = plain_pipeline(seed, args.params)
        if args.quick:
            pipe.set_params(ae__max_epochs=2)
        wall, cpu = timed_fit(pipe, X_train, y_train)
        ae = pipe.named_steps["ae"]
        row = dict(
            seed=seed,
            accuracy=pipe.score(X_test, y_test),
            wall_s=wall,
            cpu_s=cpu,
            epochs=len(ae.net_.history),
            latent_dim=ae.latent_dim_,
            load=os.getloadavg()[0],
        )
        out["pipeline"].append(row)
        out["autoencoders"][seed] = ae
        log(f"mnist pipeline seed {seed}: {row}")
    return out


def digits_section(args, log) -> dict:
    X, y = load_digits(return_X_y=True)
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))
    if args.quick:
        folds = folds[:1]

    def cross_validate(make_model) -> dict:
        accuracies, walls, cpus = [], [], []
        for train, test in folds:
            model = make_model()
            wall, cpu = timed_fit(model, X[train], y[train])
            accuracies.append(model.score(X[test], y[test]))
            walls.append(wall)
            cpus.append(cpu)
        return dict(
            accuracy=float(np.mean(accuracies)),
            folds=[round(a, 4) for a in accuracies],
            wall_s=float(np.mean(walls)),
            cpu_s=float(np.mean(cpus)),
        )

    out = {"references": {}, "pipeline": []}
    for name, model in references().items():
        out["references"][name] = cross_validate(lambda model=model: model.__class__(model.steps))
        log(f"digits {name}: {out['references'][name]}")
    for seed in args.seeds:

        def make(seed=seed):
            pipe = plain_pipeline(seed, args.params)
            return pipe.set_params(ae__max_epochs=2) if args.quick else pipe

        row = dict(seed=seed, **cross_validate(make), load=os.getloadavg()[0])
        out["pipeline"].append(row)
        log(f"digits pipeline seed {seed}: {row}")
    return out


def mse_section(args, log, fitted: dict) -> dict:
    X_train, _, X_test, _ = load_mnist_rows(args.data, args.quick, args.mnist_split)
    F_train, F_test = X_train / 255.0, X_test / 255.0
    pca = PCA(N_COMPONENTS, random_state=0).fit(F_train)
    pca_mse = float(np.mean((pca.inverse_transform(pca.transform(F_test)) - F_test) ** 2))
    rows = []
    for seed in args.seeds:
        ae = fitted.get(seed)
        reused = ae is not None and ae.latent_dim_ == N_COMPONENTS and ae.latent_dim == "auto"
        wall = cpu = None
        if not reused:
            params = {**args.params, "latent_dim": N_COMPONENTS}
            ae = ConvAutoencoderTransformer(**params, random_state=seed)
            if args.quick:
                ae.set_params(max_epochs=2)
            wall, cpu = timed_fit(ae, X_train)
        mse = -ae.score(X_test) / 255.0**2  # score is in the data's 0..255 units
        rows.append(
            dict(seed=seed, mse=mse, ratio=mse / pca_mse, reused=reused, wall_s=wall, cpu_s=cpu)
        )
        log(f"mse seed {seed}: {rows[-1]}")
    return {"pca_mse": pca_mse, "autoencoder": rows}


def summary(values, fmt: str, worst=min) -> str:
    med, mean = statistics.median(values), statistics.fmean(values)
    return f"{med:{fmt}} / {mean:{fmt}} / {worst(values):{fmt}}"


def report(results: dict, args) -> str:
    lines = []
    seeds = ", ".join(str(s) for s in args.seeds)
    given = ", ".join(f"{key}={value!r}" for key, value in args.params.items())
    pipeline = f"**`Pipeline([ConvAutoencoderTransformer({given}), SVC()])`**"
    if "mnist" in results:
        r = results["mnist"]
        n_train = "2000" if args.quick else "8000"
        lines += [
            f"MNIST, flat uint8 rows, split {args.mnist_split!r}: {n_train} fit / the other "
            f"{'500' if args.quick else '2000'} scored; "
            f"autoencoder seeds {seeds} (median / mean / worst):",
            "",
            "| model | accuracy | fit wall (s) | fit CPU (s) |",
            "|---|---|---|---|",
        ]
        for name, ref in r["references"].items():
            lines.append(
                f"| {name} | {ref['accuracy']:.4f} | {ref['wall_s']:.1f} | {ref['cpu_s']:.1f} |"
            )
        rows = r["pipeline"]
        lines.append(
            f"| {pipeline} | "
            f"**{summary([x['accuracy'] for x in rows], '.4f')}** | "
            f"{summary([x['wall_s'] for x in rows], '.1f', max)} | "
            f"{summary([x['cpu_s'] for x in rows], '.1f', max)} |"
        )
        lines += [
            "",
            "Per seed: "
            + "; ".join(
                f"{x['seed']}: {x['accuracy']:.4f} in {x['wall_s']:.1f} s ({x['epochs']} epochs, "
                f"{x['latent_dim']} features, load {x['load']:.1f})"
                for x in rows
            ),
            "",
        ]
    if "digits" in results:
        r = results["digits"]
        lines += [
            "Digits (8x8), mean accuracy of StratifiedKFold(5, shuffle=True, random_state=0); "
            f"autoencoder seeds {seeds} (median / mean / worst); fit time per fold:",
            "",
            "| model | CV accuracy | fit wall per fold (s) | fit CPU per fold (s) |",
            "|---|---|---|---|",
        ]
        for name, ref in r["references"].items():
            lines.append(
                f"| {name} | {ref['accuracy']:.4f} | {ref['wall_s']:.2f} | {ref['cpu_s']:.2f} |"
            )
        rows = r["pipeline"]
        lines.append(
            f"| {pipeline} | "
            f"**{summary([x['accuracy'] for x in rows], '.4f')}** | "
            f"{summary([x['wall_s'] for x in rows], '.1f', max)} | "
            f"{summary([x['cpu_s'] for x in rows], '.1f', max)} |"
        )
        lines += [
            "",
            "Per seed: "
            + "; ".join(
                f"{x['seed']}: {x['accuracy']:.4f} (folds {x['folds']}, load {x['load']:.1f})"
                for x in rows
            ),
            "",
        ]
    if "mse" in results:
        r = results["mse"]
        rows = r["autoencoder"]
        lines += [
            "MNIST held-out reconstruction MSE ([0, 1] scale), 32 features; autoencoder seeds "
            f"{seeds} (median / mean / worst):",
            "",
            "| model | MSE | ratio to PCA(32) |",
            "|---|---|---|",
            f"| PCA(32) | {r['pca_mse']:.5f} | 1.000 |",
            f"| **`ConvAutoencoderTransformer(latent_dim=32{', ' * bool(given)}{given})`** | "
            f"{summary([x['mse'] for x in rows], '.5f', max)} | "
            f"**{summary([x['ratio'] for x in rows], '.3f', max)}** |",
            "",
        ]
        if all(x["reused"] for x in rows):
            lines += ['(The pipeline\'s autoencoders: `latent_dim="auto"` is 32 on MNIST.)', ""]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=MNIST_PATH, help="mnist_test10k.npz")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="smoke run (numbers meaningless)")
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    parser.add_argument(
        "--mnist-split",
        choices=("first", "last", "0", "1", "2", "3", "4"),
        default="first",
        help="fit the first 8000 MNIST images and score the last 2000, or the reverse; "
        "K (0-4): score images 2000K to 2000K+1999 and fit the other 8000",
    )
    parser.add_argument(
        "--set",
        dest="params",
        type=parameter,
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="autoencoder parameters in place of their defaults",
    )
    args = parser.parse_args(argv)
    args.params = dict(args.params)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start, load_before = time.perf_counter(), os.getloadavg()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {message}", file=sys.stderr, flush=True)

    results = {}
    fitted = {}
    if "mnist" in args.sections:
        results["mnist"] = mnist_section(args, log)
        fitted = results["mnist"].pop("autoencoders")
    if "digits" in args.sections:
        results["digits"] = digits_section(args, log)
    if "mse" in args.sections:
        results["mse"] = mse_section(args, log, fitted)

    command = "python benchmarks/bench_defaults.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    load_after = os.getloadavg()
    print(report(results, args))
    print(f"Command: `{command.strip()}`")
    print(f"Machine: {machine()}")
    print(
        f"Load average (1/5/15 min) before: {'/'.join(f'{v:.1f}' for v in load_before)}, "
        f"after: {'/'.join(f'{v:.1f}' for v in load_after)}; "
        f"total wall time {time.perf_counter() - start:.0f} s"
        + ("  [--quick smoke run: numbers not meaningful]" if args.quick else "")
    )
    if args.json:
        args.json.write_text(
            json.dumps(dict(results=results, machine=machine()), indent=2, default=float)
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
