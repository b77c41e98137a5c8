"""Agreement between a ranking of models by a score and their measured accuracies.

Transferability estimators are judged by how well their scores order a model
zoo compared with the accuracy each model reaches after transfer. The papers
report Kendall's tau and, mostly, the hyperbolic-weighted Kendall tau of
Vigna (2015), which cares more about the top of the ranking.

Both are O(n²) in the number of models (pairwise comparisons in blocks), which
is instant for model zoos; no scipy is needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import as_float, check_same_length, declare

_BLOCK = 512


def _pair_sums(x: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> tuple[float, float, float]:
    """Sums over pairs i < j of W_ij·sgn(x)·sgn(y), W_ij·[x_i ≠ x_j] and W_ij·[y_i ≠ y_j].

    ``W_ij = w_i + w_j`` (additive weights) or 1 when ``w`` is None.
    """
    n = len(x)
    num = den_x = den_y = 0.0
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        rows = np.arange(start, stop)
        upper = rows[:, None] < np.arange(n)[None, :]  # each pair once
        sx = np.sign(x[start:stop, None] - x[None, :]) * upper
        sy = np.sign(y[start:stop, None] - y[None, :]) * upper
        weight = 1.0 if w is None else w[start:stop, None] + w[None, :]
        num += float(np.sum(weight * sx * sy))
        den_x += float(np.sum(weight * (sx != 0)))
        den_y += float(np.sum(weight * (sy != 0)))
    return num, den_x, den_y


def _validated(scores: Any, accuracies: Any) -> tuple[np.ndarray, np.ndarray]:
    x = as_float(scores, "scores", ndim=1)
    y = as_float(accuracies, "accuracies", ndim=1)
    check_same_length("scores", x, "accuracies", y)
    if len(x) < 2:
        raise ValueError(f"scores: got {len(x)} model(s); a rank correlation needs at least 2 models")
    return x, y


def _ratio(num: float, den_x: float, den_y: float) -> float:
    if den_x == 0 or den_y == 0:
        which = "scores" if den_x == 0 else "accuracies"
        raise ValueError(
            f"{which}: all values are equal, so they define no ranking and the correlation is undefined; "
            "compare models whose values differ"
        )
    return float(num / np.sqrt(den_x * den_y))


def _hyperbolic_tau(x: np.ndarray, y: np.ndarray) -> float:
    # rank 0 = largest x, ties in x broken by larger y (decreasing lexicographic order of (x, y))
    order = np.lexsort((y, x))[::-1]
    rank = np.empty(len(x), dtype=np.int64)
    rank[order] = np.arange(len(x))
    return _ratio(*_pair_sums(x, y, 1.0 / (rank + 1.0)))


@declare(higher_is_better=True, bounds=(-1.0, 1.0))
def weighted_kendall_tau(scores: Any, accuracies: Any) -> float:
    """Hyperbolic-weighted Kendall tau between estimator scores and accuracies (Vigna 2015).

    A pair of models (i, j) weighs ``1/(r_i + 1) + 1/(r_j + 1)``, where r is the
    rank (0 = best) in the decreasing lexicographic order of (score, accuracy);
    the result averages that with the same quantity ranked by (accuracy, score).
    Ties follow tau-b. This is the value of ``scipy.stats.weightedtau(scores,
    accuracies)`` with its defaults, the "weighted τ" of the transferability papers.

    >>> round(weighted_kendall_tau([0.1, 0.4, 0.3], [0.70, 0.90, 0.80]), 6)
    1.0
    >>> round(weighted_kendall_tau([0.1, 0.4, 0.3], [0.90, 0.70, 0.80]), 6)
    -1.0
    """
    x, y = _validated(scores, accuracies)
    return 0.5 * (_hyperbolic_tau(x, y) + _hyperbolic_tau(y, x))


@declare(higher_is_better=True, bounds=(-1.0, 1.0))
def kendall_tau(scores: Any, accuracies: Any) -> float:
    """Kendall's tau-b between two sequences (the default of ``scipy.stats.kendalltau``).

    ``(concordant - discordant) / sqrt((pairs - ties_x) * (pairs - ties_y))``.

    >>> round(kendall_tau([1, 2, 3, 4], [10, 20, 40, 30]), 6)
    0.666667
    """
    x, y = _validated(scores, accuracies)
    return _ratio(*_pair_sums(x, y, None))
