"""Transferability gates and model rankings (layer-wise transfer: ``layers``; shift: ``shift``;
similarity: ``similarity``).

Conventions shared by these gates:

* **Which data.** Transferability estimators (LogME, LEEP, ...) are computed on
  the **train split**: they predict how well a model will fine-tune from the
  data one would fine-tune on, so they must not look at the test split.
  Measured accuracies (linear probe, k-NN) are fitted on the train split and
  scored on the test split, as everywhere else in pytest-transfer.
* **Standardisation.** Feature-based estimators get the features standardised
  with the same split's mean and standard deviation (``standardize=True``), as
  the linear probe does; the metric functions themselves never transform
  their input. Without it, scale-sensitive estimators rank models by the size
  of their activations. LEEP and NCE take the model's own source-class
  probabilities / predictions from the engine, which are left as they are.
* **One forward pass.** Everything reads :func:`~pytest_transfer.engine.evaluate`,
  which memoises per model × dataset × split (and on disk), so a gate on a
  pair that a probe gate already evaluated costs no forward pass; layer-wise
  transfer reads all its nodes from one pass per split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..api import resolve_pair, session
from ..context import Context, Measurement
from ..declarations import RANKS_ABOVE, TRANSFERABILITY
from ..engine.memo import evaluate
from ..estimators import label
from .core import open_gate

if TYPE_CHECKING:  # pragma: no cover

    from ..datasets import TargetDataset
    from ..models import TransferModel

#: measured transfer accuracy on the test split (not an estimator): usable as ``metric=`` in rankings;
#: the default of :func:`assert_ranks_above`
PROBE_ACCURACY = "linear_probe_accuracy"
#: measured transfer accuracy by 5-fold cross-validation on the train split: the default of :func:`rank_models`
CV_PROBE_ACCURACY = "linear_probe_cv_accuracy"
MEASURED = (PROBE_ACCURACY, CV_PROBE_ACCURACY)
#: estimators normalised across the candidates they rank (no per-model value): rankings and pairs only
ACROSS_CANDIDATES = ("ncti",)
#: folds of :data:`CV_PROBE_ACCURACY`
CV_FOLDS = 5
_ACCURACY_LABELS = {"linear_probe": "linear probe accuracy", "knn": "k-NN accuracy",
                    PROBE_ACCURACY: "linear probe accuracy",
                    CV_PROBE_ACCURACY: f"{CV_FOLDS}-fold cross-validated linear probe accuracy", "ncti": "NCTI"}


def metric_label(metric: str) -> str:
    """How messages and plots name ``metric``: a measured accuracy, or an estimator's declared label
    (:data:`pytest_transfer.estimators.ESTIMATORS`)."""
    return _ACCURACY_LABELS.get(metric) or label(metric)


def estimators() -> dict[str, Callable[..., float]]:
    """Every transferability estimator's function by name (imports numpy)."""
    from ..metrics.transferability import TRANSFERABILITY_METRICS

    return TRANSFERABILITY_METRICS


def _check_metric(metric: str, *, accuracy_ok: bool = False) -> Callable[..., float] | None:
    """The estimator named ``metric``; ``None`` for a measured accuracy or a cross-candidate estimator (NCTI)
    where ``accuracy_ok``; else a ``ValueError`` listing the valid names."""
    table = estimators()
    if metric in table:
        return table[metric]
    if accuracy_ok and (metric in MEASURED or metric in ACROSS_CANDIDATES):
        return None
    valid = sorted(table) + (sorted(MEASURED + ACROSS_CANDIDATES) if accuracy_ok else [])
    hint = " (NCTI is normalised across candidates: use rank_models or assert_ranks_above)" \
        if metric in ACROSS_CANDIDATES else ""
    raise ValueError(f"metric: unknown transferability metric {metric!r}{hint}; valid: {', '.join(valid)}")


