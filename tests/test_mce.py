"""Corruption Error, mCE and relative mCE (Hendrycks & Dietterich, ICLR 2019)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pytest_transfer.robustness import ALEXNET_ERRORS, CORRUPTIONS, CorruptionErrorResult, mce, relative_mce

# The per-corruption AlexNet errors of the AugMix reference code (ALEXNET_ERR, google-research/augmix),
# copied independently: the means over severities of ALEXNET_ERRORS must reproduce them.
AUGMIX_ALEXNET_ERR = [
    0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360,
    0.866816, 0.826572, 0.819324, 0.564592, 0.853204, 0.646056, 0.717840,
    0.606500,
]  # fmt: skip


def test_alexnet_table_reproduces_the_published_means_and_clean_error():
    assert [k for k in ALEXNET_ERRORS if k != "clean"] == list(CORRUPTIONS)
    means = [float(np.mean(ALEXNET_ERRORS[c])) for c in CORRUPTIONS]
    np.testing.assert_allclose(means, AUGMIX_ALEXNET_ERR, atol=1e-6)
    assert ALEXNET_ERRORS["clean"] == pytest.approx(1 - 0.56522)  # torchvision AlexNet top-1 accuracy 56.522 %
    assert all(len(ALEXNET_ERRORS[c]) == 5 for c in CORRUPTIONS)
    with pytest.raises(TypeError):
        ALEXNET_ERRORS["fog"] = (0.0,) * 5  # read-only


def test_mce_hand_worked_example():
    errors = {"fog": [0.1, 0.2, 0.3, 0.4, 0.5], "contrast": [0.2, 0.2, 0.2, 0.2, 0.2]}
    reference = {"fog": [0.3, 0.5, 0.6, 0.8, 0.8], "contrast": [0.5, 0.5, 0.5, 0.5, 0.5], "snow": 0.9}
    r = mce(errors, reference)
    # fog: 1.5 / 3.0 = 0.5; contrast: 1.0 / 2.5 = 0.4; mean 0.45 (snow is not evaluated)
    assert r.per_corruption == pytest.approx({"fog": 0.5, "contrast": 0.4})
    assert float(r) == pytest.approx(0.45) and r.mean == pytest.approx(0.45)
    assert isinstance(r, CorruptionErrorResult) and r.name == "mCE" and not r.relative


def test_mce_accepts_means_and_tensors():
    per_severity = {"fog": [0.1, 0.2, 0.3, 0.4, 0.5]}
    reference = {"fog": [0.3, 0.5, 0.6, 0.8, 0.8]}
    expected = float(mce(per_severity, reference))
    assert float(mce({"fog": 0.3}, reference)) == pytest.approx(expected)  # mean over severities
    assert float(mce(per_severity, {"fog": 0.6})) == pytest.approx(expected)
    assert float(mce({"fog": torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])}, reference)) == pytest.approx(expected)


def test_the_reference_model_scores_one_against_itself():
    assert float(mce(ALEXNET_ERRORS, ALEXNET_ERRORS)) == pytest.approx(1.0)
    assert float(relative_mce(ALEXNET_ERRORS, ALEXNET_ERRORS)) == pytest.approx(1.0)
    assert float(mce({"fog": 0.2}, {"fog": 0.2})) == 1.0


def test_default_reference_is_alexnet():
    errors = {c: 0.5 for c in CORRUPTIONS}
    expected = float(np.mean([0.5 / m for m in AUGMIX_ALEXNET_ERR]))
    assert float(mce(errors)) == pytest.approx(expected)


def test_relative_mce_hand_worked_example():
    errors = {"fog": [0.3, 0.4], "contrast": [0.25, 0.25], "clean": 0.2}
    reference = {"fog": [0.6, 0.8], "contrast": [0.5, 0.7], "clean": 0.4}
    r = relative_mce(errors, reference)
    # fog: (0.1 + 0.2) / (0.2 + 0.4) = 0.5; contrast: (0.05 + 0.05) / (0.1 + 0.3) = 0.25
    assert r.per_corruption == pytest.approx({"fog": 0.5, "contrast": 0.25})
    assert float(r) == pytest.approx(0.375) and r.relative and r.name == "relative mCE"
    assert r.clean_error == 0.2 and r.reference_clean_error == 0.4
    explicit = relative_mce(
        {"fog": [0.3, 0.4], "contrast": [0.25, 0.25]},
        {"fog": [0.6, 0.8], "contrast": [0.5, 0.7]},
        clean_error=0.2,
        reference_clean_error=0.4,
    )
    assert float(explicit) == pytest.approx(0.375)


def test_relative_mce_is_negative_when_corruption_lowers_the_error():
    r = relative_mce({"fog": 0.1, "clean": 0.2}, {"fog": 0.5, "clean": 0.4})
    assert float(r) == pytest.approx(-0.1 / 0.1)


def test_metric_declarations():
    assert mce.higher_is_better is False and mce.bounds == (0.0, math.inf)
    assert relative_mce.higher_is_better is False


@pytest.mark.parametrize(
    ("errors", "reference", "match"),
    [
        ({"fog": 0.3, "smog": 0.4}, {"fog": 0.5}, "\\['smog'\\] have no reference errors; reference_errors has"),
        ([0.3], {"fog": 0.5}, "errors: expected a mapping"),
        ({"fog": 0.3}, [0.5], "reference_errors: expected a mapping"),
        ({}, {"fog": 0.5}, "errors: has no corruption entries"),
        ({"clean": 0.1}, {"fog": 0.5}, "errors: has no corruption entries"),
        ({"fog": 30.0}, {"fog": 0.5}, "fractions in \\[0, 1\\].*not percentages"),
        ({"fog": float("nan")}, {"fog": 0.5}, "errors\\['fog'\\]: error rates must be finite"),
        ({"fog": [0.1, 0.2, 0.3]}, {"fog": [0.5] * 5}, "has 3 severities but reference_errors\\['fog'\\] has 5"),
        ({"fog": [[0.1, 0.2]]}, {"fog": 0.5}, "expected a scalar or a 1-d sequence"),
        ({"fog": []}, {"fog": 0.5}, "errors\\['fog'\\]: is empty"),
        ({"fog": "high"}, {"fog": 0.5}, "expected an error rate or a sequence"),
        ({"fog": 0.3}, {"fog": 0.0}, "reference_errors\\['fog'\\]: is zero"),
    ],
)
def test_mce_argument_errors(errors, reference, match):
    with pytest.raises(ValueError, match=match):
        mce(errors, reference)


@pytest.mark.parametrize(
    ("errors", "reference", "kwargs", "match"),
    [
        ({"fog": 0.3}, {"fog": 0.5, "clean": 0.4}, {}, "clean_error: the relative mCE needs the clean error"),
        ({"fog": 0.3, "clean": 0.1}, {"fog": 0.5}, {}, "reference_clean_error: the relative mCE needs"),
        ({"fog": 0.3, "clean": 0.1}, {"fog": 0.4, "clean": 0.4}, {}, "not above its clean error"),
        ({"fog": 0.3}, {"fog": 0.5, "clean": 0.4}, {"clean_error": [0.1, 0.2]}, "expected one clean error rate"),
        ({"fog": 0.3}, {"fog": 0.5, "clean": 0.4}, {"clean_error": 2.0}, "clean_error: error rates must be"),
    ],
)
def test_relative_mce_argument_errors(errors, reference, kwargs, match):
    with pytest.raises(ValueError, match=match):
        relative_mce(errors, reference, **kwargs)
