"""Similarity of two representations of the same samples: linear CKA.

Kornblith et al. 2019, "Similarity of Neural Network Representations
Revisited": ``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` on the
Gram matrices ``K = X Xᵀ`` and ``L = Y Yᵀ`` of column-centred features. The
debiased variant replaces HSIC by the unbiased estimator of Song et al. 2012,
as Nguyen et al. 2021 ("Do Wide and Deep Networks Learn the Same Things?") do,
which removes the upward bias of CKA when the dimension is large relative to
the number of samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import as_float, centre_columns, check_nonempty, check_same_length, declare, rounding_tolerance


def _features(a: Any, name: str) -> np.ndarray:
    x = as_float(a, name, ndim=(1, 2))
    return x[:, None] if x.ndim == 1 else x


def _unbiased_hsic_terms(
    inner: float, a: np.ndarray, b: np.ndarray, sum_k: float, sum_l: float, k1: np.ndarray, l1: np.ndarray, n: int
) -> float:
    """Song et al. 2012 unbiased HSIC from summary quantities.

    ``inner = <K, L>_F``, ``a, b`` = diagonals of K, L, ``sum_k, sum_l`` = sums of
    all entries, ``k1 = K 1``, ``l1 = L 1``. The diagonals are removed here.
    """
    trace_kl = inner - float(a @ b)
    sk = sum_k - float(a.sum())
    sl = sum_l - float(b.sum())
    cross = float((k1 - a) @ (l1 - b))
    return (trace_kl + sk * sl / ((n - 1) * (n - 2)) - 2.0 * cross / (n - 2)) / (n * (n - 3))


def _ratio(xy: float, xx: float, yy: float, debiased: bool) -> float:
    if xx <= 0 or yy <= 0:
        which = "x" if xx <= 0 else "y"
        if debiased:
            raise ValueError(
                f"{which}: its debiased self-similarity is not positive (constant features or too few samples "
                "for the unbiased estimator); pass more samples or use debiased=False"
            )
        raise ValueError(f"{which}: all samples are identical (zero variance); CKA is undefined for constant features")
    return float(xy / np.sqrt(xx * yy))


@declare(higher_is_better=True, bounds=(-1.0, 1.0))
def linear_cka(x: Any, y: Any, *, debiased: bool = False) -> float:
    """Linear CKA between two representations (rows = the same samples).

    Features are centred per column; then, in the feature-space form,
    ``CKA = ||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F)`` (Kornblith et al. 2019), in
    [0, 1], invariant to orthogonal transforms and isotropic scaling of either
    side. ``debiased=True`` uses the unbiased HSIC estimator (Song et al. 2012),
    as in Nguyen et al. 2021; it needs at least 4 samples and may be slightly
    negative for unrelated representations.

    The cheaper of the feature-space (D×D) and sample-space (N×N) forms is used.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 8))
    >>> round(linear_cka(x, 3.0 * x), 6)
    1.0
    """
    a = _features(x, "x")
    b = _features(y, "y")
    check_same_length("x", a, "y", b)
    check_nonempty("x", a)
    n = len(a)
    if n < (4 if debiased else 2):
        raise ValueError(
            f"x: got {n} sample(s); linear CKA needs at least {4 if debiased else 2}"
            f"{' with debiased=True' if debiased else ''}"
        )
    a = centre_columns(a)  # constant up to rounding is constant: the same verdict for float32 and float64
    b = centre_columns(b)
    da, db = a.shape[1], b.shape[1]
    if n * n * (da + db) < n * (da * db + da * da + db * db):
        return cka_from_grams(a @ a.T, b @ b.T, debiased=debiased)
    xy = float(np.sum((b.T @ a) ** 2))
    xx = float(np.sum((a.T @ a) ** 2))
    yy = float(np.sum((b.T @ b) ** 2))
    if not debiased:
        return _ratio(xy, xx, yy, debiased)
    # centred features: K 1 = 0 and 1ᵀ K 1 = 0, only the diagonals remain
    da_, db_ = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b)
    zero = np.zeros(n)
    hxy = _unbiased_hsic_terms(xy, da_, db_, 0.0, 0.0, zero, zero, n)
    hxx = _unbiased_hsic_terms(xx, da_, da_, 0.0, 0.0, zero, zero, n)
    hyy = _unbiased_hsic_terms(yy, db_, db_, 0.0, 0.0, zero, zero, n)
    return _ratio(hxy, hxx, hyy, debiased)


def _gram(g: Any, name: str) -> np.ndarray:
    k = as_float(g, name, ndim=2)
    if k.shape[0] != k.shape[1]:
        raise ValueError(f"{name}: expected a square N×N Gram matrix, got shape {tuple(k.shape)}")
    check_nonempty(name, k)
    scale = max(float(np.max(np.abs(k))), np.finfo(np.float64).tiny)
    if not np.allclose(k, k.T, rtol=0.0, atol=1e-8 * scale):
        raise ValueError(f"{name}: a Gram matrix must be symmetric; pass K = F Fᵀ or a symmetric kernel matrix")
    return k


def _double_centre(k: np.ndarray) -> np.ndarray:
    """``H K H``; all zeros when what is left is rounding (a constant kernel), as for constant features."""
    kc = k - k.mean(axis=0) - k.mean(axis=1)[:, None] + k.mean()
    if np.abs(kc).max() <= rounding_tolerance(k.size) * np.abs(k).max():
        kc[:] = 0.0
    return kc


@declare(higher_is_better=True, bounds=(-1.0, 1.0))
def cka_from_grams(k: Any, l: Any, *, debiased: bool = False) -> float:
    """CKA between two N×N Gram (kernel) matrices of the same samples.

    ``HSIC(K, L) = <H K H, H L H>_F`` with the centring matrix ``H = I - 11ᵀ/N``
    and ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``. With linear kernels this
    equals :func:`linear_cka`; any positive semi-definite kernel (e.g. an empirical
    NTK) can be passed. ``debiased=True`` uses the unbiased HSIC of Song et al. 2012
    (needs N >= 4).

    >>> import numpy as np
    >>> f = np.random.default_rng(0).normal(size=(20, 5))
    >>> round(cka_from_grams(f @ f.T, 2.0 * f @ f.T), 6)
    1.0
    """
    kk = _gram(k, "k")
    ll = _gram(l, "l")
    if kk.shape != ll.shape:
        raise ValueError(f"k and l describe different numbers of samples ({kk.shape[0]} vs {ll.shape[0]})")
    n = kk.shape[0]
    if n < (4 if debiased else 2):
        raise ValueError(f"k: got {n} sample(s); CKA needs at least {4 if debiased else 2}")
    kc, lc = _double_centre(kk), _double_centre(ll)
    if not debiased or not kc.any() or not lc.any():  # a constant kernel is refused by both estimators
        return _ratio(float(np.sum(kc * lc)), float(np.sum(kc * kc)), float(np.sum(lc * lc)), debiased)
    a, b = np.diag(kk).copy(), np.diag(ll).copy()
    k1, l1 = kk.sum(axis=1), ll.sum(axis=1)
    sk, sl = float(k1.sum()), float(l1.sum())
    hxy = _unbiased_hsic_terms(float(np.sum(kk * ll)), a, b, sk, sl, k1, l1, n)
    hxx = _unbiased_hsic_terms(float(np.sum(kk * kk)), a, a, sk, sk, k1, k1, n)
    hyy = _unbiased_hsic_terms(float(np.sum(ll * ll)), b, b, sl, sl, l1, l1, n)
    return _ratio(hxy, hxx, hyy, debiased)
