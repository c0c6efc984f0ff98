"""Training and encoding speed of skconvae beside hand-written PyTorch, plain skorch and Keras.

Every entry trains the same classic network (Conv(16)-MaxPool-Conv(8) /
Conv(8)-Upsample-Conv(1), 3x3, same padding, sigmoid output, BCE, Adam 1e-3,
batch 128) on the same 8000 MNIST images and encodes them. Each measurement runs in
a fresh subprocess, so peak RSS is per entry; rounds interleave the entries and the
report gives medians over rounds. The first epoch of each process (warm-up) is not
counted.

    python benchmarks/bench_speed.py                     # all sections (about 10 minutes)
    python benchmarks/bench_speed.py --sections memmap   # 1,000,000 memmapped images only
    python benchmarks/bench_speed.py --quick             # smoke run
    python benchmarks/bench_speed.py --sections gpu      # GPU section (skipped without CUDA)
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
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST_PATH as DEFAULT_DATA
from _common import machine

ENTRIES = ["hand_channels_last", "skconvae", "hand_default", "skorch_plain", "keras_torch"]


def load_images(path: str, n: int) -> np.ndarray:
    return np.load(path)["images"][:n]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the network, written out by hand for the baselines ------------------------------------


def classic_modules():
    import torch
    from torch import nn

    encoder = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 8, 3, padding="same"),
        nn.ReLU(),
    )
    decoder = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding="same"),
        nn.ReLU(),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(8, 1, 3, padding="same"),
    )
    return torch, nn, encoder, decoder


def timed_epochs(run_epoch, epochs: int) -> list[float]:
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        run_epoch()
        times.append(time.perf_counter() - start)
    return times


def timed_encodes(encode, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        encode()
        times.append(time.perf_counter() - start)
    return times


def bench_hand(images, epochs, batch_size, device, channels_last, precision, encode_batch):
    """A minimal hand-written loop: uint8 tensor, permuted-index batches, scale per batch."""
    torch, nn, encoder, decoder = classic_modules()
    torch.manual_seed(0)
    model = nn.Sequential(encoder, decoder).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    data = torch.from_numpy(images).unsqueeze(1).to(device)
    dtype = {"float32": None, "bfloat16": torch.bfloat16}[precision]
    dev_type = torch.device(device).type

    def run_epoch():
        order = torch.randperm(len(data)).to(device)
        for start in range(0, len(data), batch_size):
            x = data[order[start : start + batch_size]].float().div_(255)
            x = x.contiguous(memory_format=fmt)
            with torch.autocast(dev_type, dtype=dtype, enabled=dtype is not None):
                logits = model(x)
            loss = loss_fn(logits.float(), x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()

    def encode():
        out = np.empty((len(images), 8 * 14 * 14), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(data), encode_batch):
                x = data[start : start + encode_batch].float().div_(255)
                x = x.contiguous(memory_format=fmt)
                with torch.autocast(dev_type, dtype=dtype, enabled=dtype is not None):
                    z = encoder(x)
                out[start : start + encode_batch] = z.float().flatten(1).cpu().numpy()
        return out

    train = timed_epochs(lambda: (run_epoch(), _sync(torch, device)), epochs)
    enc = timed_encodes(lambda: (encode(), _sync(torch, device)), 3)
    return train, enc


def _sync(torch, device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def bench_skconvae(images, epochs, batch_size, device, precision):
    from skconvae import ConvAutoencoderTransformer

    ae = ConvAutoencoderTransformer(
        loss="bce",
        max_epochs=epochs,
        batch_size=batch_size,
        device=device,
        precision=precision,
        random_state=0,
    )
    ae.fit(images)
    train = list(ae.net_.history[:, "dur"])
    enc = timed_encodes(lambda: ae.transform(images), 3)
    return train, enc


def bench_skorch_plain(images, epochs, batch_size, device):
    """skorch's NeuralNet as a user would first write it: float arrays, default DataLoader."""
    torch, nn, encoder, decoder = classic_modules()
    from skorch import NeuralNet

    torch.manual_seed(0)
    X = (images[:, None] / 255).astype(np.float32)
    net = NeuralNet(
        nn.Sequential(encoder, decoder),
        criterion=nn.BCEWithLogitsLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=epochs,
        batch_size=batch_size,
        train_split=None,
        device=device,
        verbose=0,
    )
    net.fit(X, X)
    train = list(net.history[:, "dur"])
    encoder_net = NeuralNet(
        net.module_[0], criterion=nn.MSELoss, batch_size=batch_size, device=device
    ).initialize()
    enc = timed_encodes(lambda: encoder_net.forward(X).flatten(1).numpy(), 3)
    return train, enc


