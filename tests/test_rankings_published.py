"""NCTI, ETran, GBC in log space, the cross-validated probe, measured-transfer defaults, confirm=k and the
unreliable-estimator warning: each against a hand-worked example or an independent computation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.special import logsumexp

from pytest_transfer import assert_ranks_above, assert_transferability_above, load_model, rank_models
from pytest_transfer.estimators import BENCHMARK
from pytest_transfer.gates.transferability import UnreliableEstimatorWarning, standardized
from pytest_transfer.metrics.transferability import (
    cv_linear_probe_accuracy,
    etran,
    etran_energy,
    etran_lda,
    gbc,
    ncti,
    ncti_components,
    stratified_folds,
)
from tests._helpers import tiny_net

# --------------------------------------------------------------------------- GBC in log space


def _two_classes(sep: float, d: int = 4, n: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n)
    x = rng.normal(size=(2 * n, d))
    x[y == 1, 0] += sep
    return x, y


def _gbc_mpmath(x: np.ndarray, y: np.ndarray) -> float:
    """-2 BC of two spherical class Gaussians, with the Bhattacharyya distance and its exponential in mpmath."""
    import mpmath

    mpmath.mp.dps = 50
    stats = []
    for k in (0, 1):
        xk = x[y == k]
        stats.append((xk.mean(axis=0), max(float(np.mean(np.maximum(xk.var(axis=0), 1e-4))), 0.0)))
    (m0, s0), (m1, s1) = stats
    d = x.shape[1]
    dist2 = mpmath.fsum(mpmath.mpf(float(v)) ** 2 for v in m0 - m1)
    s_avg = (mpmath.mpf(s0) + mpmath.mpf(s1)) / 2
    bd = dist2 / (8 * s_avg) + mpmath.mpf(d) / 2 * (mpmath.log(s_avg) - (mpmath.log(s0) + mpmath.log(s1)) / 2)
    return float(-2 * mpmath.exp(-bd))


@pytest.mark.parametrize("sep", [3.0, 30.0, 45.0, 60.0])  # BC: 1e-1 ... 1e-195
def test_gbc_keeps_coefficients_far_below_float_epsilon(sep):
    x, y = _two_classes(sep)
    exact = _gbc_mpmath(x, y)
    got = gbc(x, y)
    assert got == pytest.approx(exact, rel=1e-9)
    if sep >= 45.0:
        assert 0.0 < -exact < 1e-30 and got < 0.0  # the old "total minus C diagonal ones" gave exactly 0.0


def test_gbc_orders_well_separated_candidates_instead_of_tying_them():
    near, far = _two_classes(60.0), _two_classes(70.0)
    assert gbc(*near) < gbc(*far) < 0.0  # both below 1e-30: they used to tie at 0


def test_gbc_diagonal_matches_a_log_space_reference():
    x, y = _two_classes(80.0, d=3)
    var = np.stack([np.maximum(x[y == k].var(axis=0), 1e-4) for k in (0, 1)])
    mu = np.stack([x[y == k].mean(axis=0) for k in (0, 1)])
    v = var.mean(axis=0)
    bd = np.sum((mu[0] - mu[1]) ** 2 / v) / 8 + 0.5 * (np.log(v).sum() - 0.5 * np.log(var).sum())
    assert gbc(x, y, gaussian="diagonal") == pytest.approx(-2 * math.exp(-bd), rel=1e-9)


# --------------------------------------------------------------------------- ETran


def test_etran_energy_hand_worked():
    x = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, math.log(3.0)], [5.0, 5.0]])
    # log-sum-exp per row: log 2, 1 + log 2, log 4, 5 + log 2; the lowest half: log 2 and log 4
    assert etran_energy(x, fraction=0.5) == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert etran_energy(x, fraction=1.0) == pytest.approx(np.mean(logsumexp(x, axis=1)))
    assert etran_energy(x) == pytest.approx(math.log(2))  # 0.5 % of 4 samples: the lowest one
    with pytest.raises(ValueError, match="fraction"):
        etran_energy(x, fraction=0.0)


def _blobs(n: int = 40, d: int = 6, c: int = 3, scale: float = 1.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(c), n)
    return rng.normal(size=(n * c, d)) + scale * np.eye(c, d)[y], y


def test_etran_lda_equals_sklearns_shrinkage_lda():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y = _blobs()
    priors = np.bincount(y) / len(y)
    sw = sum(p * np.cov(x[y == k].T, bias=True) for k, p in enumerate(priors))
    shrink = max(math.exp(-5 * np.linalg.eigvalsh(sw)[-1]), 1e-10)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrink, priors=priors).fit(x, y)
    expected = np.mean(lda.predict_proba(x)[np.arange(len(y)), y])
    assert etran_lda(x, y) == pytest.approx(expected, rel=1e-9)
    energy = np.mean(np.sort(logsumexp(x, axis=1))[: max(1, int(0.005 * len(y)))])
    assert etran(x, y) == pytest.approx(energy + expected, rel=1e-9)


# --------------------------------------------------------------------------- NCTI


def _ncti_reference(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """NCTI's terms in plain numpy (PCA by SVD, the shrinkage LDA by whitening), for D < 64 and shrinkage > 1e-10."""
    n, c = len(y), int(y.max()) + 1
    xc = x - x.mean(axis=0)
    _, sv, vt = np.linalg.svd(xc, full_matrices=False)
    z = xc @ vt.T
    var = sv**2 / (n - 1)
    s = math.exp(-var[:32].sum())
    assert s > 1e-10

    def shrunk(a):
        cov = np.cov(a.T, bias=True)
        return (1 - s) * cov + s * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])

    priors = np.bincount(y) / n
    sw = sum(p * shrunk(z[y == k]) for k, p in enumerate(priors))
    sb = shrunk(z) - sw
    chol = np.linalg.cholesky(sw)
    inv_l = np.linalg.inv(chol)
    evals, u = np.linalg.eigh(inv_l @ sb @ inv_l.T)
    v = inv_l.T @ u[:, np.argsort(evals)[::-1]]
    low = (z @ v)[:, : c - 1]
    s_etf = np.linalg.svd(low - low.mean(axis=0), compute_uv=False).sum()
    means = np.stack([z[y == k].mean(axis=0) for k in range(c)])
    coef = np.linalg.solve(sw, means.T)
    logits = z @ coef - 0.5 * np.sum(means.T * coef, axis=0) + np.log(priors)
    probs = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    s_ncc = probs[np.arange(n), y].mean()
    s_vc = math.log(sum(np.linalg.svd(probs[y == k], compute_uv=False).sum() for k in range(c)))
    return s_etf, s_ncc, s_vc


