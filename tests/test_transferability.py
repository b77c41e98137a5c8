"""Transferability estimators checked against independent computations.

Each estimator is compared with a second formulation on small problems: a direct
numerical maximisation, a literal transcription of the published formula, a
hand-worked table, or scikit-learn. Error paths are checked one by one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_transfer.metrics import (
    TRANSFERABILITY_METRICS,
    gbc,
    hscore,
    knn_accuracy,
    leep,
    lfc,
    logme,
    nce,
    nleep,
    regularized_hscore,
    sfda,
    transrate,
)
from pytest_transfer.metrics.transferability import _logme_per_class


def blobs(n: int, d: int, c: int, sep: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes with random means scaled by ``sep``; every class present."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    return rng.normal(size=(n, d)) + sep * rng.normal(size=(c, d))[y], y


# --------------------------------------------------------------------------- LogME


def _explicit_log_evidence(f: np.ndarray, t: np.ndarray, log_alpha: float, log_beta: float) -> float:
    """The evidence written out with D×D matrices: no eigenbasis, no profiling."""
    n, d = f.shape
    alpha, beta = math.exp(log_alpha), math.exp(log_beta)
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ t)
    return (
        d / 2 * log_alpha
        + n / 2 * log_beta
        - alpha / 2 * m @ m
        - beta / 2 * np.sum((t - f @ m) ** 2)
        - 0.5 * np.linalg.slogdet(a)[1]
        - n / 2 * math.log(2 * math.pi)
    )


def _direct_logme(f: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
    from scipy.optimize import minimize

    per_class, optima = [], []
    for c in range(int(y.max()) + 1):
        t = (y == c).astype(float)
        best = None
        for start in ([0.0, 0.0], [5.0, 2.0], [-3.0, 3.0]):
            res = minimize(
                lambda p, t=t: -_explicit_log_evidence(f, t, p[0], p[1]),
                start,
                method="Nelder-Mead",
                options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 4000},
            )
            if best is None or res.fun < best.fun:
                best = res
        per_class.append(-best.fun)
        optima.append(best.x)
    return float(np.mean(per_class) / len(f)), optima


@pytest.mark.parametrize(
    ("n", "d", "c", "sep", "seed"),
    [(60, 10, 3, 1.0, 3), (80, 20, 4, 0.5, 1), (40, 80, 3, 0.3, 4)],
    ids=["N>D", "N>D-4-classes", "N<D-zero-eigenvalues"],
)
def test_logme_is_the_maximum_of_the_explicit_evidence(n, d, c, sep, seed):
    """The explicit formula's log|alpha I + beta FᵀF| includes the D - N zero eigenvalues when N < D."""
    f, y = blobs(n, d, c, sep, seed)
    expected, optima = _direct_logme(f, y)
    assert all(abs(o[1]) < 15 for o in optima), "chosen so that the optimum is interior"
    assert logme(f, y) == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_logme_optimum_is_the_mackay_fixed_point():
    f, y = blobs(120, 15, 3, 0.7, seed=2)
    _, alphas, betas = _logme_per_class(f, y, 3)
    sigma = np.linalg.eigvalsh(f.T @ f)
    for c, (alpha, beta) in enumerate(zip(alphas, betas, strict=True)):
        t = (y == c).astype(float)
        m = beta * np.linalg.solve(alpha * np.eye(15) + beta * f.T @ f, f.T @ t)
        gamma = np.sum(beta * sigma / (alpha + beta * sigma))
        assert alpha == pytest.approx(gamma / (m @ m), rel=1e-6)
        assert beta == pytest.approx((len(f) - gamma) / np.sum((t - f @ m) ** 2), rel=1e-6)


@pytest.mark.parametrize(("n", "d"), [(150, 12), (30, 70)])
def test_logme_is_invariant_to_the_scale_of_the_features(n, d):
    f, y = blobs(n, d, 3, 0.8, seed=5)
    base = logme(f, y)
    for scale in (1e-8, 1e-3, 1e4):
        assert logme(scale * f, y) == pytest.approx(base, rel=1e-9, abs=1e-12)


def test_logme_remaps_labels_with_gaps():
    f, y = blobs(90, 6, 3, 1.0, seed=6)
    gappy = np.array([0, 3, 7])[y]
    assert logme(f, gappy) == pytest.approx(logme(f, y), rel=1e-12)