def warn_if_unreliable(metric: str, *, stacklevel: int = 3) -> None:
    """Warn (:class:`UnreliableEstimatorWarning`) when ``metric`` ordered models worse than chance on the
    project's estimator-quality benchmark (:data:`~pytest_transfer.estimators.BENCHMARK`), naming the
    measured protocol to use instead."""
    import warnings

    from ..estimators import BENCHMARK

    row = BENCHMARK.get(metric)
    if row is not None and row.weighted_tau < 0:
        warnings.warn(UnreliableEstimatorWarning(
            f"{metric_label(metric)} ranked models worse than chance on pytest-transfer's estimator benchmark "
            f"(weighted tau {row.weighted_tau:+.2f}, pairwise accuracy {row.pairwise_accuracy:.2f}); gate on the "
            f"measured transfer instead: metric={PROBE_ACCURACY!r} (assert_ranks_above's default) or "
            f"{CV_PROBE_ACCURACY!r} (rank_models' default)"), stacklevel=stacklevel)


class UnreliableEstimatorWarning(UserWarning):
    """A gate uses an estimator that ranked models worse than chance on the project's benchmark."""


_STANDARDIZED: dict[str, np.ndarray] = {}
#: the most memory the remembered standardised features may hold (the oldest go first; one larger set is kept alone)
STANDARDIZED_BYTES = 256 << 20


def standardized(x: np.ndarray) -> np.ndarray:
    """``x`` (N×D) as float64, standardised with its own per-column mean and standard deviation.

    The result is read-only and remembered by the content fingerprint of ``x`` (up to
    :data:`STANDARDIZED_BYTES` of them): every estimator gate on one model and split asks for the same
    standardised features, and their fingerprint, which keys the cached scores, is then computed
    once (:func:`~pytest_transfer.cache.array_fingerprint` remembers read-only arrays).
    """
    from ..cache import array_fingerprint
    from ..metrics.probes import Standardizer

    key = array_fingerprint(x)
    if key not in _STANDARDIZED:
        x = np.asarray(x, dtype=np.float64)
        out = Standardizer.fit(x)(x)
        out.setflags(write=False)
        while _STANDARDIZED and sum(a.nbytes for a in _STANDARDIZED.values()) + out.nbytes > STANDARDIZED_BYTES:
            _STANDARDIZED.pop(next(iter(_STANDARDIZED)))
        _STANDARDIZED[key] = out
    return _STANDARDIZED[key]


@dataclass(frozen=True)
class EstimatorInput:
    """What an estimator is fed for one model on one split: features, probabilities or predictions."""

    values: np.ndarray
    labels: np.ndarray
    kind: str  # "features" | "probs" | "preds"
    features: np.ndarray  # the (standardised) features, for the k-NN column


def estimator_input(model: TransferModel, dataset: TargetDataset, metric: str, *, split: str = "train",
                    standardize: bool = True, context: Context) -> EstimatorInput:
    """The inputs of ``metric`` for ``model`` on ``split`` of ``dataset``, from the engine's (memoised) pass."""
    fn = _check_metric(metric)
    kind = getattr(fn, "inputs", "features")
    if kind != "features" and model.num_classes is None:  # softmax of a headless model's features is no source
        raise ValueError(f"metric={metric!r} reads the source head's {kind}, but model {model.name!r} has no "
                         "classification head (a headless backbone: its output is read as features); use a "
                         "features estimator (logme, nleep, ...) or pass num_classes= to load_model when the output "
                         "is logits")
    ctx = context
    ev = evaluate(model, dataset, split=split, context=ctx)
    feats = standardized(ev.features) if standardize else np.asarray(ev.features, dtype=np.float64)
    raw = kind == "features" and not getattr(fn, "standardize", True)  # declared scale-dependent (ETran)
    values = {"features": np.asarray(ev.features, dtype=np.float64) if raw else feats, "probs": ev.probs,
              "preds": ev.preds}[kind]
    return EstimatorInput(values, ev.labels, kind, feats)


