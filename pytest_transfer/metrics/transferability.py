"""Transferability estimators: how well a frozen model should transfer to a target task.

Each function scores one model on one labelled target set, from its features
(N×D), its source-head probabilities (N×Z) or its hard source predictions.
Every score is "higher is better". Each estimator is declared once, in
:data:`pytest_transfer.estimators.ESTIMATORS` (label, direction, bounds and
``inputs``: ``"features"``, ``"probs"`` or ``"preds"``, what it must be fed);
``@estimator`` attaches that declaration to the function of the same name.
Maths is float64; numpy arrays and torch tensors are accepted.
Labels may be any integers; they are remapped to 0..C-1.

The functions never transform their input. Callers that rank models
(``assert_transferability_above``, ``rank_models``) standardise features first,
because scale-sensitive estimators otherwise rank models by the size of their
activations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

from ..estimators import BENCHMARK, ESTIMATORS
from ._checks import (
    as_float,
    as_int_labels,
    centre_columns,
    check_covariance_sample,
    check_min_classes,
    check_nonempty,
    check_probabilities,
    check_same_length,
    declare,
    features_and_labels,
    remap_labels,
    rounding_tolerance,
    to_numpy,
)

F = TypeVar("F", bound=Callable[..., Any])
_INF = float("inf")
_EPS = np.finfo(np.float64).eps
_LOG_2PI = math.log(2.0 * math.pi)

#: N-LEEP's minimum number of samples per mixture component (fewer: components fit a handful of samples each)
NLEEP_SAMPLES_PER_COMPONENT = 5


_REGISTERED: dict[str, Callable[..., float]] = {}


def estimator(fn: F) -> F:
    """Attach the declaration of :data:`pytest_transfer.estimators.ESTIMATORS` named like ``fn`` to it
    (``declaration``, and its ``higher_is_better``, ``bounds``, ``inputs``, ``label``): read, not declared again."""
    spec = ESTIMATORS[fn.__name__]
    fn.declaration = spec  # type: ignore[attr-defined]
    declare(higher_is_better=spec.higher_is_better, bounds=spec.bounds)(fn)
    fn.inputs = spec.inputs  # type: ignore[attr-defined]
    fn.label = spec.label  # type: ignore[attr-defined]
    fn.standardize = spec.standardize  # type: ignore[attr-defined]
    _REGISTERED[spec.name] = fn
    measured = BENCHMARK.get(spec.name)
    if measured is not None and fn.__doc__:  # the docstring states what the benchmark measured, from one table
        fn.__doc__ += ("\n\n    Measured agreement with held-out transfer (``benchmarks/bench_estimator_quality.py``): "
                       f"weighted τ {measured.weighted_tau:+.2f}, pairwise accuracy {measured.pairwise_accuracy:.2f}, "
                       f"{measured.seconds:.2f} s per model × target (N = 1,347)"
                       + ("; worse than chance there: gates warn" if measured.weighted_tau < 0 else "") + ".\n")
    return fn


def _one_hot(y: np.ndarray, c: int) -> np.ndarray:
    out = np.zeros((len(y), c))
    out[np.arange(len(y)), y] = 1.0
    return out


def _class_means(x: np.ndarray, y: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """``(means C×D, counts C)``; a matrix product, fast for large N."""
    onehot = _one_hot(y, c)
    counts = onehot.sum(axis=0)
    return (onehot.T @ x) / counts[:, None], counts


def _eigh_desc(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, v = np.linalg.eigh(a)
    return w[::-1], v[:, ::-1]


#: rows per diagonal block of :func:`_logdet_spd`
CHOLESKY_BLOCK = 160


def _logdet_spd(a: torch.Tensor) -> float:
    """``log det A`` of a symmetric positive definite float64 tensor, read from its upper triangle only.

    A right-looking block Cholesky factorisation ``A = UᵀU`` (Golub & Van Loan,
    *Matrix Computations*, 4th ed., §4.2; LAPACK's ``dpotrf`` is the same algorithm
    with its own block size) that overwrites A on and above the diagonal blocks: each
    diagonal block of :data:`CHOLESKY_BLOCK` rows is factorised by
    ``torch.linalg.cholesky_ex``, the block row to its right is solved with that
    factor (``solve_triangular``, in place), and the trailing matrix is updated block
    row by block row on and above its diagonal (``addmm``). ``log det A = 2 sum log
    U_ii``. At D = 1,280 on 2 CPU threads this takes 0.75× the time of one
    ``cholesky_ex`` of the whole matrix (which first copies it into column-major order
    and factorises with MKL's block size). A matrix that is not positive definite is a
    ``numpy.linalg.LinAlgError``.
    """
    import torch

    d = a.shape[0]
    total = 0.0
    for start in range(0, d, CHOLESKY_BLOCK):
        stop = min(start + CHOLESKY_BLOCK, d)
        factor, info = torch.linalg.cholesky_ex(a[start:stop, start:stop], upper=True)
        if int(info) != 0:
            raise np.linalg.LinAlgError("Matrix is not positive definite")
        total += 2.0 * float(torch.log(torch.diagonal(factor)).sum())
        if stop == d:
            break
        panel = a[start:stop, stop:]  # becomes U's block row: U_jjᵀ X = A_j,rest
        torch.linalg.solve_triangular(factor.mT, panel, upper=False, out=panel)
        for row in range(stop, d, CHOLESKY_BLOCK):  # A_rest -= XᵀX, on and above the diagonal blocks
            end = min(row + CHOLESKY_BLOCK, d)
            a[row:end, row:].addmm_(panel[:, row - stop:end - stop].mT, panel[:, row - stop:], alpha=-1.0)
    return total


# --------------------------------------------------------------------------- LogME


def _logme_basis(x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spectrum of ``FᵀF`` and the targets in its left singular basis.

    Returns ``(sigma, z2, r0)``: the r numerically non-zero eigenvalues of ``FᵀF``
    (equal to those of ``FFᵀ``), ``z2[i, c] = (u_iᵀ y_c)²`` for the left singular
    vectors u_i, and ``r0[c] = ||y_c||² - sum_i z2[i, c]``, the part of each target
    outside the column space of F. Uses the D×D Gram when N >= D, else the N×N one.
    """
    n, d = x.shape
    if n >= d:
        s, v = np.linalg.eigh(x.T @ x)
    else:
        s, v = np.linalg.eigh(x @ x.T)
    top = float(s.max()) if s.size else 0.0
    keep = s > top * max(n, d) * _EPS if top > 0 else np.zeros(s.shape, dtype=bool)
    sigma = s[keep]
    if n >= d:
        z2 = ((v[:, keep].T @ (x.T @ targets)) / np.sqrt(sigma)[:, None]) ** 2
        r0 = np.clip(np.sum(targets**2, axis=0) - z2.sum(axis=0), 0.0, None)
    else:  # v is a complete basis of R^N: the residual is read off, without cancellation
        z2 = (v.T @ targets) ** 2
        r0 = z2[~keep].sum(axis=0)
        z2 = z2[keep]
    return sigma, z2, r0


def _profile_evidence(t: np.ndarray, sig: np.ndarray, z2: np.ndarray, r0: np.ndarray, n: int) -> np.ndarray:
    """Log evidence at ``lambda = alpha / beta = exp(t)`` (one per class), maximised over beta.

    With ``E(lambda) = min_w ||y - F w||² + lambda ||w||² = sum_i lambda z_i² / (lambda + s_i) + r0``
    the optimal ``beta = N / E`` and the evidence is
    ``-1/2 sum_i log(1 + s_i / lambda) - N/2 log(E / N) - N/2 (1 + log 2 pi)``
    (the D - r zero eigenvalues of FᵀF cancel exactly between ``D/2 log alpha`` and
    ``-1/2 log|A|``).
    """
    lam = np.exp(t)
    energy = np.sum(lam * z2 / (lam + sig[:, None]), axis=0) + r0
    return (
        -0.5 * np.sum(np.log1p(sig[:, None] / lam), axis=0) - 0.5 * n * np.log(energy / n) - 0.5 * n * (1.0 + _LOG_2PI)
    )


def _grid_evidence(grid: np.ndarray, sig: np.ndarray, z2: np.ndarray, r0: np.ndarray, n: int) -> np.ndarray:
    """:func:`_profile_evidence` for every class at each grid point ``t`` (G×C): one λ per row, so the
    log-determinant is a G-vector and the energies one matrix product, instead of G×r×C element-wise terms."""
    lam = np.exp(grid)[:, None]  # G×1
    energy = (lam / (lam + sig[None, :])) @ z2 + r0  # G×C
    logdet = np.sum(np.log1p(sig[None, :] / lam), axis=1)  # G
    return -0.5 * logdet[:, None] - 0.5 * n * np.log(energy / n) - 0.5 * n * (1.0 + _LOG_2PI)


def _logme_per_class(x: np.ndarray, y: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum log evidence (not divided by N) and its ``(alpha, beta)`` for each class."""
    n = len(x)
    targets = _one_hot(y, c)
    sigma, z2, r0 = _logme_basis(x, targets)
    if sigma.size == 0:  # all-zero features: the prior is irrelevant
        energy = r0
        return -0.5 * n * np.log(energy / n) - 0.5 * n * (1.0 + _LOG_2PI), np.full(c, _INF), n / energy
    scale = float(sigma.mean())
    sig = sigma / scale  # scale-free: the evidence only depends on sigma / lambda
    # lambda ranges over [1e-12 * smallest, 1e12 * largest] eigenvalue: beyond that the evidence is flat
    lo = math.log(float(sig.min())) - 12 * math.log(10)
    hi = math.log(float(sig.max())) + 12 * math.log(10)
    grid = np.linspace(lo, hi, max(3, math.ceil((hi - lo) / 0.5) + 1))
    values = _grid_evidence(grid, sig, z2, r0, n)  # G×C
    best = np.argmax(values, axis=0)
    a = grid[np.maximum(best - 1, 0)]
    b = grid[np.minimum(best + 1, len(grid) - 1)]
    # golden-section search inside the bracket around the best grid point, all classes at once
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    t1, t2 = b - ratio * (b - a), a + ratio * (b - a)
    f1, f2 = _profile_evidence(t1, sig, z2, r0, n), _profile_evidence(t2, sig, z2, r0, n)
    for _ in range(80):
        left = f1 >= f2  # maximum in [a, t2]
        b = np.where(left, t2, b)
        a = np.where(left, a, t1)
        t2n = np.where(left, t1, a + ratio * (b - a))
        t1n = np.where(left, b - ratio * (b - a), t2)
        f_new = _profile_evidence(np.where(left, t1n, t2n), sig, z2, r0, n)
        f1, f2 = np.where(left, f_new, f2), np.where(left, f1, f_new)
        t1, t2 = t1n, t2n
        if np.all(b - a < 1e-12 * np.maximum(1.0, np.abs(a))):
            break
    t_star = np.where(f1 >= f2, t1, t2)
    evidence = np.maximum(f1, f2)
    grid_best = values[best, np.arange(c)]
    t_star = np.where(grid_best > evidence, grid[best], t_star)
    evidence = np.maximum(evidence, grid_best)
    lam = np.exp(t_star)
    energy = np.sum(lam * z2 / (lam + sig[:, None]), axis=0) + r0
    beta = n / energy
    return evidence, lam * scale * beta, beta


@estimator
def logme(features: Any, labels: Any) -> float:
    """LogME (You et al. 2021): the maximum marginal likelihood of a Bayesian linear head.

    For each class c, a linear model ``y_c = F w + noise`` with prior
    ``w ~ N(0, alpha⁻¹ I)`` and noise precision ``beta`` on the one-hot target y_c has
    log evidence ``D/2 log alpha + N/2 log beta - alpha/2 ||m||² - beta/2 ||y_c - F m||²
    - 1/2 log|alpha I + beta FᵀF| - N/2 log 2 pi``. LogME is the mean over classes of its
    maximum over (alpha, beta), divided by N.

    The maximum is the converged one, not a truncated iteration: one eigendecomposition
    of FᵀF (D×D) or FFᵀ (N×N), whichever is smaller, then, for all classes at once, the
    evidence profiled over beta is maximised over ``lambda = alpha / beta`` (a log-grid
    bracket and a golden-section search to 1e-12). Its stationary points are exactly the
    MacKay fixed points ``alpha = gamma / mᵀm``, ``beta = (N - gamma) / ||y - F m||²`` of the
    paper's iteration, which can need far more than 100 steps to converge. The full
    log-determinant, with the D - rank zero eigenvalues of FᵀF, is used, so the value is
    right when N < D, and it is invariant to multiplying the features by a constant.
    When N < D the maximum may lie at beta -> infinity (exact interpolation); its finite
    limit is returned. Noise-free features whose column space contains the labels
    (rank < N) have unbounded evidence: lambda stops at 1e-12 times the smallest non-zero
    eigenvalue, which gives a large, finite score.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 200)
    >>> good = rng.normal(size=(200, 16)) + 3 * np.eye(3, 16)[y]
    >>> bad = rng.normal(size=(200, 16))
    >>> logme(good, y) > logme(bad, y)
    True
    """
    x, y, c = features_and_labels(features, labels)
    evidence, _, _ = _logme_per_class(x, y, c)
    return float(np.mean(evidence) / len(x))


# --------------------------------------------------------------------------- LEEP / NCE


def _log_eep(probs: np.ndarray, y: np.ndarray, c: int) -> float:
    """Mean log expected empirical prediction, ``1/N sum_i log sum_z P(y_i|z) theta_z(x_i)``."""
    n = len(y)
    joint = _one_hot(y, c).T @ probs / n  # C×Z, P(y, z)
    marginal = joint.sum(axis=0)  # P(z)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y|z)
    eep = np.einsum("iz,iz->i", probs, cond[y])
    return float(np.mean(np.log(eep)))


@estimator
def leep(source_probs: Any, labels: Any) -> float:
    """LEEP (Nguyen et al. 2020), the log expected empirical prediction.

    With the source head's probabilities ``theta(x)`` over Z source classes, the
    empirical joint ``P(y, z) = 1/N sum_i theta_z(x_i) [y_i = y]`` gives ``P(y|z)``, and
    ``LEEP = 1/N sum_i log sum_z P(y_i|z) theta_z(x_i)`` (<= 0). Rows must be
    probabilities: logits or unnormalised scores are refused.

    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]])
    >>> round(leep(probs, [0, 0, 1, 1]), 4)  # (log 0.78 + log 0.71) / 2
    -0.2955
    """
    p = as_float(source_probs, "source_probs", ndim=2)
    y, _ = remap_labels(labels, "labels")
    check_same_length("source_probs", p, "labels", y)
    check_nonempty("source_probs", p)
    c = check_min_classes(y)
    check_probabilities(p, "source_probs")
    return _log_eep(np.clip(p, 0.0, None), y, c)


@estimator
def nce(source_pred: Any, labels: Any) -> float:
    """NCE (Tran et al. 2019), the negative conditional entropy ``-H(Y | Z)``.

    Z is the source model's hard prediction: integer class indices, or a matrix of
    probabilities or logits whose row-wise argmax is taken. ``-H(Y|Z) =
    sum_{y,z} P(y, z) log P(y | z)`` from the empirical joint; 0 when the source
    prediction determines the target label.

    >>> round(nce([0, 0, 1, 1], [5, 5, 7, 7]), 6)
    0.0
    >>> round(nce([0, 0, 0, 0], [5, 5, 7, 7]), 6)  # -log 2
    -0.693147
    """
    raw = to_numpy(source_pred, "source_pred")
    if raw.dtype.kind == "f":
        raw = as_float(raw, "source_pred", ndim=(1, 2))  # NaN / Inf get their own message
    if raw.ndim == 2 and raw.shape[1] > 1:
        z = np.argmax(as_float(raw, "source_pred", ndim=2), axis=1)
    else:
        z = as_int_labels(raw, "source_pred")
    y, _ = remap_labels(labels, "labels")
    check_same_length("source_pred", z, "labels", y)
    check_nonempty("source_pred", z)
    c = check_min_classes(y)
    _, z = np.unique(z, return_inverse=True)
    joint = np.bincount(z * c + y, minlength=(int(z.max()) + 1) * c).reshape(-1, c) / len(y)  # Z×C
    marginal = joint.sum(axis=1, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log((joint / marginal)[nz])))


# --------------------------------------------------------------------------- H-score


def _hscore_terms(x: np.ndarray, y: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Eigen-decomposed ``Cov(f)`` (1/N) and the centred class means in its eigenbasis.

    Returns ``(lam, q2, weights, extra)``: the eigenvalues ``lam`` of Cov(f) on its
    range, ``q2[i, c]`` the squared coordinate of ``mu_c - mu`` on eigenvector i, the
    class weights ``n_c / N``, and a few sums reused by the Ledoit-Wolf shrinkage. Works
    in the N×N sample space when N < D, so a wide feature matrix costs O(N² D).
    """
    n, d = x.shape
    xc = centre_columns(x)
    means, counts = _class_means(xc, y, c)
    weights = counts / n
    if n >= d:
        lam, v = np.linalg.eigh(xc.T @ xc / n)
        q2 = (v.T @ means.T) ** 2
        sq_norm_s = float(np.sum(lam**2))
    else:
        gram = xc @ xc.T
        s, u = np.linalg.eigh(gram)
        lam = s / n
        proj = u.T @ (xc @ means.T)  # U^T Xc (mu_c - mu); coordinate on v_i is proj_i / sqrt(s_i)
        # directions at rounding level (the one removed by centring, rank deficiency) carry no mean
        # difference; their coordinates would be rounding noise divided by sqrt(noise)
        real = s > max(float(s[-1]), 0.0) * max(n, d) * _EPS
        q2 = np.divide(proj**2, s[:, None], out=np.zeros_like(proj), where=real[:, None])
        sq_norm_s = float(np.sum(gram**2)) / n**2
    extra = {
        "n": n,
        "d": d,
        "trace": float(np.einsum("ij,ij->", xc, xc)) / n,
        "sq_norm": sq_norm_s,
        "fourth": float(np.sum(np.einsum("ij,ij->i", xc, xc) ** 2)),
    }
    return lam, q2, weights, extra