def test_logme_ranks_informative_features_above_noise():
    f, y = blobs(200, 16, 4, 2.0, seed=7)
    noise = np.random.default_rng(8).normal(size=f.shape)
    assert logme(f, y) > logme(noise, y)


# --------------------------------------------------------------------------- LEEP / NCE


def test_leep_hand_worked_table():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]])
    # P(y|z): P(0|0) = 1.7/2, P(0|1) = 0.3/2 -> EEP = 0.78, 0.71, 0.78, 0.71
    assert leep(probs, [0, 0, 1, 1]) == pytest.approx((math.log(0.78) + math.log(0.71)) / 2, rel=1e-12)


def test_leep_ignores_a_source_class_no_sample_puts_mass_on():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    y = [1, 1, 2]
    # P(z=0) = 1.5/3, P(y=1|z=0) = 1; P(z=1) = 1.5/3, P(y=1|z=1) = 1/3, P(y=2|z=1) = 2/3
    expected = (math.log(1.0) + math.log(0.5 * 1 + 0.5 / 3) + math.log(2 / 3)) / 3
    assert leep(probs, y) == pytest.approx(expected, rel=1e-12)


def test_leep_refuses_logits():
    logits = np.array([[2.0, -1.0], [0.5, 0.1], [-1.0, 3.0], [0.0, 0.2]])
    with pytest.raises(ValueError, match="logits"):
        leep(logits, [0, 0, 1, 1])


def test_leep_refuses_rows_that_do_not_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        leep(np.array([[0.5, 0.2], [0.3, 0.3], [0.1, 0.1], [0.4, 0.1]]), [0, 0, 1, 1])


def test_nce_hand_worked_table():
    z = [0, 0, 1, 1, 1, 0]
    y = [0, 0, 1, 1, 0, 1]
    # each source class predicts its majority label 2 times out of 3
    expected = 2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)
    assert nce(z, y) == pytest.approx(expected, rel=1e-12)


def test_nce_takes_the_argmax_of_a_matrix():
    z = np.array([0, 0, 1, 1, 1, 0])
    logits = np.eye(2)[z] * 3.0 - 1.0
    assert nce(logits, [0, 0, 1, 1, 0, 1]) == pytest.approx(nce(z, [0, 0, 1, 1, 0, 1]), rel=1e-12)


# --------------------------------------------------------------------------- H-scores


def _pinv_hscore(f: np.ndarray, y: np.ndarray) -> float:
    """The paper's code: g replaces each row by its class mean; tr(pinv(cov f) cov g)."""
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(axis=0)
    return float(np.trace(np.linalg.pinv(np.cov(f, rowvar=False), rcond=1e-15) @ np.cov(g, rowvar=False)))


def _per_class_hscore(f: np.ndarray, y: np.ndarray) -> float:
    """sum_c (n_c/N) (mu_c - mu)ᵀ Cov(f)⁻¹ (mu_c - mu) for a full-rank covariance."""
    mu = f.mean(axis=0)
    cov = np.cov(f, rowvar=False, bias=True)
    return float(
        sum(
            np.mean(y == c) * (f[y == c].mean(0) - mu) @ np.linalg.solve(cov, f[y == c].mean(0) - mu)
            for c in np.unique(y)
        )
    )


def test_hscore_matches_the_trace_and_the_per_class_closed_form():
    f, y = blobs(200, 12, 4, 0.8, seed=9)
    assert hscore(f, y) == pytest.approx(_pinv_hscore(f, y), rel=1e-9)
    assert hscore(f, y) == pytest.approx(_per_class_hscore(f, y), rel=1e-9)


def test_hscore_matches_the_pinv_trace_when_fewer_samples_than_dimensions():
    f, y = blobs(30, 8, 3, 0.5, seed=10)
    wide = f @ np.random.default_rng(10).normal(size=(8, 60))  # 60 dimensions spanning 8: N - C >= rank
    assert hscore(wide, y) == pytest.approx(_pinv_hscore(wide, y), rel=1e-6)


@pytest.mark.parametrize(("n", "d", "c"), [(30, 60, 3), (40, 40, 2), (20, 18, 3)])
def test_hscore_and_sfda_refuse_too_few_samples_for_the_covariance(n, d, c):
    rng = np.random.default_rng(3)
    noise, y = rng.normal(size=(n, d)), np.arange(n) % c
    # what the pseudo-inverse gives pure noise here: (nearly) the best score, C - 1, as for separable classes
    assert _pinv_hscore(noise, y) > 0.9 * (c - 1)
    with pytest.raises(ValueError, match=rf"{n} samples in {c} classes leave {n - c} degrees of freedom.*"
                                         "regularized_hscore"):
        hscore(noise, y)
    with pytest.raises(ValueError, match=r"degrees of freedom.*SFDA's Fisher discriminant"):
        sfda(noise, y)
    assert 0.0 <= regularized_hscore(noise, y) < 0.5 * (c - 1)  # shrinkage is made for this case


