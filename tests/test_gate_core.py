"""The gate core (pytest_transfer.gates.core) and the one declaration of the transferability estimators."""

from __future__ import annotations

import math

import pytest

from pytest_transfer.estimators import ESTIMATORS, label
from pytest_transfer.gates.core import check_threshold, failure_message, find_threshold
from pytest_transfer.thresholds import KNOWN_KEYS, Threshold, ThresholdTable


def test_every_declared_estimator_is_a_threshold_key_with_its_bounds_and_its_function_carries_them():
    from pytest_transfer.metrics.transferability import TRANSFERABILITY_METRICS

    assert list(TRANSFERABILITY_METRICS) == list(ESTIMATORS)
    for name, spec in ESTIMATORS.items():
        fn = TRANSFERABILITY_METRICS[name]
        assert KNOWN_KEYS[name] == spec.bounds
        assert (fn.higher_is_better, fn.bounds, fn.inputs, fn.label) == (
            spec.higher_is_better, spec.bounds, spec.inputs, spec.label)
        assert fn.declaration is spec and label(name) == spec.label
    assert (KNOWN_KEYS["leep"], KNOWN_KEYS["sfda"], KNOWN_KEYS["lfc"]) == ((-math.inf, 0.0), (0.0, 1.0), (-1.0, 1.0))


def test_config_validation_reads_the_declared_bounds():
    with pytest.raises(pytest.UsageError, match=r"leep = 0.5 is outside the metric's range \[-inf, 0.0\]"):
        ThresholdTable({"*": {"*": {"leep": 0.5}}})
    assert ThresholdTable({"*": {"*": {"leep": -0.5}}}).lookup("m", "d", "leep").value == -0.5


def test_every_threshold_passes_through_check_threshold(fresh_context):
    assert find_threshold(fresh_context, 0.5, "threshold", "m", "d", ("f1",)) == Threshold(0.5, "argument threshold=")
    with pytest.raises(ValueError, match="max_drop=nan: the threshold is NaN"):
        find_threshold(fresh_context, float("nan"), "max_drop", "m", "d", ("noise_max_drop",))
    with pytest.raises(ValueError, match="threshold is NaN"):
        check_threshold(Threshold(math.nan, "t.toml [x] f1"), argument="threshold", keys=("f1",))


def test_the_failure_message_says_value_interval_threshold_source_and_next_step():
    text = failure_message(label="F1 (macro, knn)", value=0.81234, interval=(0.75, 0.86), higher_is_better=True,
                           threshold=Threshold(0.9, "pyproject.toml [x] f1"), mode="strict", level=0.95,
                           model="m", dataset="d", details={"method": "knn", "n": 40, "other": 1}, hint="look")
    assert text == (
        "F1 (macro, knn) of model 'm' on dataset 'd' is 0.8123 (95% interval 0.7500–0.8600), below the minimum "
        "0.9 [confidence=strict: the whole 95% interval must clear it]\n"
        "  threshold from: pyproject.toml [x] f1\n"
        "  measured with: method=knn, n=40\n"
        "  next: look"
    )


def test_each_measurement_is_handed_out_once_for_its_report(fresh_context):
    from pytest_transfer.context import Measurement

    ms = [fresh_context.record(Measurement(gate="g", metric="m", value=float(i), model="a", dataset="d"))
          for i in range(3)]
    assert fresh_context.take_new_measurements() == ms
    assert fresh_context.take_new_measurements() == []
    late = fresh_context.record(Measurement(gate="g", metric="m", value=9.0, model="a", dataset="d"))
    assert fresh_context.take_new_measurements() == [late] and len(fresh_context.measurements) == 4
