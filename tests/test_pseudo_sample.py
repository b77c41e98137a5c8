"""The one Bayesian bootstrap with a pseudo-sample (``pseudo_sample_limits``) behind the bounded-mean, F1, paired
and mCE intervals: the same numbers as the four copies it replaced, the construction checked against numpy's own
Dirichlet sampler written out here, and memory bounded at many classes."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from pytest_transfer.metrics.stats import (
    bayesian_bootstrap_interval,
    bounded_mean_interval,
    f1_interval,
    paired_metric_interval,
    pseudo_sample_limits,
)

# Inputs of the values below (np.random.default_rng(7), drawn in this order; rebuilt by ``_inputs``).
# The values were computed once with the code at d8f858b (four separate copies of the construction),
# by running these calls there and printing each result with repr; the unified helper gives them bit for bit.
OLD_AT_D8F858B = {
    "bm1": (-0.11419989270936516, 0.4295120518582253),
    "bm2": (-0.16843345652023442, 0.16788605396638281),
    "bm3": (0.3411413819433316, 0.5465778777230781),
    "f1_macro": (0.6467939871970467, 0.8724330569280386),
    "f1_micro": (0.661148117532402, 0.8807723818497025),
    "f1_weighted": (0.6524551146445376, 0.8793516145564643),
    "f1_six": (0.5258986018280286, 1.0),
    "pm_f1_macro": (-0.02896414663468427, 0.20599893583834009),
    "pm_f1_micro": (-0.019929202237687012, 0.19544524835879445),
    "pm_f1_weighted": (-0.02087737055200554, 0.21505760452779155),
    "pm_precision_macro": (-0.025183257813792166, 0.1731876626170989),
    "pm_recall_macro": (-0.018983858172305638, 0.1920900510258983),
    "pm_same": (-0.0651392851902206, 0.06551247372759197),
    "bb_mean": (0.6566915420524545, 0.8757793603022133),
    "bb_ratio": (0.21183829386628306, 0.6119737481624649),
}


def _inputs():
    r = np.random.default_rng(7)
    x1 = r.integers(-1, 2, 40).astype(float)
    x3 = r.random(30)
    yt = r.integers(0, 4, 60)
    yp = np.where(r.random(60) < 0.7, yt, r.integers(0, 4, 60))
    yb = np.where(r.random(60) < 0.8, yp, r.integers(0, 4, 60))
    m = (r.random((25, 4)) < 0.8).astype(float)
    ref = (r.random((25, 4)) < 0.5).astype(float)
    return x1, x3, yt, yp, yb, m, ref


def _mean_of_columns(w, a):
    return float((w[:, None] * a).sum(0).mean() / w.sum())


def _error_ratio(w, a, b):  # an mCE-like ratio of two models' weighted errors over columns 1..
    ea = 1 - (w[:, None] * a).sum(0) / w.sum()
    eb = 1 - (w[:, None] * b).sum(0) / w.sum()
    return float(ea[1:].sum() / eb[1:].sum())


def _current():
    x1, x3, yt, yp, yb, m, ref = _inputs()
    out = {
        "bm1": bounded_mean_interval(x1, bounds=(-1.0, 1.0), n_draws=2000, seed=3),
        "bm2": bounded_mean_interval(np.zeros(20), bounds=(-1.0, 1.0)),
        "bm3": bounded_mean_interval(x3, bounds=(0.0, 1.0), confidence=0.9, seed=11),
        "f1_six": f1_interval([0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 2]),
        "pm_same": paired_metric_interval(yt, yp, yp, name="f1_macro"),
        "bb_mean": bayesian_bootstrap_interval(_mean_of_columns, m, pseudo=((np.zeros(4),), (np.ones(4),)), seed=4),
        "bb_ratio": bayesian_bootstrap_interval(_error_ratio, m, ref, pseudo=((np.ones(4), np.zeros(4)),
                                                                            (np.zeros(4), np.ones(4))),
                                                confidence=0.9, n_draws=800, seed=9),
    }
    for avg in ("macro", "micro", "weighted"):
        out[f"f1_{avg}"] = f1_interval(yt, yp, average=avg, n_draws=1500, seed=5)
    for name in ("f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_macro"):
        out[f"pm_{name}"] = paired_metric_interval(yt, yp, yb, name=name, n_draws=1500, seed=2)
    return out


def test_the_four_intervals_give_the_numbers_of_their_four_former_copies():
    now = _current()
    assert now.keys() == OLD_AT_D8F858B.keys()
    for key, old in OLD_AT_D8F858B.items():
        # bit for bit on this machine; the tolerance only admits a BLAS summing a row in another order
        assert now[key] == pytest.approx(old, rel=1e-12, abs=1e-14), key


# --- the construction, written out with numpy's Dirichlet sampler (another stream: Monte Carlo tolerance) ------

def _quantiles(low_draws, high_draws, confidence=0.95):
    tail = (1 - confidence) / 2
    return float(np.quantile(low_draws, tail)), float(np.quantile(high_draws, 1 - tail))


def test_the_bounded_mean_is_numpys_dirichlet_weighted_mean_with_a_pseudo_value_at_each_bound():
    x1, x3, *_ = _inputs()
    rng = np.random.default_rng(123)
    for x, (a, b) in ((x1, (-1.0, 1.0)), (x3, (0.0, 1.0))):
        w = rng.dirichlet(np.ones(len(x) + 1), size=(2, 8000))  # Rubin's Dirichlet(1, ..., 1) weights
        expected = _quantiles(w[0] @ np.append(x, a), w[1] @ np.append(x, b))
        lo, hi = bounded_mean_interval(x, bounds=(a, b), n_draws=8000)
        assert lo == pytest.approx(expected[0], abs=0.012) and hi == pytest.approx(expected[1], abs=0.012)


def _macro(p, kind, average="macro"):
    """F1 / precision / recall of probability matrices ``p`` (B × k × k, rows = true class), written out from
    their definitions (a class without a denominator scores 0, scikit-learn's ``zero_division=0``)."""
    tp = np.diagonal(p, axis1=1, axis2=2)
    true, predicted = p.sum(axis=2), p.sum(axis=1)
    num, den = {"f1": (2 * tp, true + predicted), "precision": (tp, predicted), "recall": (tp, true)}[kind]
    per_class = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    if average == "micro":
        return tp.sum(axis=1) / p.sum(axis=(1, 2))
    if average == "weighted":
        return (per_class * true).sum(axis=1) / true.sum(axis=1)
    return per_class.mean(axis=1)


SKLEARN = {"f1": f1_score, "precision": precision_score, "recall": recall_score}


def _check_against_sklearn(p, kind, average="macro"):
    """``_macro`` on a few matrices against scikit-learn (the cells as weights of (true, predicted) pairs)."""
    k = p.shape[-1]
    t, q = np.divmod(np.arange(k * k), k)
    for one in p[:3]:
        expected = SKLEARN[kind](t, q, average=average, sample_weight=one.ravel(), labels=np.arange(k),
                                 zero_division=0)
        assert _macro(one[None], kind, average)[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_the_f1_interval_is_numpys_dirichlet_over_the_confusion_matrix_plus_one_pseudo_sample(average):
    _, _, yt, yp, *_ = _inputs()
    k = 4
    counts = np.zeros((k, k))
    np.add.at(counts, (yt, yp), 1.0)
    error = np.where(np.eye(k, dtype=bool), 0.0, 1.0 / (k * (k - 1)))  # one error spread over the off-diagonal
    right = np.eye(k) / k  # one correct prediction spread over the diagonal
    rng = np.random.default_rng(321)
    sides = []
    for alpha in (counts + error, counts + right):
        live = alpha.ravel() > 0  # an empty cell (alpha 0) is always 0; numpy's dirichlet needs alpha > 0
        draws = np.zeros((6000, k * k))
        draws[:, live] = rng.dirichlet(alpha.ravel()[live], size=6000)
        _check_against_sklearn(draws.reshape(-1, k, k), "f1", average)
        sides.append(_macro(draws.reshape(-1, k, k), "f1", average))
    expected = _quantiles(*sides)
    lo, hi = f1_interval(yt, yp, average=average, n_draws=6000)
    assert lo == pytest.approx(expected[0], abs=0.012) and hi == pytest.approx(expected[1], abs=0.012)


@pytest.mark.parametrize("kind", ["f1", "precision", "recall"])
def test_the_paired_interval_is_numpys_dirichlet_over_samples_plus_a_pseudo_sample_of_each_kind(kind):
    _, _, yt, yp, yb, *_ = _inputs()
    k, n = 4, len(yt)
    # the pseudo-sample as k² weighted (true, predicted) pairs: for the lower limit an error of a (spread over
    # the off-diagonal cells) and a correct prediction of b (over the diagonal); the reverse for the upper limit
    wrong = np.where(np.eye(k, dtype=bool), 0.0, 1.0 / (k * (k - 1))).ravel()
    right = (np.eye(k) / k).ravel()
    one_hot = {name: np.eye(k * k)[yt * k + pred] for name, pred in (("a", yp), ("b", yb))}  # n × k²
    rng = np.random.default_rng(99)
    sides = []
    for pseudo_a, pseudo_b in ((wrong, right), (right, wrong)):
        w = rng.dirichlet(np.ones(n + 1), size=6000)
        m_a = (w[:, :n] @ one_hot["a"] + w[:, n:] * pseudo_a).reshape(-1, k, k)
        m_b = (w[:, :n] @ one_hot["b"] + w[:, n:] * pseudo_b).reshape(-1, k, k)
        _check_against_sklearn(m_a, kind)
        sides.append(_macro(m_a, kind) - _macro(m_b, kind))
    expected = _quantiles(*sides)
    lo, hi = paired_metric_interval(yt, yp, yb, name=f"{kind}_macro", n_draws=6000)
    assert lo == pytest.approx(expected[0], abs=0.012) and hi == pytest.approx(expected[1], abs=0.012)


def test_the_generic_interval_is_numpys_dirichlet_over_rows_plus_the_pseudo_rows():
    *_, m, ref = _inputs()
    pseudo = ((np.ones(4), np.zeros(4)), (np.zeros(4), np.ones(4)))
    rng = np.random.default_rng(5)
    sides = []
    for pa, pb in pseudo:
        a, b = np.vstack([m, pa]), np.vstack([ref, pb])
        w = rng.dirichlet(np.ones(len(a)), size=4000) * len(a)
        sides.append([_error_ratio(wi, a, b) for wi in w])
    expected = _quantiles(*sides)
    lo, hi = bayesian_bootstrap_interval(_error_ratio, m, ref, pseudo=pseudo, n_draws=4000)
    assert lo == pytest.approx(expected[0], abs=0.02) and hi == pytest.approx(expected[1], abs=0.02)


def test_the_helper_always_holds_the_value_and_refuses_no_draws():
    lo, hi = pseudo_sample_limits(lambda side, w: np.full(len(w), 0.5), 3, value=0.9)
    assert (lo, hi) == (0.5, 0.9)
    with pytest.raises(ValueError, match="n_draws"):
        pseudo_sample_limits(lambda side, w: w[:, 0], 3, value=0.0, n_draws=0)
    with pytest.raises(ValueError, match="confidence"):
        pseudo_sample_limits(lambda side, w: w[:, 0], 3, value=0.0, confidence=1.0)


def test_the_batch_size_does_not_change_the_numbers(monkeypatch):
    from pytest_transfer.metrics import stats

    x1, _, yt, yp, yb, *_ = _inputs()
    before = (bounded_mean_interval(x1, bounds=(-1.0, 1.0), n_draws=300), f1_interval(yt, yp, n_draws=300),
              paired_metric_interval(yt, yp, yb, name="f1_macro", n_draws=300))
    monkeypatch.setattr(stats, "_BATCH_ELEMENTS", 1000)  # batches of a few draws instead of all at once
    after = (bounded_mean_interval(x1, bounds=(-1.0, 1.0), n_draws=300), f1_interval(yt, yp, n_draws=300),
             paired_metric_interval(yt, yp, yb, name="f1_macro", n_draws=300))
    for b, a in zip(before, after, strict=True):
        assert a == pytest.approx(b, rel=1e-12)


def test_the_f1_interval_at_300_classes_stays_under_100_mib():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(300), 3)
    pred = np.where(rng.random(y.size) < 0.8, y, rng.integers(0, 300, y.size))
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        lo, hi = f1_interval(y, pred, n_draws=150)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lo < f1_score(y, pred, average="macro") < hi
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MiB"