def estimate(fn: Callable[..., float], values: np.ndarray, labels: np.ndarray, kw: dict[str, Any] | None, *,
             ctx: Context) -> float:
    """``float(fn(values, labels, **kw))`` for a transferability estimator ``fn`` (LogME, leave-one-out k-NN
    accuracy, ...), cached (:func:`~pytest_transfer.cache.cached_result`, kind ``estimate``) under its name,
    arguments, code and the fingerprints of ``values``/``labels``: rankings and gates ask for the same scores,
    and a rerun reads them from the disk cache."""
    from ..cache import array_fingerprint, cached_result
    from ..fingerprints import code_identity

    kw = dict(kw or {})
    key = {"metric": f"{fn.__module__}.{getattr(fn, '__qualname__', repr(fn))}", "kw": repr(sorted(kw.items())),
           "values": array_fingerprint(values), "labels": array_fingerprint(labels),
           "code": code_identity(fn)}
    return cached_result("estimate", key, lambda: float(fn(values, labels, **kw)),
                         encode=lambda v: {"value": np.float64(v)}, decode=lambda a: float(a["value"]),
                         context=ctx, libraries=("scipy", "sklearn"))


def _interval(statistic: Callable[..., float], value: float, *arrays: np.ndarray, labels: np.ndarray,
              ctx: Context, n_resamples: int, bounds: tuple[float, float] | None) -> tuple[float, float]:
    from ..metrics.stats import half_sample_interval

    return half_sample_interval(statistic, value, *arrays, labels=labels, confidence=ctx.settings.confidence_level,
                                n_resamples=n_resamples, seed=ctx.settings.seed, bounds=bounds)


# --------------------------------------------------------------------------- gate on one estimator


def assert_transferability_above(model: Any, dataset: Any, threshold: float | None = None, *, metric: str = "logme",
                                 split: str = "train", standardize: bool = True, confidence: str | None = None,
                                 n_resamples: int = 200, metric_kwargs: dict[str, Any] | None = None) -> Measurement:
    """Gate on a transferability estimator (LogME by default) of ``model`` on ``dataset``.

    The estimator is computed on the ``train`` split: penultimate features
    standardised with that split's statistics for feature-based metrics
    (``logme``, ``hscore``, ``knn_accuracy``, ...), the model's own source-class
    probabilities for ``leep`` and its source predictions for ``nce``. The pass
    is the engine's: no extra forward pass when the pair was already evaluated.
    The threshold comes from the argument or the config key named like the
    metric (``logme = 0.1`` under ``[tool.pytest_transfer.thresholds."<model>"."<dataset>"]``).
    With a confidence mode the interval is ``value ± z·SE``, the standard error
    from ``n_resamples`` stratified half-samples (see :func:`half_sample_interval`;
    a with-replacement bootstrap would duplicate samples, which inflates LogME
    and leave-one-out k-NN): that many more estimator calls on half the data.

    >>> assert_transferability_above("efficientnet-lite0", "digits-shifted", -0.2)  # doctest: +SKIP
    """
    __tracebackhide__ = True
    fn = _check_metric(metric)
    warn_if_unreliable(metric)
    g = open_gate(model, dataset, threshold=threshold, argument="threshold", keys=(metric,), confidence=confidence)
    ctx, model, dataset = g.ctx, g.model, g.dataset
    kw = dict(metric_kwargs or {})
    inp = estimator_input(model, dataset, metric, split=split, standardize=standardize, context=ctx)
    value = estimate(fn, inp.values, inp.labels, kw, ctx=ctx)
    interval = None
    if g.wants_interval:
        interval = _interval(lambda v, y: fn(v, y, **kw), value, inp.values, labels=inp.labels, ctx=ctx,
                             n_resamples=n_resamples, bounds=fn.bounds)
    return g.finish(
        gate=TRANSFERABILITY.name, metric=metric, label=f"{TRANSFERABILITY.label} ({metric_label(metric)})",
        value=value, interval=interval, higher_is_better=bool(fn.higher_is_better),
        details={"method": metric, "split": split, "n": len(inp.labels), "inputs": inp.kind,
                 "standardize": standardize and inp.kind == "features" and getattr(fn, "standardize", True),
                 "dim": int(inp.features.shape[1])},
        hint="compare with rank_models() against a reference model, and check the preprocess and feature node; "
             "estimator values are only comparable between models on the same dataset",
    )