def test_ncti_components_equal_a_numpy_reference():
    x, y = _blobs(d=8)
    x = 0.1 * x  # small PCA variances: shrinkage exp(-sum) > 1e-10, scikit-learn's eigen solver
    assert ncti_components(x, y) == pytest.approx(_ncti_reference(x, y), rel=1e-6)


def test_ncti_normalises_across_candidates_hand_worked():
    # terms (S_etf, S_ncc, S_vc): min-max per column, then S_etf' + S_ncc' - S_vc'
    scores = ncti([[4.0, 0.5, 2.0], [2.0, 0.7, 1.0], [3.0, 0.6, 3.0]])
    assert scores.tolist() == pytest.approx([1.0 + 0.0 - 0.5, 0.0 + 1.0 - 0.0, 0.5 + 0.5 - 1.0])
    # two candidates: each term is 0 or 1, a majority vote
    assert ncti([[4.0, 0.5, 2.0], [2.0, 0.7, 1.0]]).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="two or more models"):
        ncti([[1.0, 0.5, 1.0]])


def test_ncti_prefers_collapsed_classes():
    x, y = _blobs(scale=4.0, d=10)
    noise = np.random.default_rng(1).normal(size=x.shape)
    a, b = ncti([ncti_components(x, y), ncti_components(noise, y)])
    assert a > b


# --------------------------------------------------------------------------- the cross-validated probe


def test_cv_probe_accuracy_equals_sklearn_on_the_same_folds():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import PredefinedSplit, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _blobs(scale=1.0)
    folds = stratified_folds(y, 5, seed=3)
    assert all(np.bincount(y[folds == f]).tolist() == [8, 8, 8] for f in range(5))  # stratified
    pred = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)), x, y,
                             cv=PredefinedSplit(folds))
    got = cv_linear_probe_accuracy(x, y, seed=3)
    assert got == pytest.approx(np.mean(pred == y), abs=1.01 / len(y))  # at most one sample flips
    with pytest.raises(ValueError, match="too few for 5-fold"):
        cv_linear_probe_accuracy(x[::15], y[::15])  # 8 samples


# --------------------------------------------------------------------------- gates


