"""Inference and training speed of skconvae beside hand-written PyTorch, plain skorch and Keras.

Sections (``--sections``, all CPU ones by default):

- ``allocator``: the classic encoder alone, one thread, per batch size: images per
  CPU-second, page faults and the kernel's share of CPU time, with glibc's default
  allocator settings, with it told never to return memory to the system, and with its
  thresholds raised once as skconvae does (``skconvae/_allocator.py``).
- ``inference``: the classic network (``CLASSIC`` below) and a ``latent_dim=32`` one,
  each fitted for one epoch on 8000 MNIST images, then ``transform`` (encode),
  ``inverse_transform`` (decode) and ``score_samples`` on all 10,000 beside a
  hand-written loop that calls the same module, swept over batch sizes 32..2048 for
  both; skconvae's own choice of batch size is timed after its one-time measurement.
  One process per network; rounds interleave everything and the tables give medians.
- ``train``: every entry trains the classic network (BCE, Adam 1e-3, batch 128) on the
  same 8000 images, each in a fresh process, rounds interleaved; the first epoch of
  each process (warm-up) is not counted.
- ``train_in_process``: skconvae's epoch (skorch's ``partial_fit``) and a hand-written
  loop's, alternating in one process on copies of one fitted network.
- ``compile``: ``fit`` and ``transform`` with ``compile=True`` beside eager, in fresh
  processes; later transforms are timed once the batch size is chosen.
- ``memmap``: 1,000,000 uint8 28x28 images read from an ``np.memmap``; peak RSS.
- ``gpu_inference``: the ``inference`` section on CUDA, float32 and bfloat16, on 40,000
  images (MNIST tiled) at batch sizes 128..8192; the hand-written loop's inputs live on
  the GPU already.
- ``gpu_train``: the ``train`` section's hand-written loop and skconvae on CUDA,
  float32 and bfloat16, batch 128 and 1024, data resident on the GPU.
- ``gpu``: both GPU sections (skipped without a GPU).

Every section prints the machine's load average beside its numbers.

    python benchmarks/bench_speed.py --rounds 5                   # CPU sections
    python benchmarks/bench_speed.py --sections inference --quick  # smoke run
    python benchmarks/bench_speed.py --sections gpu               # needs CUDA
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

ENTRIES = [
    "hand_channels_last",
    "skconvae",
    "hand_kept_memory",
    "hand_fused",
    "hand_default",
    "skorch_plain",
    "keras_torch",
]
CPU_SECTIONS = ["allocator", "inference", "train", "train_in_process", "compile", "memmap"]
GPU_SECTIONS = ["gpu_inference", "gpu_train"]

# The classic network, pinned here and nowhere else.
# The classic network (Conv(16)-MaxPool-Conv(8) / Conv(8)-Upsample-Conv(1), conv code), trained
# like the hand-written loop: Adam at a constant lr of 1e-3.
CLASSIC = dict(architecture="classic", loss="bce", lr=1e-3, lr_schedule="constant")
NETWORKS = {"classic": CLASSIC, "latent_dim=32": {**CLASSIC, "latent_dim": 32}}
SWEEP_BATCH_SIZES = [32, 64, 128, 256, 512, 1024, 2048]
GPU_SWEEP_BATCH_SIZES = [128, 512, 1024, 2048, 4096, 8192]
GPU_INFERENCE_IMAGES = 40_000
PASSES = {"encode": "transform", "decode": "inverse_transform", "score": "score_samples"}
# Keys of the net's measured batch sizes, per pass.
_CHOOSER_KIND = {"encode": "encode", "decode": "decode", "score": "errors"}


CPU_FIELDS = ("ru_utime", "ru_stime")


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


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


def hand_train_epoch(forward, optimizer, data, batch_size, memory_format, autocast=None):
    """One epoch of the hand-written training loop: permuted-index batches of the uint8
    tensor ``data``, scaled to [0, 1] per batch, BCE on ``forward``'s logits, an
    optimizer step and the loss read back per batch (as skorch records it)."""
    import contextlib

    import torch
    import torch.nn.functional as F

    autocast = autocast or contextlib.nullcontext
    order = torch.randperm(len(data)).to(data.device)
    for start in range(0, len(data), batch_size):
        x = data[order[start : start + batch_size]].float().div_(255)
        x = x.contiguous(memory_format=memory_format)
        with autocast():
            logits = forward(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()


def bench_hand(
    images, epochs, batch_size, device, channels_last, precision, encode_batch, fused=None
):
    """A minimal hand-written loop: uint8 tensor, permuted-index batches, scale per batch;
    ``fused=True``: Adam's fused kernel, as skconvae's ``optimizer="adam"`` runs."""
    torch, nn, encoder, decoder = classic_modules()
    torch.manual_seed(0)
    model = nn.Sequential(encoder, decoder).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    data = torch.from_numpy(images).unsqueeze(1).to(device)
    dtype = {"float32": None, "bfloat16": torch.bfloat16}[precision]
    dev_type = torch.device(device).type

    def autocast():
        return torch.autocast(dev_type, dtype=dtype, enabled=dtype is not None)

    def run_epoch():
        hand_train_epoch(model, optimizer, data, batch_size, fmt, autocast)

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


def bench_skconvae(images, epochs, batch_size, device, precision, compile=False):
    from skconvae import ConvAutoencoderTransformer

    ae = ConvAutoencoderTransformer(
        **CLASSIC,
        max_epochs=epochs,
        batch_size=batch_size,
        device=device,
        precision=precision,
        compile=compile,
        random_state=0,
    )
    start = time.perf_counter()
    ae.fit(images)
    fit_s = time.perf_counter() - start
    train = list(ae.net_.history[:, "dur"])
    first = timed_encodes(lambda: ae.transform(images), 1)
    settle_batch_size(ae, "encode", lambda: ae.transform(images))
    enc = timed_encodes(lambda: ae.transform(images), 3)
    return train, enc, {"fit_s": fit_s, "first_encode_s": first[0]}


def settle_batch_size(ae, kind: str, call, most: int = 10) -> None:
    """Call ``call`` (untimed) until the batch-size measurement of inference pass
    ``kind`` has chosen, so that later timings are of the chosen size, not the schedule
    of candidates (about two calls of 10,000 images on the CPU)."""
    for _ in range(most):
        pass_ = (kind, bool(ae.compile))  # fit's own passes run eagerly, apart
        choosers = [c for key, c in ae.net_._batch_sizes.items() if key[0] == pass_]
        if choosers and all(c.chosen is not None for c in choosers):
            return
        call()


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
    extra = {}
    if args.entry in ("skconvae", "skconvae_compile"):
        compile = args.entry == "skconvae_compile"
        train, enc, extra = bench_skconvae(images, args.epochs, batch, device, precision, compile)
    elif args.entry in ("hand_channels_last", "hand_kept_memory", "hand_fused"):
        if args.entry != "hand_channels_last":  # what skconvae does to glibc (_allocator.py)
            from skconvae._allocator import raise_malloc_thresholds

            raise_malloc_thresholds()
        fused = True if args.entry == "hand_fused" else None
        train, enc = bench_hand(images, args.epochs, batch, device, True, precision, batch, fused)
    elif args.entry == "hand_default":
        train, enc = bench_hand(images, args.epochs, batch, device, False, precision, batch)
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
        **extra,
    }


def subprocess_entry(
    args, entry: str, extra: list[str] | None = None, env: dict | None = None
) -> dict | None:
    cmd = [sys.executable, __file__, "--child", entry, "--data", args.data]
    cmd += ["--epochs", str(args.epochs), "--n-images", str(args.n_images)]
    cmd += ["--device", args.device, "--precision", args.precision]
    cmd += ["--batch-size", str(args.batch_size), "--rounds", str(args.rounds), *(extra or [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        print(f"  {entry}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # User+sys seconds of the whole child process: less sensitive to load than wall time.
    result["process_cpu_s"] = sum(getattr(after, f) - getattr(before, f) for f in CPU_FIELDS)
    return result


def interleaved(args, entries: list[str], rounds: int) -> dict[str, list[dict]]:
    """Run every entry once per round in a fresh process, rotating the order."""
    results: dict[str, list[dict]] = {e: [] for e in entries}
    for r in range(rounds):
        order = entries[r % len(entries) :] + entries[: r % len(entries)]
        for entry in order:
            res = subprocess_entry(args, entry)
            if res is not None:
                results[entry].append(res)
                print(f"  round {r + 1} {entry}: {res['s_per_epoch']:.3f} s/epoch", file=sys.stderr)
    return results


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


# -- training ---------------------------------------------------------------------------


def train_section(args) -> list[dict]:
    before = load_average()
    results = interleaved(args, [e for e in ENTRIES if e in args.entries], args.rounds)
    rows = [
        {
            "entry": entry,
            "s_per_epoch": median_of(runs, "s_per_epoch"),
            "process_cpu_s": median_of(runs, "process_cpu_s"),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "n_images": runs[0]["n_images"],
            "runs": len(runs),
        }
        for entry, runs in results.items()
        if runs
    ]
    # The reference at its best: the fastest hand-written loop.
    hand = [r for r in rows if r["entry"].startswith("hand")] or rows
    ref = min(hand, key=lambda r: r["s_per_epoch"])
    print(f"\n### Training, CPU: {args.n_images} MNIST images, batch {args.batch_size}\n")
    print(f"{args.rounds} rounds; {before} before, {load_average()} after.\n")
    print(
        "| implementation | s/epoch (median) | train img/s | time vs best hand-written | "
        "process CPU s | peak RSS (MB) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {LABELS.get(r['entry'], r['entry'])} | {r['s_per_epoch']:.3f} | "
            f"{r['n_images'] / r['s_per_epoch']:,.0f} | "
            f"{r['s_per_epoch'] / ref['s_per_epoch']:.2f} | {r['process_cpu_s']:.1f} | "
            f"{r['peak_rss_mb']:,.0f} |"
        )
    return rows


def train_in_process_section(args) -> dict:
    """skconvae's epoch beside a hand-written loop's, alternating in one process.

    The ``train`` section runs each entry in a fresh process, so its ratio holds
    everything that differs between the processes (imports, memory the fit's setup
    left behind); here both loops train copies of one fitted classic network on the
    same tensor in the same process: skconvae through skorch's ``partial_fit`` (one
    epoch), the hand-written loop with fused Adam as skconvae's ``optimizer="adam"``.
    """
    import copy

    import torch

    from skconvae import ConvAutoencoderTransformer

    images = load_images(args.data, args.n_images)
    params = dict(**CLASSIC, max_epochs=1, batch_size=args.batch_size, random_state=0)
    net = ConvAutoencoderTransformer(**params).fit(images).net_
    data = torch.from_numpy(images).unsqueeze(1)
    module = copy.deepcopy(net.module_).train()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, fused=True)

    def hand_epoch():
        cl = torch.channels_last
        hand_train_epoch(module.reconstruct_logits, optimizer, data, args.batch_size, cl)

    epochs = {"hand": hand_epoch, "skconvae": lambda: net.partial_fit(data)}
    times: dict[str, list[float]] = {name: [] for name in epochs}
    before = load_average()
    for r in range(args.rounds + 1):  # round 0 warms up
        for name in list(epochs)[:: 1 if r % 2 else -1]:
            start = time.perf_counter()
            epochs[name]()
            if r:
                times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"\n### Training in one process, CPU: {args.n_images} MNIST images, batch "
        f"{args.batch_size}, {args.rounds} alternating rounds\n"
    )
    print(f"{before} before, {load_average()} after.\n")
    print("| loop | s/epoch (median) | every round | time vs hand-written |")
    print("|---|---|---|---|")
    for name, t in times.items():
        rounds = ", ".join(f"{x:.3f}" for x in t)
        print(f"| {name} | {med[name]:.3f} | {rounds} | {med[name] / med['hand']:.2f} |")
    return {"s_per_epoch": med, "rounds": times}


LABELS = {
    "hand_channels_last": "hand-written PyTorch loop, `channels_last`, uint8 data scaled per batch",
    "skconvae": "**skconvae** `ConvAutoencoderTransformer` (classic network)",
    "hand_kept_memory": "hand-written loop, `channels_last`, glibc thresholds raised as skconvae",
    "hand_fused": "the same, with Adam's fused kernel as skconvae",
    "hand_default": "hand-written loop, default memory format",
    "skorch_plain": "plain skorch `NeuralNet`, default DataLoader",
    "keras_torch": "Keras 3 on the torch backend, same network",
    "skconvae_compile": "skconvae, `compile=True`",
}


# -- compile ------------------------------------------------------------------------------


def compile_section(args) -> list[dict]:
    before = load_average()
    rounds = args.rounds
    results = interleaved(args, ["skconvae", "skconvae_compile"], rounds)
    if not all(results.values()):
        return []
    rows = []
    for entry, runs in results.items():
        n = runs[0]["n_images"]
        rows.append(
            {
                "entry": entry,
                "fit_s": median_of(runs, "fit_s"),
                "s_per_epoch": median_of(runs, "s_per_epoch"),
                "first_encode_s": median_of(runs, "first_encode_s"),
                "encode_img_s": n / median_of(runs, "encode_s"),
            }
        )
    eager = rows[0]
    print(f"\n### compile=True, CPU: fit {args.epochs} epochs on {args.n_images} images\n")
    print(f"{rounds} rounds; {before} before, {load_average()} after.\n")
    print(
        "| | fit (s) | fit vs eager | s/epoch | first transform (s) | "
        "later transform img/s | vs eager |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {LABELS[r['entry']]} | {r['fit_s']:.2f} | {r['fit_s'] / eager['fit_s']:.2f} | "
            f"{r['s_per_epoch']:.3f} | {r['first_encode_s']:.2f} | {r['encode_img_s']:,.0f} | "
            f"{r['encode_img_s'] / eager['encode_img_s']:.2f} |"
        )
    return rows


# -- inference --------------------------------------------------------------------------


def hand_loops(
    module, images: np.ndarray, codes: np.ndarray, device="cpu", precision=None, resident=True
):
    """Minimal loops calling the fitted module directly: uint8 batch -> scaled float in
    ``channels_last`` -> module -> preallocated float32 output in host memory.

    On a GPU the module runs under autocast at ``precision``; with ``resident`` the
    inputs already live in device memory (the loop's best case), else each batch is
    sent from host memory as the usual ``.to(device)`` does."""
    import torch

    home = device if resident else "cpu"
    data = torch.from_numpy(images).unsqueeze(1).to(home)
    latent = torch.from_numpy(codes).to(home)
    scale, shift = module.input_scale, module.input_shift
    n, cl = len(images), torch.channels_last
    dtype = {None: None, "float32": None, "bfloat16": torch.bfloat16}[precision]

    def autocast():
        return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)

    def to_network(start, batch):
        x = data[start : start + batch].to(device, non_blocking=True).float()
        return x, (x * scale + shift).contiguous(memory_format=cl)

    def encode(batch):
        out = np.empty((n, module.n_features_out), np.float32)
        with torch.inference_mode(), autocast():
            for start in range(0, n, batch):
                z = module.encode(to_network(start, batch)[1]).float()
                out[start : start + batch] = z.cpu().numpy()
        return out

    def decode(batch):
        out = np.empty((n, 1, *images.shape[1:]), np.float32)
        with torch.inference_mode(), autocast():
            for start in range(0, n, batch):
                y = module.decode(latent[start : start + batch].to(device)).float()
                out[start : start + batch] = ((y - shift) / scale).cpu().numpy()
        return out

    def score(batch):
        out = np.empty(n, np.float32)
        with torch.inference_mode(), autocast():
            for start in range(0, n, batch):
                x, xn = to_network(start, batch)
                y = module.activate(module.reconstruct_logits(xn).float())
                error = ((y - shift) / scale - x).square().flatten(1).mean(1)
                out[start : start + batch] = -error.cpu().numpy()
        return out

    return {"encode": encode, "decode": decode, "score": score}


def timed_call(fn) -> tuple[float, float]:
    """Wall and CPU (user+sys, all threads) seconds of one call (every call returns host
    arrays, so a GPU has finished its work when it returns)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def run_inference_sweep(args) -> dict:
    """One network: hand-written loops and skconvae per batch size, interleaved rounds."""
    import skconvae._net as net_module
    from skconvae import ConvAutoencoderTransformer

    images = load_images(args.data, 10_000)
    params = NETWORKS[args.network]
    device, precision = args.device, args.precision
    ae = ConvAutoencoderTransformer(
        **params, max_epochs=1, random_state=0, device=device, precision=precision
    ).fit(images[:8000])
    # On a GPU 10,000 images encode in milliseconds: time a longer call.
    images = np.concatenate([images] * max(1, args.n_infer // len(images)))
    codes = ae.transform(images)
    hand = hand_loops(ae.net_.module_, images, codes, device, precision)
    # On a GPU also the same loop fed from host memory, as skconvae is.
    on_gpu = device.startswith("cuda")
    host = hand_loops(ae.net_.module_, images, codes, device, precision, False) if on_gpu else {}
    ours = {
        "encode": lambda: ae.transform(images),
        "decode": lambda: ae.inverse_transform(codes),
        "score": lambda: ae.score_samples(images),
    }

    def forced(op, batch):
        net_module.INFERENCE_BATCH_SIZE = batch
        try:
            return ours[op]()
        finally:
            net_module.INFERENCE_BATCH_SIZE = None

    # A fresh copy of the net measures its batch sizes on its first calls.
    ae.net_._batch_sizes.clear()
    first = {op: timed_call(ours[op]) for op in ours}
    for op in ours:  # warm every shape once
        for batch in args.sweep:
            hand[op](batch)
            if host:
                host[op](batch)
    times: dict[str, list] = {}
    for r in range(args.rounds):
        for op in ours:
            calls = [("auto", lambda op=op: ours[op]())]
            for batch in args.sweep:
                calls.append((f"hand {batch}", lambda op=op, b=batch: hand[op](b)))
                if host:
                    calls.append((f"host {batch}", lambda op=op, b=batch: host[op](b)))
                calls.append((f"ours {batch}", lambda op=op, b=batch: forced(op, b)))
            calls = calls[r % len(calls) :] + calls[: r % len(calls)]
            if r % 2:
                calls.reverse()
            # Untimed: the first call after another pass pays for the switch (the kernel
            # may have no huge pages left for the new output array, caches are cold), and
            # the rotation above would charge it to the same entry in most rounds.
            ours[op]()
            for name, call in calls:
                times.setdefault(f"{op} {name}", []).append(timed_call(call))
        print(f"  {args.network}: round {r + 1} done, {load_average()}", file=sys.stderr)
    # The measurement may span calls: read the sizes it settled on after the rounds.
    chosen = {
        op: next(c.chosen for k, c in ae.net_._batch_sizes.items() if k[0][0] == kind)
        for op, kind in _CHOOSER_KIND.items()
    }
    n = len(images)
    img_s = {k: n / statistics.median(w for w, _ in v) for k, v in times.items()}
    img_cpu_s = {k: n / statistics.median(c for _, c in v) for k, v in times.items()}
    return {
        "network": args.network,
        "n_images": n,
        "img_s": img_s,
        "img_cpu_s": img_cpu_s,
        "chosen_batch": chosen,
        "first_call_img_s": {op: n / first[op][0] for op in first},
    }


def inference_section(args, title="CPU") -> list[dict]:
    before = load_average()
    results = []
    for network in NETWORKS:
        extra = ["--network", network, "--sweep", *map(str, args.sweep)]
        res = subprocess_entry(args, "inference", [*extra, "--n-infer", str(args.n_infer)])
        if res:
            results.append(res)
    after = load_average()
    n = results[0]["n_images"] if results else args.n_infer
    print(
        f"\n### Inference, {title}: {n:,} MNIST images, img/s (median of {args.rounds} "
        f"interleaved rounds)\n"
    )
    print(f"{before} before, {after} after.\n")
    print(
        "| network | pass | hand-written loop, best batch | skconvae (its batch) | "
        "x hand-written best | per CPU-second: hand best / skconvae | skconvae first call |"
    )
    print("|---|---|---|---|---|---|---|")
    for res in results:
        for op, method in PASSES.items():
            img_s, cpu = res["img_s"], res["img_cpu_s"]
            best = max(args.sweep, key=lambda b: img_s[f"{op} hand {b}"])
            hand_best, auto = img_s[f"{op} hand {best}"], img_s[f"{op} auto"]
            print(
                f"| {res['network']} | `{method}` | {hand_best:,.0f} ({best}) | "
                f"**{auto:,.0f}** ({res['chosen_batch'][op]}) | **{auto / hand_best:.2f}** | "
                f"{cpu[f'{op} hand {best}']:,.0f} / {cpu[f'{op} auto']:,.0f} | "
                f"{res['first_call_img_s'][op]:,.0f} |"
            )
    loops = [("hand", "hand-written"), ("ours", "skconvae")]
    if results and any(" host " in key for key in results[0]["img_s"]):
        loops.insert(1, ("host", "hand-written, host data"))
        print("\nThe hand-written loop fed from host memory (`.to(device)` per batch):\n")
        print("| network | pass | its best batch | img/s | skconvae x it |")
        print("|---|---|---|---|---|")
        for res in results:
            for op, method in PASSES.items():
                img_s = res["img_s"]
                best = max(args.sweep, key=lambda b: img_s[f"{op} host {b}"])
                ratio = img_s[f"{op} auto"] / img_s[f"{op} host {best}"]
                print(
                    f"| {res['network']} | `{method}` | {best} | "
                    f"{img_s[f'{op} host {best}']:,.0f} | **{ratio:.2f}** |"
                )
    print("\nAll curves, img/s per batch size (skconvae with its batch size forced):\n")
    print("| network | pass | loop | " + " | ".join(map(str, args.sweep)) + " |")
    print("|---|---|---|" + "---|" * len(args.sweep))
    for res in results:
        for op, method in PASSES.items():
            for who, label in loops:
                cells = " | ".join(f"{res['img_s'][f'{op} {who} {b}']:,.0f}" for b in args.sweep)
                print(f"| {res['network']} | `{method}` | {label} | {cells} |")
    return results


# -- where the CPU time goes: the allocator ---------------------------------------------------


def run_allocator(args) -> dict:
    """Encode the MNIST test set with the classic encoder, one thread, per batch size:
    images per CPU-second, minor page faults and the kernel's share of CPU time."""
    import torch

    from skconvae.nn import ConvAutoencoder

    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.raise_thresholds:
        from skconvae._allocator import raise_malloc_thresholds

        raise_malloc_thresholds()
    module = ConvAutoencoder(in_channels=1, input_size=(28, 28), filters=(16, 8))
    module = module.eval().to(memory_format=torch.channels_last)
    images = torch.from_numpy(load_images(args.data, 10_000)).unsqueeze(1)

    def encode(batch):
        with torch.inference_mode():
            for start in range(0, len(images), batch):
                x = images[start : start + batch].float().div_(255)
                module.encode(x.contiguous(memory_format=torch.channels_last)).numpy()

    rows = {}
    for batch in args.sweep:
        encode(batch)  # warm-up
        before = resource.getrusage(resource.RUSAGE_SELF)
        encode(batch)
        after = resource.getrusage(resource.RUSAGE_SELF)
        user, sys_s = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
        rows[batch] = {
            "img_per_cpu_s": len(images) / (user + sys_s),
            "page_faults": after.ru_minflt - before.ru_minflt,
            "kernel_share": sys_s / (user + sys_s),
        }
    return {"rows": rows}


def allocator_section(args) -> dict:
    before = load_average()
    runs = {
        "default allocator": subprocess_entry(args, "allocator", ["--sweep", *map(str, args.sweep)])
    }
    never_trim = {"MALLOC_TRIM_THRESHOLD_": str(10**10), "MALLOC_MMAP_THRESHOLD_": str(10**9)}
    runs["allocator told never to trim"] = subprocess_entry(
        args, "allocator", ["--sweep", *map(str, args.sweep)], env=never_trim
    )
    runs["thresholds raised once (skconvae's fit and inference)"] = subprocess_entry(
        args, "allocator", ["--sweep", *map(str, args.sweep), "--raise-thresholds"]
    )
    print("\n### Where the CPU time goes: classic encoder, one thread, 10,000 images\n")
    print(f"{before} before, {load_average()} after.\n")
    print("| | batch | " + " | ".join(map(str, args.sweep)) + " |")
    print("|---|---|" + "---|" * len(args.sweep))
    for label, res in runs.items():
        if not res:
            continue
        rows = {int(b): r for b, r in res["rows"].items()}
        for key, name, fmt in (
            ("img_per_cpu_s", "img per CPU-second", "{:,.0f}"),
            ("page_faults", "minor page faults", "{:,}"),
            ("kernel_share", "kernel share of CPU time", "{:.0%}"),
        ):
            cells = " | ".join(fmt.format(rows[b][key]) for b in args.sweep)
            print(f"| {label} | {name} | {cells} |")
    return runs


# -- memory-mapped input ---------------------------------------------------------------------


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


def memmap_section(args) -> dict | None:
    import pickle

    from skconvae import ConvAutoencoderTransformer

    before = load_average()
    images = load_images(args.data, 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(1_000_000, 28, 28))
        for start in range(0, len(mm), len(images)):
            mm[start : start + len(images)] = images
        mm.flush()
        del mm
        ae = ConvAutoencoderTransformer(**NETWORKS["latent_dim=32"], max_epochs=1, random_state=0)
        ae.fit(images[:2000])
        model_path = Path(tmp) / "model.pkl"
        model_path.write_bytes(pickle.dumps(ae))
        res = subprocess_entry(
            args, "memmap", ["--memmap-path", str(path), "--model-path", str(model_path)]
        )
    if res:
        print(
            f"\nmemmap: transformed {res['n_images']:,} uint8 28x28 images (784 MB on disk) "
            f"with the latent_dim=32 network in {res['seconds']:.1f} s, "
            f"peak RSS {res['peak_rss_mb']:,.0f} MB ({before} before, {load_average()} after)"
        )
    return res


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
    parser.add_argument("--sweep", nargs="+", type=int, default=SWEEP_BATCH_SIZES)
    parser.add_argument(
        "--n-infer", type=int, default=10_000, help="images per inference call (MNIST, tiled)"
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=[*CPU_SECTIONS, *GPU_SECTIONS, "gpu"],
        default=CPU_SECTIONS,
        help="allocator, inference, train, train_in_process, compile, memmap (CPU); "
        "gpu_inference, "
        "gpu_train, or both as gpu: need CUDA",
    )
    parser.add_argument("--quick", action="store_true", help="1 round, 2 epochs, 2000 images")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--network", help=argparse.SUPPRESS)
    parser.add_argument("--memmap-path", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--raise-thresholds", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        args.entry = args.child
        runners = {"memmap": run_memmap, "inference": run_inference_sweep}
        runners["allocator"] = run_allocator
        print(json.dumps(runners.get(args.child, run_entry)(args)))
        return
    if args.quick:
        args.rounds, args.epochs, args.n_images = 1, 2, 2000

    print(f"Machine: {machine()}")
    report: dict = {"machine": machine(), "args": vars(args)}
    sections = {
        "allocator": allocator_section,
        "inference": inference_section,
        "train": train_section,
        "train_in_process": train_in_process_section,
        "compile": compile_section,
        "memmap": memmap_section,
        "gpu_inference": gpu_inference_section,
        "gpu_train": gpu_train_section,
    }
    if "gpu" in args.sections:
        args.sections = [*args.sections, *GPU_SECTIONS]
    for name, section in sections.items():
        if name in args.sections:
            report[name] = section(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def gpu_inference_section(args) -> dict:
    """The inference sweep on CUDA, per precision, at larger batch sizes."""
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: GPU inference section skipped")
        return {}
    results = {}
    for precision in ["float32", "bfloat16"]:
        child = argparse.Namespace(**vars(args))
        child.device, child.precision, child.sweep = "cuda", precision, GPU_SWEEP_BATCH_SIZES
        child.n_infer = max(args.n_infer, GPU_INFERENCE_IMAGES)
        results[precision] = inference_section(child, title=f"CUDA, {precision}")
    return results


def gpu_train_section(args) -> list[dict]:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: GPU training section skipped")
        return []
    rows = []
    for precision in ["float32", "bfloat16"]:
        for batch in [128, 1024]:
            child = argparse.Namespace(**vars(args))
            child.device, child.precision, child.batch_size = "cuda", precision, batch
            # The hand-written loop at its best: with and without Adam's fused kernel.
            entries = ["hand_channels_last", "hand_fused", "skconvae"]
            runs = interleaved(child, entries, args.rounds)
            for entry in entries:
                if not runs[entry]:
                    continue
                n = runs[entry][0]["n_images"]
                s_per_epoch = statistics.median(r["s_per_epoch"] for r in runs[entry])
                rows.append(
                    {
                        "entry": entry,
                        "precision": precision,
                        "batch_size": batch,
                        "train_img_s": n / s_per_epoch,
                    }
                )
    print(f"\n### Training, CUDA: {args.n_images} MNIST images on the GPU\n")
    print("| implementation | precision | batch | train img/s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['entry']} | {r['precision']} | {r['batch_size']} | {r['train_img_s']:,.0f} |")
    return rows


if __name__ == "__main__":
    main()
