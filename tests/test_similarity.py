"""Linear CKA and rank agreement, checked against second formulations and scipy."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_transfer.metrics import linear_cka
from pytest_transfer.metrics.rank_agreement import kendall_tau, weighted_kendall_tau
from pytest_transfer.metrics.similarity import cka_from_grams


def features(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def hsic_centred(k: np.ndarray, l: np.ndarray) -> float:
    """Biased HSIC with the explicit centring matrix H = I - 11ᵀ/n: tr(K H L H)."""
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h))


def u_centre(k: np.ndarray) -> np.ndarray:
    """Székely-Rizzo U-centring of K with its diagonal zeroed; <U(K), U(L)> / (n (n - 3)) is the unbiased HSIC."""
    n = len(k)
    k = k - np.diag(np.diag(k))
    u = k - k.sum(0)[None, :] / (n - 2) - k.sum(1)[:, None] / (n - 2) + k.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(u, 0.0)
    return u


def unbiased_cka(k: np.ndarray, l: np.ndarray) -> float:
    uk, ul = u_centre(k), u_centre(l)
    return float(np.sum(uk * ul) / np.sqrt(np.sum(uk * uk) * np.sum(ul * ul)))


@pytest.mark.parametrize(("n", "d1", "d2"), [(40, 5, 7), (12, 30, 50)], ids=["feature-space", "sample-space"])
def test_linear_cka_equals_its_gram_matrix_hsic_form(n, d1, d2):
    x = features(n, d1, 0)
    y = x[:, :3] @ np.random.default_rng(1).normal(size=(3, d2)) + features(n, d2, 2)
    k, l = x @ x.T, y @ y.T
    expected = hsic_centred(k, l) / np.sqrt(hsic_centred(k, k) * hsic_centred(l, l))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-10)
    assert cka_from_grams(k, l) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(("n", "d1", "d2"), [(40, 5, 7), (10, 30, 20)], ids=["feature-space", "sample-space"])
def test_debiased_cka_equals_the_u_centred_formula(n, d1, d2):
    x = features(n, d1, 3)
    y = x @ np.random.default_rng(4).normal(size=(d1, d2)) + 2 * features(n, d2, 5)
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = unbiased_cka(xc @ xc.T, yc @ yc.T)
    assert linear_cka(x, y, debiased=True) == pytest.approx(expected, rel=1e-10)
    assert cka_from_grams(xc @ xc.T, yc @ yc.T, debiased=True) == pytest.approx(expected, rel=1e-10)


def test_debiased_cka_removes_the_bias_of_unrelated_wide_features():
    x, y = features(30, 200, 6), features(30, 200, 7)
    assert linear_cka(x, y) > 0.5  # biased upwards when D >> N
    assert abs(linear_cka(x, y, debiased=True)) < 0.1


def test_linear_cka_is_invariant_to_orthogonal_transforms_isotropic_scaling_and_shifts():
    x = features(50, 6, 8)
    y = np.tanh(x @ np.random.default_rng(9).normal(size=(6, 4)))
    q, _ = np.linalg.qr(np.random.default_rng(10).normal(size=(6, 6)))
    base = linear_cka(x, y)
    assert 0.0 < base < 1.0
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(0.01 * x, 300.0 * y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x + 5.0, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x @ q, y, debiased=True) == pytest.approx(linear_cka(x, y, debiased=True), rel=1e-10)


def test_linear_cka_is_not_invariant_to_anisotropic_scaling():
    x = features(50, 6, 11)
    y = x[:, :2]
    stretched = x * np.array([10.0, 1, 1, 1, 1, 1])
    assert linear_cka(stretched, y) != pytest.approx(linear_cka(x, y), rel=1e-3)


def test_linear_cka_of_a_representation_with_itself_is_one():
    x = features(20, 4, 12)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, x, debiased=True) == pytest.approx(1.0)


def test_cka_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    x, y = features(20, 4, 13), features(20, 3, 14)
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(y).float()) == pytest.approx(linear_cka(x, y), rel=1e-6)


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda: linear_cka(features(10, 3, 0), features(9, 3, 1)), "different lengths"),
        (lambda: linear_cka(np.full((10, 3), np.nan), features(10, 3, 1)), "NaN"),
        (lambda: linear_cka(features(3, 3, 0), features(3, 2, 1), debiased=True), "at least 4"),
        (lambda: linear_cka(np.ones((10, 3)), features(10, 3, 1)), "zero variance"),
        (lambda: cka_from_grams(np.ones((4, 3)), np.ones((4, 3))), "square"),
        (lambda: cka_from_grams(np.triu(np.ones((5, 5))), np.eye(5)), "symmetric"),
        (lambda: cka_from_grams(np.eye(5), np.eye(6)), "different numbers"),
    ],
    ids=["lengths", "nan", "too-few-debiased", "constant", "not-square", "asymmetric", "sizes"],
)
def test_cka_errors(call, word):
    with pytest.raises(ValueError, match=word):
        call()


# --------------------------------------------------------------------------- rank agreement


@pytest.mark.parametrize("seed", range(6))
def test_weighted_kendall_tau_equals_scipy_weightedtau(seed):
    from scipy.stats import weightedtau

    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 25))
    scores = rng.normal(size=n) if seed % 2 else rng.integers(0, 4, n).astype(float)  # even seeds: ties
    accuracies = rng.integers(0, 5, n) / 5 if seed % 3 == 0 else rng.random(n)
    assert weighted_kendall_tau(scores, accuracies) == pytest.approx(weightedtau(scores, accuracies)[0], abs=1e-12)


def test_weighted_kendall_tau_weighs_the_top_of_the_ranking_more():
    accuracies = np.arange(10.0)
    swap_top, swap_bottom = accuracies.copy(), accuracies.copy()
    swap_top[[8, 9]] = swap_top[[9, 8]]
    swap_bottom[[0, 1]] = swap_bottom[[1, 0]]
    assert kendall_tau(swap_top, accuracies) == pytest.approx(kendall_tau(swap_bottom, accuracies))
    assert weighted_kendall_tau(swap_top, accuracies) < weighted_kendall_tau(swap_bottom, accuracies)


@pytest.mark.parametrize("seed", range(4))
def test_kendall_tau_equals_scipy_kendalltau(seed):
    from scipy.stats import kendalltau

    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 4, 15), rng.normal(size=15)
    assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b)[0], abs=1e-12)


@pytest.mark.parametrize("fn", [kendall_tau, weighted_kendall_tau])
@pytest.mark.parametrize(
    ("scores", "accuracies", "word"),
    [
        ([1.0, 2.0, 3.0], [0.1, 0.2], "different lengths"),
        ([1.0], [0.5], "at least 2"),
        ([1.0, 1.0, 1.0], [0.1, 0.3, 0.2], "all values are equal"),
        ([1.0, np.nan], [0.1, 0.2], "NaN"),
    ],
    ids=["lengths", "one-model", "constant", "nan"],
)
def test_rank_agreement_errors(fn, scores, accuracies, word):
    with pytest.raises(ValueError, match=word):
        fn(scores, accuracies)