# --------------------------------------------------------------------------- rankings


@dataclass(frozen=True)
class RankedModel:
    """One row of :func:`rank_models`: the model, its score by ``metric``, the k-NN accuracy beside it, its rank
    (1 = best). With ``confirm=k`` the top k rows carry the measured ``metric`` and score."""

    model: str
    score: float
    knn_accuracy: float
    rank: int
    metric: str

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "score": self.score, "knn_accuracy": self.knn_accuracy, "rank": self.rank,
                "metric": self.metric}


def _knn(model: TransferModel, dataset: TargetDataset, *, split: str, standardize: bool, k: int,
         ctx: Context) -> float:
    """The leave-one-out k-NN accuracy reported beside a ranking's score. ``k`` is capped at the largest the
    smallest class allows (its count less two: one is the query, and k must stay below the voters), so a
    small dataset still gets its side column; ``metric="knn_accuracy"`` itself refuses such a ``k``."""
    from ..metrics import knn_accuracy

    train = estimator_input(model, dataset, "knn_accuracy", split=split, standardize=standardize, context=ctx)
    smallest = int(np.unique(np.asarray(train.labels), return_counts=True)[1].min())
    return estimate(knn_accuracy, train.features, train.labels, {"k": max(1, min(int(k), smallest - 2))}, ctx=ctx)


def _measured(model: TransferModel, dataset: TargetDataset, metric: str, *, split: str, ctx: Context
              ) -> tuple[float, Any]:
    """``(accuracy, per-sample correctness or None)`` of a measured protocol (:data:`MEASURED`)."""
    if metric == PROBE_ACCURACY:  # probe fitted on train, scored on test
        from ..methods import predict

        pr = predict(model, dataset, method="linear_probe", split="test", context=ctx)
        return float(pr.correct.mean()), pr.correct
    from ..metrics.transferability import cv_linear_probe_accuracy

    ev = evaluate(model, dataset, split=split, context=ctx)
    kw = {"folds": CV_FOLDS, "seed": int(ctx.settings.seed)}
    return estimate(cv_linear_probe_accuracy, np.asarray(ev.features, dtype=np.float64), ev.labels, kw, ctx=ctx), None


def _model_score(model: TransferModel, dataset: TargetDataset, metric: str, *, split: str, standardize: bool,
                 k: int, ctx: Context, kw: dict[str, Any]) -> tuple[float, float, Any]:
    """``(score, knn_accuracy, per-sample data for intervals)`` of one model (not for NCTI)."""
    fn = _check_metric(metric, accuracy_ok=True)
    knn = _knn(model, dataset, split=split, standardize=standardize, k=k, ctx=ctx)
    if fn is None:
        score, data = _measured(model, dataset, metric, split=split, ctx=ctx)
        return score, knn, data
    inp = estimator_input(model, dataset, metric, split=split, standardize=standardize, context=ctx)
    return estimate(fn, inp.values, inp.labels, kw, ctx=ctx), knn, inp


def _ncti_scores(models: Sequence[TransferModel], dataset: TargetDataset, *, split: str, standardize: bool,
                 ctx: Context) -> tuple[list[float], list[EstimatorInput]]:
    """NCTI of each candidate, normalised across ``models``, and each one's inputs."""
    from ..metrics.transferability import ncti, ncti_components

    inputs = [estimator_input(m, dataset, "knn_accuracy", split=split, standardize=standardize, context=ctx)
              for m in models]
    comps = [ncti_components(inp.features, inp.labels) for inp in inputs]
    return [float(v) for v in ncti(comps)], inputs


def _sort_rows(names: Sequence[str], scores: Sequence[float], knn: Sequence[float], metric: str,
               higher_is_better: bool) -> list[RankedModel]:
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(range(len(names)), key=lambda i: (-sign * scores[i], -knn[i], i))  # ties: k-NN, then input order
    return [RankedModel(names[i], float(scores[i]), float(knn[i]), r + 1, metric) for r, i in enumerate(order)]


