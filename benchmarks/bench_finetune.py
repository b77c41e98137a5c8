"""Fine-tuning the last blocks: the train split decoded once per fit, against decoded at every step.

The module: EfficientNet-Lite0 (random weights, 64 px) fine-tuned with ``last_blocks=1`` for a few epochs on a
folder of JPEG photos (3 classes, decoded and resized through the model's geometry as the engine feeds them). The
same process runs both rules of :func:`pytest_transfer.methods.finetune.train_images`, interleaved: the split
decoded once per fit (within ``TRAIN_IMAGES_BYTES``) and, with the bound set to 0, decoded again at every step
(what every fit did before). Printed: the seconds of each (medians), their ratio, and whether the two trained the
same weights (they must, bit for bit). Run::

    .venv/bin/python benchmarks/bench_finetune.py            # 5 rounds, 150 photos, 3 epochs
    .venv/bin/python benchmarks/bench_finetune.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pytest_transfer.context import Context
from pytest_transfer.datasets import load_dataset
from pytest_transfer.methods import finetune
from pytest_transfer.settings import resolve


def photos(root: Path, per_class: int) -> None:
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.random((360, 480, 3)) * 160 + np.array([40.0, 20.0, 0.0]) * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"class{c}" / f"{i}.jpg", quality=90)


def fit(model, data, limit: int, epochs: int) -> tuple[float, dict]:
    finetune.TRAIN_IMAGES_BYTES = limit
    ctx = Context(resolve({"no_cache": True, "device": "cpu"}, pyproject=None, environ={}))
    cfg = finetune.FinetuneConfig(epochs=epochs, last_blocks=1, batch_size=32)
    start = time.perf_counter()
    tuned = finetune.finetuned_model(model, data, cfg, context=ctx, seed=0)
    return time.perf_counter() - start, tuned.module.state_dict()


def main() -> None:
    from pytest_transfer.contrib.efficientnet_lite import efficientnet_lite0

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bound = finetune.TRAIN_IMAGES_BYTES
    with tempfile.TemporaryDirectory() as tmp:
        photos(Path(tmp), args.per_class)
        data = load_dataset(f"imagefolder:{tmp}")
        model = efficientnet_lite0(image_size=64)
        fit(model, data, 0, 1)  # warm-up: the files' first reads, torch's first backward
        fit(model, data, bound, 1)
        once, every, same = [], [], True
        for r in range(args.rounds):
            order = [bound, 0] if r % 2 == 0 else [0, bound]
            states = {}
            for limit in order:
                seconds, states[limit] = fit(model, data, limit, args.epochs)
                (once if limit else every).append(seconds)
            same &= all(torch.equal(a, states[0][k]) for k, a in states[bound].items())
    finetune.TRAIN_IMAGES_BYTES = bound
    n = len(data.indices("train"))
    print(f"EfficientNet-Lite0 at 64 px, last_blocks=1, {args.epochs} epochs on {n} train photos (JPEG, 480x360), "
          f"{torch.get_num_threads()} thread(s), {args.rounds} rounds (medians):")
    print(f"  decoded at every step (before):  {statistics.median(every):.2f} s")
    print(f"  decoded once per fit:            {statistics.median(once):.2f} s")
    print(f"  once / every step:               {statistics.median(o / e for o, e in zip(once, every, strict=True)):.3f}"
          f"  (the same weights: {same})")


if __name__ == "__main__":
    main()
