"""The F1 interval keeps honest width at 0 and 1: Clopper–Pearson on the confusion matrix, checked against scipy
(the exact binomial interval, multinomial draws for coverage) and scikit-learn (the F1 itself)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from pytest_transfer.metrics.stats import f1_from_confusion, f1_interval


def confusion_to_labels(m):
    t, p = np.nonzero(m)
    reps = m[t, p].astype(int)
    return np.repeat(t, reps), np.repeat(p, reps)


@pytest.mark.parametrize(("right", "n"), [(6, 6), (0, 6), (5, 6), (40, 50), (50, 50), (1, 30)])
def test_micro_f1_is_the_clopper_pearson_interval(right, n):
    y = np.arange(n) % 2
    pred = np.where(np.arange(n) < right, y, 1 - y)
    exact = stats.binomtest(right, n).proportion_ci(confidence_level=0.95, method="exact")
    lo, hi = f1_interval(y, pred, average="micro", n_draws=20000)
    assert lo == pytest.approx(exact.low, abs=0.01) and hi == pytest.approx(exact.high, abs=0.01)


def test_all_right_on_six_images_keeps_an_honest_width():
    y = np.array([0, 1, 2, 0, 1, 2])
    rng = np.random.default_rng(0)
    boot = [f1_score(y[i], y[i], average="macro") for i in rng.integers(0, 6, size=(200, 6))]
    assert np.quantile(boot, [0.025, 0.975]).tolist() == [1.0, 1.0]  # the percentile bootstrap: [1, 1]
    for average in ("macro", "micro", "weighted"):
        lo, hi = f1_interval(y, y, average=average)
        assert hi == 1.0 and 0.4 < lo < 0.65  # Wilson's accuracy interval on the same predictions: [0.61, 1]
    lo, hi = f1_interval(y, (y + 1) % 3)  # all wrong: F1 = 0, the interval is not [0, 0] either
    assert lo == 0.0 and 0.3 < hi < 0.6


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_the_point_f1_of_a_confusion_matrix_is_sklearns(average):
    rng = np.random.default_rng(1)
    t = rng.integers(0, 4, 80)
    p = np.where(rng.random(80) < 0.7, t, rng.integers(0, 4, 80))
    m = np.zeros((4, 4))
    np.add.at(m, (t, p), 1)
    assert f1_from_confusion(m, average) == pytest.approx(f1_score(t, p, average=average))
    lo, hi = f1_interval(t, p, average=average)
    assert lo < f1_score(t, p, average=average) < hi


def population(classes, accuracy, seed):
    """Cell probabilities (rows = true class, equal priors), errors spread at random over the other classes."""
    rng = np.random.default_rng(seed)
    P = np.zeros((classes, classes))
    for c in range(classes):
        P[c] = np.insert(rng.dirichlet(np.ones(classes - 1)) * (1 - accuracy), c, accuracy) / classes
    return P


def percentile_bootstrap(m, rng, resamples=400):
    """The bootstrap of today's main, on counts: resampling the N samples is a multinomial draw of the cells."""
    draws = rng.multinomial(int(m.sum()), (m / m.sum()).ravel(), size=resamples).reshape(resamples, *m.shape)
    return np.quantile(f1_from_confusion(draws.astype(float), "macro"), [0.025, 0.975])


@pytest.mark.parametrize(("classes", "n", "accuracy"), [(3, 15, 0.97), (3, 15, 0.85), (2, 40, 0.99)])
def test_each_limit_covers_the_population_f1_by_simulation(classes, n, accuracy):
    P = population(classes, accuracy, seed=classes)
    truth = float(f1_from_confusion(P, "macro"))
    rng = np.random.default_rng(7)
    counts = stats.multinomial(n, P.ravel()).rvs(size=200, random_state=rng).reshape(200, classes, classes)
    ours = np.array([f1_interval(*confusion_to_labels(m), n_draws=1000, seed=i) for i, m in enumerate(counts)])
    # one-sided nominal 0.975 each; 200 draws: a covering method stays above 0.94 (5 standard errors of slack)
    assert np.mean(ours[:, 0] <= truth) >= 0.94 and np.mean(truth <= ours[:, 1]) >= 0.94
    if accuracy > 0.95:  # near 1 the bootstrap's lower limit is above the truth far more often than 2.5 %
        boot = np.array([percentile_bootstrap(m, rng) for m in counts])
        assert np.mean(boot[:, 0] <= truth) < 0.85


