"""What a test module of 8 gates on one model × dataset costs, against one bare forward pass.

The module: EfficientNet-Lite0 (ImageNet weights, 64 px) on scikit-learn's
real digits, 8 gates that read the same clean pair — linear-probe and k-NN
accuracy, macro / weighted / micro F1, and the LEEP, NCE and leave-one-out
k-NN transferability gates (``--estimators logme ...`` adds more). The probes are fitted on the train split and scored
on the test split, the estimators read the train split, so the module needs
the images of both splits once: the engine runs one pass per split.

The baseline is one bare ``torch.inference_mode`` loop over the same images
(train, then test) with the module as loaded. Printed: the number of passes
(target: one per split, whatever the number of gates), the module's time /
the bare loop's (target <= 1.25), and how it splits between the engine's
passes and the gates' own maths (probe fitting, k-NN, estimators). The disk cache is off. Run::

    .venv/bin/python benchmarks/bench_gates_one_pass.py            # 3 rounds, medians
    .venv/bin/python benchmarks/bench_gates_one_pass.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pytest_transfer import assert_f1_above, assert_transfer_accuracy_above, assert_transferability_above, load_dataset
from pytest_transfer.context import Context, set_current_context
from pytest_transfer.engine import run_pass
from pytest_transfer.settings import resolve


def model():
    from pytest_transfer.contrib.efficientnet_lite import efficientnet_lite0

    return efficientnet_lite0(image_size=64)


GATES = [
    ("linear-probe accuracy", lambda m, d: assert_transfer_accuracy_above(m, d, 0.0)),
    ("k-NN accuracy", lambda m, d: assert_transfer_accuracy_above(m, d, 0.0, method="knn")),
    ("macro F1", lambda m, d: assert_f1_above(m, d, 0.0)),
    ("weighted F1", lambda m, d: assert_f1_above(m, d, 0.0, average="weighted")),
    ("micro F1", lambda m, d: assert_f1_above(m, d, 0.0, average="micro")),
    ("LEEP", lambda m, d: assert_transferability_above(m, d, -1e9, metric="leep")),
    ("NCE", lambda m, d: assert_transferability_above(m, d, -1e9, metric="nce")),
    ("leave-one-out k-NN", lambda m, d: assert_transferability_above(m, d, 0.0, metric="knn_accuracy")),
]
# estimators whose own maths costs seconds (LogME: an eigendecomposition of the 1,280 × 1,280 feature Gram
# matrix), added with --estimators; the printed split shows it is the estimator's time, not the engine's
def estimator_gate(metric: str):
    return lambda m, d: assert_transferability_above(m, d, -1e9, metric=metric)


EXTRA = {name: estimator_gate(name)
         for name in ("logme", "hscore", "regularized_hscore", "transrate", "gbc", "sfda", "nleep", "lfc")}


def bare_pass(m, dataset, batch_size: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for split in ("train", "test"):
            idx = dataset.indices(split)
            for s in range(0, len(idx), batch_size):
                m.module(m.preprocess(dataset.batch(idx[s:s + batch_size])))
    return time.perf_counter() - start


class CallTimer:
    """``fn`` wrapped so that the seconds spent in its calls add up in ``seconds``."""

    def __init__(self, fn) -> None:
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def gate_module(m, dataset, batch_size: int, gates: list) -> tuple[float, float, int]:
    """Run the gates in a fresh session; returns (total seconds, seconds in forward passes, passes)."""
    from pytest_transfer.engine import passes

    ctx = Context(resolve({"no_cache": True, "device": "cpu", "batch_size": batch_size}, environ={}))
    set_current_context(ctx)
    original = passes.run_pass  # what the memo calls (engine.memo reads passes.run_pass)
    passes.run_pass = timed = CallTimer(original)
    try:
        start = time.perf_counter()
        for _, gate in gates:
            gate(m, dataset)
        total = time.perf_counter() - start
    finally:
        passes.run_pass = original
    return total, timed.seconds, ctx.forward_passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--estimators", nargs="*", default=[], choices=sorted(EXTRA),
                        help="transferability gates to add to the module (their maths is printed apart)")
    args = parser.parse_args()
    gates = GATES + [(name, EXTRA[name]) for name in args.estimators]
    if args.threads:
        torch.set_num_threads(args.threads)
    set_current_context(Context(resolve({"no_cache": True, "device": "cpu"}, environ={})))
    dataset = load_dataset("digits")
    bare_model, gated_model = model(), model()
    bare_pass(bare_model, dataset, args.batch_size)  # warm-up
    run_pass(gated_model, dataset, dataset.indices("test")[:64], nodes=["penultimate"], perturbation=None,
             batch_size=args.batch_size, device="cpu")
    bare, module, passes, maths = [], [], [], []
    for r in range(args.rounds):
        steps = ["bare", "module"] if r % 2 == 0 else ["module", "bare"]
        for step in steps:
            if step == "bare":
                bare.append(bare_pass(bare_model, dataset, args.batch_size))
            else:
                total, in_pass, n = gate_module(gated_model, dataset, args.batch_size, gates)
                module.append(total)
                maths.append(total - in_pass)
                passes.append(n)
    ratio = statistics.median(m / b for m, b in zip(module, bare, strict=True))
    p = [t - g for t, g in zip(module, maths, strict=True)]
    print(f"EfficientNet-Lite0 at 64 px on digits ({len(dataset)} images: train + test), {len(gates)} gates, "
          f"{torch.get_num_threads()} thread(s), {args.rounds} rounds (medians):")
    print(f"  forward passes per module:        {sorted(set(passes))} (one per split: train, test)")
    print(f"  bare inference_mode loop:         {statistics.median(bare):.2f} s")
    print(f"  module of {len(gates)} gates:              {statistics.median(module):.2f} s "
          f"(passes {statistics.median(p):.2f} s, gate maths {statistics.median(maths):.2f} s)")
    print(f"  module / one bare pass:           {ratio:.3f}  (target <= 1.25)")
    print(f"  the module's passes / bare pass:  {statistics.median(q / b for q, b in zip(p, bare, strict=True)):.3f}")


if __name__ == "__main__":
    main()
