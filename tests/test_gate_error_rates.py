"""How often the gates are wrong, by simulation (numpy only, no model): the error rates they claim are the ones
they have.

* An unchanged model measured on many resampled test sets, at exactly its threshold, fails a lenient 95% gate at
  most about 5% of the time (a point gate fails half the time: that is the flake a lenient gate removes).
* A strict gate lets a model that sits exactly at the threshold through at most about 5% of the time.
* The paired regression test (one-sided exact McNemar + minimum effect) raises false alarms at most at its alpha,
  and catches a model made worse by a set amount with the power :func:`regression_power` computes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_transfer.gates.core import decide
from pytest_transfer.gates.regression import paired_regression, regression_power
from pytest_transfer.metrics.stats import paired_difference_interval, wilson_interval

RUNS = 2000


def _upper(rate: float, runs: int = RUNS) -> float:
    """A generous upper limit for a simulated rate: 4 binomial standard errors above it."""
    return rate + 4 * math.sqrt(rate * (1 - rate) / runs)


def _resampled_test_sets(population: np.ndarray, n: int, runs: int, rng: np.random.Generator) -> np.ndarray:
    """Accuracies of ``runs`` test sets of ``n`` samples drawn with replacement from per-sample correctness."""
    idx = rng.integers(0, population.size, size=(runs, n))
    return population[idx].sum(axis=1)


def _failure_rate(hits: np.ndarray, n: int, threshold: float, mode: str) -> float:
    fails = 0
    for h in hits:
        interval = wilson_interval(int(h), n, confidence=0.95)
        fails += not decide(h / n, interval, threshold, higher_is_better=True, mode=mode)
    return fails / hits.size


@pytest.mark.parametrize(("accuracy", "n"), [(0.85, 300), (0.95, 450), (0.6, 120)])
def test_an_unchanged_model_at_its_threshold_rarely_fails_a_lenient_gate(accuracy, n):
    rng = np.random.default_rng(0)
    population = rng.random(20_000) < accuracy  # one model's per-sample correctness on a large pool
    true_accuracy = population.mean()
    hits = _resampled_test_sets(population, n, RUNS, rng)
    lenient = _failure_rate(hits, n, true_accuracy, "lenient")
    point = _failure_rate(hits, n, true_accuracy, "none")
    assert lenient <= _upper(0.05)  # measured: 0.024, 0.038, 0.028 (a two-sided 95% interval misses above ~2.5%)
    assert 0.3 < point < 0.7  # the point gate flakes about half the time for the same model


def test_a_strict_gate_rarely_passes_a_model_that_only_reaches_its_threshold():
    rng = np.random.default_rng(1)
    population = rng.random(20_000) < 0.9
    hits = _resampled_test_sets(population, 400, RUNS, rng)
    false_pass = 1.0 - _failure_rate(hits, 400, population.mean(), "strict")
    assert false_pass <= _upper(0.05)


def test_a_lenient_drop_gate_rarely_fails_a_model_whose_drop_is_at_its_maximum():
    rng = np.random.default_rng(2)
    n, max_drop = 300, 0.05
    fails = 0
    for _ in range(RUNS):
        clean = rng.random(n) < 0.9
        # each clean hit is lost under the perturbation with the probability that makes the true drop max_drop
        perturbed = clean & (rng.random(n) >= max_drop / 0.9)
        drop = clean.mean() - perturbed.mean()
        interval = paired_difference_interval(clean, perturbed, confidence=0.95)
        fails += not decide(drop, interval, max_drop, higher_is_better=False, mode="lenient")
    assert fails / RUNS <= _upper(0.05)


def _paired_runs(n: int, drop: float, discordant: float, runs: int, rng: np.random.Generator) -> list[bool]:
    lost_p, gained_p = (discordant + drop) / 2, (discordant - drop) / 2
    called = []
    base_correct = rng.random((runs, n)) < 0.85
    u = rng.random((runs, n))
    for b, uu in zip(base_correct, u, strict=True):
        lost = b & (uu < lost_p / 0.85)  # among the baseline's hits
        gained = ~b & (uu < gained_p / 0.15)  # among its misses
        current = (b & ~lost) | gained
        called.append(paired_regression(b, current, alpha=0.05, min_effect=0.01).regressed)
    return called


def test_the_paired_test_has_the_power_it_claims():
    rng = np.random.default_rng(3)
    n, drop, discordant = 400, 0.04, 0.10
    claimed = regression_power(n, drop=drop, discordant=discordant, alpha=0.05, min_effect=0.01)
    caught = np.mean(_paired_runs(n, drop, discordant, RUNS, rng))
    se = math.sqrt(claimed * (1 - claimed) / RUNS)
    assert abs(caught - claimed) <= 4 * se  # measured: claimed 0.785, caught 0.779
    assert 0.6 < claimed < 0.9  # a regime where power is informative, not saturated


def test_the_paired_test_false_alarm_rate_is_at_most_alpha():
    rng = np.random.default_rng(4)
    n, discordant = 400, 0.10  # the models disagree on 10% of samples but are equally accurate
    claimed = regression_power(n, drop=0.0, discordant=discordant, alpha=0.05, min_effect=0.01)
    alarms = np.mean(_paired_runs(n, 0.0, discordant, RUNS, rng))
    assert claimed <= 0.05
    assert alarms <= _upper(0.05)
    assert abs(alarms - claimed) <= 4 * math.sqrt(max(claimed, 1e-3) * (1 - claimed) / RUNS)


def test_an_identical_model_never_fails_and_power_grows_with_n():
    base = np.random.default_rng(5).random(1000) < 0.9
    assert not paired_regression(base, base.copy()).regressed
    assert paired_regression(base, base.copy()).p_value == 1.0
    powers = [regression_power(n, drop=0.03, discordant=0.08) for n in (100, 300, 1000, 3000)]
    assert powers == sorted(powers) and powers[0] < 0.5 < powers[-1]


def test_regression_power_matches_a_hand_computed_case():
    # n = 2, everything discordant and lost: both samples lost (p = 1/4 one-sided) -> never significant at 0.05
    assert regression_power(2, drop=1.0, discordant=1.0) == 0.0
    # n = 5, every sample lost with certainty: lost = 5, p = 1/32 < 0.05 -> always caught
    assert regression_power(5, drop=1.0, discordant=1.0) == pytest.approx(1.0)
    # n = 5, discordant 1, drop 0.6: lost ~ Bin(5, 0.8); only lost = 5 (p = 1/32) is significant: 0.8^5
    assert regression_power(5, drop=0.6, discordant=1.0) == pytest.approx(0.8 ** 5)
    with pytest.raises(ValueError, match=r"need \|drop\| <= discordant <= 1"):
        regression_power(10, drop=0.2, discordant=0.1)
