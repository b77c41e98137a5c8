"""Throughput of the engine's pass against a bare ``torch.inference_mode`` loop over the same batches.

Both read the same images (scikit-learn's 1,797 real digits, or ``--images``
of them) in the same batches of ``--batch-size``, apply the model's
preprocess (resize to 64 px, normalise) and run the module:

* bare loops: ``with torch.inference_mode(): for idx in batches:
  module(preprocess(dataset.batch(idx)))``, the module as loaded (what a user
  would write), and the same with channels-last weights and inputs;
* engine: :func:`pytest_transfer.engine.run_pass`, i.e. what ``evaluate()``
  runs on a cache miss: chunked loading, forward hooks for the penultimate
  features, the layout its rule picks (channels-last on the CPU only for
  nets with grouped convolutions), the allocator tuning
  (:mod:`pytest_transfer.allocator`), host copies into arrays allocated once
  and the NaN/Inf check.

The figure is engine / best bare loop: per round, the faster of the two
bare loops' times over the engine's (target >= 1.0, issue 14).

Each model has a copy of its own per loop (the engine converts its module to
channels-last). Timings alternate between the loops (ABC, CBA, ...) and the
ratio is the median of the per-round ratios, which keeps it steady on a
shared machine; ``--threads`` fixes torch's intra-op threads (the default
keeps torch's own choice). Run::

    .venv/bin/python benchmarks/bench_engine.py                       # both models, all 1,797 digits
    .venv/bin/python benchmarks/bench_engine.py --threads 1 --rounds 7

Target: engine / best bare loop >= 1.0 for both models (issue 14).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from pytest_transfer import load_dataset, load_model
from pytest_transfer.context import Context, set_current_context
from pytest_transfer.engine import prefers_channels_last, run_pass
from pytest_transfer.models import TransferModel
from pytest_transfer.settings import resolve


def efficientnet() -> TransferModel:
    from pytest_transfer.contrib.efficientnet_lite import efficientnet_lite0

    return efficientnet_lite0(image_size=64)


def resnet18() -> TransferModel:
    return load_model("torchvision:resnet18:none", image_size=64)


MODELS: dict[str, Callable[[], TransferModel]] = {"efficientnet-lite0": efficientnet, "resnet18": resnet18}


def bare_loop(model: TransferModel, dataset, indices: np.ndarray, batch_size: int, channels_last: bool) -> float:
    module = model.module.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(indices), batch_size):
            x = model.preprocess(dataset.batch(indices[s:s + batch_size]))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            module(x)
    return time.perf_counter() - start


def engine_pass(model: TransferModel, dataset, indices: np.ndarray, batch_size: int) -> float:
    start = time.perf_counter()
    run_pass(model, dataset, indices, nodes=[model.feature_node], perturbation=None, batch_size=batch_size,
             device=torch.device("cpu"), autocast="off")
    return time.perf_counter() - start


def measure(name: str, dataset, indices: np.ndarray, *, batch_size: int, rounds: int) -> dict[str, float]:
    bare, bare_cl, eng = MODELS[name](), MODELS[name](), MODELS[name]()
    bare_cl.module.to(memory_format=torch.channels_last)
    loops = {
        "bare": lambda: bare_loop(bare, dataset, indices, batch_size, False),
        "bare, channels-last": lambda: bare_loop(bare_cl, dataset, indices, batch_size, True),
        "engine": lambda: engine_pass(eng, dataset, indices, batch_size),
    }
    for loop in loops.values():  # warm-up: allocator, oneDNN primitives, channels-last conversion
        loop()
    times: dict[str, list[float]] = {k: [] for k in loops}
    order = list(loops)
    for r in range(rounds):
        for key in order if r % 2 == 0 else order[::-1]:
            times[key].append(loops[key]())
    ratio = statistics.median(b / e for b, e in zip(times["bare"], times["engine"], strict=True))
    ratio_cl = statistics.median(b / e for b, e in zip(times["bare, channels-last"], times["engine"], strict=True))
    best = statistics.median(min(b, c) / e for b, c, e in zip(times["bare"], times["bare, channels-last"],
                                                              times["engine"], strict=True))
    layout = "channels-last" if prefers_channels_last(eng.module, "cpu") else "contiguous"
    n = len(indices)
    print(f"\n{name} at 64 px, {n} images, batch {batch_size}, {torch.get_num_threads()} thread(s), "
          f"{rounds} rounds (median images/s):")
    for key, ts in times.items():
        print(f"  {key:22s} {n / statistics.median(ts):8.1f} images/s")
    print(f"  engine ({layout}) / best bare loop: {best:.3f}  (target >= 1.0)")
    print(f"  engine / bare loop:                 {ratio:.3f}")
    print(f"  engine / bare channels-last loop:   {ratio_cl:.3f}")
    return {"best": best, "ratio": ratio, "ratio_channels_last": ratio_cl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--images", type=int, default=None, help="first N digits (default: all 1,797)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_current_context(Context(resolve({"no_cache": True, "device": "cpu"}, environ={})))
    dataset = load_dataset("digits")
    indices = dataset.indices("all")[: args.images]
    for name in args.models:
        measure(name, dataset, indices, batch_size=args.batch_size, rounds=args.rounds)


if __name__ == "__main__":
    main()
