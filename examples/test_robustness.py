"""Robustness gates on the real EfficientNet-Lite0 and the real digits: ImageNet-C corruptions and a PGD attack.

Both perturb the [0, 1] images at the model's 224-px input, before its normalisation; the linear probe is
fitted on clean train features and scored on perturbed test images. Thresholds (corruption_max_drop,
attack_min_accuracy) come from this folder's pyproject.toml. Run: pytest examples
--transfer-html=report.html (accuracy-vs-severity curves in the report).
"""

from __future__ import annotations

import pytest

from pytest_transfer import assert_robust_under_attack, assert_robust_under_corruption

pytestmark = pytest.mark.transfer(model="efficientnet-lite0", dataset="digits")


def test_robust_to_mild_noise_corruptions(pretrained_model, target_dataset):
    # ImageNet-C's three noise corruptions (gaussian, shot, impulse) at severity 1: the gate is the mean
    # accuracy drop over the cells, all computed in one pass over the test split (and cached on disk).
    # On 8-px digits corruption_table="auto" takes the published CIFAR-10-C parameters (the small-image table).
    # Try: "impulse_noise", 5 to see the drop exceed corruption_max_drop.
    result = assert_robust_under_corruption(pretrained_model, target_dataset, "noise", 1)
    assert set(result.details["curves"]) == {"gaussian_noise", "shot_noise", "impulse_noise"}


def test_robust_to_small_adversarial_perturbations(pretrained_model, target_dataset):
    # PGD in the L-infinity ball of 1/255 (a fraction of one of the digits' 17 grey levels), 2 steps, seeded,
    # through the backbone with its linear probe as the head.
    # Try: eps=4 / 255 to see the accuracy fall below attack_min_accuracy.
    assert_robust_under_attack(pretrained_model, target_dataset, attack="pgd", eps=1 / 255, steps=2)