def test_seeded_and_checked():
    y = np.arange(30) % 3
    pred = np.where(np.arange(30) % 7 == 0, (y + 1) % 3, y)
    assert f1_interval(y, pred, seed=3) == f1_interval(y, pred, seed=3)
    with pytest.raises(ValueError, match="average"):
        f1_interval(y, pred, average="samples")
    with pytest.raises(ValueError, match="confidence"):
        f1_interval(y, pred, confidence=1.0)
    with pytest.raises(ValueError, match="different lengths"):
        f1_interval(y, pred[:-1])
    assert f1_interval([1, 1, 1], [1, 1, 1]) == pytest.approx((0.025 ** (1 / 3), 1.0))  # one class: CP at n of n


def test_the_f1_gate_says_when_the_sample_is_too_small(fresh_context):
    from torch import nn

    from pytest_transfer import assert_f1_above, assert_transfer_accuracy_above, load_dataset, load_model

    y = np.arange(30) % 3
    x = np.zeros((30, 3, 8, 8), np.float32)
    x[np.arange(30), y] = 1.0  # the class is the bright channel: a probe on the channel means is always right
    data = load_dataset((x, y), name="channels", test_fraction=0.2)
    model = load_model(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3)), name="pool")
    point = assert_f1_above(model, data, 0.9)
    assert point.value == 1.0 and point.details["n"] == 6  # every test image right
    # main passed this strict gate on 6 images (bootstrap [1, 1]); the accuracy gate's Wilson interval failed it
    with pytest.raises(AssertionError, match=r"the sample \(n=6\) is too small for confidence=strict at 95%"):
        assert_f1_above(model, data, 0.9, confidence="strict")
    with pytest.raises(AssertionError, match=r"too small for confidence=strict"):
        assert_transfer_accuracy_above(model, data, 0.9, confidence="strict")
    passed = assert_f1_above(model, data, 0.4, confidence="strict")
    assert passed.interval[1] == 1.0 and 0.4 < passed.interval[0] < 0.65
    assert "too_small" not in passed.details


@pytest.mark.parametrize(("right", "n"), [(20, 20), (0, 20), (13, 20), (97, 100)])
def test_a_bounded_mean_of_zeros_and_ones_is_the_clopper_pearson_interval(right, n):
    from pytest_transfer.metrics.stats import bounded_mean_interval

    exact = stats.binomtest(right, n).proportion_ci(confidence_level=0.95, method="exact")
    lo, hi = bounded_mean_interval([1.0] * right + [0.0] * (n - right), bounds=(0.0, 1.0), n_draws=20000)
    assert lo == pytest.approx(exact.low, abs=0.01) and hi == pytest.approx(exact.high, abs=0.01)


def test_a_mean_drop_of_zero_keeps_an_honest_width():
    from pytest_transfer.metrics.stats import bounded_mean_interval

    lo, hi = bounded_mean_interval(np.zeros(20), bounds=(-1.0, 1.0))  # the bootstrap of main: [0, 0]
    assert -0.2 < lo < 0 < hi < 0.2
    with pytest.raises(ValueError, match="within bounds"):
        bounded_mean_interval([0.5, 1.5], bounds=(0.0, 1.0))