def _pinv_trace(lam: np.ndarray, q2: np.ndarray, weights: np.ndarray, numerator: float = 1.0) -> float:
    """``sum_c w_c sum_i numerator * q2[i, c] / lam_i`` over ``|lam_i| > 1e-15 max |lam|`` (pinv, rcond 1e-15)."""
    top = float(np.max(np.abs(lam))) if lam.size else 0.0
    keep = np.abs(lam) > 1e-15 * top
    if not np.any(keep):
        return 0.0
    return float(np.sum(weights * (numerator * q2[keep] / lam[keep, None])))


@estimator
def hscore(features: Any, labels: Any) -> float:
    """H-score (Bao et al. 2019): ``tr(pinv(Cov f) Cov(E[f|y]))``.

    The paper's trace, with both covariances normalised by N and the Moore-Penrose
    pseudo-inverse at ``rcond=1e-15`` (as ``numpy.linalg.pinv(cov, rcond=1e-15)``). It is
    the Fisher-like separability of the class means and never exceeds C - 1.
    One eigendecomposition of the D×D covariance, or of the N×N Gram when N < D.
    ``ValueError`` when ``N - C`` is smaller than the rank of the features: the
    within-class covariance is then singular on their span and any labels, pure noise
    included, get the best score C - 1 (:func:`regularized_hscore` is made for that case).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], 50)
    >>> x = rng.normal(size=(150, 4)) + 10 * np.eye(3, 4)[y]
    >>> 1.9 < hscore(x, y) <= 2.0
    True
    """
    x, y, c = features_and_labels(features, labels)
    check_covariance_sample(centre_columns(x), c, "H-score's pseudo-inverse covariance",
                            "Add samples, reduce the features (e.g. PCA), or use regularized_hscore (shrinkage)")
    lam, q2, weights, _ = _hscore_terms(x, y, c)
    return _pinv_trace(lam, q2, weights)