@pytest.mark.parametrize(
    ("n", "d", "c", "sep"), [(100, 5, 3, 0.5), (100, 8, 4, 20.0), (25, 60, 5, 1.0), (40, 40, 2, 3.0)]
)
def test_hscore_never_exceeds_c_minus_one(n, d, c, sep):
    f, y = blobs(n, d, c, sep, seed=11)
    if n - c >= d:
        assert 0.0 <= hscore(f, y) <= c - 1 + 1e-9
    assert 0.0 <= regularized_hscore(f, y) <= c - 1 + 1e-9


def test_hscore_of_well_separated_classes_approaches_c_minus_one():
    f, y = blobs(300, 6, 4, 50.0, seed=12)
    assert hscore(f, y) == pytest.approx(3.0, abs=0.01)


@pytest.mark.parametrize(("n", "d"), [(150, 20), (30, 50)])
def test_regularized_hscore_matches_scikit_learn_ledoit_wolf(n, d):
    from sklearn.covariance import LedoitWolf

    f, y = blobs(n, d, 3, 0.6, seed=13)
    lw = LedoitWolf().fit(f)
    g = np.zeros_like(f)
    for c in range(3):
        g[y == c] = f[y == c].mean(axis=0)
    cov_g = np.cov(g, rowvar=False, bias=True)
    expected = np.trace(np.linalg.pinv(lw.covariance_, rcond=1e-15) @ ((1 - lw.shrinkage_) * cov_g))
    assert regularized_hscore(f, y) == pytest.approx(expected, rel=1e-8)


# --------------------------------------------------------------------------- TransRate


def _slogdet_transrate(f: np.ndarray, y: np.ndarray, eps: float) -> float:
    def rate(z):
        n, d = z.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]

    z = f - f.mean(axis=0)
    return rate(z) - np.mean([rate(z[y == c]) for c in np.unique(y)])


@pytest.mark.parametrize("eps", [1e-4, 0.1])
def test_transrate_matches_slogdet(eps):
    f, y = blobs(120, 30, 5, 1.0, seed=14)  # classes of 24 rows < 30 dims, whole set > 30
    assert transrate(f, y, eps=eps) == pytest.approx(_slogdet_transrate(f, y, eps), rel=1e-10)


@pytest.mark.parametrize("block", [7, 10, 30])
def test_transrate_with_block_gram_products_matches_slogdet(monkeypatch, block):
    # classes of 100 rows > 30 dims take the D×D form, whose Gram is built in column blocks and
    # factorised in diagonal blocks
    from pytest_transfer.metrics import transferability

    monkeypatch.setattr(transferability, "GRAM_BLOCK", block)
    monkeypatch.setattr(transferability, "CHOLESKY_BLOCK", block)
    f, y = blobs(400, 30, 4, 1.0, seed=16)
    assert transrate(f, y) == pytest.approx(_slogdet_transrate(f, y, 1e-4), rel=1e-10)


@pytest.mark.parametrize("d", [1, 6, 7, 8, 20, 21, 50])
def test_block_cholesky_log_determinant_matches_numpy_and_reads_only_the_upper_triangle(monkeypatch, d):
    import torch

    from pytest_transfer.metrics import transferability

    monkeypatch.setattr(transferability, "CHOLESKY_BLOCK", 7)  # 1 to 8 diagonal blocks, a short last one
    rng = np.random.default_rng(d)
    b = rng.normal(size=(d + 3, d))
    a = b.T @ b + 0.1 * np.eye(d)
    garbled = torch.from_numpy(np.where(np.triu(np.ones((d, d))) > 0, a, np.nan))
    sign, expected = np.linalg.slogdet(a)
    assert sign == 1 and transferability._logdet_spd(garbled) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    indefinite = torch.from_numpy(a - (np.linalg.eigvalsh(a)[0] + 1.0) * np.eye(d))
    with pytest.raises(np.linalg.LinAlgError, match="positive definite"):
        transferability._logdet_spd(indefinite)


