"""A warm rerun: the same gates a second time, with the disk cache of the first run.

Two runs of the module of ``bench_gates_one_pass.py`` (8 gates, EfficientNet-
Lite0 at 64 px on the real digits) share one fresh cache directory. Each run
is a new session, as a new pytest process would be: a new context (empty
memo), the model and the dataset built again, so the second run finds its
passes only on disk, by fingerprint. Printed per run: the time in the engine
(``evaluate``: fingerprints, cache reads, passes), the whole gates' time, and
the forward passes; the ratios second / first are the figures of issue 6
(target: the second run's transfer time <= 0.2 of the first's, no pass).

``--pytest`` also times real ``pytest examples`` processes: per repeat, a
fresh copy of ``examples/`` in a temporary folder (so a fresh cache folder),
one cold run, then one warm run (wall clock, so it includes starting Python,
importing torch and loading the model, which no cache removes); the figure
is the median warm / cold ratio over ``--repeats`` (target <= 0.25, issue 14).
Run::

    .venv/bin/python benchmarks/bench_warm_rerun.py
    .venv/bin/python benchmarks/bench_warm_rerun.py --pytest --repeats 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pytest_transfer import engine, load_dataset
from pytest_transfer.context import Context, set_current_context
from pytest_transfer.settings import resolve

sys.path.insert(0, str(Path(__file__).parent))
from bench_gates_one_pass import GATES, CallTimer, model

ROOT = Path(__file__).resolve().parent.parent


def one_run(cache_dir: str) -> dict[str, float]:
    ctx = Context(resolve({"device": "cpu", "cache_dir": cache_dir}, environ={}))
    set_current_context(ctx)
    m, dataset = model(), load_dataset("digits")
    original = engine.evaluate
    timed = CallTimer(original)
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
    return {"engine": timed.seconds, "gates": total, "passes": ctx.forward_passes, "hits": ctx.cache_hits}


def _modules_using_evaluate() -> list:
    from pytest_transfer.gates import transferability
    from pytest_transfer.methods import direct, features

    return [direct, features, transferability]


def pytest_runs() -> list[float]:
    """Wall seconds of a cold and a warm ``pytest examples`` in a fresh copy of the examples."""
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(ROOT / "examples", Path(tmp) / "examples",
                        ignore=shutil.ignore_patterns(".transfer_cache", "__pycache__"))
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        for _ in range(2):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pytest", "examples", "-q", "-p", "no:cacheprovider"], cwd=tmp,
                           check=True, capture_output=True, env=env)
            walls.append(time.perf_counter() - start)
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pytest", action="store_true", help="also time cold and warm `pytest examples`")
    parser.add_argument("--repeats", type=int, default=1, help="cold/warm pairs of --pytest (fresh copy each)")
    parser.add_argument("--skip-gates", action="store_true", help="only the --pytest figure")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_gates:
        gates_figure()
    if args.pytest:
        pairs = [pytest_runs() for _ in range(args.repeats)]
        for cold, warm in pairs:
            print(f"pytest examples (fresh copy, fresh cache), wall clock: cold {cold:.1f} s, warm {warm:.1f} s, "
                  f"warm / cold {warm / cold:.3f}")
        ratio = statistics.median(w / c for c, w in pairs)
        print(f"  warm / cold, median of {len(pairs)}: {ratio:.3f}  (target <= 0.25, including Python, torch and "
              "model start-up)")


def gates_figure() -> None:
    with tempfile.TemporaryDirectory() as cache_dir:
        first, second = one_run(cache_dir), one_run(cache_dir)
    print(f"{len(GATES)} gates, EfficientNet-Lite0 at 64 px on digits, {torch.get_num_threads()} thread(s):")
    print(f"  {'':12s} {'engine s':>9s} {'gates s':>9s} {'passes':>7s} {'cache hits':>11s}")
    for name, run in (("first run", first), ("second run", second)):
        print(f"  {name:12s} {run['engine']:9.2f} {run['gates']:9.2f} {run['passes']:7d} {run['hits']:11d}")
    print(f"  second / first, time in the engine:  {second['engine'] / first['engine']:.3f}  (target <= 0.2)")
    print(f"  second / first, the gates' time:     {second['gates'] / first['gates']:.3f}  "
          "(probe fits, estimator scores and attacks are read from the cache too)")


if __name__ == "__main__":
    main()
