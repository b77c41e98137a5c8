"""Intervals and tests agree with scipy, with hand-worked values and with their nominal coverage."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from pytest_transfer.metrics import bootstrap_ci, mcnemar_test, stats, wilson_interval
from pytest_transfer.metrics.stats import McNemarResult, normal_quantile, paired_difference_interval
from tests._helpers import module_level_imports

# ----------------------------------------------------------------------------- normal quantile


@pytest.mark.parametrize("confidence", [0.5, 0.8, 0.9, 0.95, 0.99, 0.999])
def test_normal_quantile_equals_scipy(confidence):
    assert normal_quantile(confidence) == pytest.approx(sps.norm.ppf(0.5 + confidence / 2), rel=1e-12)


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.1, 95, "high", None])
def test_normal_quantile_rejects_confidence_outside_0_1(confidence):
    with pytest.raises(ValueError, match="confidence"):
        normal_quantile(confidence)


# ----------------------------------------------------------------------------- Wilson


def test_wilson_hand_worked():
    # 8 of 10, z = 1.959964: z²/n = 0.384146, centre = (0.8 + 0.192073) / 1.384146 = 0.716740,
    # half = 1.959964 / 1.384146 * sqrt(0.016 + 0.009604) = 1.416010 * 0.160011 = 0.226577
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.716740 - 0.226577, abs=2e-6)
    assert high == pytest.approx(0.716740 + 0.226577, abs=2e-6)


@pytest.mark.parametrize("n", [1, 7, 40, 1000])
def test_wilson_at_zero_and_all_successes_has_closed_form(n):
    # with p̂ = 0 the interval is [0, z²/(n + z²)]; with p̂ = 1 it is [n/(n + z²), 1]
    z2 = normal_quantile(0.95) ** 2
    assert wilson_interval(0, n) == (0.0, pytest.approx(z2 / (n + z2), rel=1e-12))
    assert wilson_interval(n, n) == (pytest.approx(n / (n + z2), rel=1e-12), 1.0)


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
@pytest.mark.parametrize("k, n", [(0, 5), (1, 5), (5, 5), (3, 17), (50, 100), (999, 1000), (12345, 20000)])
def test_wilson_equals_scipy(k, n, confidence):
    expected = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(k, n, confidence=confidence)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


def test_wilson_accepts_numpy_and_integral_float_counts():
    assert wilson_interval(np.int64(8), np.int32(10)) == wilson_interval(8, 10)
    assert wilson_interval(8.0, 10.0) == wilson_interval(8, 10)


def test_wilson_coverage_is_near_nominal():
    rng = np.random.default_rng(0)
    n, draws = 60, 2000
    table = np.array([wilson_interval(k, n) for k in range(n + 1)])  # interval for each count
    coverages = []
    for p in np.linspace(0.05, 0.95, 19):
        k = rng.binomial(n, p, size=draws)
        coverages.append(np.mean((table[k, 0] <= p) & (p <= table[k, 1])))
    assert 0.935 <= np.mean(coverages) <= 0.965
    assert min(coverages) >= 0.90
    # a 50 % interval really is narrower and covers about half the time
    table50 = np.array([wilson_interval(k, n, confidence=0.5) for k in range(n + 1)])
    k = rng.binomial(n, 0.3, size=draws)
    assert 0.4 <= np.mean((table50[k, 0] <= 0.3) & (0.3 <= table50[k, 1])) <= 0.6


@pytest.mark.parametrize(
    "successes, n, match",
    [
        (0, 0, "n: got 0"),
        (3, -1, "n: got -1"),
        (11, 10, "successes: got 11"),
        (-1, 10, "successes: got -1"),
        (2.5, 10, "whole number"),
        ("3", 10, "whole number"),
    ],
)
def test_wilson_rejects_bad_counts(successes, n, match):
    with pytest.raises(ValueError, match=match):
        wilson_interval(successes, n)


def test_wilson_rejects_bad_confidence():
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(3, 10, confidence=1.0)


# ----------------------------------------------------------------------------- McNemar


def test_mcnemar_hand_worked():
    # b = 10, c = 2: p = 2 * P(Bin(12, 1/2) <= 2) = 2 * (1 + 12 + 66) / 4096
    a = np.array([True] * 10 + [False] * 2 + [True] * 5 + [False] * 3)
    b = np.array([False] * 10 + [True] * 2 + [True] * 5 + [False] * 3)
    result = mcnemar_test(a, b)
    assert (result.b, result.c, result.statistic) == (10, 2, 2)
    assert result.p_value == pytest.approx(2 * 79 / 4096, rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_mcnemar_equals_scipy_binomtest(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    a = rng.random(n) < rng.uniform(0.5, 0.9)
    b = np.where(rng.random(n) < 0.8, a, rng.random(n) < 0.7)
    result = mcnemar_test(a, b)
    assert result.b == np.sum(a & ~b) and result.c == np.sum(~a & b)
    expected = sps.binomtest(result.b, result.b + result.c, 0.5).pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("lost, gained", [(10, 2), (3, 3), (0, 5), (7, 0), (260, 240), (1200, 1150)])
def test_one_sided_mcnemar_equals_scipy_binomtest_greater(lost, gained):
    expected = sps.binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue
    assert stats.mcnemar_one_sided(lost, gained) == pytest.approx(expected, rel=1e-9)
    assert stats.mcnemar_one_sided(0, 0) == 1.0


@pytest.mark.parametrize("m, p", [(1, 0.3), (12, 0.5), (40, 0.08), (300, 0.71)])
def test_binomial_pmf_and_half_tails_equal_scipy(m, p):
    k = np.arange(m + 1)
    np.testing.assert_allclose(stats.binomial_pmf(m, p), sps.binom.pmf(k, m, p), rtol=1e-9, atol=1e-300)
    tails = stats.binomial_half_upper_tails(m)
    np.testing.assert_allclose(tails[:-1], sps.binom.sf(k - 1, m, 0.5), rtol=1e-9, atol=1e-300)
    assert tails[-1] == 0.0
    assert stats.binomial_pmf(5, 0.0).tolist() == [1, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("b, c", [(2600, 2400), (5000, 5000), (12000, 11500), (40, 0), (0, 1)])
def test_mcnemar_large_and_extreme_counts_equal_scipy(b, c):
    a = np.r_[np.ones(b, bool), np.zeros(c, bool), np.ones(7, bool)]
    other = np.r_[np.zeros(b, bool), np.ones(c, bool), np.ones(7, bool)]
    result = mcnemar_test(a, other)
    assert result.p_value == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue, rel=1e-9, abs=1e-300)


def test_mcnemar_without_discordant_pairs_has_p_value_one():
    result = mcnemar_test([True, False, True], [True, False, True])
    assert result == McNemarResult(b=0, c=0, statistic=0, p_value=1.0)


def test_mcnemar_accepts_tensors_and_0_1_ints_and_is_frozen():
    a, b = torch.tensor([1, 1, 0, 1, 0]), torch.tensor([True, False, False, False, True])
    result = mcnemar_test(a, b)
    assert (result.b, result.c) == (2, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.p_value = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("fn", [mcnemar_test, paired_difference_interval])
def test_paired_functions_reject_bad_input(fn):
    with pytest.raises(ValueError, match="correct_a: expected per-sample correctness"):
        fn([0, 2, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="correct_b: expected a 1-d array"):
        fn([True, False], [[True, False]])
    with pytest.raises(ValueError, match="different lengths"):
        fn([True, False, True], [True, False])
    with pytest.raises(ValueError, match="empty"):
        fn(np.array([], bool), np.array([], bool))
    with pytest.raises(ValueError, match="per-sample correctness"):
        fn(["yes", "no"], [True, False])


# ----------------------------------------------------------------------------- paired difference


def _counts_to_arrays(n11, n10, n01, n00):
    a = np.r_[np.ones(n11 + n10, bool), np.zeros(n01 + n00, bool)]
    b = np.r_[np.ones(n11, bool), np.zeros(n10, bool), np.ones(n01, bool), np.zeros(n00, bool)]
    return a, b


def test_paired_difference_hand_worked():
    # n11 70, n10 10, n01 5, n00 15: p1 .80, p2 .75, θ .05
    # Wilson(80/100) = (.711171, .866633), Wilson(75/100) = (.656955, .824548)
    # D = 70*15 - 10*5 = 1000 > n/2 -> φ = (1000 - 50) / sqrt(80*20*75*25) = .548483
    # lower = .05 - sqrt(.088829² - 2φ(.088829)(.074548) + .074548²) = .05 - .078638
    # upper = .05 + sqrt(.066633² - 2φ(.066633)(.093045) + .093045²) = .05 + .079349
    low, high = paired_difference_interval(*_counts_to_arrays(70, 10, 5, 15))
    assert low == pytest.approx(0.05 - 0.078638, abs=2e-6)
    assert high == pytest.approx(0.05 + 0.079349, abs=2e-6)


def _newcombe_with_scipy_wilson(n11, n10, n01, n00, confidence):
    """Method 10 assembled from scipy's Wilson limits (a second, independent build)."""
    n = n11 + n10 + n01 + n00
    p1, p2 = (n11 + n10) / n, (n11 + n01) / n
    ci1 = sps.binomtest(n11 + n10, n).proportion_ci(confidence, method="wilson")
    ci2 = sps.binomtest(n11 + n01, n).proportion_ci(confidence, method="wilson")
    e, f, g, h = n11 + n10, n01 + n00, n11 + n01, n10 + n00
    phi = 0.0
    if e * f * g * h:
        d = n11 * n00 - n10 * n01
        c = d - n / 2 if d > n / 2 else (0.0 if d >= 0 else d)
        phi = c / math.sqrt(e * f * g * h)
    dl1, du1, dl2, du2 = p1 - ci1.low, ci1.high - p1, p2 - ci2.low, ci2.high - p2
    lower = p1 - p2 - math.sqrt(dl1**2 - 2 * phi * dl1 * du2 + du2**2)
    upper = p1 - p2 + math.sqrt(du1**2 - 2 * phi * du1 * dl2 + dl2**2)
    return lower, upper


