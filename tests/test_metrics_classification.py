"""Classification metrics agree with scikit-learn and with hand-worked examples."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from pytest_transfer.metrics import (
    accuracy,
    classification,
    confusion_matrix,
    expected_calibration_error,
    f1_score,
    precision_score,
    recall_score,
    roc_auc,
)
from pytest_transfer.metrics.classification import ReliabilityCurve, reliability_curve
from tests._helpers import module_level_imports

AVERAGES = ["macro", "micro", "weighted"]
PRF = [
    (precision_score, skm.precision_score),
    (recall_score, skm.recall_score),
    (f1_score, skm.f1_score),
]


def _sk(fn, y_true, y_pred, **kw):
    """scikit-learn's score with its default zero_division ("warn", i.e. 0.0), warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(y_true, y_pred, **kw)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _label_cases():
    rng = np.random.default_rng(0)
    yield "random-5", rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    t = rng.choice([0, 3, 7], 120)
    yield "gaps-0-3-7", t, np.where(rng.random(120) < 0.6, t, rng.choice([0, 3, 7], 120))
    t = rng.integers(0, 4, 90)
    yield "class-3-never-predicted", t, np.minimum(t, 2)
    t = rng.integers(0, 3, 90)
    yield "predicted-label-not-in-truth", t, np.where(rng.random(90) < 0.2, 9, t)
    yield "binary", rng.integers(0, 2, 150), rng.integers(0, 2, 150)
    t = rng.integers(0, 60, 300)
    yield "many-classes", t, np.where(rng.random(300) < 0.5, t, rng.integers(0, 60, 300))
    yield "negative-labels", rng.integers(-2, 2, 80), rng.integers(-2, 2, 80)
    yield "all-correct", np.arange(10) % 3, np.arange(10) % 3


LABEL_CASES = list(_label_cases())


@pytest.mark.parametrize("name, y_true, y_pred", LABEL_CASES, ids=[c[0] for c in LABEL_CASES])
@pytest.mark.parametrize("average", AVERAGES)
def test_precision_recall_f1_equal_sklearn(name, y_true, y_pred, average):
    for ours, theirs in PRF:
        assert ours(y_true, y_pred, average=average) == pytest.approx(
            _sk(theirs, y_true, y_pred, average=average), abs=1e-12
        ), ours.__name__


@pytest.mark.parametrize("name, y_true, y_pred", LABEL_CASES, ids=[c[0] for c in LABEL_CASES])
def test_accuracy_and_confusion_matrix_equal_sklearn(name, y_true, y_pred):
    assert accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-15)
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred), skm.confusion_matrix(y_true, y_pred))


@pytest.mark.parametrize("average", AVERAGES)
@pytest.mark.parametrize("labels", [[0, 3], [7, 0, 3], [0, 3, 7, 9]], ids=["subset", "reordered", "with-absent"])
def test_labels_keyword_equals_sklearn(average, labels):
    rng = np.random.default_rng(1)
    y_true = rng.choice([0, 3, 7], 100)
    y_pred = rng.choice([0, 3, 7], 100)
    for ours, theirs in PRF:
        expected = _sk(theirs, y_true, y_pred, average=average, labels=labels)
        assert ours(y_true, y_pred, average=average, labels=labels) == pytest.approx(expected, abs=1e-12)


def test_torch_tensors_give_the_numpy_result():
    rng = np.random.default_rng(2)
    t, p = rng.integers(0, 6, 100), rng.integers(0, 6, 100)
    tt, pt = torch.from_numpy(t), torch.from_numpy(p)
    assert accuracy(tt, pt) == accuracy(t, p)
    for fn, _ in PRF:
        for average in AVERAGES:
            assert fn(tt, pt, average=average) == fn(t, p, average=average)
    np.testing.assert_array_equal(confusion_matrix(tt, pt), confusion_matrix(t, p))
    probs = _softmax(rng.normal(size=(100, 6)))
    probs_t = torch.from_numpy(probs).float()
    assert roc_auc(tt, probs_t) == pytest.approx(roc_auc(t, probs_t.double().numpy()), abs=1e-12)
    assert expected_calibration_error(tt, probs_t) == pytest.approx(
        expected_calibration_error(t, probs_t.double().numpy()), abs=1e-12
    )