def _ledoit_wolf_shrinkage(extra: dict) -> tuple[float, float]:
    """Ledoit & Wolf (2004) shrinkage towards ``mu I``, ``mu = tr(S) / D``; returns ``(shrinkage, mu)``.

    ``d² = ||S - mu I||²_F / D`` and ``b² = (1/N² sum_k ||x_k x_kᵀ - S||²_F) / D``
    ``= (sum_k ||x_k||⁴ / N - ||S||²_F) / (N D)``; shrinkage ``min(b², d²) / d²``.
    """
    n, d = extra["n"], extra["d"]
    mu = extra["trace"] / d
    delta = (extra["sq_norm"] - d * mu**2) / d
    beta = (extra["fourth"] / n - extra["sq_norm"]) / (n * d)
    beta = min(beta, delta)
    return (0.0 if beta <= 0 or delta <= 0 else beta / delta), mu


@estimator
def regularized_hscore(features: Any, labels: Any) -> float:
    """Shrinkage H-score (Ibrahim et al. 2021): ``tr(Cov_a(f)⁻¹ (1 - a) Cov(E[f|y]))``.

    ``Cov_a = (1 - a) Cov(f) + a (tr Cov(f) / D) I`` is the Ledoit-Wolf estimator and
    ``a`` its shrinkage (the value of scikit-learn's ``LedoitWolf().shrinkage_``), both
    covariances normalised by N. Stable when D is large relative to N, where the
    plain H-score is dominated by noise; it also never exceeds C - 1.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20)
    >>> x = rng.normal(size=(40, 10)) + 2 * np.eye(2, 10)[y]
    >>> 0 < regularized_hscore(x, y) < hscore(x, y) <= 1.0 + 1e-9
    True
    >>> wide = rng.normal(size=(40, 100)) + 2 * np.eye(2, 100)[y]  # more dimensions than samples:
    >>> 0 < regularized_hscore(wide, y) < 1  # hscore(wide, y) refuses, its covariance being singular
    True
    """
    x, y, c = features_and_labels(features, labels)
    lam, q2, weights, extra = _hscore_terms(x, y, c)
    shrink, mu = _ledoit_wolf_shrinkage(extra)
    # eigenvalues of Cov_a on the range of Cov(f); the class means have no component elsewhere
    return _pinv_trace((1.0 - shrink) * lam + shrink * mu, q2, weights, numerator=1.0 - shrink)


