"""System time and minor page faults of a 3,000-image CPU pass, before and after the allocator tuning.

One process, one EfficientNet-Lite0 (real weights, ``--image-size`` px,
default 96) over 3,000 images (the 1,797 real digits, repeated), batch
``--batch-size`` (default 128, the examples' setting), passes interleaved:

* before: :func:`pytest_transfer.engine.run_pass` with ``malloc_tuning=False``
  (glibc returns large activation buffers to the kernel after each batch);
* after: ``run_pass`` as the engine runs it (:mod:`pytest_transfer.allocator`:
  freed buffers stay in the heap during the pass).

Each pass is measured with ``resource.getrusage`` (minor page faults, system
and user CPU seconds) and the wall clock; the ratio after / before is the
median of ``--rounds`` interleaved pairs. Run::

    .venv/bin/python benchmarks/bench_allocator.py
    .venv/bin/python benchmarks/bench_allocator.py --image-size 128 --rounds 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch

from pytest_transfer import allocator, load_dataset
from pytest_transfer.context import Context, set_current_context
from pytest_transfer.contrib.efficientnet_lite import efficientnet_lite0
from pytest_transfer.engine import run_pass
from pytest_transfer.settings import resolve


def one_pass(model, dataset, indices: np.ndarray, *, batch_size: int, tuned: bool) -> dict[str, float]:
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run_pass(model, dataset, indices, nodes=[model.feature_node], perturbation=None, batch_size=batch_size,
             device=torch.device("cpu"), autocast="off", malloc_tuning=tuned)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": wall, "faults": after.ru_minflt - before.ru_minflt, "sys": after.ru_stime - before.ru_stime,
            "user": after.ru_utime - before.ru_utime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not allocator.available():
        print("the allocator tuning is not available here (not glibc, or MALLOC_*_ / GLIBC_TUNABLES set): "
              "both columns would be the same")
    set_current_context(Context(resolve({"no_cache": True, "device": "cpu"}, environ={})))
    dataset = load_dataset("digits")
    indices = np.resize(dataset.indices("all"), args.images)
    model = efficientnet_lite0(image_size=args.image_size)
    one_pass(model, dataset, indices[:256], batch_size=args.batch_size, tuned=True)  # warm-up: oneDNN primitives
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
            runs[name].append(one_pass(model, dataset, indices, batch_size=args.batch_size, tuned=name == "after"))
    print(f"EfficientNet-Lite0 at {args.image_size} px, {args.images} images, batch {args.batch_size}, "
          f"{torch.get_num_threads()} thread(s), {args.rounds} interleaved rounds (medians):")
    print(f"  {'':8s} {'wall s':>8s} {'user s':>8s} {'system s':>9s} {'minor faults':>13s}")
    for name, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"  {name:8s} {med['wall']:8.2f} {med['user']:8.2f} {med['sys']:9.2f} {med['faults']:13,.0f}")
    pairs = list(zip(runs["after"], runs["before"], strict=True))
    for key, label in (("wall", "wall time"), ("sys", "system time"), ("faults", "minor page faults")):
        ratio = statistics.median(a[key] / max(b[key], 1e-9) for a, b in pairs)
        print(f"  after / before, {label + ':':19s} {ratio:.3f}")


if __name__ == "__main__":
    main()
