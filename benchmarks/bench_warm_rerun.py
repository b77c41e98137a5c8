"""A warm rerun: the same gates a second time, with the disk cache of the first run.

Two runs of the module of ``bench_gates_one_pass.py`` (8 gates, EfficientNet-
Lite0 at 64 px on the real digits) share one fresh cache directory. Each run
is a new session, as a new pytest process would be: a new context (empty
memo), the model and the dataset built again, so the second run finds its
passes only on disk, by fingerprint. Printed per run: the time in the engine
(``evaluate``: fingerprints, cache reads, passes), the whole gates' time, and
the forward passes; the ratios second / first are the figures of issue 6
(target: the second run's transfer time <= 0.2 of the first's, no pass).

``--pytest`` also times two real ``pytest`` processes on ``examples/`` with a
fresh cache directory (wall clock, so it includes starting Python, importing
torch and loading the model, which no cache removes). Run::

    .venv/bin/python benchmarks/bench_warm_rerun.py
    .venv/bin/python benchmarks/bench_warm_rerun.py --pytest
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pytest_transfer import engine
from pytest_transfer.context import Context, set_current_context
from pytest_transfer.datasets import load_dataset
from pytest_transfer.settings import resolve

sys.path.insert(0, str(Path(__file__).parent))
from bench_gates_one_pass import GATES, model

ROOT = Path(__file__).resolve().parent.parent


def one_run(cache_dir: str) -> dict[str, float]:
    ctx = Context(resolve({"device": "cpu", "cache_dir": cache_dir}, environ={}))
    set_current_context(ctx)
    m, dataset = model(), load_dataset("digits")
    in_engine = 0.0
    original = engine.evaluate

    def timed(*args, **kwargs):
        nonlocal in_engine
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            in_engine += time.perf_counter() - t

    for module in _modules_using_evaluate():
        module.evaluate = timed
    try:
        start = time.perf_counter()
        for _, gate in GATES:
            gate(m, dataset)
        total = time.perf_counter() - start
    finally:
        for module in _modules_using_evaluate():
            module.evaluate = original
    return {"engine": in_engine, "gates": total, "passes": ctx.forward_passes, "hits": ctx.cache_hits}


def _modules_using_evaluate() -> list:
    from pytest_transfer import predictions
    from pytest_transfer.gates import transferability

    return [predictions, transferability]


def pytest_runs(cache_dir: str) -> list[float]:
    walls = []
    for _ in range(2):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "examples", "-q", "-p", "no:cacheprovider",
                        f"--transfer-cache-dir={cache_dir}"], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        walls.append(time.perf_counter() - start)
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pytest", action="store_true", help="also time two `pytest examples` processes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as cache_dir:
        first, second = one_run(cache_dir), one_run(cache_dir)
    print(f"{len(GATES)} gates, EfficientNet-Lite0 at 64 px on digits, {torch.get_num_threads()} thread(s):")
    print(f"  {'':12s} {'engine s':>9s} {'gates s':>9s} {'passes':>7s} {'cache hits':>11s}")
    for name, run in (("first run", first), ("second run", second)):
        print(f"  {name:12s} {run['engine']:9.2f} {run['gates']:9.2f} {run['passes']:7d} {run['hits']:11d}")
    print(f"  second / first, time in the engine:  {second['engine'] / first['engine']:.3f}  (target <= 0.2)")
    print(f"  second / first, the gates' time:     {second['gates'] / first['gates']:.3f}  "
          "(the rest is the gates' own maths, e.g. fitting the probe, which is not cached)")
    if args.pytest:
        with tempfile.TemporaryDirectory() as cache_dir:
            walls = pytest_runs(cache_dir)
        print(f"  pytest examples, wall clock: first {walls[0]:.1f} s, second {walls[1]:.1f} s "
              f"(ratio {walls[1] / walls[0]:.3f}, including Python, torch and model start-up)")


if __name__ == "__main__":
    main()
