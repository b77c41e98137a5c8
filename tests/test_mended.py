"""Tests for two mends of the last review that had none that failed without them (820451a): the relative mCE
interval's pseudo-rows, and a pixel error that named its dataset and item twice.

Each test here was run against the code with its mend reverted (the two lines put back as they were before
820451a) and failed there; see each test's docstring for what it saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pytest_transfer import assert_mce_below, corruption_sweep, evaluate, load_dataset, load_model
from tests._helpers import make_blobs_images


@pytest.fixture(scope="module")
def blobs():
    """300 separable 12×12 blobs and an MLP that classifies every test image right (60 full-batch Adam steps)."""
    x, y = make_blobs_images(n_per_class=100, seed=2, size=12)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(x[0].size, 32), nn.ReLU(), nn.Linear(32, 3))
    train = np.arange(0, len(y), 2)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return x, y, net.eval()


def test_the_relative_mce_interval_keeps_its_hedge_when_nothing_degrades(fresh_context, blobs):
    """The relative mCE of a model that loses no sample to the corruption is 0 and its interval must keep room
    on both sides (a pseudo-sample degrading everything above, one improving everything below). Before
    820451a both pseudo-rows were rows with no degradation at all (clean and cells all wrong, or all right):
    every draw gave 0 and the interval was [0, 0], so a strict gate passed any max_relative_mce >= 0 on
    any sample size."""
    x, y, net = blobs
    model, data = load_model(net, name="mlp"), load_dataset((x, y), name="blobs")
    sweep = corruption_sweep(model, data, "brightness", [1], method="direct")
    assert sweep.clean_accuracy == 1.0 and sweep.accuracy["brightness"][1] == 1.0  # nothing degrades here
    reference = {"brightness": [0.6], "clean": 0.4}
    m = assert_mce_below(model, data, 1.0, reference=reference, corruptions="brightness", severities=[1],
                         relative=True, method="direct", confidence="strict")
    lo, hi = m.interval
    assert m.value == 0.0
    assert lo < -0.01 and hi > 0.01, m.interval  # the old pseudo-rows: (0.0, 0.0)
    # the hedge is one pseudo-sample among n: the upper limit is about what one fully degraded sample in n + 1
    # moves the relative CE to (its error rises by 1 / (n + 1), against the reference's 0.2), a few times over
    n = sweep.n
    assert 1 / (n + 1) / 0.2 < hi < 8 / (n + 1) / 0.2
    with pytest.raises(AssertionError, match="relative mCE"):  # strict: the upper limit must clear the maximum
        assert_mce_below(model, data, hi / 2, reference=reference, corruptions="brightness", severities=[1],
                         relative=True, method="direct", confidence="strict")


def _folder(root, n_per_class=20, size=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for k in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / cls / f"{k:02d}.png")
    return root


def test_a_pixel_error_found_while_streaming_names_its_dataset_and_item_once(fresh_context, tmp_path):
    """An item outside [0, 1] that the fingerprint does not read (an ``ImageFolder`` is fingerprinted by its
    files and 16 spread items; item 1 of 40 is not among them) is found by the pass, in the model's loader.
    Before 820451a the check there raised a ValueError that the loader wrapped again: "dataset 'bad':
    file 'a/01.png': dataset 'bad': file 'a/01.png': float pixel values ...". """
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    class OneBadItem(ImageFolder):
        def __getitem__(self, i):
            image, label = super().__getitem__(i)
            return (image * 255 if i == 1 else image), label

    data = OneBadItem(str(_folder(tmp_path / "photos")), transform=T.ToTensor())
    # a model with its library's resize and crop: the items go through ``load_at`` in the loader (a bare module
    # without a preprocess would read them through ``load``, which the mend did not touch)
    model = load_model("torchvision:shufflenet_v2_x0_5:none", image_size=16, num_classes=2)
    with pytest.raises(ValueError, match=r"looks like 0\.\.255") as refused:
        evaluate(model, load_dataset(data, name="bad"), split="all")
    message = str(refused.value)
    assert message.startswith("dataset 'bad': file 'a/01.png': float pixel values must lie in [0, 1]"), message
    assert message.count("dataset 'bad'") == 1 and message.count("a/01.png") == 1, message
