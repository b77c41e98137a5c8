"""Argument validation shared by every metric.

Metrics take numpy arrays or torch tensors and compute in float64. Each check
raises ``ValueError`` naming the argument, what was seen and how to fix it.
Nothing here imports torch: a tensor is recognised by its ``detach`` method.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

F = TypeVar("F", bound=Callable[..., Any])


def declare(*, higher_is_better: bool, bounds: tuple[float, float] | None = None) -> Callable[[F], F]:
    """Attach ``higher_is_better`` and ``bounds`` (the metric's range) to a metric function.

    ``bounds`` is ``(low, high)``; ``None`` or an infinite end means unbounded.
    Threshold validation and rankings read these attributes.
    """

    def wrap(fn: F) -> F:
        fn.higher_is_better = higher_is_better  # type: ignore[attr-defined]
        fn.bounds = bounds  # type: ignore[attr-defined]
        return fn

    return wrap


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a numpy array (tensors are detached and moved to the CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name}: cannot be read as an array ({exc}); pass a numpy array or a torch tensor") from exc


def as_float(x: Any, name: str, *, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """``x`` as a finite float64 array with the given number of dimensions."""
    a = to_numpy(x, name)
    if a.dtype == object:
        raise ValueError(f"{name}: expected a numeric array, got objects; pass a numpy array or a torch tensor")
    a = a.astype(np.float64, copy=False)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if a.ndim not in allowed:
            want = " or ".join(f"{d}-d" for d in allowed)
            raise ValueError(f"{name}: expected a {want} array, got shape {tuple(a.shape)}")
    if a.size and not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(
            f"{name}: contains {bad} NaN or Inf value(s); check the model's outputs "
            "(a diverged checkpoint or an fp16 overflow) before computing metrics"
        )
    return a


def as_int_labels(y: Any, name: str) -> np.ndarray:
    """``y`` as a 1-d int64 array of labels (integral floats are accepted)."""
    a = to_numpy(y, name)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(
            f"{name}: expected a 1-d array of integer labels, got shape {tuple(a.shape)}; "
            "pass class indices, not one-hot rows or scores (use argmax for predictions)"
        )
    if a.dtype.kind == "b":
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        if a.size and (not np.all(np.isfinite(a)) or np.any(a != np.round(a))):
            raise ValueError(f"{name}: labels must be integers, got non-integral floats")
        return a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name}: labels must be integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def remap_labels(y: Any, name: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary integer labels onto 0..C-1; return ``(codes, classes)``.

    Classes that do not occur get no code, so they are never scored as empty.
    """
    a = as_int_labels(y, name)
    classes, codes = np.unique(a, return_inverse=True)
    return codes.astype(np.int64), classes


def check_same_length(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ValueError(
            f"{name_a} and {name_b} have different lengths ({len(a)} vs {len(b)}); "
            "they must describe the same samples in the same order"
        )


def check_nonempty(name: str, a: np.ndarray) -> None:
    if len(a) == 0:
        raise ValueError(f"{name}: is empty; at least one sample is needed")


def check_min_classes(codes: np.ndarray, name: str = "labels", minimum: int = 2) -> int:
    n_classes = int(codes.max()) + 1 if codes.size else 0
    if n_classes < minimum:
        raise ValueError(
            f"{name}: found {n_classes} distinct class(es); this metric needs at least {minimum}. "
            "Check the split or the label column"
        )
    return n_classes


def check_min_per_class(codes: np.ndarray, classes: np.ndarray, name: str = "labels", minimum: int = 2) -> None:
    counts = np.bincount(codes, minlength=len(classes))
    small = [int(classes[i]) for i in np.flatnonzero(counts < minimum)]
    if small:
        raise ValueError(
            f"{name}: class(es) {small} have fewer than {minimum} samples; this metric needs "
            f"{minimum} per class. Add samples or drop those classes"
        )


def check_probabilities(p: np.ndarray, name: str, *, atol: float = 1e-4) -> None:
    """Reject rows that are not probability distributions (e.g. logits)."""
    if p.size == 0:
        return
    if np.any(p < -atol) or np.any(p > 1 + atol):
        raise ValueError(
            f"{name}: values outside [0, 1] (min {p.min():.4g}, max {p.max():.4g}); these look like "
            "logits, pass softmax(logits) instead"
        )
    sums = p.sum(axis=1)
    worst = float(np.max(np.abs(sums - 1.0)))
    if worst > atol * max(1, p.shape[1]) and worst > 1e-3:
        raise ValueError(
            f"{name}: rows must sum to 1 (worst row sums to {sums[np.argmax(np.abs(sums - 1.0))]:.4g}); "
            "pass class probabilities, e.g. softmax(logits)"
        )


def rounding_tolerance(n: int) -> float:
    """Relative size of the rounding error of a mean of ``n`` float64 values (pairwise summation), with margin.

    Differences below ``rounding_tolerance(n) · |values|`` are rounding, not data: a float64
    column of ten 0.1s has a mean that differs from 0.1 in the last bit, while a float32
    column that differs by one float32 step differs by 6e-8 relative, far above this.
    """
    return 16.0 * (math.log2(max(n, 1)) + 2.0) * float(np.finfo(np.float64).eps)


def centre_columns(x: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """``x`` minus its column means, with the columns that are constant up to rounding set to exactly 0.

    ``in_place=True`` centres ``x`` itself (a float array the caller owns) and returns it.

    Without this a constant float64 column (0.1 ten times) keeps residues of 1e-17 after
    centring, which scale-free metrics then read as a direction of its own (CKA of two
    constant representations would be 1.0), while the same data in float32 centres to
    zeros: the verdict would depend on the dtype.
    """
    constant = None
    if x.size:  # the range is read before an in-place centring changes x
        high, low = x.max(axis=0), x.min(axis=0)  # two passes, no temporaries
        constant = high - low <= rounding_tolerance(len(x)) * np.maximum(np.abs(high), np.abs(low))
    xc = np.subtract(x, x.mean(axis=0), out=x if in_place else None)
    if constant is not None and constant.any():
        xc[:, constant] = 0.0
    return xc


def check_covariance_sample(xc: np.ndarray, n_classes: int, method: str, fix: str) -> None:
    """Refuse ``N - C`` samples fewer than the dimensions the centred features ``xc`` span.

    A within-class covariance estimated from ``N - C`` degrees of freedom is singular on
    the span of the features when ``N - C < rank``; a method that inverts it (H-score's
    pseudo-inverse, SFDA's discriminant) then separates any labels exactly, pure noise
    included, and returns its best score.
    """
    n, d = xc.shape
    if n - n_classes >= d:
        return
    s = np.linalg.svd(xc, compute_uv=False)
    rank = int(np.sum(s > (s[0] if s.size else 0.0) * max(n, d) * np.finfo(np.float64).eps)) if s.size else 0
    if n - n_classes < rank:
        raise ValueError(
            f"features: {n} samples in {n_classes} classes leave {n - n_classes} degrees of freedom for the "
            f"within-class covariance, fewer than the {rank} dimensions the features span; {method} would "
            f"separate any labels exactly (pure noise gets its best score). {fix}"
        )


def features_and_labels(features: Any, labels: Any, *, min_per_class: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated ``(X float64 N×D, y codes 0..C-1, C)`` for feature-based estimators."""
    x = as_float(features, "features", ndim=2)
    y, classes = remap_labels(labels, "labels")
    check_same_length("features", x, "labels", y)
    check_nonempty("features", x)
    c = check_min_classes(y)
    if min_per_class > 1:
        check_min_per_class(y, classes, minimum=min_per_class)
    return x, y, c
