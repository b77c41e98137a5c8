"""Shot noise on the CPU: the alias-table draws against the two samplers used before, in one process.

All three draw ``Poisson(x · λ) / λ`` for the five ImageNet-C severities
(λ = 60, 25, 12, 5, 3) on the same batch of real photographs (224 px, decoded
from 8-bit files, so every value is on the grid ``k / 255``), under the
engine's malloc tuning as a pass applies corruptions:

* ``corrupt(batch, "shot_noise", s)``: what pytest-transfer does now
  (numpy PCG64 chunks on torch's threads, drawn from per-level alias tables);
* the same call with the grid check switched off, so every chunk goes to
  numpy's own Poisson sampler (Hörmann's PTRS; the implementation of the last
  round);
* ``torch.poisson(x * λ) / λ`` clamped to [0, 1]: the implementation the
  issue measured (torch draws one element after another on the CPU).

Each side keeps the best of ``--repeats`` interleaved rounds. Run::

    .venv/bin/python benchmarks/bench_shot_noise.py
    .venv/bin/python benchmarks/bench_shot_noise.py --batch 32 --repeats 7
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import torch
from bench_corruptions import load_photos

from pytest_transfer.allocator import tuned_malloc
from pytest_transfer.robustness import _poisson, corrupt
from pytest_transfer.robustness.corruptions_tables import IMAGENET_C

SCALES = IMAGENET_C.params["shot_noise"]


def ours(batch: torch.Tensor) -> None:
    for severity in range(1, 6):
        corrupt(batch, "shot_noise", severity, table="imagenet-c")


def numpy_ptrs(batch: torch.Tensor) -> None:
    with mock.patch.object(_poisson, "GRID_TOL", -1.0):  # no value counts as on the grid
        ours(batch)


def torch_poisson(batch: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(0)
    for lam in SCALES:
        (torch.poisson(batch * lam, generator=generator) / lam).clamp(0.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds, best kept (default 5)")
    args = parser.parse_args()
    batch = torch.from_numpy(load_photos(args.batch)).permute(0, 3, 1, 2).float().div(255.0)
    sides = {"pytest-transfer (alias tables)": ours, "numpy PTRS chunks (last round)": numpy_ptrs,
             "torch.poisson (the issue's)": torch_poisson}
    best = dict.fromkeys(sides, float("inf"))
    with tuned_malloc(True):
        for run in sides.values():  # warm-up: tables, pools, page faults
            run(batch)
        for _ in range(args.repeats):
            for label, run in sides.items():
                start = time.perf_counter()
                run(batch)
                best[label] = min(best[label], time.perf_counter() - start)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; shot noise, 5 severities, "
          f"batch {args.batch} of 224-px photos; best of {args.repeats}")
    ref = best["pytest-transfer (alias tables)"]
    for label, seconds in best.items():
        rate = args.batch * 5 / seconds
        print(f"{label:32s} {rate:8.1f} images/s   pytest-transfer is {seconds / ref:5.2f}x faster")


if __name__ == "__main__":
    main()