def bench_keras(images, epochs, batch_size):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D(2)(x)
    code = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(code)
    x = layers.UpSampling2D(2)(x)
    outputs = layers.Conv2D(1, 3, padding="same", activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    encoder = keras.Model(inputs, code)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    X = (images[..., None] / 255).astype(np.float32)
    train = timed_epochs(
        lambda: model.fit(X, X, batch_size=batch_size, epochs=1, verbose=0), epochs
    )
    enc = timed_encodes(lambda: encoder.predict(X, batch_size=1024, verbose=0), 3)
    return train, enc


def run_entry(args) -> dict:
    """Run one entry in this process and return its measurements."""
    images = load_images(args.data, args.n_images)
    device, precision, batch = args.device, args.precision, args.batch_size
    if args.entry == "skconvae":
        train, enc = bench_skconvae(images, args.epochs, batch, device, precision)
    elif args.entry == "hand_channels_last":
        train, enc = bench_hand(images, args.epochs, batch, device, True, precision, 1024)
    elif args.entry == "hand_default":
        train, enc = bench_hand(images, args.epochs, batch, device, False, precision, 1024)
    elif args.entry == "skorch_plain":
        train, enc = bench_skorch_plain(images, args.epochs, batch, device)
    elif args.entry == "keras_torch":
        train, enc = bench_keras(images, args.epochs, batch)
    else:
        raise ValueError(args.entry)
    later = train[1:] or train  # the first epoch of a process pays for warm-up
    return {
        "entry": args.entry,
        "s_per_epoch": statistics.median(later),
        "encode_s": statistics.median(enc),
        "n_images": len(images),
        "peak_rss_mb": peak_rss_mb(),
    }


def run_memmap(args) -> dict:
    """Transform 1,000,000 uint8 images read from an np.memmap; report peak RSS."""
    import pickle

    images = np.load(args.memmap_path, mmap_mode="r")
    with open(args.model_path, "rb") as f:
        ae = pickle.load(f)
    start = time.perf_counter()
    codes = ae.transform(images)
    elapsed = time.perf_counter() - start
    return {
        "entry": "memmap_transform",
        "n_images": len(images),
        "codes_shape": list(codes.shape),
        "seconds": elapsed,
        "peak_rss_mb": peak_rss_mb(),
    }


def subprocess_entry(args, entry: str, extra: list[str] | None = None) -> dict | None:
    cmd = [sys.executable, __file__, "--child", entry, "--data", args.data]
    cmd += ["--epochs", str(args.epochs), "--n-images", str(args.n_images)]
    cmd += ["--device", args.device, "--precision", args.precision]
    cmd += ["--batch-size", str(args.batch_size), *(extra or [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"  {entry}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_table(args) -> list[dict]:
    entries = [e for e in ENTRIES if e in args.entries]
    results: dict[str, list[dict]] = {e: [] for e in entries}
    for r in range(args.rounds):
        order = entries[r % len(entries) :] + entries[: r % len(entries)]
        for entry in order:
            res = subprocess_entry(args, entry)
            if res is not None:
                results[entry].append(res)
                print(
                    f"  round {r + 1} {entry}: {res['s_per_epoch']:.3f} s/epoch, "
                    f"encode {res['encode_s']:.3f} s",
                    file=sys.stderr,
                )
    rows = []
    for entry, runs in results.items():
        if not runs:
            continue
        rows.append(
            {
                "entry": entry,
                "s_per_epoch": statistics.median(r["s_per_epoch"] for r in runs),
                "encode_s": statistics.median(r["encode_s"] for r in runs),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "n_images": runs[0]["n_images"],
                "runs": len(runs),
            }
        )
    return rows


def print_table(rows: list[dict], title: str) -> None:
    ref = next((r for r in rows if r["entry"] == "hand_channels_last"), rows[0])
    print(f"\n### {title}\n")
    print(
        "| implementation | s/epoch (median) | train img/s | x hand-written | "
        "encode img/s | x hand-written | peak RSS (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        n = r["n_images"]
        print(
            f"| {r['entry']} | {r['s_per_epoch']:.3f} | {n / r['s_per_epoch']:,.0f} | "
            f"{r['s_per_epoch'] / ref['s_per_epoch']:.2f} | {n / r['encode_s']:,.0f} | "
            f"{ref['encode_s'] / r['encode_s']:.2f} | {r['peak_rss_mb']:,.0f} |"
        )


def memmap_section(args) -> dict | None:
    import pickle

    from skconvae import ConvAutoencoderTransformer

    images = load_images(args.data, 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(1_000_000, 28, 28))
        for start in range(0, len(mm), len(images)):
            mm[start : start + len(images)] = images
        mm.flush()
        del mm
        ae = ConvAutoencoderTransformer(latent_dim=32, max_epochs=1, random_state=0)
        ae.fit(images[:2000])
        model_path = Path(tmp) / "model.pkl"
        model_path.write_bytes(pickle.dumps(ae))
        return subprocess_entry(
            args, "memmap", ["--memmap-path", str(path), "--model-path", str(model_path)]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4, help="per process; the first is warm-up")
    parser.add_argument("--n-images", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--entries", nargs="+", default=ENTRIES)
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=["cpu", "memmap", "gpu"],
        default=["cpu", "memmap", "gpu"],
        help="cpu: the interleaved table; memmap: 1e6 memmapped images; gpu: needs CUDA",
    )
    parser.add_argument("--quick", action="store_true", help="1 round, 2 epochs, 2000 images")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--memmap-path", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        args.entry = args.child
        result = run_memmap(args) if args.child == "memmap" else run_entry(args)
        print(json.dumps(result))
        return
    if args.quick:
        args.rounds, args.epochs, args.n_images = 1, 2, 2000

    print(f"Machine: {machine()}")
    report: dict = {"machine": machine(), "args": vars(args)}
    if "cpu" in args.sections:
        rows = cpu_table(args)
        print_table(rows, f"CPU, {args.n_images} MNIST images, batch {args.batch_size}")
        report["cpu"] = rows
    if "memmap" in args.sections:
        res = memmap_section(args)
        report["memmap"] = res
        if res:
            print(
                f"\nmemmap: transformed {res['n_images']:,} uint8 28x28 images "
                f"(784 MB on disk) in {res['seconds']:.1f} s, peak RSS {res['peak_rss_mb']:,.0f} MB"
            )
    if "gpu" in args.sections:
        report["gpu"] = gpu_section(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def gpu_section(args) -> list[dict]:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: GPU section skipped")
        return []
    rows = []
    for precision in ["float32", "bfloat16"]:
        for batch in [128, 1024]:
            for entry in ["hand_channels_last", "skconvae"]:
                runs = []
                for _ in range(args.rounds):
                    child = argparse.Namespace(**vars(args))
                    child.device, child.precision, child.batch_size = "cuda", precision, batch
                    res = subprocess_entry(child, entry)
                    if res:
                        runs.append(res)
                if not runs:
                    continue
                n = runs[0]["n_images"]
                row = {
                    "entry": entry,
                    "precision": precision,
                    "batch_size": batch,
                    "train_img_s": n / statistics.median(r["s_per_epoch"] for r in runs),
                    "encode_img_s": n / statistics.median(r["encode_s"] for r in runs),
                }
                rows.append(row)
    print("\n### GPU\n")
    print("| implementation | precision | batch | train img/s | encode img/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['entry']} | {r['precision']} | {r['batch_size']} | "
            f"{r['train_img_s']:,.0f} | {r['encode_img_s']:,.0f} |"
        )
    return rows


if __name__ == "__main__":
    main()