def test_hand_worked_precision_recall_f1():
    # class 0: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3;  class 1: TP 2, FP 1, FN 0 -> P 2/3, R 1, F1 4/5
    y_true, y_pred = [0, 0, 1, 1], [0, 1, 1, 1]
    assert precision_score(y_true, y_pred) == pytest.approx((1 + 2 / 3) / 2)
    assert recall_score(y_true, y_pred) == pytest.approx(0.75)
    assert f1_score(y_true, y_pred) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert f1_score(y_true, y_pred, average="micro") == pytest.approx(0.75)  # micro F1 = accuracy


def test_micro_scores_equal_accuracy_when_every_label_is_scored():
    rng = np.random.default_rng(3)
    t, p = rng.integers(0, 7, 300), rng.integers(0, 7, 300)
    for fn, _ in PRF:
        assert fn(t, p, average="micro") == pytest.approx(accuracy(t, p), abs=1e-12)


def test_confusion_matrix_with_num_classes_equals_sklearn_labels():
    y_true, y_pred = [0, 2, 2, 1], [0, 2, 1, 1]
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred, num_classes=5), skm.confusion_matrix(y_true, y_pred, labels=range(5))
    )
    # rows are the true class: one sample of class 2 was predicted as 1
    assert confusion_matrix(y_true, y_pred, num_classes=3)[2, 1] == 1
    assert confusion_matrix(y_true, y_pred).dtype == np.int64


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True, "3"])
def test_confusion_matrix_rejects_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix([0, 1], [1, 0], num_classes=num_classes)


def test_confusion_matrix_rejects_labels_outside_num_classes():
    with pytest.raises(ValueError, match=r"y_pred: contains label 3 outside 0..2"):
        confusion_matrix([0, 1, 2], [0, 1, 3], num_classes=3)
    with pytest.raises(ValueError, match=r"y_true: contains label -1"):
        confusion_matrix([-1, 1, 2], [0, 1, 2], num_classes=3)


# ----------------------------------------------------------------------------- ROC AUC


@pytest.mark.parametrize("average", ["macro", "weighted", "micro"])
@pytest.mark.parametrize("n_classes", [3, 10])
def test_roc_auc_multiclass_equals_sklearn(average, n_classes):
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, 400)
    probs = _softmax(rng.normal(size=(400, n_classes)) + 1.5 * np.eye(n_classes)[y])
    expected = skm.roc_auc_score(y, probs, multi_class="ovr", average=average)
    assert roc_auc(y, probs, average=average) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("average", ["macro", "weighted", "micro"])
def test_roc_auc_with_many_ties_equals_sklearn(average):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 300)
    coarse = np.round(_softmax(rng.normal(size=(300, 4)) + np.eye(4)[y]), 1)  # values on a 0.1 grid: ties
    coarse[:, -1] = 1.0 - coarse[:, :-1].sum(axis=1)
    coarse = np.clip(coarse, 0, 1)
    coarse /= coarse.sum(axis=1, keepdims=True)
    assert len(np.unique(coarse[:, 0])) < 15
    expected = skm.roc_auc_score(y, coarse, multi_class="ovr", average=average)
    assert roc_auc(y, coarse, average=average) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_binary_forms_equal_sklearn():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 250)
    p1 = np.clip(0.3 * y + rng.random(250) * 0.7, 0, 1)
    expected = skm.roc_auc_score(y, p1)
    probs = np.column_stack([1 - p1, p1])
    for average in AVERAGES:
        assert roc_auc(y, probs, average=average) == pytest.approx(expected, abs=1e-12)
    assert roc_auc(y, p1) == pytest.approx(expected, abs=1e-12)
    assert roc_auc(y, p1[:, None]) == pytest.approx(expected, abs=1e-12)
    # 1-d scores may be any real numbers (only their order matters), labels any two integers
    logit = np.log(p1 + 1e-3) - np.log(1 - p1 + 1e-3)
    y37 = np.where(y == 1, 7, 3)
    assert roc_auc(y37, logit) == pytest.approx(skm.roc_auc_score(y37, logit), abs=1e-12)


def test_roc_auc_scores_only_classes_present():
    # labels {0, 3, 7} out of 8 columns: each present class is scored one-vs-rest on its own column
    rng = np.random.default_rng(7)
    y = rng.choice([0, 3, 7], 200)
    probs = _softmax(rng.normal(size=(200, 8)) + 2.0 * np.eye(8)[y])
    per_class = {c: skm.roc_auc_score(y == c, probs[:, c]) for c in (0, 3, 7)}
    support = {c: np.mean(y == c) for c in (0, 3, 7)}
    assert roc_auc(y, probs) == pytest.approx(np.mean(list(per_class.values())), abs=1e-12)
    assert roc_auc(y, probs, average="weighted") == pytest.approx(
        sum(per_class[c] * support[c] for c in per_class), abs=1e-12
    )
    expected_micro = skm.roc_auc_score(y, probs, multi_class="ovr", average="micro", labels=range(8))
    assert roc_auc(y, probs, average="micro") == pytest.approx(expected_micro, abs=1e-12)