# --------------------------------------------------------------------------- TransRate


#: columns per block of :func:`_upper_gram_into`
GRAM_BLOCK = 320


def _upper_gram_into(out: torch.Tensor, z: torch.Tensor, scale: float) -> list[tuple[slice, slice]]:
    """Write ``scale · zᵀz`` on and above the diagonal of ``out`` (D×D), in blocks of :data:`GRAM_BLOCK` rows;
    return the ``(rows, columns)`` blocks written.

    torch has no symmetric rank-k product (BLAS ``syrk``). Each block row is one
    product for the part right of its diagonal block plus two for the diagonal
    block's upper half (split once more), about 0.56 of a full product's work at
    D = 1,280 and 0.94× the time of whole diagonal blocks; each is written by the
    product itself (``addmm`` with ``beta=0``: no temporary, the scale applied in
    the product). Entries outside the blocks are left as they were:
    :func:`_logdet_spd` reads nothing else.
    """
    import torch

    d = z.shape[1]
    written = []
    for start in range(0, d, GRAM_BLOCK):
        stop = min(start + GRAM_BLOCK, d)
        half = (start + stop + 1) // 2
        written += [(slice(start, half), slice(start, stop)), (slice(half, stop), slice(half, stop)),
                    (slice(start, stop), slice(stop, d))]
    written = [(rows, cols) for rows, cols in written if rows.start < rows.stop and cols.start < cols.stop]
    for rows, cols in written:
        block = out[rows, cols]
        torch.addmm(block, z[:, rows].mT, z[:, cols], beta=0.0, alpha=scale, out=block)
    return written


def _rate_of_scaled_gram(a: torch.Tensor) -> float:
    """``1/2 logdet(I + A)`` for ``A = G / (rows eps)`` (float64, upper triangle read and overwritten)."""
    a.diagonal().add_(1.0)
    return 0.5 * _logdet_spd(a)


def _rate_of_rows(z: torch.Tensor, eps: float) -> float:
    """``1/2 logdet(I + ZᵀZ / (n eps))`` of n rows Z from their n×n Gram ``Z Zᵀ`` (Sylvester's determinant
    identity: ``det(I + AB) = det(I + BA)``)."""
    import torch

    gram = torch.empty((len(z), len(z)), dtype=torch.float64)
    _upper_gram_into(gram, z.mT, 1.0 / (len(z) * eps))
    return _rate_of_scaled_gram(gram)


def _d_form_is_cheaper(rows: int, d: int) -> bool:
    """Whether a class of ``rows`` rows takes its D×D log-determinant rather than its n×n one.

    The class's D×D Gram is part of the whole set's anyway, so the D×D form costs one
    Cholesky factorisation (D³/3 flops); the n×n form costs its own Gram (about 0.6 n² D
    multiply-adds with the block products) and a factorisation (n³/3). Here a Cholesky
    flop takes about as long as a product's multiply-add (measured at D = 1,280 on 2
    threads); the two forms cost the same near n = 0.62 D.
    """
    return 0.6 * rows * rows * d + rows**3 / 3 >= d**3 / 3


def _transrate_rates(x: np.ndarray, y: np.ndarray, c: int, eps: float) -> tuple[float, list[float]]:
    """``R(Z)`` and every ``R(Z_c)`` of the centred features, with one pass of D×D Gram products.

    Each class's rows are gathered and centred in one cache-sized piece. When
    N >= D the whole D×D Gram is the sum of the classes' D×D Grams: a class for which
    :func:`_d_form_is_cheaper` contributes its Gram and reuses it for its own
    log-determinant; the rows of the other classes take their n×n form and make one
    block whose D×D Gram is added. The D×D Gram products then cost one ``ZᵀZ`` in
    all, not two. Everything runs in torch: mixing numpy's BLAS with torch's LAPACK
    leaves each library's idle threads spinning on the cores the other needs (the
    factorisations took 3× longer).

    Centring does not zero the columns that are constant up to rounding (as
    :func:`centre_columns` does for scale-free metrics): their residues of about
    1e-17 change ``I + ZᵀZ / (n eps)`` by ``1e-34 / eps``, far below rounding.
    """
    import torch

    n, d = x.shape
    with warnings.catch_warnings():  # x may be read-only (the gates' shared standardised features): only read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        xt = torch.from_numpy(x)
    mean = xt.sum(dim=0).div_(n)
    counts = np.bincount(y, minlength=c)
    order = torch.from_numpy(np.argsort(y, kind="stable"))
    starts = np.concatenate([[0], np.cumsum(counts)])
    own_d = [n >= d and _d_form_is_cheaper(int(nc), d) for nc in counts]
    others = torch.cat([order[:0]] + [order[starts[k]:starts[k + 1]] for k in range(c) if not own_d[k]])
    rows_buffer = torch.empty((max(int(counts.max()), len(others)), d), dtype=torch.float64)

    def centred(rows: torch.Tensor) -> torch.Tensor:  # those rows of x, centred, in the reused buffer
        return torch.index_select(xt, 0, rows, out=rows_buffer[: len(rows)]).sub_(mean)

    if n < d:  # every class is smaller than D too: n×n forms throughout
        z = centred(others)
        return _rate_of_rows(z, eps), [_rate_of_rows(z[starts[k]:starts[k + 1]], eps) for k in range(c)]
    # only the Gram blocks on and above the diagonal are written and read
    whole = torch.zeros((d, d), dtype=torch.float64)
    gram = torch.empty((d, d), dtype=torch.float64)
    rates = [0.0] * c
    for k in range(c):
        z = centred(order[starts[k]:starts[k + 1]])
        if not own_d[k]:
            rates[k] = _rate_of_rows(z, eps)
            continue
        # whole = sum of G_c / (n eps) = sum of (n_c / n) · G_c / (n_c eps)
        for rows, cols in _upper_gram_into(gram, z, 1.0 / (counts[k] * eps)):
            whole[rows, cols].add_(gram[rows, cols], alpha=counts[k] / n)
        rates[k] = _rate_of_scaled_gram(gram)
    if len(others):
        for rows, cols in _upper_gram_into(gram, centred(others), 1.0 / (n * eps)):
            whole[rows, cols].add_(gram[rows, cols])
    return _rate_of_scaled_gram(whole), rates


