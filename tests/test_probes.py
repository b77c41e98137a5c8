"""The linear probe and k-NN against scikit-learn on the same features."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from pytest_transfer.metrics.probes import fit_linear_probe, knn_predict


def digits_split():
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(d.target))
    tr, te = order[:1300], order[1300:]
    return d.data[tr], d.target[tr], d.data[te], d.target[te]


def wide_problem(n=120, d=400, seed=0):
    """N < D, correlated features: the probe must still agree with scikit-learn."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=2 * n, n_features=d, n_informative=20, n_classes=4, random_state=seed)
    return x[:n], y[:n], x[n:], y[n:]


@pytest.mark.parametrize("problem", [digits_split, wide_problem])
def test_linear_probe_matches_sklearn_logistic_regression(problem):
    xtr, ytr, xte, yte = problem()
    ours = fit_linear_probe(xtr, ytr)
    scaler = StandardScaler().fit(xtr)
    ref = LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(xtr), ytr)
    acc_ours = np.mean(ours.predict(xte) == yte)
    acc_ref = np.mean(ref.predict(scaler.transform(xte)) == yte)
    assert abs(acc_ours - acc_ref) <= 0.01
    assert np.mean(ours.predict(xte) == ref.predict(scaler.transform(xte))) >= 0.97


def test_linear_probe_converges_to_the_sklearn_optimum():
    xtr, ytr, _, _ = digits_split()
    ours = fit_linear_probe(xtr, ytr, tol=1e-9)
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=20000).fit(StandardScaler().fit_transform(xtr), ytr)
    # multinomial logits are defined up to a shift per sample: compare centred coefficients
    w_ours = ours.weight - ours.weight.mean(0)
    w_ref = ref.coef_ - ref.coef_.mean(0)
    assert np.max(np.abs(w_ours - w_ref)) < 1e-3 * np.max(np.abs(w_ref)) + 1e-4


def test_probe_does_not_depend_on_feature_scale():
    xtr, ytr, xte, _ = digits_split()
    a = fit_linear_probe(xtr, ytr).predict(xte)
    b = fit_linear_probe(xtr * 1e-9, ytr).predict(xte * 1e-9)
    assert np.mean(a == b) >= 0.99


def test_probe_is_deterministic_and_keeps_label_values():
    xtr, ytr, xte, _ = digits_split()
    labels = ytr * 10 + 3
    p1, p2 = fit_linear_probe(xtr, labels), fit_linear_probe(xtr, labels)
    assert np.array_equal(p1.weight, p2.weight)
    assert set(np.unique(p1.predict(xte))) <= set(np.unique(labels))


def test_torch_head_equals_standardise_then_probe():
    import torch

    xtr, ytr, xte, _ = digits_split()
    probe = fit_linear_probe(xtr, ytr)
    head = probe.torch_head()
    with torch.no_grad():
        z = head(torch.from_numpy(xte).float()).double().numpy()
    assert np.allclose(z, probe.decision_function(xte), atol=1e-3)


def test_probe_errors():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="at least two classes"):
        fit_linear_probe(x, np.zeros(10, int))
    with pytest.raises(ValueError, match="different lengths"):
        fit_linear_probe(x, np.arange(9) % 2)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_linear_probe(x, np.arange(10) % 2)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_matches_sklearn(metric):
    xtr, ytr, xte, _ = digits_split()
    ours = knn_predict(xtr, ytr, xte, k=5, metric=metric)
    ref = KNeighborsClassifier(n_neighbors=5, metric=metric, algorithm="brute").fit(xtr, ytr).predict(xte)
    # ties may be broken differently; they are rare
    assert np.mean(ours == ref) >= 0.99


def test_knn_k1_is_nearest_neighbour_exactly():
    xtr, ytr, xte, _ = digits_split()
    ref = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(xtr, ytr).predict(xte)
    assert np.mean(knn_predict(xtr, ytr, xte, k=1, metric="euclidean") == ref) >= 0.995


def test_knn_errors():
    x = np.ones((4, 2))
    with pytest.raises(ValueError, match="metric"):
        knn_predict(x, [0, 1, 0, 1], x, metric="manhattan")
    with pytest.raises(ValueError, match="3 dimensions"):
        knn_predict(x, [0, 1, 0, 1], np.ones((2, 3)))


def hard_problem(classes, seed=0, n=90, d=40):
    """Few noisy samples in many dimensions: the penalty decides the solution, C=1 and C=2 differ."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, d)) + 0.6 * rng.normal(size=(classes, d))[y]
    flip = rng.random(n) < 0.2
    y = np.where(flip, rng.integers(0, classes, n), y)
    return x, y


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_linear_probe_equals_sklearn_C1_for_any_number_of_classes(classes):
    x, y = hard_problem(classes)
    xs = StandardScaler().fit_transform(x)
    ref = LogisticRegression(C=1.0, tol=1e-12, max_iter=100_000).fit(xs, y)
    other = LogisticRegression(C=2.0, tol=1e-12, max_iter=100_000).fit(xs, y)
    probe = fit_linear_probe(x, y, tol=1e-10, max_iter=5000)
    z = probe.decision_function(x)
    ours = np.exp(z - z.max(1, keepdims=True))
    ours /= ours.sum(1, keepdims=True)
    want = ref.predict_proba(xs)
    assert np.max(np.abs(other.predict_proba(xs) - want)) > 0.02  # C matters on these features
    assert np.max(np.abs(ours - want)) < 1e-5
    assert np.array_equal(probe.predict(x), ref.predict(xs))
