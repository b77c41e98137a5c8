"""Robustness gates on the real EfficientNet-Lite0 and the real digits: ImageNet-C corruptions and a PGD attack.

Both perturb the [0, 1] images at the model's 64-px input, before its normalisation; the linear probe is
fitted on clean train features and scored on perturbed test images. Thresholds (corruption_max_drop,
attack_min_accuracy) come from this folder's pyproject.toml. Run: pytest examples
--transfer-html=report.html (accuracy-vs-severity curves in the report).
"""

from __future__ import annotations

import pytest

from pytest_transfer import assert_robust_under_attack, assert_robust_under_corruption

pytestmark = pytest.mark.transfer(model="efficientnet-lite0", dataset="digits")


def test_robust_to_mild_blur(pretrained_model, target_dataset):
    # ImageNet-C's four blurs (defocus, glass, motion, zoom) at severity 1: the gate is the mean accuracy drop
    # over the cells, all computed in one pass over the test split (and cached on disk). They act on the
    # model's 64-px input, so corruption_table="auto" takes the published Tiny-ImageNet-C parameters.
    # Try: "noise", 1 (gaussian, shot, impulse) to see the drop exceed corruption_max_drop.
    result = assert_robust_under_corruption(pretrained_model, target_dataset, "blur", 1)
    assert set(result.details["curves"]) == {"defocus_blur", "glass_blur", "motion_blur", "zoom_blur"}


def test_robust_to_small_adversarial_perturbations(pretrained_model, target_dataset):
    # PGD in the L-infinity ball of a quarter of one 8-bit grey level at the model's 64-px input, 2 steps,
    # seeded, through the backbone with its linear probe as the head.
    # Try: eps=1 / 255 to see the accuracy fall below attack_min_accuracy.
    assert_robust_under_attack(pretrained_model, target_dataset, attack="pgd", eps=0.25 / 255, steps=2)