@estimator
def transrate(features: Any, labels: Any, *, eps: float = 1e-4) -> float:
    """TransRate (Huang et al. 2022): the coding-rate gain of knowing the labels.

    Features are centred globally (not per class); ``R(Z) = 1/2 logdet(I + ZᵀZ / (n eps))``
    with n the number of rows of Z, and ``TransRate = R(Z) - mean_c R(Z_c)`` where Z_c
    are the rows of class c. Each log-determinant is a Cholesky factorisation of the
    cheaper Gram (D×D or n×n); the whole set's D×D Gram is summed from the classes'
    (one ``ZᵀZ`` of Gram products in all).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2, 3], 25)
    >>> sep = rng.normal(size=(100, 8)) + 4 * np.eye(4, 8)[y]
    >>> transrate(sep, y) > transrate(rng.normal(size=(100, 8)), y) + 1
    True

    Class rows are not re-centred, so a class's own offset from the global mean counts
    as its spread: with two classes (collinear means) separation alone adds little.
    """
    x, y, c = features_and_labels(features, labels)
    if not (isinstance(eps, (int, float)) and eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps: must be a positive number (the distortion of the coding rate), got {eps!r}")
    whole, per_class = _transrate_rates(x, y, c, float(eps))
    return float(whole - np.mean(per_class))


# --------------------------------------------------------------------------- GBC


@estimator
def gbc(features: Any, labels: Any, *, gaussian: str = "spherical") -> float:
    """GBC (Pándy et al. 2022): minus the summed Bhattacharyya coefficients between classes.

    Each class is a Gaussian with its mean and per-dimension (population) variances,
    floored at 1e-4; ``gaussian="spherical"`` uses one variance per class, the mean of
    its per-dimension variances, ``"diagonal"`` keeps them all. For classes i, j with
    ``S = (S_i + S_j) / 2``: ``D_B = 1/8 (mu_i - mu_j)ᵀ S⁻¹ (mu_i - mu_j) + 1/2 log(|S| /
    sqrt(|S_i| |S_j|))``, with the full log-determinant (``d log s`` for a spherical
    ``s I``), ``BC = exp(-D_B)`` and ``GBC = -sum_{i != j} BC_ij`` (each pair counted in
    both orders), in ``[-C(C-1), 0]``. Needs 2 samples per class. The off-diagonal
    coefficients are summed in log space, so a sum far below 1e-16 (well-separated
    classes) keeps its value (down to float64's ~1e-308) instead of cancelling to 0.

    >>> import numpy as np
    >>> x = np.array([[0.0, 0.0], [2.0, 2.0], [4.0, 0.0], [6.0, 2.0]])
    >>> round(gbc(x, [0, 0, 1, 1]), 6)  # ||mu_0 - mu_1||² = 16, s = 1: -2 exp(-2)
    -0.270671
    """
    if gaussian not in ("spherical", "diagonal"):
        raise ValueError(f"gaussian: expected 'spherical' or 'diagonal', got {gaussian!r}")
    x, y, c = features_and_labels(features, labels, min_per_class=2)
    means, _ = _class_means(x, y, c)
    var, _ = _class_means((x - means[y]) ** 2, y, c)
    var = np.maximum(var, 1e-4)  # C×D, population variance, floored
    log_bc = -_bhattacharyya_distances(means, var, gaussian)
    off = ~np.eye(c, dtype=bool)
    # the off-diagonal terms only, summed in log space: a total minus the diagonal's C ones (exp(0)) would
    # cancel every coefficient below ~1e-16 to 0 and tie well-separated candidates
    return 0.0 - math.exp(float(_logsumexp(log_bc[off])))  # not -0.0 when the classes do not overlap


def _logsumexp(a: np.ndarray) -> float:
    top = float(np.max(a))
    if not np.isfinite(top):
        return top
    return top + math.log(float(np.sum(np.exp(a - top))))


def _bhattacharyya_distances(means: np.ndarray, var: np.ndarray, gaussian: str) -> np.ndarray:
    """C×C Bhattacharyya distances between per-class Gaussians with diagonal (C×D ``var``) or spherical
    (each class's mean variance) covariances."""
    c, d = means.shape
    if gaussian == "spherical":
        s = var.mean(axis=1)
        sq = np.sum(means**2, axis=1)
        dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * means @ means.T, 0.0)
        s_avg = 0.5 * (s[:, None] + s[None, :])
        log_s = np.log(s)
        return dist2 / (8.0 * s_avg) + 0.5 * d * (np.log(s_avg) - 0.5 * (log_s[:, None] + log_s[None, :]))
    log_var_sum = np.log(var).sum(axis=1)
    out = np.empty((c, c))
    for i in range(c):
        v_avg = 0.5 * (var[i] + var)  # C×D
        out[i] = np.sum((means[i] - means) ** 2 / v_avg, axis=1) / 8.0 + 0.5 * (
            np.log(v_avg).sum(axis=1) - 0.5 * (log_var_sum[i] + log_var_sum))
    return out


# --------------------------------------------------------------------------- NLEEP


def _pca_scores(x: np.ndarray, pca_dim: int | float | None) -> np.ndarray:
    """Principal-component scores of x (centred); ``pca_dim`` an int (components) or a variance fraction."""
    xc = centre_columns(x)
    if pca_dim is None:
        return xc
    n, d = xc.shape
    if n >= d:
        evals, vecs = _eigh_desc(xc.T @ xc)
        scores = xc @ vecs
    else:
        evals, vecs = _eigh_desc(xc @ xc.T)
        scores = vecs * np.sqrt(np.clip(evals, 0.0, None))
    evals = np.clip(evals, 0.0, None)
    rank = max(1, int(np.sum(evals > (evals[0] if evals.size else 0.0) * max(n, d) * _EPS)))
    if isinstance(pca_dim, float) and pca_dim < 1.0:
        ratio = np.cumsum(evals) / max(float(evals.sum()), np.finfo(np.float64).tiny)
        k = int(np.searchsorted(ratio, pca_dim, side="right")) + 1  # smallest k explaining > pca_dim
    else:
        k = int(pca_dim) if not isinstance(pca_dim, float) else rank
    scores = scores[:, : max(1, min(k, rank))]
    # a deterministic sign per component: its largest-magnitude score is positive
    flip = np.sign(scores[np.argmax(np.abs(scores), axis=0), np.arange(scores.shape[1])])
    return scores * np.where(flip == 0, 1.0, flip)