def test_roc_auc_hand_worked():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ordered; a tie counts one half
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.4, 0.8]) == 0.875
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5


def test_roc_auc_rejects_bad_input():
    probs = _softmax(np.random.default_rng(8).normal(size=(6, 3)))
    with pytest.raises(ValueError, match="only class 1"):
        roc_auc([1, 1, 1, 1, 1, 1], probs)
    with pytest.raises(ValueError, match="logits"):
        roc_auc([0, 1, 2, 0, 1, 2], np.log(probs))
    with pytest.raises(ValueError, match="rows must sum to 1"):
        roc_auc([0, 1, 2, 0, 1, 2], probs * 0.5)
    with pytest.raises(ValueError, match=r"probs: has 3 columns but y_true contains label 5"):
        roc_auc([0, 1, 5, 0, 1, 2], probs)
    with pytest.raises(ValueError, match="needs binary labels"):
        roc_auc([0, 1, 2, 0, 1, 2], probs[:, 0])
    with pytest.raises(ValueError, match="different lengths"):
        roc_auc([0, 1, 2, 0, 1], probs)
    with pytest.raises(ValueError, match="average"):
        roc_auc([0, 1, 2, 0, 1, 2], probs, average="samples")
    nan = probs.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1, 2, 0, 1, 2], nan)
    with pytest.raises(ValueError, match="empty"):
        roc_auc(np.array([], dtype=int), np.zeros((0, 3)))


# ----------------------------------------------------------------------------- calibration


def test_ece_hand_worked_example():
    # n_bins=5, bins (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]
    probs = np.array(
        [
            [0.95, 0.05],  # conf .95, bin 4, predicts 0, right
            [0.10, 0.90],  # conf .90, bin 4, predicts 1, wrong
            [0.70, 0.30],  # conf .70, bin 3, right
            [0.40, 0.60],  # conf .60, bin 2 (upper edge belongs to the lower bin), right
            [0.55, 0.45],  # conf .55, bin 2, wrong
        ]
    )
    y = np.array([0, 0, 0, 1, 1])
    # bin 4: acc 1/2, conf .925 -> |gap| .425, weight 2/5 ; bin 3: acc 1, conf .7 -> .3, weight 1/5
    # bin 2: acc 1/2, conf .575 -> .075, weight 2/5
    expected = 2 / 5 * 0.425 + 1 / 5 * 0.3 + 2 / 5 * 0.075
    assert expected_calibration_error(y, probs, n_bins=5) == pytest.approx(expected, abs=1e-12)
    curve = reliability_curve(y, probs, n_bins=5)
    assert isinstance(curve, ReliabilityCurve)
    np.testing.assert_array_equal(curve.count, [0, 0, 2, 1, 2])
    np.testing.assert_allclose(curve.accuracy, [np.nan, np.nan, 0.5, 1.0, 0.5])
    np.testing.assert_allclose(curve.confidence, [np.nan, np.nan, 0.575, 0.7, 0.925])