@pytest.mark.parametrize(
    "cells",
    [
        (70, 10, 5, 15),
        (1, 1, 7, 12),
        (59, 6, 16, 80),
        (0, 0, 0, 30),
        (30, 0, 0, 0),
        (0, 12, 0, 0),
        (5, 0, 9, 3),
        (400, 3, 1, 2),
        (10, 15, 5, 20),
    ],
)
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_paired_difference_equals_method_10_built_from_scipy_wilson(cells, confidence):
    expected = _newcombe_with_scipy_wilson(*cells, confidence)
    got = paired_difference_interval(*_counts_to_arrays(*cells), confidence=confidence)
    assert got == (pytest.approx(expected[0], abs=1e-10), pytest.approx(expected[1], abs=1e-10))


def test_paired_difference_is_antisymmetric_and_contains_the_estimate():
    a, b = _counts_to_arrays(40, 12, 4, 9)
    low, high = paired_difference_interval(a, b)
    swapped = paired_difference_interval(b, a)
    assert swapped == (pytest.approx(-high, abs=1e-14), pytest.approx(-low, abs=1e-14))
    assert low < (12 - 4) / 65 < high


def test_paired_difference_stays_in_range_at_the_extremes():
    low, high = paired_difference_interval(*_counts_to_arrays(0, 25, 0, 0))  # a always right, b always wrong
    assert high == 1.0 and 0.8 < low < 1.0
    low, high = paired_difference_interval(*_counts_to_arrays(30, 0, 0, 0))  # identical models
    assert low < 0.0 < high