@estimator
def nleep(
    features: Any,
    labels: Any,
    *,
    n_components_per_class: int = 5,
    pca_dim: int | float | None = 0.8,
    seed: int = 0,
    covariance_type: str = "full",
) -> float:
    """N-LEEP (Li et al. 2021): LEEP with a Gaussian mixture fitted on the features as "source head".

    Features are reduced by PCA (``pca_dim``: a fraction in (0, 1) keeps the fewest
    components explaining more than that share of the variance, 0.8 by default; an
    int keeps that many; None keeps the centred features), a Gaussian mixture with
    ``n_components_per_class * C`` components is fitted with
    ``random_state=seed``, and LEEP (with its logarithm) is computed on the component
    posteriors. Needs at least :data:`NLEEP_SAMPLES_PER_COMPONENT` (5) samples per
    component, else ``ValueError``: with one sample per component the posteriors are
    one-hot and pure noise scores 0, the best possible value. Deterministic for a given seed. Needs scikit-learn
    (``pip install pytest-transfer[data]``).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 40)
    >>> x = rng.normal(size=(80, 5)) + 6 * np.eye(2, 5)[y]
    >>> nleep(x, y, n_components_per_class=2) > -0.1
    True
    """
    x, y, c = features_and_labels(features, labels)
    if not isinstance(n_components_per_class, (int, np.integer)) or n_components_per_class < 1:
        raise ValueError(f"n_components_per_class: must be a positive integer, got {n_components_per_class!r}")
    if pca_dim is not None and not (
        (isinstance(pca_dim, (int, np.integer)) and not isinstance(pca_dim, bool) and pca_dim >= 1)
        or (isinstance(pca_dim, float) and 0.0 < pca_dim <= 1.0)
    ):
        raise ValueError(
            f"pca_dim: expected a number of components (int >= 1), a variance fraction in (0, 1] or None, "
            f"got {pca_dim!r}"
        )
    try:
        from sklearn.mixture import GaussianMixture
    except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
        raise ImportError(
            "nleep fits a Gaussian mixture with scikit-learn, which is not installed; "
            "install it with `pip install pytest-transfer[data]`"
        ) from exc
    k = int(n_components_per_class) * c
    if len(x) < NLEEP_SAMPLES_PER_COMPONENT * k:
        raise ValueError(
            f"features: {len(x)} samples for a mixture of {k} components ({n_components_per_class} per class × {c} "
            f"classes); N-LEEP needs at least {NLEEP_SAMPLES_PER_COMPONENT} samples per component, else each "
            f"component fits a few samples and pure noise scores near the best, 0. Add samples or lower "
            f"n_components_per_class (at most {len(x) // (NLEEP_SAMPLES_PER_COMPONENT * c)} here)"
        )
    z = _pca_scores(x, pca_dim)
    gmm = GaussianMixture(n_components=k, covariance_type=covariance_type, random_state=seed)
    posteriors = gmm.fit(z).predict_proba(z)
    return _log_eep(posteriors, y, c)


# --------------------------------------------------------------------------- SFDA


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _regularized_fda_probs(
    x: np.ndarray, y: np.ndarray, c: int, priors: np.ndarray, shrinkage: float | None
) -> tuple[np.ndarray, float, np.ndarray]:
    """Class posteriors of the shrinkage-regularised Fisher discriminant; returns ``(probs, shrinkage, means)``.

    Within-class scatter ``S_w = sum_c pi_c Cov_c`` (population covariances); the paper's
    adaptive shrinkage ``lambda = max(exp(-5 sigma_max(S_w)), 1e-10)`` and
    ``S_w(lambda) = (1 - lambda) S_w + lambda (tr S_w / D) I``. The discriminant keeps all D
    Fisher directions, so its scores are ``x S_w(lambda)⁻¹ mu_cᵀ - 1/2 mu_c S_w(lambda)⁻¹ mu_cᵀ
    + log pi_c``; the between-class scatter only orders the directions.
    """
    n, d = x.shape
    means, _ = _class_means(x, y, c)
    resid = x - means[y]
    # a residual at rounding level of its column is none (a feature constant within a class): float64 and
    # float32 copies of the same features must not differ by a direction of 1e-34 variance
    resid[np.abs(resid) <= rounding_tolerance(n) * np.abs(x).max(axis=0)] = 0.0
    sw = resid.T @ resid / n
    if shrinkage is None:
        top = float(np.linalg.eigvalsh(sw)[-1])
        shrinkage = max(math.exp(-5.0 * top), 1e-10)
    mu = float(np.trace(sw)) / d
    sw = (1.0 - shrinkage) * sw
    sw[np.diag_indices_from(sw)] += shrinkage * mu
    evals, evecs = np.linalg.eigh(sw)
    cutoff = max(float(evals[-1]), 0.0) * d * _EPS
    inv = np.divide(1.0, evals, out=np.zeros_like(evals), where=evals > cutoff)
    coef = (evecs * inv) @ (evecs.T @ means.T)  # D×C, S_w⁻¹ mu_cᵀ
    logits = x @ coef - 0.5 * np.einsum("cd,dc->c", means, coef) + np.log(priors)
    return _softmax(logits), shrinkage, means


@estimator
def sfda(features: Any, labels: Any) -> float:
    """SFDA (Shao et al. 2022): Self-challenging Fisher Discriminant Analysis.

    1. A regularised Fisher discriminant (shrinkage ``lambda = exp(-5 sigma_max(S_w))``,
       at least 1e-10, towards ``tr(S_w)/D I``) gives class posteriors ``p(y|x)``.
    2. Self-challenging (ConfMix): each sample is mixed towards the mean of the other
       classes' means, ``x' = q x + (1 - q) mean_{k != y} mu_k``, where q is the
       softmax-softened probability of its true class, ``softmax(p(.|x))_y``.
    3. The discriminant is refitted on the mixed features with the same lambda; the
       score is the mean posterior of the true class, ``1/N sum_i p(y_i | x'_i)``, in (0, 1]
       (the reference implementation's choice, without the logarithm).

    ``ValueError`` when ``N - C`` is smaller than the rank of the features: the
    within-class scatter is then singular on their span and the discriminant separates
    any labels, pure noise included (score 1).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], 30)
    >>> sep = rng.normal(size=(90, 6)) + 3 * np.eye(3, 6)[y]
    >>> sfda(sep, y) > sfda(rng.normal(size=(90, 6)), y)
    True
    """
    x, y, c = features_and_labels(features, labels)
    x = centre_columns(x)  # the discriminant is translation invariant; a constant column becomes exactly 0
    check_covariance_sample(x, c, "SFDA's Fisher discriminant",
                            "Add samples or reduce the features (e.g. PCA to at most N - C dimensions)")
    n = len(x)
    priors = np.bincount(y, minlength=c) / n
    probs, shrinkage, means = _regularized_fda_probs(x, y, c, priors, None)
    softened = _softmax(probs)
    q = softened[np.arange(n), y][:, None]
    others = (means.sum(axis=0) - means) / (c - 1)
    mixed = q * x + (1.0 - q) * others[y]
    probs, _, _ = _regularized_fda_probs(mixed, y, c, priors, shrinkage)
    return float(np.mean(probs[np.arange(n), y]))


# --------------------------------------------------------------------------- ETran


