"""Gate the transfer of an ImageNet-pretrained EfficientNet-Lite0 to real handwritten digits.

Thresholds come from this folder's pyproject.toml, per model × dataset.
Run: pytest examples
"""

from __future__ import annotations

import pytest

from pytest_transfer import (
    assert_f1_above,
    assert_robust_under_noise,
    assert_transfer_accuracy_above,
    load_model,
)

pytestmark = pytest.mark.transfer(model="efficientnet-lite0", dataset="digits")


def test_linear_probe_transfers(pretrained_model, target_dataset):
    # threshold from [tool.pytest_transfer.thresholds."efficientnet-lite0"."digits"] linear_probe_accuracy
    # Try: assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.99) to see the gate fail.
    result = assert_transfer_accuracy_above(pretrained_model, target_dataset)
    assert result.interval[0] <= result.value <= result.interval[1]


def test_knn_transfers(pretrained_model, target_dataset):
    # Try: threshold=0.99 makes it fail with the measured value and its Wilson interval.
    assert_transfer_accuracy_above(pretrained_model, target_dataset, method="knn")


def test_macro_f1(pretrained_model, target_dataset):
    # Try: average="micro", or threshold=0.99.
    assert_f1_above(pretrained_model, target_dataset, average="macro")


def test_robust_to_mild_noise(pretrained_model, target_dataset):
    # The probe is trained on clean features and scored on noisy images. The noise is added at the model's
    # 64-px input, where the 8-px digits are smooth blobs: sigma = 0.005 (about 1.3 of 255 grey levels) already
    # costs about 9 points. Try: sigma=0.02 to see the drop exceed noise_max_drop.
    assert_robust_under_noise(pretrained_model, target_dataset, sigma=0.005)


@pytest.mark.transfer(model="efficientnet-lite0", dataset="digits-shifted")
def test_pretraining_is_what_transfers(pretrained_model, target_dataset):
    # digits-shifted: the same real digits at random positions on a 20x20 canvas. Pixels alone no longer
    # separate the classes, so only features that know about shapes transfer.
    assert_transfer_accuracy_above(pretrained_model, target_dataset)  # 0.75 from pyproject.toml
    random_twin = load_model("efficientnet-lite0-random")
    # the same architecture with random weights fails the same gate (it shows as FAIL in the summary):
    with pytest.raises(AssertionError, match=r"below the minimum 0\.75"):
        assert_transfer_accuracy_above(random_twin, target_dataset)