def test_a_confidence_on_a_bin_edge_belongs_to_the_lower_bin():
    # n_bins=4: the edges 0, .25, .5, .75, 1 are exact in binary; bin i is (i/4, (i+1)/4]
    probs = np.array([[0.75, 0.25], [0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    y = np.array([0, 1, 0, 1])  # confidences .75, .5, 1, .75; the tie at .5 predicts class 0 (wrong)
    curve = reliability_curve(y, probs, n_bins=4)
    np.testing.assert_array_equal(curve.count, [0, 1, 2, 1])
    np.testing.assert_allclose(curve.confidence, [np.nan, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.accuracy, [np.nan, 0.0, 1.0, 1.0])
    # gaps: bin 1 |0 - .5| * 1/4, bin 2 |1 - .75| * 2/4, bin 3 0
    assert expected_calibration_error(y, probs, n_bins=4) == pytest.approx(0.125 + 0.125, abs=1e-15)


def _ece_loop(y, probs, n_bins):
    """Second formulation: explicit interval masks, one bin at a time."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for i in range(n_bins):
        mask = (conf > edges[i]) & (conf <= edges[i + 1])
        if i == 0:
            mask |= conf == 0
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return total


@pytest.mark.parametrize("n_bins", [1, 10, 15, 37])
def test_ece_equals_a_bin_by_bin_loop(n_bins):
    rng = np.random.default_rng(n_bins)
    y = rng.integers(0, 10, 500)
    probs = _softmax(rng.normal(size=(500, 10)) * 2 + 2 * np.eye(10)[y])
    assert expected_calibration_error(y, probs, n_bins=n_bins) == pytest.approx(_ece_loop(y, probs, n_bins), abs=1e-12)


def test_ece_of_a_calibrated_predictor_is_small_and_of_an_overconfident_one_large():
    rng = np.random.default_rng(11)
    n = 20000
    p1 = rng.random(n)
    y = (rng.random(n) < p1).astype(int)  # labels drawn from the stated probabilities
    assert expected_calibration_error(y, p1) < 0.02
    sharpened = np.where(p1 > 0.5, 1.0, 0.0)  # claims certainty it does not have
    assert expected_calibration_error(y, sharpened) > 0.2


def test_ece_accepts_binary_positive_probabilities():
    y = np.array([0, 1, 1, 0, 1])
    p1 = np.array([0.2, 0.7, 0.4, 0.1, 0.9])
    stacked = np.column_stack([1 - p1, p1])
    assert expected_calibration_error(y, p1, n_bins=4) == pytest.approx(_ece_loop(y, stacked, 4), abs=1e-12)


def test_reliability_curve_and_ece_agree():
    rng = np.random.default_rng(12)
    y = rng.integers(0, 5, 300)
    probs = _softmax(rng.normal(size=(300, 5)) * 3)
    curve = reliability_curve(y, probs, n_bins=10)
    assert curve.count.sum() == 300
    filled = curve.count > 0
    ece = np.sum(curve.count[filled] / 300 * np.abs(curve.accuracy[filled] - curve.confidence[filled]))
    assert expected_calibration_error(y, probs, n_bins=10) == pytest.approx(ece, abs=1e-12)
    assert np.all(np.isnan(curve.accuracy[~filled]))


def test_ece_rejects_bad_input():
    probs = np.array([[0.7, 0.3], [0.2, 0.8]])
    with pytest.raises(ValueError, match="logits"):
        expected_calibration_error([0, 1], np.array([[2.0, -1.0], [0.5, 3.0]]))
    with pytest.raises(ValueError, match=r"probs: has 2 columns but y_true contains label 2"):
        expected_calibration_error([0, 2], probs)
    with pytest.raises(ValueError, match="different lengths"):
        expected_calibration_error([0, 1, 1], probs)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error([0, 1], probs, n_bins=0)
    with pytest.raises(ValueError, match="P\\(class 1\\)"):
        expected_calibration_error([0, 1], np.array([1.5, 0.2]))
    with pytest.raises(ValueError, match="C >= 2"):
        reliability_curve([0, 1], probs[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        reliability_curve([0, 1], np.array([[np.nan, 0.5], [0.5, 0.5]]))


# ----------------------------------------------------------------------------- shared validation


@pytest.mark.parametrize("fn", [accuracy, precision_score, recall_score, f1_score, confusion_matrix])
def test_label_metrics_reject_bad_input(fn):
    with pytest.raises(ValueError, match="different lengths"):
        fn([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="non-integral"):
        fn([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="non-integral"):
        fn([np.nan, 1.0], [0, 1])
    with pytest.raises(ValueError, match="argmax"):
        fn([0, 1], np.eye(2) * 0.7)


@pytest.mark.parametrize("fn", [precision_score, recall_score, f1_score])
def test_prf_reject_bad_average_and_labels(fn):
    with pytest.raises(ValueError, match="average: got 'binary'"):
        fn([0, 1], [0, 1], average="binary")
    with pytest.raises(ValueError, match="duplicates"):
        fn([0, 1], [0, 1], labels=[0, 0])
    with pytest.raises(ValueError, match="labels: is empty"):
        fn([0, 1], [0, 1], labels=[])


def test_declared_direction_and_bounds():
    for fn in (accuracy, precision_score, recall_score, f1_score, roc_auc):
        assert fn.higher_is_better is True
        assert fn.bounds == (0.0, 1.0)
    assert expected_calibration_error.higher_is_better is False
    assert expected_calibration_error.bounds == (0.0, 1.0)


def test_module_imports_no_scipy_or_sklearn_at_import_time():
    imported = module_level_imports(classification)
    assert imported.isdisjoint({"scipy", "sklearn", "torch"}), imported


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(classification)
    assert result.attempted >= 8 and result.failed == 0