def test_transrate_mixing_d_by_d_and_n_by_n_classes_matches_slogdet():
    # three classes of ~130 rows take the D×D form, one of 12 rows its 12×12 form (and joins the whole Gram)
    f, y = blobs(400, 30, 3, 1.0, seed=17)
    y = y.copy()
    y[np.random.default_rng(0).choice(len(y), 12, replace=False)] = 3
    assert transrate(f, y) == pytest.approx(_slogdet_transrate(f, y, 1e-4), rel=1e-10)


def test_transrate_with_fewer_samples_than_dimensions():
    f, y = blobs(20, 50, 2, 1.0, seed=15)
    assert transrate(f, y) == pytest.approx(_slogdet_transrate(f, y, 1e-4), rel=1e-10)


def test_transrate_rejects_a_non_positive_eps():
    f, y = blobs(20, 3, 2, 1.0)
    with pytest.raises(ValueError, match="eps"):
        transrate(f, y, eps=0.0)


# --------------------------------------------------------------------------- GBC


def test_gbc_two_spherical_classes_by_hand():
    # class 0: mean (1, 1), variances (1, 1) -> s = 1; class 1: mean (6, 1), variances (4, 4) -> s = 4
    f = np.array([[0.0, 0.0], [2.0, 2.0], [4.0, -1.0], [8.0, 3.0]])
    # D_B = 25 / (8 * 2.5) + (2 / 2) * (log 2.5 - (log 1 + log 4) / 2) = 1.25 + log 1.25
    assert gbc(f, [0, 0, 1, 1]) == pytest.approx(-2 * math.exp(-1.25) / 1.25, rel=1e-12)


def test_gbc_two_diagonal_classes_by_hand():
    # class 1: mean (6, 1), variances (4, 1); averaged variances (2.5, 1)
    f = np.array([[0.0, 0.0], [2.0, 2.0], [4.0, 0.0], [8.0, 2.0]])
    # D_B = (25 / 2.5) / 8 + 1/2 (log 2.5 - log 4 / 2) = 1.25 + 1/2 log 1.25
    expected = -2 * math.exp(-1.25) / math.sqrt(1.25)
    assert gbc(f, [0, 0, 1, 1], gaussian="diagonal") == pytest.approx(expected, rel=1e-12)


def test_gbc_floors_variances_at_1e_minus_4():
    f = np.array([[0.0], [0.0], [0.01], [0.01]])  # both variances 0 -> 1e-4; D_B = 1e-4 / 8e-4
    assert gbc(f, [0, 0, 1, 1]) == pytest.approx(-2 * math.exp(-0.125), rel=1e-12)


def test_gbc_rejects_an_unknown_gaussian():
    f, y = blobs(20, 3, 2, 1.0)
    with pytest.raises(ValueError, match="gaussian"):
        gbc(f, y, gaussian="full")


# --------------------------------------------------------------------------- NLEEP / SFDA


def test_nleep_is_deterministic_for_a_seed_and_matches_scikit_learn_pca_gmm():
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    f, y = blobs(120, 10, 3, 3.0, seed=16)
    first = nleep(f, y, seed=1)
    assert nleep(f, y, seed=1) == first
    z = PCA(n_components=0.8, svd_solver="full").fit_transform(f)
    post = GaussianMixture(n_components=15, random_state=1).fit(z).predict_proba(z)
    joint = np.stack([post[y == c].sum(0) for c in range(3)]) / len(y)
    eep = (post @ (joint / joint.sum(0)).T)[np.arange(len(y)), y]
    assert first == pytest.approx(np.mean(np.log(eep)), abs=1e-6)
    assert first <= 0.0


def test_nleep_prefers_separated_features():
    f, y = blobs(90, 6, 3, 6.0, seed=17)
    noise = np.random.default_rng(18).normal(size=f.shape)
    assert nleep(f, y, n_components_per_class=2) > nleep(noise, y, n_components_per_class=2)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"pca_dim": 0.0}, "pca_dim"),
        ({"pca_dim": True}, "pca_dim"),
        ({"n_components_per_class": 0}, "n_components_per_class"),
    ],
)
def test_nleep_rejects_bad_settings(kwargs, word):
    f, y = blobs(30, 4, 2, 1.0)
    with pytest.raises(ValueError, match=word):
        nleep(f, y, **kwargs)


