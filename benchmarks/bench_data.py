"""Streamed data: peak memory as an image folder grows, throughput against a plain loop, a torchvision subset.

Made on the fly in a temporary folder: two classes of 1024×1024 JPEGs
(``--distinct`` different images per class, copied to the folder's size:
decoding, not disk, is the cost), and Fashion-MNIST's raw files in
torchvision's IDX layout (60,000 + 10,000 images, random pixels).

1. **Peak RSS** of ``evaluate(model, "imagefolder:<folder>", split="all")``
   in a fresh subprocess, for 250 and 1,000 images (``--sizes``): the main
   process (``VmHWM``, its own peak) and the largest loader worker
   (``ru_maxrss``, which counts what it shares with its parent). Target: flat.
2. **Throughput** of ``load_dataset`` + ``evaluate`` (a cold session: the
   file list, headers and content hashes are read again each round) against
   a plain ``torchvision.datasets.ImageFolder(transform=PILToTensor())`` +
   ``DataLoader(batch_size=64, num_workers=W)`` + ``torch.inference_mode``
   loop applying the same model and the same preprocess to ``x / 255``; the
   same worker count for both. Rounds alternate (AB, BA, ...), the ratio is
   the median of the per-round ratios. Target: ≥ 0.9.
3. **Fashion-MNIST** ``torchvision:FashionMNIST:<root>`` with
   ``max_samples=3000`` against the whole set: images held by the dataset,
   peak RSS and load time, each in a fresh subprocess.

Run::

    .venv/bin/python benchmarks/bench_data.py
    .venv/bin/python benchmarks/bench_data.py --sizes 250 1000 --throughput-images 512 --workers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image

PEAK_SCRIPT = textwrap.dedent('''
    import json, resource, sys, time
    from bench_data import own_peak_mib
    import torch
    from pytest_transfer import evaluate, load_dataset
    from bench_data import make_model

    model = make_model(sys.argv[2])
    t = time.perf_counter()
    ds = load_dataset("imagefolder:" + sys.argv[1])
    ev = evaluate(model, ds, split="all", cache=False)
    print(json.dumps({"n": len(ds), "seconds": time.perf_counter() - t,
                      "main_mib": own_peak_mib(),
                      "worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
''')

MNIST_SCRIPT = textwrap.dedent('''
    import json, sys, time
    from bench_data import own_peak_mib
    from pytest_transfer import load_dataset

    t = time.perf_counter()
    ds = load_dataset("torchvision:FashionMNIST:" + sys.argv[1], max_samples=int(sys.argv[2]) or None)
    batch = ds.batch(ds.indices("test")[:64])
    print(json.dumps({"n": len(ds), "held_mib": ds.images.numel() * ds.images.element_size() / 2**20,
                      "seconds": time.perf_counter() - t, "main_mib": own_peak_mib()}))
''')


def own_peak_mib() -> float:
    """This process's peak RSS (``VmHWM``; ``ru_maxrss`` would include the parent's size at the fork)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def make_model(size: str):
    """ResNet-18 (random weights) with the library's preprocess resized to ``size`` px."""
    from pytest_transfer import load_model

    return load_model("torchvision:resnet18:none", image_size=int(size))


def make_folder(root: Path, n: int, distinct: int) -> Path:
    """``n`` 1024-px JPEGs in two classes: ``distinct`` smooth, noisy images per class, copied round-robin."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1024, 0:1024] / 1024.0
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        originals = []
        for k in range(distinct):
            wave = np.stack([np.sin((6 + c) * xx + k), np.cos(5 * yy - k), xx * yy], axis=-1) * 0.4 + 0.5
            img = np.clip(wave * 255 + rng.normal(0, 6, wave.shape), 0, 255).astype(np.uint8)
            originals.append(root / name / f"{k:05d}.jpg")
            Image.fromarray(img).save(originals[-1], quality=90)
        for i in range(distinct, n // 2):
            shutil.copyfile(originals[i % distinct], root / name / f"{i:05d}.jpg")
    return root


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a measuring subprocess: this folder importable (``bench_data``), plus ``extra``."""
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def peak_rss(folder: Path, size: int, workers: int) -> dict:
    env = child_env(PYTEST_TRANSFER_NUM_WORKERS=str(workers), PYTEST_TRANSFER_NO_CACHE="1")
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(folder), str(size)],
                         capture_output=True, text=True, env=env, check=True, cwd=folder.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def plain_loop(folder: Path, model, workers: int, batch_size: int) -> float:
    """What a user would write: ImageFolder + DataLoader + inference_mode, the same model and preprocess."""
    import torch
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import PILToTensor

    start = time.perf_counter()
    data = ImageFolder(str(folder), transform=PILToTensor())
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=workers)
    module = model.module.eval()
    with torch.inference_mode():
        for x, _ in loader:
            module(model.preprocess(x.float().div_(255.0)))
    return time.perf_counter() - start