#: the fraction of samples whose energy ETran averages: the lowest 0.5 %, as the authors' classification
#: script does (``Energy_Score(X, 0.5, 'bot')`` in github.com/mgholamikn/ETran, evaluate_metric.py)
ETRAN_ENERGY_FRACTION = 0.005


def etran_energy(features: Any, *, fraction: float = ETRAN_ENERGY_FRACTION) -> float:
    """ETran's energy score (Gholami et al., ICCV 2023): the features read as logits, each sample's
    negative free energy ``-E(x) = log sum_d exp(f_d(x))``, averaged over the ``fraction`` of samples
    with the lowest values (at least one; ``fraction=1``: all). Label-free; N×D ``features``.

    >>> round(etran_energy([[0.0, 0.0], [1.0, 1.0]], fraction=1.0), 6)  # (log 2 + (1 + log 2)) / 2
    1.193147
    """
    x = as_float(features, "features", ndim=2)
    check_nonempty("features", x)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: expected a fraction of the samples in (0, 1], got {fraction!r}")
    top = x.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(x - top).sum(axis=1))
    keep = max(1, int(fraction * len(lse)))
    return float(np.mean(np.sort(lse)[:keep]))


def etran_lda(features: Any, labels: Any) -> float:
    """ETran's LDA score: the mean posterior of the true class, ``1/N sum_i p(y_i | x_i)``, under the
    shrinkage-regularised linear discriminant of SFDA's first stage (population within-class
    covariance, shrinkage ``max(exp(-5 sigma_max), 1e-10)`` towards ``tr/D I``, empirical priors):
    scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage=...)`` posteriors. In (0, 1].
    """
    x, y, c = features_and_labels(features, labels)
    x = centre_columns(x)
    check_covariance_sample(x, c, "ETran's linear discriminant",
                            "Add samples or reduce the features (e.g. PCA to at most N - C dimensions)")
    n = len(x)
    probs, _, _ = _regularized_fda_probs(x, y, c, np.bincount(y, minlength=c) / n, None)
    return float(np.mean(probs[np.arange(n), y]))


@estimator
def etran(features: Any, labels: Any, *, fraction: float = ETRAN_ENERGY_FRACTION) -> float:
    """ETran (Gholami et al., ICCV 2023) for classification: energy score + LDA score.

    ``etran_energy(features, fraction=fraction) + etran_lda(features, labels)``, the sum the
    paper ranks classification models by (its SVD regression term is for detection). The energy
    term depends on the scale of the features, so the gates feed ETran raw features (its
    declaration has ``standardize=False``), as the authors do. Unbounded.

    >>> import numpy as np
    >>> x = np.array([[0.0, 0.0], [0.2, 0.1], [3.0, 3.0], [3.1, 2.9]])
    >>> etran(x, [0, 0, 1, 1], fraction=1.0) == etran_energy(x, fraction=1.0) + etran_lda(x, [0, 0, 1, 1])
    True
    """
    return etran_energy(features, fraction=fraction) + etran_lda(features, labels)


# --------------------------------------------------------------------------- NCTI

#: NCTI's PCA dimension and the number of leading PCA variances that set its LDA shrinkage (authors' code)
NCTI_PCA_DIM = 64
NCTI_SHRINKAGE_COMPONENTS = 32


def ncti_components(features: Any, labels: Any) -> tuple[float, float, float]:
    """NCTI's three per-candidate terms (Wang et al., ICCV 2023), ``(S_etf, S_ncc, S_vc)``.

    As the authors' code (github.com/BUserName/NCTI, metrics.py ``NCTI_Score``): the features are
    reduced by PCA to ``min(64, N, D)`` components (exact SVD here, where the authors' scikit-learn
    default may pick a randomized one); a linear discriminant is fitted on them, with shrinkage
    ``max(exp(-sum of the 32 largest PCA variances), 1e-10)`` (scikit-learn's ``eigen`` solver), or
    without shrinkage (``svd`` solver) when that is at its floor. Then:

    * ``S_etf``: the nuclear norm of the centred discriminant projection (≤ C − 1 dims): how far
      the class means spread towards a simplex equiangular tight frame;
    * ``S_ncc``: the mean discriminant posterior of the true class (nearest-class-centre fit);
    * ``S_vc``: ``log sum_c ||P_c||_*``, ``P_c`` the posteriors of class c's samples: within-class
      variability (lower is more collapsed).

    Needs scikit-learn. Combine candidates with :func:`ncti`.
    """
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y, c = features_and_labels(features, labels, min_per_class=2)
    dim = min(NCTI_PCA_DIM, x.shape[0], x.shape[1])
    pca = PCA(n_components=dim, svd_solver="full")
    z = pca.fit_transform(x)
    shrink = max(math.exp(-float(pca.explained_variance_[:NCTI_SHRINKAGE_COMPONENTS].sum())), 1e-10)
    if shrink == 1e-10:
        lda = LinearDiscriminantAnalysis(solver="svd")
    else:
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrink)
    low = lda.fit(z, y).transform(z)
    s_etf = float(np.linalg.norm(low - low.mean(axis=0), ord="nuc"))
    probs = lda.predict_proba(z)
    s_ncc = float(np.mean(probs[np.arange(len(y)), y]))
    s_vc = math.log(sum(float(np.linalg.norm(probs[y == k], ord="nuc")) for k in range(c)))
    return s_etf, s_ncc, s_vc


def ncti(components: Any) -> np.ndarray:
    """NCTI scores of candidates from their :func:`ncti_components` (a K×3 array, K ≥ 2 candidates).

    Each term is min-max normalised across the candidates and
    ``NCTI = S_etf' + S_ncc' - S_vc'``, in [-1, 2], higher is better (the authors' combination).
    The score of a candidate depends on the others: with two candidates each term is 0 or 1, so
    NCTI orders the pair by a majority vote of its three terms. A term equal for all candidates
    contributes 0.

    >>> ncti([[10.0, 0.9, 1.0], [5.0, 0.8, 2.0], [7.5, 0.85, 1.5]]).round(6).tolist()
    [2.0, -1.0, 0.5]
    """
    a = as_float(components, "components", ndim=2)
    if a.shape[1] != 3 or a.shape[0] < 2:
        raise ValueError(f"components: expected K×3 NCTI terms of K ≥ 2 candidates, got shape {a.shape}; "
                         "NCTI is normalised across candidates, so it ranks two or more models")
    span = a.max(axis=0) - a.min(axis=0)
    norm = np.divide(a - a.min(axis=0), span, out=np.zeros_like(a), where=span > 0)
    return norm[:, 0] + norm[:, 1] - norm[:, 2]


# --------------------------------------------------------------------------- measured: cross-validated probe


def stratified_folds(labels: Any, folds: int, *, seed: int = 0) -> np.ndarray:
    """Fold index (0..folds-1) of each sample: within each class the samples are shuffled (seeded) and
    dealt to the folds in turn, so every fold holds each class's share to within one sample."""
    y, _ = remap_labels(labels, "labels")
    rng = np.random.default_rng(seed)
    out = np.empty(len(y), dtype=np.int64)
    for k in range(int(y.max()) + 1 if len(y) else 0):
        idx = np.flatnonzero(y == k)
        out[rng.permutation(idx)] = np.arange(len(idx)) % folds
    return out