def test_paired_difference_approaches_the_wald_interval_for_large_n():
    n11, n10, n01, n00 = 14000, 1500, 1100, 3400
    n = n11 + n10 + n01 + n00
    theta = (n10 - n01) / n
    se = math.sqrt((n10 + n01) - (n10 - n01) ** 2 / n) / n  # asymptotic paired SE
    z = normal_quantile(0.95)
    low, high = paired_difference_interval(*_counts_to_arrays(n11, n10, n01, n00))
    assert low == pytest.approx(theta - z * se, abs=3e-4)
    assert high == pytest.approx(theta + z * se, abs=3e-4)


def test_paired_difference_coverage_is_near_nominal():
    rng = np.random.default_rng(1)
    cell_probs = np.array([0.62, 0.14, 0.09, 0.15])  # θ = 0.05, correlated models
    theta = cell_probs[1] - cell_probs[2]
    tables = rng.multinomial(80, cell_probs, size=600)
    covered = [
        low <= theta <= high for low, high in (paired_difference_interval(*_counts_to_arrays(*t)) for t in tables)
    ]
    assert 0.92 <= np.mean(covered) <= 0.98


def test_paired_difference_rejects_bad_confidence():
    with pytest.raises(ValueError, match="confidence"):
        paired_difference_interval([True], [False], confidence=0)


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_deterministic_for_a_seed():
    x = np.random.default_rng(2).normal(size=200)
    assert bootstrap_ci(np.mean, x, seed=3) == bootstrap_ci(np.mean, x, seed=3)
    assert bootstrap_ci(np.mean, x, seed=3) != bootstrap_ci(np.mean, x, seed=4)


