"""Classification metrics: accuracy, precision / recall / F1, confusion matrix, ROC AUC, calibration.

Conventions (the same as scikit-learn's, so a number here can be checked there):

* labels are integers; ``y_pred`` holds predicted labels (take ``argmax`` of scores first);
* precision / recall / F1 score the sorted union of the labels seen in ``y_true`` and
  ``y_pred`` (or the ``labels=`` given); a score whose denominator is zero counts as 0.0,
  which is scikit-learn's default ``zero_division`` behaviour (without the warning);
* ``probs`` are N×C class probabilities whose column ``j`` is the probability of class ``j``;
  rows that do not look like probabilities (logits) are refused.

Everything is computed in float64; numpy arrays and torch tensors are accepted.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._checks import as_float, as_int_labels, check_nonempty, check_probabilities, check_same_length, declare

__all__ = [
    "ReliabilityCurve",
    "accuracy",
    "confusion_matrix",
    "expected_calibration_error",
    "f1_score",
    "precision_score",
    "recall_score",
    "reliability_curve",
    "roc_auc",
]

_AVERAGES = ("macro", "micro", "weighted")


# ----------------------------------------------------------------------------- helpers


def _label_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = as_int_labels(y_true, "y_true")
    p = as_int_labels(y_pred, "y_pred")
    check_same_length("y_true", t, "y_pred", p)
    check_nonempty("y_true", t)
    return t, p


def _check_average(average: str, allowed: tuple[str, ...] = _AVERAGES) -> None:
    if average not in allowed:
        raise ValueError(f"average: got {average!r}; use one of {', '.join(repr(a) for a in allowed)}")


def _per_label_counts(t: np.ndarray, p: np.ndarray, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, predicted counts and true counts (supports) for each scored label."""
    if labels is None:
        scored = np.union1d(t, p)
    else:
        scored = as_int_labels(labels, "labels")
        if scored.size == 0:
            raise ValueError("labels: is empty; pass the labels to score, or None for every label seen")
        if np.unique(scored).size != scored.size:
            raise ValueError(f"labels: contains duplicates ({scored.tolist()}); pass each label once")
    universe = np.union1d(np.union1d(t, p), scored)
    k = universe.size
    ti = np.searchsorted(universe, t)
    pi = np.searchsorted(universe, p)
    si = np.searchsorted(universe, scored)
    tp = np.bincount(ti[ti == pi], minlength=k)[si].astype(np.float64)
    pred = np.bincount(pi, minlength=k)[si].astype(np.float64)
    true = np.bincount(ti, minlength=k)[si].astype(np.float64)
    return tp, pred, true


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0.0 where ``den`` is 0 (scikit-learn's default zero_division)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _prf(y_true: Any, y_pred: Any, average: str, labels: Any, which: str) -> float:
    _check_average(average)
    t, p = _label_pair(y_true, y_pred)
    tp, pred, true = _per_label_counts(t, p, labels)
    if which == "precision":
        num, den = tp, pred
    elif which == "recall":
        num, den = tp, true
    else:  # F1 = 2 TP / (2 TP + FP + FN), scikit-learn's form (0 when undefined)
        num, den = 2.0 * tp, pred + true
    if average == "micro":
        return float(_divide(np.array([num.sum()]), np.array([den.sum()]))[0])
    scores = _divide(num, den)
    if average == "macro":
        return float(scores.mean())
    total = true.sum()
    return float(np.dot(scores, true) / total) if total > 0 else 0.0


def _prob_matrix(probs: Any, name: str = "probs") -> np.ndarray:
    """N×C probabilities; a 1-d array is read as P(class 1) of a binary problem."""
    pr = as_float(probs, name, ndim=(1, 2))
    if pr.ndim == 1:
        if pr.size and (pr.min() < 0.0 or pr.max() > 1.0):
            raise ValueError(
                f"{name}: a 1-d array must hold P(class 1) in [0, 1], got values in "
                f"[{pr.min():.4g}, {pr.max():.4g}]; pass sigmoid(logit) or an N×C probability matrix"
            )
        pr = np.column_stack([1.0 - pr, pr])
    elif pr.shape[1] < 2:
        raise ValueError(
            f"{name}: got shape {tuple(pr.shape)}; pass an N×C matrix of class probabilities (C >= 2) "
            "or a 1-d array of P(class 1)"
        )
    check_probabilities(pr, name)
    return pr


def _check_labels_fit_columns(t: np.ndarray, n_columns: int, name: str = "probs") -> None:
    low, high = int(t.min()), int(t.max())
    if low < 0 or high >= n_columns:
        raise ValueError(
            f"{name}: has {n_columns} columns but y_true contains label {low if low < 0 else high}; "
            f"column j must hold the probability of class j, so labels must lie in 0..{n_columns - 1}. "
            "Remap the labels or pass probabilities over every class"
        )


def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC: P(score_pos > score_neg) + ½ P(tie), from average ranks."""
    n = scores.size
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    pos = positive[order].astype(np.float64)
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    ends = np.append(starts[1:], n)
    mean_rank = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    rank_sum = float(np.dot(mean_rank, np.add.reduceat(pos, starts)))
    n_pos = float(pos.sum())
    n_neg = n - n_pos
    return (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)


# ----------------------------------------------------------------------------- label metrics


@declare(higher_is_better=True, bounds=(0.0, 1.0))
def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of samples whose predicted label equals the true label.

    >>> accuracy([0, 1, 2, 2], [0, 1, 1, 2])
    0.75
    """
    t, p = _label_pair(y_true, y_pred)
    return float(np.count_nonzero(t == p) / t.size)


@declare(higher_is_better=True, bounds=(0.0, 1.0))
def precision_score(y_true: Any, y_pred: Any, *, average: str = "macro", labels: Any = None) -> float:
    """Precision TP / (TP + FP), averaged over labels; equal to ``sklearn.metrics.precision_score``.

    ``average``: ``"macro"`` (unweighted mean over labels), ``"micro"`` (pooled counts; equals
    accuracy when every label is scored) or ``"weighted"`` (mean weighted by each label's
    support in ``y_true``). A label never predicted has precision 0.0.

    >>> round(precision_score([0, 0, 1, 1], [0, 1, 1, 1]), 4)
    0.8333
    """
    return _prf(y_true, y_pred, average, labels, "precision")


@declare(higher_is_better=True, bounds=(0.0, 1.0))
def recall_score(y_true: Any, y_pred: Any, *, average: str = "macro", labels: Any = None) -> float:
    """Recall TP / (TP + FN), averaged over labels; equal to ``sklearn.metrics.recall_score``.

    Macro recall is the balanced accuracy when every true label is scored.

    >>> recall_score([0, 0, 1, 1], [0, 1, 1, 1])
    0.75
    """
    return _prf(y_true, y_pred, average, labels, "recall")


@declare(higher_is_better=True, bounds=(0.0, 1.0))
def f1_score(y_true: Any, y_pred: Any, *, average: str = "macro", labels: Any = None) -> float:
    """F1 = 2 TP / (2 TP + FP + FN) per label, averaged; equal to ``sklearn.metrics.f1_score``.

    >>> round(f1_score([0, 0, 1, 1], [0, 1, 1, 1]), 4)
    0.7333
    """
    return _prf(y_true, y_pred, average, labels, "f1")


def confusion_matrix(y_true: Any, y_pred: Any, *, num_classes: int | None = None) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``i`` predicted as class ``j`` (int64).

    With ``num_classes`` the rows and columns are the labels ``0..num_classes-1`` (labels outside
    that range are refused). Without it they are the sorted union of the labels in ``y_true``
    and ``y_pred``, as in ``sklearn.metrics.confusion_matrix``.

    >>> confusion_matrix([0, 1, 2, 2], [0, 2, 2, 2]).tolist()
    [[1, 0, 0], [0, 0, 1], [0, 0, 2]]
    """
    t, p = _label_pair(y_true, y_pred)
    if num_classes is None:
        classes = np.union1d(t, p)
        k = classes.size
        ti, pi = np.searchsorted(classes, t), np.searchsorted(classes, p)
    else:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes: got {num_classes!r}; pass a positive integer or None")
        k = int(num_classes)
        for name, a in (("y_true", t), ("y_pred", p)):
            bad = a[(a < 0) | (a >= k)]
            if bad.size:
                raise ValueError(
                    f"{name}: contains label {int(bad[0])} outside 0..{k - 1} (num_classes={k}); "
                    "raise num_classes or pass num_classes=None to use the labels seen"
                )
        ti, pi = t, p
    return np.bincount(ti * k + pi, minlength=k * k).reshape(k, k).astype(np.int64)


# ----------------------------------------------------------------------------- score metrics


@declare(higher_is_better=True, bounds=(0.0, 1.0))
def roc_auc(y_true: Any, probs: Any, *, average: str = "macro") -> float:
    """One-vs-rest area under the ROC curve, equal to scikit-learn's ``roc_auc_score``.

    Each class ``j`` present in ``y_true`` is scored as the Mann-Whitney statistic of
    ``probs[:, j]`` (class ``j`` against the rest), ties counting one half (average ranks).
    ``average="macro"`` takes the plain mean over the classes present, ``"weighted"`` weights
    them by their support, ``"micro"`` pools every (sample, class) pair. Classes absent from
    ``y_true`` are not scored (scikit-learn returns NaN for such input).

    Binary problems: an N×2 matrix is scored on its class-1 column, exactly as
    ``roc_auc_score(y, probs[:, 1])``; a 1-d array (or N×1) is read as scores of the larger of
    the two labels and may hold any real numbers (AUC only uses their order).

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    _check_average(average)
    t = as_int_labels(y_true, "y_true")
    scores = as_float(probs, "probs", ndim=(1, 2))
    check_same_length("y_true", t, "probs", scores)
    check_nonempty("y_true", t)
    classes = np.unique(t)
    if classes.size < 2:
        raise ValueError(
            f"y_true: contains only class {int(classes[0])}; ROC AUC needs both positives and "
            "negatives. Evaluate on a split with at least two classes"
        )

    if scores.ndim == 1 or scores.shape[1] == 1:
        if classes.size != 2:
            raise ValueError(
                f"probs: a 1-d array of scores needs binary labels, but y_true has {classes.size} classes; "
                "pass the N×C probability matrix"
            )
        return _binary_auc(t == classes[1], scores.reshape(-1))

    check_probabilities(scores, "probs")
    n_columns = scores.shape[1]
    _check_labels_fit_columns(t, n_columns)
    if n_columns == 2:
        return _binary_auc(t == 1, scores[:, 1])
    if average == "micro":
        onehot = t[:, None] == np.arange(n_columns)[None, :]
        return _binary_auc(onehot.reshape(-1), scores.reshape(-1))
    aucs = np.array([_binary_auc(t == c, scores[:, c]) for c in classes])
    if average == "macro":
        return float(aucs.mean())
    support = np.array([np.count_nonzero(t == c) for c in classes], dtype=np.float64)
    return float(np.dot(aucs, support) / support.sum())


class ReliabilityCurve(NamedTuple):
    """Per-bin statistics of a reliability diagram (``n_bins`` entries each).

    Bin ``i`` covers confidences in ``(i/n_bins, (i+1)/n_bins]`` (the first bin also holds 0);
    the edges are ``np.linspace(0, 1, n_bins + 1)``. Empty bins have ``count`` 0 and NaN
    ``confidence`` and ``accuracy``.
    """

    confidence: np.ndarray
    """mean top-1 confidence of the samples in the bin"""
    accuracy: np.ndarray
    """fraction of the bin's samples whose top-1 prediction is right"""
    count: np.ndarray
    """number of samples in the bin (int64)"""


def _top1_bins(y_true: Any, probs: Any, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins: got {n_bins!r}; pass a positive integer (15 is the usual choice)")
    t = as_int_labels(y_true, "y_true")
    pr = _prob_matrix(probs)
    check_same_length("y_true", t, "probs", pr)
    check_nonempty("y_true", t)
    _check_labels_fit_columns(t, pr.shape[1])
    confidence = pr.max(axis=1)
    correct = (pr.argmax(axis=1) == t).astype(np.float64)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    # side="left": edges[i] < conf <= edges[i + 1] lands in bin i; conf == 0 goes to bin 0.
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, int(n_bins) - 1)
    return confidence, correct, bins


def reliability_curve(y_true: Any, probs: Any, *, n_bins: int = 15) -> ReliabilityCurve:
    """Mean top-1 confidence, accuracy and sample count in equal-width confidence bins.

    The data of a reliability diagram (Guo et al. 2017, "On Calibration of Modern Neural
    Networks"); see :class:`ReliabilityCurve` for the binning.

    >>> curve = reliability_curve([0, 1], [[0.9, 0.1], [0.8, 0.2]], n_bins=2)
    >>> curve.count.tolist(), curve.accuracy.tolist()
    ([0, 2], [nan, 0.5])
    """
    confidence, correct, bins = _top1_bins(y_true, probs, n_bins)
    count = np.bincount(bins, minlength=n_bins).astype(np.int64)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        acc = np.where(count > 0, correct_sum / count, np.nan)
    return ReliabilityCurve(confidence=mean_conf, accuracy=acc, count=count)


@declare(higher_is_better=False, bounds=(0.0, 1.0))
def expected_calibration_error(y_true: Any, probs: Any, *, n_bins: int = 15) -> float:
    """Expected calibration error of the top-1 prediction (Guo et al. 2017; Naeini et al. 2015).

    ``ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|`` over ``n_bins`` equal-width bins of
    the top-1 confidence ``max_j probs[i, j]``, bin ``b`` covering ``(b/n_bins, (b+1)/n_bins]``.
    The top-1 prediction is ``argmax`` (ties go to the lower class). 0 is perfectly calibrated;
    lower is better. ``probs`` is N×C (or 1-d P(class 1)).

    >>> expected_calibration_error([0, 1], [[0.75, 0.25], [0.75, 0.25]], n_bins=2)
    0.25
    """
    confidence, correct, bins = _top1_bins(y_true, probs, n_bins)
    gap = np.bincount(bins, weights=correct - confidence, minlength=n_bins)
    return float(np.abs(gap).sum() / confidence.size)