def cv_linear_probe_accuracy(features: Any, labels: Any, *, folds: int = 5, C: float = 1.0, seed: int = 0) -> float:
    """``folds``-fold cross-validated accuracy of the linear probe on one split (a measured protocol).

    Folds from :func:`stratified_folds`; on each, :func:`~pytest_transfer.metrics.probes.fit_linear_probe`
    (multinomial logistic regression, scikit-learn's ``LogisticRegression(C=C)``, standardised with the
    training folds' statistics) is fitted on the other folds and scored on it; the result is the
    fraction of all N samples classified correctly, in [0, 1]. ``folds * 2`` samples at least.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0); y = np.repeat([0, 1], 20)
    >>> cv_linear_probe_accuracy(rng.normal(size=(40, 3)) + 4 * y[:, None], y)
    1.0
    """
    from .probes import fit_linear_probe

    x, y, _ = features_and_labels(features, labels)
    if not isinstance(folds, (int, np.integer)) or isinstance(folds, bool) or folds < 2:
        raise ValueError(f"folds: must be an integer of at least 2, got {folds!r}")
    if len(y) < 2 * folds:
        raise ValueError(f"features: {len(y)} samples are too few for {folds}-fold cross-validation; "
                         f"use at least {2 * folds} or fewer folds")
    fold = stratified_folds(y, folds, seed=seed)
    correct = 0
    for f in range(folds):
        test = fold == f
        probe = fit_linear_probe(x[~test], y[~test], C=C)
        correct += int(np.sum(probe.predict(x[test]) == y[test]))
    return correct / len(y)


# --------------------------------------------------------------------------- k-NN


@estimator
def knn_accuracy(features: Any, labels: Any, *, k: int = 20, metric: str = "cosine") -> float:
    """Leave-one-out k-nearest-neighbour accuracy of the labels (N) from the features (N×D).

    Each sample is classified by a majority vote of its ``k`` nearest *other* samples (the sample itself
    never votes; a duplicate of it does), and the score is the fraction classified right. The conventions
    are scikit-learn's ``KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute")`` predicting
    its own training rows (``predict(None)``), which it equals, ties included: ``metric`` ``"cosine"``
    (1 − cosine similarity; an all-zero row has similarity 0 to everything) or ``"euclidean"``; uniform
    votes; a tied vote goes to the smallest class label; neighbours at equal distance by sample order.
    Features are used as given: the gates and rankings standardise them first (``standardize=True``).
    Sorkhei et al. (2025) use k-NN accuracy as a transferability estimator in the
    self-supervised-evaluation style (a held-out split, similarity-weighted votes); this is its
    leave-one-out, uniform-vote form, which needs no split.

    ``k`` must be below the smallest class's count minus one (the voters a left-out sample of that class
    has; ``k = 1`` is always allowed), else a ``ValueError`` names the class and the largest valid ``k``:
    with more neighbours, every sample of the class is outvoted (k = 20 on 9 + 9 separable samples scored
    0.0). O(N² D) time, computed in row blocks.

    >>> import numpy as np
    >>> x = np.array([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.1]])
    >>> knn_accuracy(x, [0, 0, 1, 1], k=1)
    1.0
    """
    from ._knn import METRICS, check_k, distance_blocks, nearest, unit_rows, vote

    if metric not in METRICS:
        raise ValueError(f"metric: expected 'cosine' or 'euclidean', got {metric!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: must be a positive integer number of neighbours, got {k!r}")
    x, y, c = features_and_labels(features, labels)
    n = len(x)
    if n < 2:
        raise ValueError("features: leave-one-out k-NN needs at least 2 samples")
    k = check_k(k, np.bincount(y, minlength=c), remap_labels(labels, "labels")[1], what="the data",
                voters_offset=1)
    if metric == "cosine":
        x = unit_rows(x)
    correct = 0
    for start, dist in distance_blocks(x, x, metric):
        rows = np.arange(start, start + len(dist))
        dist[rows - start, rows] = np.inf  # leave the sample out
        correct += int(np.sum(vote(y[nearest(dist, k)], c) == y[start : start + len(dist)]))
    return correct / n


# --------------------------------------------------------------------------- LFC


@estimator
def lfc(features: Any, labels: Any, *, kernel: str = "cosine") -> float:
    """Label-feature correlation (Deshpande et al. 2021).

    The Pearson correlation, over all N² entries, between a Gram matrix of the features and
    the label agreement matrix, ``L_ij = +1`` if ``y_i = y_j`` else -1 (both centred by their
    mean entry and normalised by their Frobenius norms). Convention: ``kernel="cosine"``
    (default) forms the Gram of the L2-normalised rows, ``K_ij = cos(f_i, f_j)``, so that the
    score does not depend on the features' scale; ``kernel="linear"`` forms the plain inner
    products ``K_ij = f_i · f_j`` of the paper's linearised (feature-kernel) derivation. The two
    agree when every row has the same norm. Computed from D×D or N×N products without forming
    the N×N matrices when D < N.

    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    >>> lfc(x, [0, 0, 1, 1]) > 0.9
    True
    """
    if kernel not in ("cosine", "linear"):
        raise ValueError(f"kernel: expected 'cosine' or 'linear', got {kernel!r}")
    x, y, c = features_and_labels(features, labels)
    n, d = x.shape
    if kernel == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        xh = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    else:
        xh = x
    total = xh.sum(axis=0)
    sum_k = float(total @ total)
    sum_k2 = float(np.sum((xh.T @ xh) ** 2)) if d <= n else float(np.sum((xh @ xh.T) ** 2))
    class_sums = _one_hot(y, c).T @ xh
    sum_k_same = float(np.sum(class_sums**2))
    counts = np.bincount(y, minlength=c).astype(np.float64)
    n2 = float(n) ** 2
    mean_k = sum_k / n2
    mean_l = (2.0 * float(np.sum(counts**2)) - n2) / n2
    cov = (2.0 * sum_k_same - sum_k) / n2 - mean_k * mean_l
    var_k = sum_k2 / n2 - mean_k**2
    var_l = 1.0 - mean_l**2
    if var_k <= 1e-12 * max(sum_k2 / n2, np.finfo(np.float64).tiny):
        raise ValueError(
            f"features: all pairwise {kernel} similarities are equal (e.g. every row points the same way), "
            "so the label-feature correlation is undefined"
        )
    return float(cov / math.sqrt(var_k * var_l))


TRANSFERABILITY_METRICS: dict[str, Callable[..., float]] = {name: _REGISTERED[name] for name in ESTIMATORS}
"""Every transferability estimator by name; each has ``higher_is_better``, ``bounds`` and ``inputs``."""

__all__ = [
    "TRANSFERABILITY_METRICS",
    "cv_linear_probe_accuracy",
    "etran",
    "etran_energy",
    "etran_lda",
    "gbc",
    "hscore",
    "knn_accuracy",
    "leep",
    "lfc",
    "logme",
    "nce",
    "ncti",
    "ncti_components",
    "nleep",
    "regularized_hscore",
    "sfda",
    "stratified_folds",
    "transrate",
]