@pytest.mark.parametrize("name", ["f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_macro"])
def test_the_paired_metric_interval_is_honest_at_the_boundary(name):
    from sklearn.metrics import precision_score, recall_score

    from pytest_transfer.metrics.stats import paired_metric_interval

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    a, b = y.copy(), y.copy()
    b[:4] = (y[:4] + 1) % 3  # four samples lost, none gained
    fn = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[name.split("_")[0]]
    diff = fn(y, a, average=name.split("_")[1]) - fn(y, b, average=name.split("_")[1])
    lo, hi = paired_metric_interval(y, a, b, name=name, confidence=0.9)
    assert lo <= diff <= hi
    # the exact one-sided McNemar test (scipy) does not call 4 lost / 0 gained significant at 5 %; nor does the
    # one-sided 95 % lower limit (the percentile bootstrap put it above 0)
    assert stats.binomtest(4, 4, 0.5, alternative="greater").pvalue > 0.05 and lo <= 0.0
    same_lo, same_hi = paired_metric_interval(y, a, a, name=name)  # identical predictions: not [0, 0]
    assert same_lo < 0.0 < same_hi and same_hi - same_lo > 0.01
    many = b.copy()
    many[:30] = (y[:30] + 1) % 3  # thirty lost: clearly worse
    assert paired_metric_interval(y, a, many, name=name, confidence=0.9)[0] > 0.05


def test_a_half_sample_interval_of_a_proportion_keeps_its_width_at_one():
    from pytest_transfer.metrics import knn_accuracy
    from pytest_transfer.metrics.stats import half_sample_interval, wilson_interval

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(20, 4)) + 8, rng.normal(size=(20, 4)) - 8])
    y = np.repeat([0, 1], 20)
    value = knn_accuracy(x, y, k=3)
    assert value == 1.0  # every half-sample scores 1.0 too: the half-sample SE is 0 (main's interval: [1, 1])
    lo, hi = half_sample_interval(lambda v, t: knn_accuracy(v, t, k=3), value, x, labels=y, n_resamples=10,
                                  bounds=(0.0, 1.0))
    assert (lo, hi) == pytest.approx(wilson_interval(40, 40))


def test_the_bayesian_bootstrap_with_a_pseudo_sample_is_clopper_pearson_for_a_proportion():
    from pytest_transfer.metrics.stats import bayesian_bootstrap_interval

    for right, n in ((30, 30), (0, 30), (21, 30)):
        x = np.array([1.0] * right + [0.0] * (n - right))
        lo, hi = bayesian_bootstrap_interval(lambda w, v: float(w @ v / w.sum()), x, pseudo=((0.0,), (1.0,)),
                                             n_draws=8000)
        exact = stats.binomtest(right, n).proportion_ci(method="exact")
        assert lo == pytest.approx(exact.low, abs=0.015) and hi == pytest.approx(exact.high, abs=0.015)


def test_the_mce_interval_keeps_its_width_when_the_model_makes_no_error():
    from pytest_transfer.gates.robustness import ALEXNET_ERRORS
    from pytest_transfer.metrics.stats import bayesian_bootstrap_interval
    from pytest_transfer.robustness.sweep import corruption_error, reference_errors

    names, levels = ("gaussian_noise", "fog"), (1, 3)
    fixed = reference_errors(ALEXNET_ERRORS, names, levels)
    perfect = np.ones((40, 1 + len(names) * len(levels)))  # clean and every cell right on 40 images

    def mce(w, m):
        err = 1.0 - np.clip(w @ m / w.sum(), 0.0, 1.0)
        mine = {"clean": err[0], **{c: tuple(err[1 + i * 2: 3 + i * 2]) for i, c in enumerate(names)}}
        return float(corruption_error(mine, fixed))

    lo, hi = bayesian_bootstrap_interval(mce, perfect, pseudo=((np.ones(5),), (np.zeros(5),)))
    assert lo == 0.0 and 0.05 < hi < 0.3  # main's percentile bootstrap: [0, 0]