def _resolve_candidates(models: Iterable[Any], dataset: Any,
                        ctx: Context) -> tuple[list[TransferModel], TargetDataset]:
    candidates = list(models)
    if not candidates:
        raise ValueError("models: got an empty list; pass at least one model (spec string or TransferModel)")
    first, dataset = resolve_pair(candidates[0], dataset, ctx)  # the dataset is loaded once
    resolved = [first, *(resolve_pair(m, dataset, ctx)[0] for m in candidates[1:])]
    names = [m.name for m in resolved]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"models: several candidates are named {dupes}; give each a distinct name "
                         "(load_model(..., name=...))")
    return resolved, dataset


def _confirmed(rows: list[RankedModel], by_name: dict[str, TransferModel], dataset: TargetDataset, confirm: int,
               *, split: str, ctx: Context) -> list[RankedModel]:
    """The top ``confirm`` rows re-ranked by their measured cross-validated probe accuracy; the rest as they were."""
    top = rows[:confirm]
    scores = [_measured(by_name[r.model], dataset, CV_PROBE_ACCURACY, split=split, ctx=ctx)[0] for r in top]
    head = _sort_rows([r.model for r in top], scores, [r.knn_accuracy for r in top], CV_PROBE_ACCURACY, True)
    return head + [RankedModel(r.model, r.score, r.knn_accuracy, len(head) + i + 1, r.metric)
                   for i, r in enumerate(rows[confirm:])]


def rank_models(models: Iterable[Any], dataset: Any, *, metric: str = CV_PROBE_ACCURACY, split: str = "train",
                standardize: bool = True, k: int = 20, confirm: int | None = None,
                metric_kwargs: dict[str, Any] | None = None, context: Context | None = None) -> list[RankedModel]:
    """Rank candidate models on ``dataset``, best first, by measured transfer (default) or an estimator.

    ``metric``: ``"linear_probe_cv_accuracy"`` (default: 5-fold cross-validated linear-probe accuracy on
    the ``split`` samples, cached: it needs no test split and costs about what an estimator costs once the
    forward pass is done), ``"linear_probe_accuracy"`` (probe fitted on train, scored on test), ``"ncti"``
    (normalised across the candidates, :func:`~pytest_transfer.metrics.transferability.ncti`) or any
    name of :data:`~pytest_transfer.metrics.transferability.TRANSFERABILITY_METRICS` (cheap screening;
    see the docs' table of how well each agrees with measured transfer). Each row carries the model's
    name, its score, the leave-one-out k-NN accuracy of its standardised train features and its rank.
    Ties are broken by the k-NN accuracy, then by the order given. One forward pass per model (memoised).

    ``confirm=k``: shortlist, then measure. The candidates are ranked by ``metric`` and the top ``k``
    are re-ranked by their measured cross-validated probe accuracy (their rows then carry that metric
    and score), so the order of the best few is the measured order; the others keep the estimator's.

    >>> rows = rank_models(["efficientnet-lite0", "efficientnet-lite0-random"], "digits-shifted")  # doctest: +SKIP
    >>> [(r.rank, r.model) for r in rows]  # doctest: +SKIP
    [(1, 'efficientnet-lite0'), (2, 'efficientnet-lite0-random')]
    """
    fn = _check_metric(metric, accuracy_ok=True)
    if confirm is not None and (not isinstance(confirm, int) or isinstance(confirm, bool) or confirm < 1):
        raise ValueError(f"confirm: expected a positive number of candidates to measure, got {confirm!r}")
    ctx = session(context)
    resolved, dataset = _resolve_candidates(models, dataset, ctx)
    names = [m.name for m in resolved]
    kw = dict(metric_kwargs or {})
    knn = [_knn(m, dataset, split=split, standardize=standardize, k=k, ctx=ctx) for m in resolved]
    if metric in ACROSS_CANDIDATES:
        scores = _ncti_scores(resolved, dataset, split=split, standardize=standardize, ctx=ctx)[0] \
            if len(resolved) > 1 else [0.0]
    else:
        scores = [_model_score(m, dataset, metric, split=split, standardize=standardize, k=k, ctx=ctx, kw=kw)[0]
                  for m in resolved]
    rows = _sort_rows(names, scores, knn, metric, True if fn is None else bool(fn.higher_is_better))
    if confirm is None or metric == CV_PROBE_ACCURACY:
        return rows
    return _confirmed(rows, dict(zip(names, resolved, strict=True)), dataset, confirm, split=split, ctx=ctx)


