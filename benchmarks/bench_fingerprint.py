"""The model fingerprint: the cost of a memo hit against a full hash (issue 10; issue 14 measured 5 ms a hit).

Every gate asks for ``model.fingerprint()`` (the session memo and the disk
cache are keyed by it). A hit walks the module tree (tensor identities,
storage addresses and version counters, plain attributes) and compares a
strided sample of every CPU tensor; a miss hashes every weight. Printed per
torchvision architecture (random weights): the number of tensors and
submodules, milliseconds per hit (median of repeats), milliseconds per full
hash, their ratio, and the ratio to the memo check used before (a
``state_dict()`` walk and a strided torch sample per tensor, issue 14's 5 ms
on a busy machine). Target: a hit under 1 ms for ResNet-18. Run::

    .venv/bin/python benchmarks/bench_fingerprint.py
"""

from __future__ import annotations

import statistics
import time

import torch

from pytest_transfer.models import Preprocess, TransferModel

ARCHS = ("resnet18", "mobilenet_v3_small", "convnext_tiny", "vit_b_16")


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _previous_memo_check(module: torch.nn.Module) -> tuple:
    """The memo check this replaced (state_dict walk plus a strided torch sample of every tensor): the
    baseline of the ratio in the last column."""
    state = module.state_dict()
    parts = []
    with torch.no_grad():
        for v in state.values():
            if v.numel():
                index = tuple(slice(None, None, max(1, -(-n // 8))) for n in v.shape)
                parts.append(v.detach()[index].double().sum())
    return (tuple((k, v.data_ptr(), v._version, tuple(v.shape)) for k, v in state.items()),
            tuple(torch.stack(parts).tolist()))


def main() -> None:
    from torchvision.models import get_model

    torch.set_num_threads(1)
    print(f"{'model':<20} {'tensors':>7} {'modules':>7} {'hit ms':>8} {'full ms':>8} {'hit/full':>9} "
          f"{'before ms':>9} {'hit/before':>10}")
    for arch in ARCHS:
        torch.manual_seed(0)
        model = TransferModel(get_model(arch, weights=None), name=arch, preprocess=Preprocess(size=32))
        model.fingerprint()
        hit = _median_ms(model.fingerprint, 200)

        def full(model=model):
            with torch.no_grad():
                next(model.module.parameters()).add_(0.0)  # bumps a version counter: the next call rehashes
            model.fingerprint()

        miss = _median_ms(full, 3)
        before = _median_ms(lambda model=model: _previous_memo_check(model.module), 50)
        tensors = sum(1 for _ in model.module.parameters()) + sum(1 for _ in model.module.buffers())
        modules = sum(1 for _ in model.module.modules())
        print(f"{arch:<20} {tensors:>7} {modules:>7} {hit:>8.3f} {miss:>8.1f} {hit / miss:>9.4f} "
              f"{before:>9.3f} {hit / before:>10.3f}")


if __name__ == "__main__":
    main()