def test_bootstrap_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(5)
    x = rng.exponential(size=300)
    ours = bootstrap_ci(np.mean, x, n_resamples=4000, confidence=0.9)
    theirs = sps.bootstrap((x,), np.mean, method="percentile", n_resamples=4000, confidence_level=0.9, rng=6)
    width = theirs.confidence_interval.high - theirs.confidence_interval.low
    assert ours[0] == pytest.approx(theirs.confidence_interval.low, abs=0.05 * width)
    assert ours[1] == pytest.approx(theirs.confidence_interval.high, abs=0.05 * width)


def test_bootstrap_normal_mean_matches_the_textbook_interval():
    x = np.random.default_rng(7).normal(loc=2.0, scale=1.0, size=500)
    half = normal_quantile(0.95) * x.std() / math.sqrt(x.size)
    low, high = bootstrap_ci(np.mean, x, n_resamples=3000)
    assert low == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(x.mean() + half, abs=0.1 * half)


def test_bootstrap_resamples_rows_jointly():
    from pytest_transfer.metrics import accuracy

    x = np.random.default_rng(8).integers(0, 3, 100)
    # the same rows are drawn from both arrays, so the statistic never moves
    assert bootstrap_ci(lambda a, b: float(np.mean(a - b)), x, x.copy()) == (0.0, 0.0)
    y_pred = np.where(np.random.default_rng(9).random(100) < 0.8, x, (x + 1) % 3)
    low, high = bootstrap_ci(accuracy, x, torch.from_numpy(y_pred))
    assert low < accuracy(x, y_pred) < high


def test_bootstrap_resamples_rows_of_2d_arrays():
    probs = np.random.default_rng(10).dirichlet(np.ones(4), size=50)
    low, high = bootstrap_ci(lambda p: float(p.sum(axis=1).mean()), probs, n_resamples=50)
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)


def test_bootstrap_vectorized_gives_the_same_interval():
    rng = np.random.default_rng(11)
    t, p = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    loop = bootstrap_ci(lambda a, b: np.mean(a == b), t, p, n_resamples=300, seed=1)
    batch = bootstrap_ci(lambda a, b: np.mean(a == b, axis=1), t, p, n_resamples=300, seed=1, vectorized=True)
    assert loop == batch


def test_bootstrap_rejects_bad_arguments():
    x = np.arange(10.0)
    with pytest.raises(ValueError, match="statistic: got"):
        bootstrap_ci("mean", x)
    with pytest.raises(ValueError, match="arrays: none given"):
        bootstrap_ci(np.mean)
    with pytest.raises(ValueError, match="different lengths"):
        bootstrap_ci(np.mean, x, x[:5])
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci(np.mean, np.array([]))
    with pytest.raises(ValueError, match="scalar"):
        bootstrap_ci(np.mean, np.float64(3.0))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(np.mean, x, confidence=1.5)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_resamples"):
            bootstrap_ci(np.mean, x, n_resamples=bad)


def test_bootstrap_rejects_bad_statistics():
    x = np.arange(10.0)
    with pytest.raises(ValueError, match="must return one number"):
        bootstrap_ci(lambda a: a[:2], x)
    with pytest.raises(ValueError, match="one value per resample"):
        bootstrap_ci(np.mean, x, vectorized=True)  # reduces the whole batch to one number
    with pytest.raises(ValueError, match="NaN or Inf on"):
        bootstrap_ci(lambda a: np.nan if a[0] > 4 else 1.0, x, n_resamples=50)
    with pytest.raises(ValueError, match="failed on a bootstrap resample"):
        bootstrap_ci(lambda a: float(np.ones(3) @ a), x, n_resamples=5)


def test_module_imports_no_scipy_at_import_time():
    imported = module_level_imports(stats)
    assert imported.isdisjoint({"scipy", "sklearn", "torch"}), imported


def test_docstring_examples_run():
    import doctest

    assert doctest.testmod(stats, optionflags=doctest.ELLIPSIS).failed == 0