def _reference_sfda(f: np.ndarray, y: np.ndarray) -> float:
    """Transcription of Shao et al.'s algorithm with the generalized eigenproblem (scipy)."""
    from scipy.linalg import eigh

    def fit_predict(x, shrinkage):
        c = int(y.max()) + 1
        priors = np.bincount(y) / len(y)
        means = np.stack([x[y == k].mean(0) for k in range(c)])
        sw = sum(priors[k] * np.cov(x[y == k], rowvar=False, bias=True) for k in range(c))
        if shrinkage is None:
            shrinkage = max(math.exp(-5 * np.linalg.eigvalsh(sw)[-1]), 1e-10)
        d = x.shape[1]
        st = (1 - shrinkage) * np.cov(x, rowvar=False, bias=True) + shrinkage * np.trace(
            np.cov(x, rowvar=False, bias=True)
        ) / d * np.eye(d)
        sw_s = (1 - shrinkage) * sw + shrinkage * np.trace(sw) / d * np.eye(d)
        evals, evecs = eigh(st - sw_s, sw_s)
        evecs = evecs[:, np.argsort(evals)[::-1]]
        coef = means @ evecs @ evecs.T
        logits = x @ coef.T - 0.5 * np.diag(means @ coef.T) + np.log(priors)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True), shrinkage, means

    x = f.copy()
    prob, shrinkage, means = fit_predict(x, None)
    prob = np.exp(prob) / np.exp(prob).sum(1, keepdims=True)
    c = len(means)
    for k in range(c):
        q = prob[y == k, k][:, None]
        outer = (means.sum(0) - means[k]) / (c - 1)
        x[y == k] = q * x[y == k] + (1 - q) * outer
    prob, _, _ = fit_predict(x, shrinkage)
    return float(np.mean(prob[np.arange(len(y)), y]))


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_sfda_matches_the_generalized_eigenproblem_transcription(scale):
    f, y = blobs(90, 8, 3, 1.0, seed=19)
    assert sfda(scale * f, y) == pytest.approx(_reference_sfda(scale * f, y), rel=1e-8)


def test_sfda_prefers_separated_features():
    f, y = blobs(90, 8, 3, 3.0, seed=20)
    noise = np.random.default_rng(21).normal(size=f.shape)
    assert 0.0 < sfda(noise, y) < sfda(f, y) <= 1.0


# --------------------------------------------------------------------------- k-NN / LFC


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_accuracy_matches_scikit_learn_leave_one_out(metric):
    from sklearn.neighbors import KNeighborsClassifier

    f, y = blobs(150, 6, 2, 0.7, seed=22)
    clf = KNeighborsClassifier(n_neighbors=7, metric=metric, algorithm="brute").fit(f, y)
    neighbours = clf.kneighbors(return_distance=False)  # X=None: a point is not its own neighbour
    expected = np.mean(np.array([np.bincount(y[row], minlength=2).argmax() for row in neighbours]) == y)
    assert knn_accuracy(f, y, k=7, metric=metric) == pytest.approx(expected)


def test_knn_accuracy_multiclass_gives_a_tied_vote_to_the_smallest_label():
    from sklearn.neighbors import NearestNeighbors

    f, y = blobs(120, 5, 4, 0.8, seed=23)
    neighbours = (
        NearestNeighbors(n_neighbors=6, metric="cosine", algorithm="brute").fit(f).kneighbors(return_distance=False)
    )
    predictions = [np.bincount(y[row], minlength=4).argmax() for row in neighbours]  # argmax: the smallest tied
    assert knn_accuracy(f, y, k=6) == pytest.approx(np.mean(np.array(predictions) == y))


def test_knn_tie_goes_to_the_smallest_label():
    f = np.array([[0.0], [1.0], [3.0], [4.0], [6.0], [7.0], [9.0], [10.0]])
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    # k = 2: the end samples 0 and 7 see one neighbour of each class (a tie, given to label 0); every other
    # sample sees two neighbours of the other class. Hand-worked: only the end sample of label 0 is right.
    assert knn_accuracy(f, y, k=2, metric="euclidean") == 1 / 8
    assert knn_accuracy(f, 1 - y, k=2, metric="euclidean") == 1 / 8


def test_knn_refuses_k_that_outvotes_a_class():
    f, y = blobs(12, 3, 2, 1.0, seed=24)
    with pytest.raises(ValueError, match=r"k=500 .*pass k <= 4"):
        knn_accuracy(f, y, k=500)


