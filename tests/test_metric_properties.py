"""Properties every metric must keep, on inputs Hypothesis draws, degenerate ones included.

Label-permutation invariance, scale invariance where a metric documents it,
orthogonal invariance of CKA, the declared bounds, the same verdict (a value or
a ValueError) for a float64 array and its float32 copy, and numpy = torch.
Values are drawn on a grid of eighths so that "constant" and "duplicate" are
exact and no test turns on a value at the last bit; every run draws the same
examples (``derandomize``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_transfer.metrics import (
    TRANSFERABILITY_METRICS,
    accuracy,
    expected_calibration_error,
    f1_score,
    linear_cka,
    nleep,
    roc_auc,
)
from pytest_transfer.metrics.similarity import cka_from_grams

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)
FEATURE_METRICS = sorted(n for n, f in TRANSFERABILITY_METRICS.items() if f.inputs == "features")
#: metrics whose docstrings promise invariance to multiplying the features by a constant
SCALE_FREE = ("hscore", "knn_accuracy", "lfc", "logme", "regularized_hscore")
KWARGS = {"nleep": {"n_components_per_class": 1}}


@st.composite
def problems(draw, min_n=15, max_n=30, max_d=5):
    """``(features N×D float64, labels)``: every class has >= 2 samples; some draws are degenerate."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    c = draw(st.integers(2, 3))
    cells = draw(st.lists(st.integers(-40, 40), min_size=n * d, max_size=n * d))
    x = np.array(cells, dtype=np.float64).reshape(n, d) / 8.0
    shape = draw(st.sampled_from(["plain", "constant", "constant column", "duplicate rows", "tenths"]))
    if shape == "constant":
        x[:] = x[0]
    elif shape == "constant column":
        x[:, 0] = x[0, 0]
    elif shape == "duplicate rows":
        x[n // 2:] = x[: n - n // 2]
    elif shape == "tenths":  # not representable in binary: float64 and float32 copies round differently
        x = np.round(x * 0.8, 1) + 0.1
    y = np.arange(n) % c
    y = y[np.array(draw(st.permutations(range(n))))]
    return x, y


def _verdict(fn, *args, **kwargs):
    try:
        return "value", fn(*args, **kwargs)
    except ValueError as exc:
        return "error", str(exc)


def _inputs(name, x, y):
    kind = TRANSFERABILITY_METRICS[name].inputs
    if kind == "probs":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True), y
    if kind == "preds":
        return np.argmax(x, axis=1), y
    return x, y