def _pair_interval(fn: Callable[..., float] | None, metric: str, da: Any, db: Any, diff: float, higher: bool,
                   kw: dict[str, Any], ctx: Context, n_resamples: int) -> tuple[float, float]:
    if metric == PROBE_ACCURACY:
        from ..metrics.stats import paired_difference_interval

        return paired_difference_interval(da, db, confidence=ctx.settings.confidence_level)
    if metric == CV_PROBE_ACCURACY:
        raise ValueError(f"confidence: no interval for {CV_PROBE_ACCURACY!r} (its folds share samples); use "
                         f"metric={PROBE_ACCURACY!r}, whose paired interval is Newcombe's, or confidence='none'")
    if fn is None:  # NCTI, recomputed on each half-sample of both candidates
        from ..metrics.transferability import ncti, ncti_components

        def stat(va: np.ndarray, vb: np.ndarray, y: np.ndarray) -> float:
            a, b = ncti([ncti_components(va, y), ncti_components(vb, y)])
            return float(a - b)
    else:
        sign = 1.0 if higher else -1.0

        def stat(va: np.ndarray, vb: np.ndarray, y: np.ndarray) -> float:
            return sign * (fn(va, y, **kw) - fn(vb, y, **kw))
    a_vals = da.features if fn is None else da.values
    b_vals = db.features if fn is None else db.values
    return _interval(stat, diff, a_vals, b_vals, labels=da.labels, ctx=ctx, n_resamples=n_resamples, bounds=None)


def _pair_scores(a: TransferModel, b: TransferModel, ds: TargetDataset, metric: str, *, split: str,
                 standardize: bool, k: int, ctx: Context, kw: dict[str, Any]
                 ) -> tuple[tuple[float, float, Any], tuple[float, float, Any]]:
    if metric not in ACROSS_CANDIDATES:
        return (_model_score(a, ds, metric, split=split, standardize=standardize, k=k, ctx=ctx, kw=kw),
                _model_score(b, ds, metric, split=split, standardize=standardize, k=k, ctx=ctx, kw=kw))
    (sa, sb), (ia, ib) = _ncti_scores([a, b], ds, split=split, standardize=standardize, ctx=ctx)
    knn = [_knn(m, ds, split=split, standardize=standardize, k=k, ctx=ctx) for m in (a, b)]
    return (sa, knn[0], ia), (sb, knn[1], ib)