def engine_pass(folder: Path, model, workers: int, batch_size: int) -> float:
    """``load_dataset`` + ``evaluate`` in a fresh context, file memo cleared (a cold session)."""
    from pytest_transfer import evaluate, load_dataset
    from pytest_transfer.context import Context, set_current_context
    from pytest_transfer.datasets.files import clear_file_memo
    from pytest_transfer.settings import resolve

    clear_file_memo()
    ctx = Context(resolve({"device": "cpu", "no_cache": True, "num_workers": workers, "batch_size": batch_size},
                          rootdir=str(folder.parent), pyproject=None, environ={}))
    previous = set_current_context(ctx)
    try:
        start = time.perf_counter()
        evaluate(model, load_dataset(f"imagefolder:{folder}"), split="all", cache=False, context=ctx)
        return time.perf_counter() - start
    finally:
        set_current_context(previous)


def throughput(folder: Path, n: int, size: int, workers: int, rounds: int) -> None:
    model = make_model(str(size))
    engine_pass(folder, model, workers, 64)  # warm-up: the model's fingerprint, the page cache
    ratios, plain_s, engine_s = [], [], []
    for r in range(rounds):
        order = (plain_loop, engine_pass) if r % 2 == 0 else (engine_pass, plain_loop)
        t = {f.__name__: f(folder, model, workers, 64) for f in order}
        plain_s.append(t["plain_loop"])
        engine_s.append(t["engine_pass"])
        ratios.append(t["plain_loop"] / t["engine_pass"])
    print(f"throughput, {n} images, resnet18 at {size} px, {workers} loader worker(s), {rounds} rounds:")
    print(f"  plain ImageFolder + DataLoader loop: {n / statistics.median(plain_s):7.1f} images/s")
    print(f"  pytest-transfer load + evaluate:     {n / statistics.median(engine_s):7.1f} images/s")
    print(f"  ratio engine / plain (median of rounds): {statistics.median(ratios):.2f}  (target >= 0.9)")


def write_fashion_mnist(root: Path, n_train: int = 60000, n_test: int = 10000) -> Path:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + pixels.tobytes())
        labels = (np.arange(n) * 7 % 10).astype(np.uint8)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return root


def fashion_mnist(tmp: Path) -> None:
    root = write_fashion_mnist(tmp / "fmnist")
    print("Fashion-MNIST (60,000 + 10,000), torchvision:FashionMNIST:<root>:")
    for max_samples in (3000, 0):
        out = subprocess.run([sys.executable, "-c", MNIST_SCRIPT, str(root), str(max_samples)], capture_output=True,
                             text=True, check=True, env=child_env())
        r = json.loads(out.stdout.strip().splitlines()[-1])
        label = f"max_samples={max_samples}" if max_samples else "whole set      "
        print(f"  {label}: {r['n']:6d} images held ({r['held_mib']:5.1f} MiB), peak RSS {r['main_mib']:6.0f} MiB, "
              f"{r['seconds']:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 1000], help="folder sizes for peak RSS")
    parser.add_argument("--throughput-images", type=int, default=512)
    parser.add_argument("--preprocess-size", type=int, default=64, help="the model's input size in px")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: the 'auto' rule)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--distinct", type=int, default=8, help="distinct images per class")
    parser.add_argument("--skip", nargs="*", default=[], choices=["rss", "throughput", "mnist"])
    args = parser.parse_args()
    from pytest_transfer.datasets.stream import default_num_workers

    workers = default_num_workers() if args.workers is None else args.workers
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "rss" not in args.skip:
            print(f"peak RSS of evaluate on a folder of 1024-px JPEGs ({workers} loader worker(s)):")
            for n in args.sizes:
                folder = make_folder(tmp / f"rss{n}", n, args.distinct)
                r = peak_rss(folder, args.preprocess_size, workers)
                print(f"  {r['n']:5d} images: main process {r['main_mib']:6.0f} MiB, largest worker "
                      f"{r['worker_mib']:6.0f} MiB, {r['seconds']:.1f} s")
                shutil.rmtree(folder)
        if "throughput" not in args.skip:
            folder = make_folder(tmp / "speed", args.throughput_images, args.distinct)
            throughput(folder, args.throughput_images, args.preprocess_size, workers, args.rounds)
        if "mnist" not in args.skip:
            fashion_mnist(tmp)


if __name__ == "__main__":
    main()
