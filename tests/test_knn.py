"""The k-NN conventions (probe and leave-one-out estimator) against scikit-learn's KNeighborsClassifier, ties
included, and the refusal of a k that lets the larger classes outvote a small one."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from pytest_transfer.metrics import knn_accuracy
from pytest_transfer.metrics.probes import knn_predict


def sklearn_knn(k, metric):
    return KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute", weights="uniform")


def separable(n_per_class=9, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(n_per_class, d)) + 10, rng.normal(size=(n_per_class, d)) - 10])
    x[:, 1] *= -1  # cosine also separates them
    return x, np.repeat([0, 1], n_per_class)


def tie_problem(seed, n=60, classes=4):
    """Integer points on a small grid with even k: many tied votes (and the labels are not 0..C-1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).round(1)
    y = rng.integers(0, classes, size=n) * 3 + 5
    return x, y


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", range(4))
def test_probe_equals_sklearn_with_tied_votes(metric, seed):
    x, y = tie_problem(seed)
    q = np.random.default_rng(100 + seed).normal(size=(80, 3))
    for k in (2, 4, 6):
        ref = sklearn_knn(k, metric).fit(x, y)
        dist, _ = ref.kneighbors(q, n_neighbors=k + 1)
        clear = dist[:, k - 1] < dist[:, k] - 1e-9  # no equal distances across the k-th place (sklearn's order)
        ours = knn_predict(x, y, q, k=k, metric=metric)
        assert np.array_equal(ours[clear], ref.predict(q)[clear])
        counts = np.array([np.bincount(np.searchsorted(np.unique(y), y[i]), minlength=4)
                           for i in ref.kneighbors(q, n_neighbors=k)[1]])
        tied = (np.sort(counts, axis=1)[:, -1] == np.sort(counts, axis=1)[:, -2]) & clear
        assert tied.sum() > 5  # the comparison covers tied votes: they went to the smallest label, as sklearn's


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", range(3))
def test_leave_one_out_equals_sklearn_predicting_its_own_rows(metric, seed):
    x, y = tie_problem(seed)
    for k in (1, 2, 4, 5):
        ref = sklearn_knn(k, metric).fit(x, y)
        dist, _ = ref.kneighbors(None, n_neighbors=k + 1)  # None: each row's neighbours without itself
        if np.any(dist[:, k - 1] >= dist[:, k] - 1e-9):
            continue  # equal distances across the k-th place: sklearn's order is its sort's, ours is row order
        assert knn_accuracy(x, y, k=k, metric=metric) == pytest.approx(np.mean(ref.predict(None) == y), abs=0)


def test_leave_one_out_equals_sklearn_on_real_digits():
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    d = load_digits()
    x = StandardScaler().fit_transform(d.data[:600])
    y = d.target[:600]
    for metric in ("cosine", "euclidean"):
        ref = sklearn_knn(10, metric).fit(x, y).predict(None)
        assert knn_accuracy(x, y, k=10, metric=metric) == pytest.approx(np.mean(ref == y), abs=1 / 600)


def test_equal_distances_take_the_lower_row_first():
    # the query is at distance 1 from rows 0 (class 1), 1 (class 0), 2 (class 0): k=1 takes row 0
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [6.0, 5.0]])
    y = np.array([1, 0, 0, 1, 1])
    assert knn_predict(x, y, [[0.0, 0.0]], k=1, metric="euclidean").tolist() == [1]
    assert knn_predict(x[[1, 0, 2, 3, 4]], y[[1, 0, 2, 3, 4]], [[0.0, 0.0]], k=1, metric="euclidean").tolist() == [0]


def test_separable_data_scores_one_with_a_valid_k():
    x, y = separable()
    q = np.concatenate([x[:3] + 0.1, x[-3:] + 0.1])
    assert knn_accuracy(x, y, k=3) == 1.0
    assert knn_accuracy(x, y, k=7) == 1.0  # the largest k: 9 per class, 8 other members vote
    assert knn_predict(x, y, q, k=8).tolist() == [0, 0, 0, 1, 1, 1]


def test_k_at_or_above_the_smallest_class_is_refused_by_name():
    x, y = separable()
    # today's main capped k at N - 1: 0.0 on separable data (every sample outvoted by the other class)
    with pytest.raises(ValueError, match=r"k=20 .*class 0 has only 9 sample\(s\).*pass k <= 7"):
        knn_accuracy(x, y, k=20)
    with pytest.raises(ValueError, match=r"k=8 .*pass k <= 7"):
        knn_accuracy(x, y, k=8)
    # the probe: 9 train samples per class; k = 20 gave the majority class to every query
    with pytest.raises(ValueError, match=r"k=20 .*class 1 has only 4 sample\(s\) in the train split.*pass k <= 3"):
        knn_predict(x[:13], y[:13], x[:2], k=20)
    with pytest.raises(ValueError, match=r"k=9 .*pass k <= 8"):
        knn_predict(x, y, x[:2], k=9)
    assert knn_predict(x[:10], y[:10], x[-1:], k=1).tolist() == [1]  # k = 1 needs no vote: always allowed


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_k_must_be_a_positive_integer(bad):
    x, y = separable()
    with pytest.raises(ValueError, match="k: must be a positive integer"):
        knn_accuracy(x, y, k=bad)
    with pytest.raises(ValueError, match="k: must be a positive integer"):
        knn_predict(x, y, x, k=bad)


def test_the_knn_gate_refuses_too_large_a_k(tiny_model, blobs):
    from pytest_transfer import assert_transfer_accuracy_above

    with pytest.raises(ValueError, match=r"k=500 .*in the train split"):
        assert_transfer_accuracy_above(tiny_model, blobs, 0.0, method="knn", k=500)