@pytest.fixture
def zoo(fresh_context):
    return [load_model(tiny_net(seed=s), name=f"net{s}") for s in (0, 1, 2)]


def _train_features(model, ds):
    from pytest_transfer import evaluate

    ev = evaluate(model, ds, split="train")
    return np.asarray(ev.features, dtype=np.float64), ev.labels


def test_rank_models_defaults_to_the_cross_validated_probe(zoo, squares, fresh_context):
    rows = rank_models(zoo, squares)
    assert {r.metric for r in rows} == {"linear_probe_cv_accuracy"}
    by_name = {m.name: m for m in zoo}
    for r in rows:
        x, y = _train_features(by_name[r.model], squares)
        assert r.score == cv_linear_probe_accuracy(x, y, seed=fresh_context.settings.seed)
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)


def test_confirm_measures_the_shortlist(zoo, squares):
    by_logme = rank_models(zoo, squares, metric="logme")
    rows = rank_models(zoo, squares, metric="logme", confirm=2)
    top = {r.model for r in by_logme[:2]}
    assert {r.model for r in rows[:2]} == top and [r.rank for r in rows] == [1, 2, 3]
    assert [r.metric for r in rows] == ["linear_probe_cv_accuracy"] * 2 + ["logme"]
    measured = {r.model: r.score for r in rank_models(zoo, squares)}
    assert [r.score for r in rows[:2]] == sorted((measured[m] for m in top), reverse=True)
    assert rows[2].model == by_logme[2].model and rows[2].score == by_logme[2].score
    with pytest.raises(ValueError, match="confirm: expected a positive number"):
        rank_models(zoo, squares, metric="logme", confirm=0)


def test_ncti_in_rankings_and_pairs(zoo, squares):
    rows = rank_models(zoo, squares, metric="ncti")
    comps = [ncti_components(standardized(_train_features(m, squares)[0]), _train_features(m, squares)[1])
             for m in zoo]
    expected = dict(zip([m.name for m in zoo], ncti(comps), strict=True))
    assert {r.model: r.score for r in rows} == pytest.approx(expected)
    lead = assert_ranks_above(zoo[0], zoo[1], squares, metric="ncti", margin=-3.0).value
    assert lead in (-3.0, -1.0, 1.0, 3.0)  # two candidates: a majority vote of three 0/1 terms
    with pytest.raises(ValueError, match="normalised across candidates"):
        assert_transferability_above(zoo[0], squares, 0.0, metric="ncti")


def test_etran_gate_reads_raw_features(zoo, squares):
    x, y = _train_features(zoo[0], squares)
    result = assert_transferability_above(zoo[0], squares, -1e9, metric="etran")
    assert result.value == pytest.approx(etran(x, y)) and result.details["standardize"] is False


def test_estimators_worse_than_chance_warn_as_gates(zoo, squares):
    bad = sorted(name for name, row in BENCHMARK.items() if row.weighted_tau < 0)
    good = sorted(name for name, row in BENCHMARK.items() if row.weighted_tau >= 0)
    assert bad and good, "the benchmark table should hold estimators on both sides of chance"
    with pytest.warns(UnreliableEstimatorWarning, match="worse than chance.*linear_probe_accuracy"):
        assert_ranks_above(zoo[0], zoo[1], squares, metric=bad[0], margin=-1e9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreliableEstimatorWarning)
        assert_ranks_above(zoo[0], zoo[1], squares, metric=good[0], margin=-1e9)


# --------------------------------------------------------------------------- LFC's convention


@pytest.mark.parametrize("kernel", ["cosine", "linear"])
def test_lfc_is_the_pearson_correlation_of_the_two_gram_matrices(kernel):
    from pytest_transfer.metrics.transferability import lfc

    x, y = _blobs(n=10, d=5)
    x = x * np.random.default_rng(2).uniform(0.5, 3.0, size=(len(x), 1))  # unequal row norms: the kernels differ
    f = x / np.linalg.norm(x, axis=1, keepdims=True) if kernel == "cosine" else x
    gram = f @ f.T
    agree = np.where(y[:, None] == y[None, :], 1.0, -1.0)
    assert lfc(x, y, kernel=kernel) == pytest.approx(np.corrcoef(gram.ravel(), agree.ravel())[0, 1], rel=1e-9)
    assert lfc(x, y, kernel="cosine") != pytest.approx(lfc(x, y, kernel="linear"), rel=1e-3)
