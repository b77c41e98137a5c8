"""Probes on frozen features: multinomial logistic regression (the linear probe) and k-NN.

The linear probe standardises features with the train split's statistics and
minimises scikit-learn's objective, ``C · Σ cross-entropy + ½‖W‖²`` (the
intercept is not penalised), with full-batch L-BFGS in float64: deterministic,
and scikit-learn's stopping rule, so its solution is that of
``sklearn.linear_model.LogisticRegression(C=C)`` on the same standardised features to within where the
two L-BFGS runs stop (both near, not at, the optimum: a few test predictions in a thousand can differ),
for any number of classes. With two classes
that is scikit-learn's binary objective, one weight vector ``w``
(``C · Σ log-loss + ½‖w‖²``), returned as the two columns ``-w/2`` and ``w/2``
(same probabilities); a two-vector softmax would penalise ``w`` by half as
much, i.e. fit ``C = 2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._checks import as_float, check_same_length, remap_labels


@dataclass
class Standardizer:
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        # constant features carry no information: leave them at zero rather than dividing by ~0
        scale = np.where(scale > 1e-12 * max(1.0, float(np.abs(mean).max(initial=0.0))), scale, 1.0)
        return cls(mean, scale)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


@dataclass
class LinearProbe:
    """A fitted multinomial logistic regression on standardised features."""

    weight: np.ndarray  # C×D
    bias: np.ndarray  # C
    standardizer: Standardizer
    classes: np.ndarray  # original label values, index = output column
    converged: bool
    n_iter: int

    def decision_function(self, features: Any) -> np.ndarray:
        x = self.standardizer(as_float(features, "features", ndim=2))
        return x @ self.weight.T + self.bias

    def predict(self, features: Any) -> np.ndarray:
        return self.classes[self.decision_function(features).argmax(axis=1)]

    def torch_head(self) -> Any:
        """An ``nn.Linear`` on raw features equal to standardisation followed by this probe."""
        import torch

        w = self.weight / self.standardizer.scale
        b = self.bias - w @ self.standardizer.mean
        head = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(w).float())
            head.bias.copy_(torch.from_numpy(b).float())
        return head.eval()


def fit_linear_probe(features: Any, labels: Any, *, C: float = 1.0, max_iter: int = 1000,
                     tol: float = 1e-4, standardize: bool = True) -> LinearProbe:
    """Fit the linear probe; ``C`` is scikit-learn's inverse regularisation strength.

    The objective is scaled by ``1 / n`` and L-BFGS stops when the largest
    gradient entry is below ``tol``, scikit-learn's ``lbfgs`` criterion.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(40, 3)); y = (x[:, 0] > 0).astype(int)
    >>> fit_linear_probe(x, y).predict(x[:3]).tolist() == y[:3].tolist()
    True
    """
    import torch

    x = as_float(features, "features", ndim=2)
    codes, classes = remap_labels(labels, "labels")
    check_same_length("features", x, "labels", codes)
    if len(classes) < 2:
        raise ValueError(f"labels: the probe needs at least two classes in the train split, got {len(classes)}")
    if C <= 0:
        raise ValueError(f"C: must be positive, got {C}")
    std = Standardizer.fit(x) if standardize else Standardizer(np.zeros(x.shape[1]), np.ones(x.shape[1]))
    xs = torch.from_numpy(std(x))
    y = torch.from_numpy(codes)
    n, d = xs.shape
    k = len(classes)
    # two classes: one weight vector, scikit-learn's binary objective (softmax's two vectors would halve
    # the penalty on their difference, i.e. fit C=2); the decision columns are then ±½ of its logit
    rows = 1 if k == 2 else k
    w = torch.zeros(rows, d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(rows, dtype=torch.float64, requires_grad=True)
    # scaled objective (divided by C·n) so that tolerances do not depend on n
    lam = 1.0 / (C * n)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12 * tol,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = xs @ w.T + b
        if rows == 1:
            data = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.to(torch.float64))
        else:
            data = torch.nn.functional.cross_entropy(logits, y)
        loss = data + 0.5 * lam * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad(), torch.inference_mode(False):
        opt.step(closure)
    state = opt.state[opt._params[0]]
    n_iter = int(state.get("n_iter", 0))
    weight, bias = w.detach().numpy().copy(), b.detach().numpy().copy()
    if rows == 1:  # softmax([-z/2, z/2]) = [1 - sigmoid(z), sigmoid(z)]
        weight, bias = np.concatenate([-weight, weight]) / 2, np.concatenate([-bias, bias]) / 2
    return LinearProbe(weight, bias, std, classes, converged=n_iter < max_iter, n_iter=n_iter)


def knn_predict(train_features: Any, train_labels: Any, test_features: Any, *, k: int = 20,
                metric: str = "cosine") -> np.ndarray:
    """The k-NN probe: labels (M) of the test rows (M×D) by a majority vote of their ``k`` nearest train rows (N×D).

    Features are used as given (the k-NN gates pass the model's raw frozen features, not standardised).
    ``metric``: ``"cosine"`` (1 − cosine similarity) or ``"euclidean"``; uniform votes; a tied vote goes to
    the smallest class label; train rows at equal distance by row order: the conventions of scikit-learn's
    ``KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute")``, which it equals
    (``pytest_transfer/metrics/_knn.py``). ``k`` must be below the smallest class's train count (``k = 1``
    always allowed), else a ``ValueError`` says which class and what ``k`` to pass.

    >>> knn_predict([[0.0, 1], [0, 2], [1, 0], [2, 0]], [0, 0, 1, 1], [[0.1, 1], [1, 0.1]], k=1).tolist()
    [0, 1]
    """
    from ._knn import METRICS, check_k, distance_blocks, nearest, unit_rows, vote

    xtr = as_float(train_features, "train_features", ndim=2)
    xte = as_float(test_features, "test_features", ndim=2)
    codes, classes = remap_labels(train_labels, "train_labels")
    check_same_length("train_features", xtr, "train_labels", codes)
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"test_features: {xte.shape[1]} dimensions but the train features have {xtr.shape[1]}")
    if metric not in METRICS:
        raise ValueError(f"metric: expected 'cosine' or 'euclidean', got {metric!r}")
    k = check_k(k, np.bincount(codes, minlength=len(classes)), classes, what="the train split")
    if metric == "cosine":
        xtr, xte = unit_rows(xtr), unit_rows(xte)
    out = np.empty(len(xte), dtype=np.int64)
    for start, dist in distance_blocks(xte, xtr, metric):
        out[start : start + len(dist)] = vote(codes[nearest(dist, k)], len(classes))
    return classes[out]
