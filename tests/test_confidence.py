"""Confidence modes on the gates: none (point value), strict (the interval must clear), lenient (fail only when the
whole interval misses); Wilson intervals for accuracies, paired intervals for drops, a seeded bootstrap for F1."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_transfer import assert_f1_above, assert_robust_under_noise, assert_transfer_accuracy_above
from pytest_transfer.gates.core import bootstrap_interval, decide
from tests._helpers import pytester_pyproject

MODES = ("none", "strict", "lenient")


@pytest.mark.parametrize(("value", "interval", "threshold", "higher", "expected"), [
    # higher is better: threshold inside the interval, below the value
    (0.8, (0.7, 0.9), 0.75, True, {"none": True, "strict": False, "lenient": True}),
    # inside the interval, above the value
    (0.8, (0.7, 0.9), 0.85, True, {"none": False, "strict": False, "lenient": True}),
    # above the whole interval / below the whole interval
    (0.8, (0.7, 0.9), 0.95, True, {"none": False, "strict": False, "lenient": False}),
    (0.8, (0.7, 0.9), 0.65, True, {"none": True, "strict": True, "lenient": True}),
    # a maximum (drop) gate: the upper bound decides strict, the lower bound lenient
    (0.10, (0.05, 0.15), 0.12, False, {"none": True, "strict": False, "lenient": True}),
    (0.10, (0.05, 0.15), 0.08, False, {"none": False, "strict": False, "lenient": True}),
    (0.10, (0.05, 0.15), 0.04, False, {"none": False, "strict": False, "lenient": False}),
    (0.10, (0.05, 0.15), 0.16, False, {"none": True, "strict": True, "lenient": True}),
])
def test_decide_in_every_mode(value, interval, threshold, higher, expected):
    got = {mode: decide(value, interval, threshold, higher_is_better=higher, mode=mode) for mode in MODES}
    assert got == expected


def _between(a: float, b: float) -> float:
    return (a + b) / 2.0


def test_accuracy_gate_in_every_mode_with_wilson_intervals(tiny_model, blobs):
    from scipy.stats import binomtest

    m = assert_transfer_accuracy_above(tiny_model, blobs, 0.0)
    value, (lo, hi) = m.value, m.interval
    n, hits = m.details["n"], m.details["correct"]
    expected = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (lo, hi) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert 0.0 < lo < value < hi < 1.0
    cases = {
        _between(lo, value): {"none": True, "strict": False, "lenient": True},
        _between(value, hi): {"none": False, "strict": False, "lenient": True},
        _between(hi, 1.0): {"none": False, "strict": False, "lenient": False},
        lo / 2: {"none": True, "strict": True, "lenient": True},
    }
    for threshold, outcome in cases.items():
        for mode, should_pass in outcome.items():
            if should_pass:
                assert assert_transfer_accuracy_above(tiny_model, blobs, threshold, confidence=mode).passed
            else:
                with pytest.raises(AssertionError, match="below the minimum"):
                    assert_transfer_accuracy_above(tiny_model, blobs, threshold, confidence=mode)


def test_failure_messages_name_the_rule(tiny_model, blobs):
    m = assert_transfer_accuracy_above(tiny_model, blobs, 0.0)
    with pytest.raises(AssertionError, match=r"\[confidence=strict: the whole 95% interval must clear it\]"):
        assert_transfer_accuracy_above(tiny_model, blobs, _between(m.interval[0], m.value), confidence="strict")
    with pytest.raises(AssertionError, match=r"\[confidence=lenient: the whole 95% interval is on the wrong side\]"):
        assert_transfer_accuracy_above(tiny_model, blobs, _between(m.interval[1], 1.0), confidence="lenient")


@pytest.fixture
def spots(fresh_context):
    """Three classes a pooled-pixel net separates perfectly when clean, and much less under heavy noise."""
    import torch
    from torch import nn

    from pytest_transfer import load_dataset, load_model

    rng = np.random.default_rng(0)
    x = rng.random((240, 1, 8, 8), dtype=np.float32) * 0.3
    y = np.repeat(np.arange(3), 80)
    for i, c in enumerate(y):
        r, col = [(0, 0), (0, 5), (5, 0)][c]
        x[i, 0, r:r + 3, col:col + 3] += 0.6
    torch.manual_seed(0)
    net = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 16), nn.Linear(16, 3))
    return load_model(net, name="pooled"), load_dataset((np.clip(x, 0, 1), y), name="spots")


def test_drop_gate_in_every_mode_with_a_paired_interval(spots):
    model, data = spots
    m = assert_robust_under_noise(model, data, sigma=0.6, max_drop=1.0)
    value, (lo, hi) = m.value, m.interval
    assert 0.0 < lo < value < hi < 1.0  # a real drop, with an interval that excludes 0
    cases = {
        _between(value, hi): {"none": True, "strict": False, "lenient": True},
        _between(lo, value): {"none": False, "strict": False, "lenient": True},
        lo / 2: {"none": False, "strict": False, "lenient": False},
        _between(hi, 1.0): {"none": True, "strict": True, "lenient": True},
    }
    for max_drop, outcome in cases.items():
        for mode, should_pass in outcome.items():
            if should_pass:
                assert assert_robust_under_noise(model, data, sigma=0.6, max_drop=max_drop, confidence=mode).passed
            else:
                with pytest.raises(AssertionError, match="above the maximum"):
                    assert_robust_under_noise(model, data, sigma=0.6, max_drop=max_drop, confidence=mode)


def test_f1_gate_uses_a_seeded_bootstrap_interval(tiny_model, blobs, fresh_context):
    from scipy.stats import bootstrap

    from pytest_transfer.metrics import f1_score
    from tests._helpers import predict

    assert assert_f1_above(tiny_model, blobs, 0.0).interval is None  # no mode: no resampling cost
    m = assert_f1_above(tiny_model, blobs, 0.0, confidence="lenient")
    assert assert_f1_above(tiny_model, blobs, 0.0, confidence="lenient").interval == m.interval  # seeded
    pr = predict(tiny_model, blobs)
    ref = bootstrap((pr.y_true, pr.y_pred), f1_score, paired=True, vectorized=False, n_resamples=2000,
                    method="percentile", random_state=1).confidence_interval
    assert m.interval == pytest.approx((ref.low, ref.high), abs=0.04)  # another resampler, the same interval
    lo, hi = m.interval
    with pytest.raises(AssertionError, match=r"F1 \(macro, linear_probe\).*confidence=strict"):
        assert_f1_above(tiny_model, blobs, _between(lo, m.value), confidence="strict")
    assert assert_f1_above(tiny_model, blobs, _between(m.value, hi), confidence="lenient").passed
    with pytest.raises(AssertionError, match="confidence=lenient"):
        assert_f1_above(tiny_model, blobs, _between(hi, 1.0), confidence="lenient")


def test_bootstrap_interval_follows_the_session_seed_and_level(fresh_context):
    import dataclasses

    x = np.random.default_rng(3).random(200)
    a = bootstrap_interval(fresh_context, np.mean, x)
    assert bootstrap_interval(fresh_context, np.mean, x) == a
    fresh_context.settings = dataclasses.replace(fresh_context.settings, seed=1)
    b = bootstrap_interval(fresh_context, np.mean, x)
    assert b != a and b == pytest.approx(a, abs=0.02)
    fresh_context.settings = dataclasses.replace(fresh_context.settings, confidence_level=0.8)
    c = bootstrap_interval(fresh_context, np.mean, x)
    assert b[0] < c[0] < c[1] < b[1]  # a lower level, a narrower interval


def test_confidence_argument_values(tiny_model, blobs):
    assert assert_transfer_accuracy_above(tiny_model, blobs, 0.0, confidence=True).confidence == "strict"
    assert assert_transfer_accuracy_above(tiny_model, blobs, 0.0, confidence=False).confidence == "none"
    assert assert_transfer_accuracy_above(tiny_model, blobs, 0.0, confidence="LENIENT").confidence == "lenient"
    with pytest.raises(ValueError, match=r"confidence: expected one of none, strict, lenient, got 'sure'"):
        assert_transfer_accuracy_above(tiny_model, blobs, 0.0, confidence="sure")


CONFTEST = '''
import numpy as np


def pytest_transfer_register_models(registry):
    def net():
        import torch
        from torch import nn
        torch.manual_seed(0)
        return nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 8), nn.Linear(8, 2))
    registry.register("net", net)


def pytest_transfer_register_datasets(registry):
    def data():
        rng = np.random.default_rng(0)
        x = rng.random((80, 1, 8, 8), dtype=np.float32) * 0.5
        y = np.repeat([0, 1], 40)
        x[y == 1, 0, :4] += 0.08
        return x, y
    registry.register("halves", data)
'''


def test_the_mode_for_every_gate_from_config_and_command_line(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".toml", pyproject=pytester_pyproject(
        'confidence = "lenient"', '[tool.pytest_transfer.thresholds."net"."halves"]\nknn_accuracy = 0.5\n'))
    pytester.makepyfile('''
        import pytest
        from pytest_transfer import assert_transfer_accuracy_above

        @pytest.mark.transfer(model="net", dataset="halves")
        def test_gate(pretrained_model, target_dataset):
            m = assert_transfer_accuracy_above(pretrained_model, target_dataset, method="knn")
            print("MODE", m.confidence, m.interval[0] < 0.5 < m.value)
    ''')
    lenient = pytester.runpytest("-s")
    lenient.assert_outcomes(passed=1)
    lenient.stdout.fnmatch_lines(["*MODE lenient True", "*intervals are 95% (confidence mode: lenient)*"])
    strict = pytester.runpytest("--transfer-confidence=strict")  # the interval reaches below 0.5: strict fails
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*[[]confidence=strict: the whole 95% interval must clear it]*",
                                 "*threshold from: pyproject.toml [[]tool.pytest_transfer.thresholds.*knn_accuracy*"])