def assert_ranks_above(model_a: Any, model_b: Any, dataset: Any, *, metric: str = PROBE_ACCURACY,
                       margin: float = 0.0, split: str = "train", standardize: bool = True,
                       confidence: str | None = None, k: int = 20, n_resamples: int = 200,
                       metric_kwargs: dict[str, Any] | None = None) -> Measurement:
    """Gate: candidate ``model_a`` stays at least as transferable as reference ``model_b`` on ``dataset``.

    By default the measured transfer: the linear probe of each model is fitted on the train split and
    scored on the same test split, and the value is ``accuracy(a) − accuracy(b)``, with Newcombe's
    paired interval on the same test samples in a confidence mode. It must be at least ``margin`` (0:
    "at least level"; positive: a lead; negative: a tolerated loss). ``metric`` may instead name an
    estimator (computed on ``split`` as in :func:`rank_models`; interval from paired half-samples of
    the same train samples, :func:`half_sample_interval`), ``"linear_probe_cv_accuracy"`` or
    ``"ncti"`` (normalised over the two candidates: each of its three terms is then 0 or 1, so the
    lead is one of ±1 or ±3, a majority vote of the terms). An estimator that ranked worse than chance
    on the project's benchmark warns (:class:`UnreliableEstimatorWarning`). The two-row ranking (with
    k-NN accuracies) is kept in ``details["ranking"]``.

    >>> assert_ranks_above("efficientnet-lite0", "efficientnet-lite0-random", "digits-shifted")  # doctest: +SKIP
    """
    __tracebackhide__ = True
    fn = _check_metric(metric, accuracy_ok=True)
    warn_if_unreliable(metric)
    g = open_gate(model_a, dataset, threshold=margin, argument="margin", keys=(), confidence=confidence)
    ctx, a, ds = g.ctx, g.model, g.dataset
    b, _ = resolve_pair(model_b, ds, ctx)
    if a.name == b.name:
        raise ValueError(f"model_b: has the same name as model_a ({a.name!r}); give them distinct names")
    kw = dict(metric_kwargs or {})
    (sa, ka, da), (sb, kb, db) = _pair_scores(a, b, ds, metric, split=split, standardize=standardize, k=k,
                                              ctx=ctx, kw=kw)
    higher = True if fn is None else bool(fn.higher_is_better)
    diff = sa - sb if higher else sb - sa
    interval = None
    if g.mode != "none":
        interval = _pair_interval(fn, metric, da, db, diff, higher, kw, ctx, n_resamples)
    rows = _sort_rows([a.name, b.name], [sa, sb], [ka, kb], metric, higher)
    return g.finish(
        gate=RANKS_ABOVE.name, metric=f"{metric}_lead", label=f"{metric_label(metric)} lead over reference {b.name!r}",
        value=diff, interval=interval, higher_is_better=True,
        details={"method": metric, "split": "test" if metric == PROBE_ACCURACY else split, "reference": b.name,
                 "score": sa, "reference_score": sb, "ranking": [r.to_dict() for r in rows]},
        hint=f"{a.name} scores {sa:.4f}, {b.name} {sb:.4f} (k-NN {ka:.4f} vs {kb:.4f}); check that the candidate's "
             "preprocess and feature node match the reference's",
    )


@dataclass(frozen=True)
class Agreement:
    """How well an estimator's ranking of models agrees with their measured transfer accuracies."""

    metric: str
    weighted_tau: float
    kendall_tau: float
    scores: dict[str, float]
    accuracies: dict[str, float]


def estimator_agreement(models: Iterable[Any], dataset: Any, *, metric: str = "logme", split: str = "train",
                        standardize: bool = True, metric_kwargs: dict[str, Any] | None = None,
                        context: Context | None = None) -> Agreement:
    """Weighted Kendall τ (Vigna 2015) between ``metric``'s scores and the measured linear-probe accuracies.

    The standard way papers judge an estimator over a model zoo (You et al.
    2021, Pándy et al. 2022): 1 means the estimator orders the models exactly
    as transfer does, with the top of the ranking weighted most. Also reports
    plain Kendall τ-b. Needs at least two models whose scores and accuracies
    are not all equal.

    >>> estimator_agreement(zoo, "digits-shifted", metric="logme").weighted_tau  # doctest: +SKIP
    """
    from ..metrics.rank_agreement import kendall_tau, weighted_kendall_tau

    ctx = session(context)
    models = list(models)
    est = rank_models(models, dataset, metric=metric, split=split, standardize=standardize,
                      metric_kwargs=metric_kwargs, context=ctx)
    acc = rank_models(models, dataset, metric=PROBE_ACCURACY, split=split, standardize=standardize, context=ctx)
    scores = {r.model: r.score for r in est}
    accuracies = {r.model: r.score for r in acc}
    names = list(scores)
    s = [scores[n] for n in names]
    y = [accuracies[n] for n in names]
    return Agreement(metric, weighted_kendall_tau(s, y), kendall_tau(s, y), scores, accuracies)


# --------------------------------------------------------------------------- layer-wise transfer