@pytest.mark.parametrize("name", sorted(TRANSFERABILITY_METRICS))
@SETTINGS
@given(problem=problems(), perm=st.permutations([0, 1, 2]))
def test_renaming_the_classes_changes_nothing(name, problem, perm):
    x, y = problem
    fn, kwargs = TRANSFERABILITY_METRICS[name], KWARGS.get(name, {})
    a, _ = _inputs(name, x, y)
    first = _verdict(fn, a, y, **kwargs)
    second = _verdict(fn, a, np.array(perm)[y] * 7 + 3, **kwargs)
    assert first[0] == second[0]
    if first[0] == "value":
        assert second[1] == pytest.approx(first[1], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", sorted(TRANSFERABILITY_METRICS))
@SETTINGS
@given(problem=problems())
def test_scores_lie_within_the_declared_bounds_or_are_refused(name, problem):
    x, y = problem
    fn = TRANSFERABILITY_METRICS[name]
    kind, value = _verdict(fn, *_inputs(name, x, y), **KWARGS.get(name, {}))
    if kind == "value":
        low, high = fn.bounds
        assert isinstance(value, float) and low <= value <= high


@pytest.mark.parametrize("name", sorted(TRANSFERABILITY_METRICS))
@SETTINGS
@given(problem=problems())
def test_a_float32_copy_gets_the_same_verdict(name, problem):
    x, y = problem
    fn, kwargs = TRANSFERABILITY_METRICS[name], KWARGS.get(name, {})
    a, _ = _inputs(name, x, y)
    wide = _verdict(fn, a, y, **kwargs)
    narrow = _verdict(fn, a.astype(np.float32) if a.dtype.kind == "f" else a, y, **kwargs)
    assert wide[0] == narrow[0], (wide, narrow)


@pytest.mark.parametrize("name", SCALE_FREE)
@SETTINGS
@given(problem=problems(), power=st.sampled_from([-12, -3, 5, 14]))
def test_documented_scale_invariance(name, problem, power):
    x, y = problem
    fn = TRANSFERABILITY_METRICS[name]
    first, scaled = _verdict(fn, x, y), _verdict(fn, x * 2.0**power, y)
    assert first[0] == scaled[0]
    if first[0] == "value":
        assert scaled[1] == pytest.approx(first[1], rel=1e-7, abs=1e-9)


def _orthogonal(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@SETTINGS
@given(a=problems(max_d=4), b=problems(max_d=4), seed=st.integers(0, 100), power=st.sampled_from([-7, 0, 9]),
       debiased=st.booleans())
def test_cka_is_orthogonally_and_scale_invariant_bounded_and_dtype_blind(a, b, seed, power, debiased):
    x, _ = a
    y = b[0][: len(x)] if len(b[0]) >= len(x) else np.resize(b[0], (len(x), b[0].shape[1]))
    base = _verdict(linear_cka, x, y, debiased=debiased)
    rotated = _verdict(linear_cka, x @ _orthogonal(x.shape[1], seed) * 2.0**power, y, debiased=debiased)
    narrow = _verdict(linear_cka, x.astype(np.float32), y.astype(np.float32), debiased=debiased)
    grams = _verdict(cka_from_grams, x @ x.T, y @ y.T, debiased=debiased)
    assert base[0] == rotated[0] == narrow[0] == grams[0], (base, rotated, narrow, grams)
    if base[0] == "value":
        assert (-1.0 if debiased else 0.0) - 1e-12 <= base[1] <= 1.0 + 1e-12
        assert rotated[1] == pytest.approx(base[1], abs=1e-9)
        assert grams[1] == pytest.approx(base[1], abs=1e-9)


@SETTINGS
@given(problem=problems(), c=st.integers(2, 4))
def test_classification_metrics_numpy_equals_torch_and_float32_equals_float64(problem, c):
    torch = pytest.importorskip("torch")
    x, y = problem
    y = y % c
    logits = np.resize(x, (len(x), c))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)
    for fn, args in ((accuracy, (y, pred)), (f1_score, (y, pred)), (roc_auc, (y, probs)),
                     (expected_calibration_error, (y, probs))):
        ours = _verdict(fn, *args)
        assert _verdict(fn, *(torch.from_numpy(np.asarray(a)) for a in args)) == ours
        narrow = _verdict(fn, args[0], args[1].astype(np.float32) if args[1].dtype.kind == "f" else args[1])
        assert narrow[0] == ours[0]


def test_cka_of_constant_float64_representations_is_refused_as_for_float32():
    x = np.full((10, 3), 0.1)  # its float64 column means differ from 0.1 in the last bit
    for a in (x, x.astype(np.float32)):
        with pytest.raises(ValueError, match="zero variance"):
            linear_cka(a, a)
        with pytest.raises(ValueError, match="zero variance"):
            cka_from_grams(a @ a.T, a @ a.T)
    with pytest.raises(ValueError, match="not positive"):
        linear_cka(x, x, debiased=True)


def test_nleep_refuses_fewer_than_five_samples_per_mixture_component():
    rng = np.random.default_rng(0)
    noise, y = rng.normal(size=(15, 4)), np.arange(15) % 3
    with pytest.raises(ValueError, match=r"15 samples for a mixture of 15 components.*at least 5 samples per "
                                         r"component.*at most 1 here"):
        nleep(noise, y)
    sep = noise + 6 * np.eye(3, 4)[y]
    assert nleep(sep, y, n_components_per_class=1) > nleep(noise, y, n_components_per_class=1)


def test_sfda_of_features_constant_within_each_class_is_the_same_for_float32_and_float64():
    y = np.arange(30) % 3
    x = np.eye(3, 5)[y] * 0.1  # residuals of rounding size in float64, exact zeros in float32
    assert TRANSFERABILITY_METRICS["sfda"](x, y) == pytest.approx(
        TRANSFERABILITY_METRICS["sfda"](x.astype(np.float32), y), rel=1e-9)
