"""The one k-nearest-neighbour vote behind the k-NN probe (:func:`pytest_transfer.metrics.probes.knn_predict`) and the
leave-one-out estimator (:func:`pytest_transfer.metrics.knn_accuracy`).

Conventions (those of scikit-learn's ``KNeighborsClassifier(n_neighbors=k, weights="uniform",
algorithm="brute", metric=...)``, which the tests compare with, ties included):

* distance: ``"cosine"`` is ``1 − cos(x, y)`` (an all-zero row has similarity 0 to everything, distance 1),
  ``"euclidean"`` the L2 distance (compared squared: the same order);
* the ``k`` nearest rows vote, one vote each (uniform weights);
* a tied vote goes to the smallest class label (scikit-learn's ``mode``); rows at equal distance across the
  k-th place are taken by row order (lowest index first), where scikit-learn's order is left to its sort;
* ``k`` must be smaller than the smallest class's count of rows that can vote (:func:`check_k`; ``k = 1``, a
  nearest-neighbour rule without a vote, is always allowed): with as many neighbours as a class has voters,
  every query of that class is outvoted by the larger classes (k = 20 on 9 + 9 separable images gives the
  majority class to every query), so such a ``k`` is refused instead of capped.

Features are used as given: the callers say whether they standardised them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

METRICS = ("cosine", "euclidean")


def check_k(k: object, counts: np.ndarray, classes: np.ndarray, *, what: str, voters_offset: int = 0) -> int:
    """``k`` as an int, refused (``ValueError``) unless ``k == 1`` or ``1 < k < min(counts) − voters_offset``.

    ``counts`` are the rows per class that can vote (``voters_offset=1`` for leave-one-out: the query itself
    never votes); ``what`` names the data in the message.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: must be a positive integer number of neighbours, got {k!r}")
    voters = counts - voters_offset
    smallest = int(np.argmin(voters))
    if int(k) > 1 and int(k) >= int(voters[smallest]):
        own = "other " if voters_offset else ""
        most = int(voters[smallest]) - 1
        name = np.asarray(classes)[smallest].tolist()
        fix = f"pass k <= {most}" if most > 1 else "pass k=1"
        raise ValueError(
            f"k: k={int(k)} neighbours but class {name!r} has only {int(counts[smallest])} sample(s) in "
            f"{what}, so at most {int(voters[smallest])} {own}member(s) of it can vote and its queries are outvoted "
            f"by the larger classes; {fix} (k must be below the smallest class's voters), or add samples of that class"
        )
    return int(k)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def distance_blocks(queries: np.ndarray, refs: np.ndarray, metric: str, *, max_elements: int = 4_000_000
                    ) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, D)`` for consecutive blocks of query rows: ``D[i, j]`` orders the distance of query
    ``start + i`` to reference row ``j`` (cosine distance; squared euclidean). Cosine inputs must be unit rows."""
    sq = None if metric == "cosine" else np.einsum("ij,ij->i", refs, refs)
    block = max(1, min(len(queries), max_elements // max(1, len(refs))))
    for start in range(0, len(queries), block):
        q = queries[start : start + block]
        if sq is None:
            yield start, 1.0 - q @ refs.T
        else:
            yield start, np.einsum("ij,ij->i", q, q)[:, None] + sq[None, :] - 2.0 * (q @ refs.T)


def nearest(dist: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest entries per row, ordered by (distance, column index)."""
    rows = dist.shape[0]
    kth = np.partition(dist, k - 1, axis=1)[:, k - 1 : k]
    less = dist < kth
    equal = dist == kth
    need = k - less.sum(axis=1, keepdims=True)
    take = less | (equal & (np.cumsum(equal, axis=1) <= need))  # ties at the boundary: lowest index
    idx = np.nonzero(take)[1].reshape(rows, k)  # ascending column index within each row
    order = np.argsort(np.take_along_axis(dist, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


def vote(votes: np.ndarray, n_classes: int) -> np.ndarray:
    """The majority class code of each row of ``votes`` (B×k class codes); a tie goes to the smallest code."""
    counts = np.zeros((votes.shape[0], n_classes), dtype=np.int64)
    np.add.at(counts, (np.arange(votes.shape[0])[:, None], votes), 1)
    return counts.argmax(axis=1)  # argmax returns the first (smallest) of tied maxima
