"""Streamed data: peak memory and throughput of image folders against ImageFolder + DataLoader, a torchvision set.

Folders are made on the fly in a temporary folder from real photographs
(scikit-learn's two sample photos, crops and mirror images): 12-MP JPEGs
(4000×3000, ``--distinct`` different ones per class, copied to the
folder's size: decoding, not disk, is the cost) and 224-px JPEGs; they are
deleted at the end. The model is ``torchvision:<arch>:none`` (random weights,
the default weights' ``W.transforms()``: resize 256, centre crop 224).
The library's side is what a user would write:
``torchvision.datasets.ImageFolder(root, transform=W.transforms())`` +
``DataLoader(batch_size=64, num_workers=W)`` + ``torch.inference_mode`` +
the same module, with the same worker count.

1. **Peak RSS** of a whole pass over folders of 100 and 1,000 12-MP JPEGs
   (``--sizes``), each side in a fresh subprocess: the main process
   (``VmHWM``, its own peak) and the largest loader worker (``ru_maxrss``,
   which counts what it shares with its parent). Target: flat in the count,
   about the library's.
2. **Throughput** (images per second through the loader and the model) of
   ``load_dataset`` + ``evaluate`` (a cold session: the file list, headers
   and content hashes are read again each round) against the library's
   loop, for 224-px and 12-MP JPEGs. Rounds alternate (AB, BA, ...), the
   ratio is the median of the per-round ratios. Target: ≥ 1.0.
3. **Fashion-MNIST** ``torchvision:FashionMNIST:<root>`` with
   ``max_samples=3000`` against the whole set: images held by the dataset,
   peak RSS and load time, each in a fresh subprocess.

Run::

    .venv/bin/python benchmarks/bench_data.py
    .venv/bin/python benchmarks/bench_data.py --sizes 100 1000 --throughput-images 256 --workers 2 --rounds 3
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
    from bench_data import own_peak_mib, engine_pass, library_loop, make_model

    model = make_model(sys.argv[3])
    t = time.perf_counter()
    run = engine_pass if sys.argv[2] == "engine" else library_loop
    run(__import__("pathlib").Path(sys.argv[1]), model, int(sys.argv[4]), 64)
    print(json.dumps({"seconds": time.perf_counter() - t, "main_mib": own_peak_mib(),
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


def make_model(arch: str):
    """``torchvision:<arch>:none``: random weights, fed with the default weights' ``W.transforms()``."""
    from pytest_transfer import load_model

    return load_model(f"torchvision:{arch}:none")


def make_folder(root: Path, n: int, distinct: int, side: int) -> Path:
    """``n`` JPEGs in two classes made from scikit-learn's two photos: ``distinct`` crops per class resized to
    ``side``×(3/4 ``side``) px (12 MP for 4000), copied round-robin."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        originals = []
        for k in range(distinct):
            crop = photos[c][k * 8:k * 8 + 360, k * 12:k * 12 + 480]
            img = Image.fromarray(np.ascontiguousarray(crop if k % 2 == 0 else crop[:, ::-1]))
            originals.append(root / name / f"{k:05d}.jpg")
            img.resize((side, side * 3 // 4), Image.BICUBIC).save(originals[-1], quality=90)
        for i in range(distinct, n // 2):
            shutil.copyfile(originals[i % distinct], root / name / f"{i:05d}.jpg")
    return root


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a measuring subprocess: this folder importable (``bench_data``), plus ``extra``."""
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def peak_rss(folder: Path, side: str, arch: str, workers: int) -> dict:
    env = child_env(PYTEST_TRANSFER_NO_CACHE="1")
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(folder), side, arch, str(workers)],
                         capture_output=True, text=True, env=env, check=True, cwd=folder.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def library_loop(folder: Path, model, workers: int, batch_size: int) -> float:
    """The library's own file pipeline: ImageFolder(transform=W.transforms()) + DataLoader + the module."""
    import torch
    from torchvision.datasets import ImageFolder

    start = time.perf_counter()
    data = ImageFolder(str(folder), transform=model.preprocess.transform)  # W.transforms() itself
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=workers)
    module = model.module.eval()
    with torch.inference_mode():
        for x, _ in loader:
            module(x)
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


def throughput(folder: Path, n: int, label: str, arch: str, workers: int, rounds: int) -> None:
    model = make_model(arch)
    engine_pass(folder, model, workers, 64)  # warm-up: the model's fingerprint, the page cache
    ratios, library_s, engine_s = [], [], []
    for r in range(rounds):
        order = (library_loop, engine_pass) if r % 2 == 0 else (engine_pass, library_loop)
        t = {f.__name__: f(folder, model, workers, 64) for f in order}
        library_s.append(t["library_loop"])
        engine_s.append(t["engine_pass"])
        ratios.append(t["library_loop"] / t["engine_pass"])
    print(f"throughput, {n} {label} JPEGs, {arch}, {workers} loader worker(s), {rounds} rounds:")
    print(f"  ImageFolder(transform=W.transforms()) + DataLoader: {n / statistics.median(library_s):7.1f} images/s")
    print(f"  pytest-transfer load_dataset + evaluate:            {n / statistics.median(engine_s):7.1f} images/s")
    print(f"  ratio engine / library (median of rounds): {statistics.median(ratios):.2f}  (target >= 1.0)")


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
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000], help="12-MP folder sizes for peak RSS")
    parser.add_argument("--throughput-images", type=int, default=256, help="224-px JPEGs for the throughput")
    parser.add_argument("--throughput-large", type=int, default=64, help="12-MP JPEGs for the throughput")
    parser.add_argument("--arch", default="mobilenet_v3_small", help="torchvision architecture (random weights)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: the 'auto' rule)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--distinct", type=int, default=4, help="distinct images per class")
    parser.add_argument("--skip", nargs="*", default=[], choices=["rss", "throughput", "mnist"])
    args = parser.parse_args()
    from pytest_transfer.datasets.stream import default_num_workers

    workers = default_num_workers() if args.workers is None else args.workers
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "rss" not in args.skip:
            print(f"peak RSS of a pass over a folder of 12-MP JPEGs, {args.arch}, {workers} loader worker(s):")
            for n in args.sizes:
                folder = make_folder(tmp / f"rss{n}", n, args.distinct, 4000)
                for side in ("library", "engine"):
                    r = peak_rss(folder, side, args.arch, workers)
                    print(f"  {n:5d} images, {side:7s}: main process {r['main_mib']:6.0f} MiB, largest worker "
                          f"{r['worker_mib']:6.0f} MiB, {r['seconds']:.1f} s")
                shutil.rmtree(folder)
        if "throughput" not in args.skip:
            for label, side, n in (("224-px", 224, args.throughput_images), ("12-MP", 4000, args.throughput_large)):
                folder = make_folder(tmp / f"speed{side}", n, args.distinct, side)
                throughput(folder, n, label, args.arch, workers, args.rounds)
                shutil.rmtree(folder)
        if "mnist" not in args.skip:
            fashion_mnist(tmp)


if __name__ == "__main__":
    main()