@pytest.mark.parametrize(("kwargs", "word"), [({"k": 0}, "k"), ({"metric": "manhattan"}, "metric")])
def test_knn_rejects_bad_settings(kwargs, word):
    f, y = blobs(12, 3, 2, 1.0)
    with pytest.raises(ValueError, match=word):
        knn_accuracy(f, y, **kwargs)


@pytest.mark.parametrize(("n", "d"), [(60, 5), (15, 40)])
def test_lfc_is_the_pearson_correlation_of_the_two_matrices(n, d):
    f, y = blobs(n, d, 3, 1.0, seed=25)
    unit = f / np.linalg.norm(f, axis=1, keepdims=True)
    gram = unit @ unit.T
    agree = np.where(y[:, None] == y[None, :], 1.0, -1.0)
    assert lfc(f, y) == pytest.approx(np.corrcoef(gram.ravel(), agree.ravel())[0, 1], rel=1e-9)


def test_lfc_rejects_features_that_all_point_the_same_way():
    f = np.outer(np.arange(1.0, 7.0), [1.0, 2.0])
    with pytest.raises(ValueError, match="cosine"):
        lfc(f, [0, 0, 0, 1, 1, 1])


# --------------------------------------------------------------------------- the registry and errors


def _inputs_for(name: str, f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kind = TRANSFERABILITY_METRICS[name].inputs
    if kind == "probs":
        e = np.exp(f[:, :3])
        return e / e.sum(1, keepdims=True), y
    if kind == "preds":
        return np.argmax(f[:, :3], axis=1), y
    return f, y


def test_every_metric_declares_direction_bounds_and_inputs():
    assert set(TRANSFERABILITY_METRICS) == {
        "logme",
        "leep",
        "nce",
        "hscore",
        "regularized_hscore",
        "transrate",
        "gbc",
        "nleep",
        "sfda",
        "knn_accuracy",
        "lfc",
        "etran",
    }
    for name, fn in TRANSFERABILITY_METRICS.items():
        assert fn.higher_is_better is True, name
        low, high = fn.bounds
        assert low < high, name
        assert fn.inputs == {"leep": "probs", "nce": "preds"}.get(name, "features"), name


@pytest.mark.parametrize("name", sorted(TRANSFERABILITY_METRICS))
def test_scores_are_within_their_declared_bounds(name):
    f, y = blobs(75, 5, 3, 1.5, seed=26)
    value = TRANSFERABILITY_METRICS[name](*_inputs_for(name, f, y))
    low, high = TRANSFERABILITY_METRICS[name].bounds
    assert isinstance(value, float) and low <= value <= high


@pytest.mark.parametrize("name", sorted(TRANSFERABILITY_METRICS))
def test_torch_tensors_give_the_numpy_result(name):
    torch = pytest.importorskip("torch")
    f, y = blobs(75, 4, 3, 1.5, seed=27)
    a, b = _inputs_for(name, f, y)
    fn = TRANSFERABILITY_METRICS[name]
    assert fn(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(fn(a, b), rel=1e-12)


@pytest.mark.parametrize("name", sorted(TRANSFERABILITY_METRICS))
def test_nan_is_rejected(name):
    f, y = blobs(30, 4, 3, 1.0)
    a, b = _inputs_for(name, f, y)
    a = a.astype(float)
    a[(2, 0)[: a.ndim]] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        TRANSFERABILITY_METRICS[name](a, b)


@pytest.mark.parametrize("name", sorted(TRANSFERABILITY_METRICS))
def test_a_single_class_is_rejected(name):
    f, y = blobs(30, 4, 3, 1.0)
    a, _ = _inputs_for(name, f, y)
    with pytest.raises(ValueError, match="at least 2"):
        TRANSFERABILITY_METRICS[name](a, np.full(30, 4))


@pytest.mark.parametrize("name", sorted(TRANSFERABILITY_METRICS))
def test_mismatched_lengths_are_rejected(name):
    f, y = blobs(30, 4, 3, 1.0)
    a, b = _inputs_for(name, f, y)
    with pytest.raises(ValueError, match="different lengths"):
        TRANSFERABILITY_METRICS[name](a, b[:-1])


def test_gbc_needs_two_samples_per_class():
    f, y = blobs(30, 4, 3, 1.0)
    y = y.copy()
    y[0] = 9
    with pytest.raises(ValueError, match=r"\[9\].*fewer than 2"):
        gbc(f, y)
