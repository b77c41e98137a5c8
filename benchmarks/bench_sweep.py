"""A corruption sweep in one pass against one ``evaluate`` per corruption × severity cell.

Both sides compute the same cells (the clean split and every corruption ×
severity) of the same model on the same test images, in fresh sessions
without the disk cache, after the probe's clean train pass (not timed):

* baseline: ``evaluate(model, data, perturbation=corruption(c, s))`` for each
  cell, then the probe's predictions — what a loop over
  ``assert_robust_under_corruption`` cost before the sweep;
* sweep: :func:`pytest_transfer.robustness.sweep.corruption_sweep`, which
  loads each chunk of the split once and runs every variant of it through
  one batched pass.

It prints the wall-clock and CPU-time ratios (best of ``--repeat`` runs of each, in ABBA order;
CPU time is the steadier figure on a shared machine), the number of chunk loads
(``TargetDataset.batch`` calls), the number of passes, and checks that both
give the same logits. Run::

    .venv/bin/python benchmarks/bench_sweep.py                      # EfficientNet-Lite0, digits
    .venv/bin/python benchmarks/bench_sweep.py --model resnet18 --corruptions all --severities 1,3,5
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def build(model_name: str, n: int):
    from pytest_transfer import load_dataset, load_model

    full = load_dataset("digits", seed=0, test_fraction=0.25)
    pick = np.sort(np.random.default_rng(0).choice(len(full), min(4 * n, len(full)), replace=False))
    data = load_dataset((full.images[pick].numpy(), full.labels[pick]), name="digits-sub", seed=0,
                        test_fraction=0.25)
    if model_name == "lite0":
        from pytest_transfer.contrib.efficientnet_lite import efficientnet_lite0

        model = efficientnet_lite0()
    else:
        model = load_model(f"torchvision:{model_name}:none", image_size=32)
    return model, data


def session(device: str):
    from pytest_transfer.context import Context
    from pytest_transfer.settings import resolve

    return Context(resolve({"no_cache": True, "device": device}, rootdir=".", pyproject=None, environ={}))


def main() -> None:
    from pytest_transfer import corruption_sweep, evaluate
    from pytest_transfer.methods import get_method, predict
    from pytest_transfer.robustness import resolve_corruptions
    from pytest_transfer.robustness.perturbations import corruption
    from pytest_transfer.robustness.sweep import resolve_severities

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lite0", help="lite0 (EfficientNet-Lite0, 64 px) or a torchvision arch (32 px)")
    ap.add_argument("--n", type=int, default=100, help="test images (the probe trains on 3n others)")
    ap.add_argument("--corruptions", default="gaussian_noise,zoom_blur,frost,contrast,jpeg_compression")
    ap.add_argument("--severities", default="1,3,5")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side (ABBA order); the best is kept")
    args = ap.parse_args()
    names = resolve_corruptions(args.corruptions.split(","))
    levels = resolve_severities("all" if args.severities == "all" else [int(s) for s in args.severities.split(",")])
    model, data = build(args.model, args.n)
    print(f"{model.name} on {data.name}: {len(data.indices('test'))} test images, {len(names)} corruptions × "
          f"{len(levels)} severities + clean = {len(names) * len(levels) + 1} cells, device {args.device}")

    loads = []
    original = type(data).batch

    def counting(self, idx):
        loads.append(len(idx))
        return original(self, idx)

    type(data).batch = counting

    def run(label: str) -> tuple[float, float, int, dict, dict]:
        ctx = session(args.device)
        get_method("linear_probe").fit(model, data, context=ctx)  # the clean train pass and the probe, not timed
        loads.clear()
        passes = ctx.forward_passes
        start, cpu = time.perf_counter(), time.process_time()
        if label == "corruption_sweep":
            res = corruption_sweep(model, data, names, levels, context=ctx)
            acc = {(c, s): res.accuracy[c][s] for c in names for s in levels}
        else:
            acc = {}
            evaluate(model, data, context=ctx)
            predict(model, data, context=ctx)
            for c in names:
                for s in levels:
                    p = corruption(c, s, seed=ctx.settings.seed)
                    evaluate(model, data, perturbation=p, context=ctx)
                    acc[(c, s)] = float(predict(model, data, perturbation=p, context=ctx).correct.mean())
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        logits = {(c, s): evaluate(model, data, perturbation=corruption(c, s, seed=ctx.settings.seed),
                                   context=ctx).logits for c in names for s in levels}
        print(f"  {label:18s} {seconds:7.2f} s wall {cpu:7.2f} s CPU   {len(loads):4d} chunk loads   "
              f"{ctx.forward_passes - passes:3d} passes")
        return seconds, cpu, len(loads), acc, logits

    labels = ("per-cell evaluate", "corruption_sweep")
    order = [labels[(i + i // 2) % 2] for i in range(2 * args.repeat)]  # ABBA...: fair under a varying load
    results: dict[str, tuple[float, float, int, dict, dict]] = {}
    for label in order:
        out = run(label)
        if label not in results:
            results[label] = out
        else:  # the best wall and CPU times of the repeats
            best = results[label]
            results[label] = (min(best[0], out[0]), min(best[1], out[1]), *best[2:])
    type(data).batch = original
    (t_base, c_base, l_base, acc_base, lg_base) = results[labels[0]]
    (t_sweep, c_sweep, l_sweep, acc_sweep, lg_sweep) = results[labels[1]]
    diff = max(float(np.abs(lg_base[k] - lg_sweep[k]).max()) for k in lg_base)
    same = all(acc_base[k] == acc_sweep[k] for k in acc_base)
    print(f"speed-up {t_base / t_sweep:.2f}× wall, {c_base / c_sweep:.2f}× CPU time; chunk loads {l_base} → {l_sweep} "
          f"({l_base / max(l_sweep, 1):.0f}× fewer); max |Δ logit| {diff:.2e}; accuracies identical: {same}")


if __name__ == "__main__":
    main()
