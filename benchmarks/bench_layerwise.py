"""What probing k layers costs compared with one forward pass.

Run: ``python benchmarks/bench_layerwise.py`` (about a minute on 2 CPU cores).

Model: EfficientNet-Lite0 with random weights when the ``[examples]`` extra is
installed (the cost of a pass does not depend on the weights), else
torchvision's ResNet-18; 64 px; ``--n`` images of digits-shifted (train and
test splits). Each case runs in a fresh context without the disk cache, the
cases interleaved, best of ``--repeats``:

- ``one pass``: the features at the penultimate layer only (what every gate needs);
- ``k taps, one pass``: the engine reading all k nodes in the same pass
  (what :func:`layerwise_transfer` does);
- ``k passes``: the naive way, one pass per node.

It prints the forward-pass counts and the time of each case relative to one
pass, then the cost of the probes that ``layerwise_transfer`` fits on top
(one linear probe and one LogME per node), which do not touch the network.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable


def _model(name: str):
    from pytest_transfer import load_model

    if name == "efficientnet-lite0":
        from pytest_transfer.contrib.efficientnet_lite import efficientnet_lite0

        nodes = ["_blocks.2", "_blocks.5", "_blocks.8", "_blocks.11", "_blocks.15", "penultimate"]
        return efficientnet_lite0(pretrained=False), nodes
    nodes = ["layer1", "layer2", "layer3", "layer4", "penultimate"]
    return load_model("torchvision:resnet18:none", image_size=64), nodes


def _fresh_context():
    from pytest_transfer.context import Context, set_current_context
    from pytest_transfer.settings import resolve

    ctx = Context(resolve({"no_cache": True}, pyproject=None, environ={}))
    set_current_context(ctx)
    return ctx


def _timed(fn: Callable[[object], None]) -> tuple[float, int]:
    ctx = _fresh_context()
    start = time.perf_counter()
    fn(ctx)
    return time.perf_counter() - start, ctx.forward_passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="images of digits-shifted (train + test)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from pytest_transfer import evaluate, layerwise_transfer, load_dataset
    from pytest_transfer.datasets import load_digits_dataset

    try:
        import efficientnet_lite_pytorch  # noqa: F401

        arch = "efficientnet-lite0"
    except ImportError:
        arch = "resnet18"
    model, nodes = _model(arch)
    full = load_digits_dataset(shifted=True)
    ds = load_dataset((full.images[: args.n], full.labels[: args.n]), name=f"digits-shifted[:{args.n}]")
    k = len(nodes)

    def one_pass(ctx: object) -> None:
        for split in ("train", "test"):
            evaluate(model, ds, split=split, context=ctx)

    def all_taps(ctx: object) -> None:
        for split in ("train", "test"):
            evaluate(model, ds, split=split, taps=nodes, context=ctx)

    def naive(ctx: object) -> None:
        from pytest_transfer.engine import run_pass

        for node in nodes:  # one pass per node, nothing shared
            for split in ("train", "test"):
                ctx.forward_passes += 1
                run_pass(model, ds, ds.indices(split), nodes=[node], perturbation=None, batch_size=64,
                         device=ctx.device)

    cases = {"one pass": one_pass, f"{k} taps, one pass": all_taps, f"{k} passes": naive}
    best = {name: float("inf") for name in cases}
    passes = {}
    one_pass(_fresh_context())  # warm-up (allocations, lazy imports)
    for _ in range(args.repeats):
        for name, fn in cases.items():
            seconds, count = _timed(fn)
            best[name] = min(best[name], seconds)
            passes[name] = count

    print(f"{arch}, 64 px, {len(ds)} images (train {len(ds.indices('train'))}, test {len(ds.indices('test'))}), "
          f"k = {k} nodes: {', '.join(nodes)}; best of {args.repeats}")
    base = best["one pass"]
    print(f"{'case':<20} {'forward passes':>15} {'seconds':>9} {'× one pass':>11}")
    for name in cases:
        print(f"{name:<20} {passes[name]:>15d} {best[name]:>9.2f} {best[name] / base:>10.2f}×")

    ctx = _fresh_context()
    all_taps(ctx)
    start = time.perf_counter()
    layerwise_transfer(model, ds, nodes, metrics=("linear_probe", "logme"))
    probes = time.perf_counter() - start
    print(f"layerwise_transfer on top of that pass (probes + LogME at {k} nodes, no forward pass: "
          f"{ctx.forward_passes} passes in all): {probes:.2f} s = {probes / base:.2f}× one pass")


if __name__ == "__main__":
    main()
