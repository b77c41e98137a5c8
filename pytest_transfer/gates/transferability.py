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

from ..context import Context, Measurement, current_context
from ..declarations import RANKS_ABOVE, TRANSFERABILITY
from ..engine import evaluate
from ..estimators import label
from ..predictions import resolve_pair
from .core import open_gate

if TYPE_CHECKING:  # pragma: no cover

    from ..datasets import TargetDataset
    from ..models import TransferModel

#: measured transfer accuracy on the test split (not an estimator): usable as ``metric=`` in rankings
PROBE_ACCURACY = "linear_probe_accuracy"
LAYER_ACCURACIES = ("linear_probe", "knn")
_ACCURACY_LABELS = {"linear_probe": "linear probe accuracy", "knn": "k-NN accuracy",
                    PROBE_ACCURACY: "linear probe accuracy"}


def metric_label(metric: str) -> str:
    """How messages and plots name ``metric``: a measured accuracy, or an estimator's declared label
    (:data:`pytest_transfer.estimators.ESTIMATORS`)."""
    return _ACCURACY_LABELS.get(metric) or label(metric)


def estimators() -> dict[str, Callable[..., float]]:
    """Every transferability estimator's function by name (imports numpy)."""
    from ..metrics.transferability import TRANSFERABILITY_METRICS

    return TRANSFERABILITY_METRICS


def _check_metric(metric: str, *, accuracy_ok: bool = False) -> Callable[..., float] | None:
    """The estimator named ``metric`` (``None`` for the measured probe accuracy), or a ``ValueError``."""
    table = estimators()
    if metric in table:
        return table[metric]
    if accuracy_ok and metric == PROBE_ACCURACY:
        return None
    valid = sorted(table) + ([PROBE_ACCURACY] if accuracy_ok else [])
    raise ValueError(f"metric: unknown transferability metric {metric!r}; valid: {', '.join(valid)}")


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
    from ..probes import Standardizer

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
                    standardize: bool = True, context: Context | None = None) -> EstimatorInput:
    """The inputs of ``metric`` for ``model`` on ``split`` of ``dataset``, from the engine's (memoised) pass."""
    fn = _check_metric(metric)
    ctx = context or current_context()
    ev = evaluate(model, dataset, split=split, context=ctx)
    feats = standardized(ev.features) if standardize else np.asarray(ev.features, dtype=np.float64)
    kind = getattr(fn, "inputs", "features")
    values = {"features": feats, "probs": ev.probs, "preds": ev.preds}[kind]
    return EstimatorInput(values, ev.labels, kind, feats)


def estimate(fn: Callable[..., float], values: np.ndarray, labels: np.ndarray, kw: dict[str, Any], *,
              ctx: Context) -> float:
    """``fn(values, labels, **kw)``, cached (:func:`~pytest_transfer.derived.estimate`): rankings and gates
    ask for the same scores, and a rerun reads them from the disk cache."""
    from ..derived import estimate

    return estimate(fn, values, labels, kw, context=ctx)


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
                 "standardize": standardize and inp.kind == "features", "dim": int(inp.features.shape[1])},
        hint="compare with rank_models() against a reference model, and check the preprocess and feature node; "
             "estimator values are only comparable between models on the same dataset",
    )


# --------------------------------------------------------------------------- rankings


@dataclass(frozen=True)
class RankedModel:
    """One row of :func:`rank_models`: the model, its score, the k-NN accuracy beside it, its rank (1 = best)."""

    model: str
    score: float
    knn_accuracy: float
    rank: int
    metric: str

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "score": self.score, "knn_accuracy": self.knn_accuracy, "rank": self.rank}


def _model_score(model: TransferModel, dataset: TargetDataset, metric: str, *, split: str, standardize: bool,
                 k: int, ctx: Context, kw: dict[str, Any]) -> tuple[float, float, Any]:
    """``(score, knn_accuracy, per-sample data for intervals)``."""
    from ..metrics import knn_accuracy

    fn = _check_metric(metric, accuracy_ok=True)
    if fn is None:  # measured: probe fitted on train, scored on test
        from ..predictions import predict

        pr = predict(model, dataset, method="linear_probe", split="test", context=ctx)
        train = estimator_input(model, dataset, "knn_accuracy", split=split, standardize=standardize, context=ctx)
        return (float(pr.correct.mean()),
                estimate(knn_accuracy, train.features, train.labels, {"k": k}, ctx=ctx), pr.correct)
    inp = estimator_input(model, dataset, metric, split=split, standardize=standardize, context=ctx)
    score = estimate(fn, inp.values, inp.labels, kw, ctx=ctx)
    return score, estimate(knn_accuracy, inp.features, inp.labels, {"k": k}, ctx=ctx), inp


def _sort_rows(names: Sequence[str], scores: Sequence[float], knn: Sequence[float], metric: str,
               higher_is_better: bool) -> list[RankedModel]:
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(range(len(names)), key=lambda i: (-sign * scores[i], -knn[i], i))  # ties: k-NN, then input order
    return [RankedModel(names[i], float(scores[i]), float(knn[i]), r + 1, metric) for r, i in enumerate(order)]


def rank_models(models: Iterable[Any], dataset: Any, *, metric: str = "logme", split: str = "train",
                standardize: bool = True, k: int = 20, metric_kwargs: dict[str, Any] | None = None
                ) -> list[RankedModel]:
    """Rank candidate models on ``dataset`` by a transferability estimator, best first.

    Each row carries the model's name, its score, the leave-one-out k-NN
    accuracy of its standardised train features (reported beside every
    estimator: it is often the better predictor, Sorkhei et al. 2025) and its
    rank. ``metric`` is any name of
    :data:`~pytest_transfer.metrics.transferability.TRANSFERABILITY_METRICS`, or
    ``"linear_probe_accuracy"`` for the measured transfer accuracy (probe
    fitted on train, scored on test). Ties are broken by the k-NN accuracy,
    then by the order given. One pass per model (memoised).

    >>> rows = rank_models(["efficientnet-lite0", "efficientnet-lite0-random"], "digits-shifted")  # doctest: +SKIP
    >>> [(r.rank, r.model) for r in rows]  # doctest: +SKIP
    [(1, 'efficientnet-lite0'), (2, 'efficientnet-lite0-random')]
    """
    fn = _check_metric(metric, accuracy_ok=True)
    ctx = current_context()
    candidates = list(models)
    if not candidates:
        raise ValueError("models: got an empty list; pass at least one model (spec string or TransferModel)")
    first, dataset = resolve_pair(candidates[0], dataset)  # the dataset is loaded once
    resolved = [(first, dataset), *(resolve_pair(m, dataset) for m in candidates[1:])]
    names = [m.name for m, _ in resolved]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"models: several candidates are named {dupes}; give each a distinct name "
                         "(load_model(..., name=...))")
    kw = dict(metric_kwargs or {})
    scores, knn = [], []
    for m, ds in resolved:
        s, kn, _ = _model_score(m, ds, metric, split=split, standardize=standardize, k=k, ctx=ctx, kw=kw)
        scores.append(s)
        knn.append(kn)
    return _sort_rows(names, scores, knn, metric, True if fn is None else bool(fn.higher_is_better))


def assert_ranks_above(model_a: Any, model_b: Any, dataset: Any, *, metric: str = "logme", margin: float = 0.0,
                       split: str = "train", standardize: bool = True, confidence: str | None = None,
                       k: int = 20, n_resamples: int = 200, metric_kwargs: dict[str, Any] | None = None
                       ) -> Measurement:
    """Gate: candidate ``model_a`` stays at least as transferable as reference ``model_b`` on ``dataset``.

    The measured value is ``score(a) − score(b)`` (for the chosen estimator,
    computed as in :func:`rank_models`); it must be at least ``margin``: 0
    means "ranks at least level", a positive margin demands a lead, a negative
    one tolerates a small loss. With a confidence mode the interval comes from
    paired half-samples of the same train samples (estimators, see
    :func:`half_sample_interval`) or Newcombe's paired
    interval on the same test samples (``metric="linear_probe_accuracy"``).
    The two-row ranking (with k-NN accuracies) is kept in ``details["ranking"]``.

    >>> assert_ranks_above("efficientnet-lite0", "efficientnet-lite0-random", "digits-shifted")  # doctest: +SKIP
    """
    __tracebackhide__ = True
    fn = _check_metric(metric, accuracy_ok=True)
    g = open_gate(model_a, dataset, threshold=margin, argument="margin", keys=(), confidence=confidence)
    ctx, a, ds = g.ctx, g.model, g.dataset
    b, _ = resolve_pair(model_b, ds)
    if a.name == b.name:
        raise ValueError(f"model_b: has the same name as model_a ({a.name!r}); give them distinct names")
    kw = dict(metric_kwargs or {})
    sa, ka, da = _model_score(a, ds, metric, split=split, standardize=standardize, k=k, ctx=ctx, kw=kw)
    sb, kb, db = _model_score(b, ds, metric, split=split, standardize=standardize, k=k, ctx=ctx, kw=kw)
    higher = True if fn is None else bool(fn.higher_is_better)
    diff = sa - sb if higher else sb - sa
    interval = None
    if g.mode != "none":
        level = ctx.settings.confidence_level
        if fn is None:
            from ..metrics.stats import paired_difference_interval

            interval = paired_difference_interval(da, db, confidence=level)
        else:
            sign = 1.0 if higher else -1.0
            interval = _interval(lambda va, vb, y: sign * (fn(va, y, **kw) - fn(vb, y, **kw)), diff,
                                 da.values, db.values, labels=da.labels, ctx=ctx, n_resamples=n_resamples,
                                 bounds=None)
    rows = _sort_rows([a.name, b.name], [sa, sb], [ka, kb], metric, higher)
    return g.finish(
        gate=RANKS_ABOVE.name, metric=f"{metric}_lead", label=f"{metric_label(metric)} lead over reference {b.name!r}",
        value=diff, interval=interval, higher_is_better=True,
        details={"method": metric, "split": "test" if fn is None else split, "reference": b.name,
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
                        standardize: bool = True, metric_kwargs: dict[str, Any] | None = None) -> Agreement:
    """Weighted Kendall τ (Vigna 2015) between ``metric``'s scores and the measured linear-probe accuracies.

    The standard way papers judge an estimator over a model zoo (You et al.
    2021, Pándy et al. 2022): 1 means the estimator orders the models exactly
    as transfer does, with the top of the ranking weighted most. Also reports
    plain Kendall τ-b. Needs at least two models whose scores and accuracies
    are not all equal.

    >>> estimator_agreement(zoo, "digits-shifted", metric="logme").weighted_tau  # doctest: +SKIP
    """
    from ..metrics.rank_agreement import kendall_tau, weighted_kendall_tau

    models = list(models)
    est = rank_models(models, dataset, metric=metric, split=split, standardize=standardize,
                      metric_kwargs=metric_kwargs)
    acc = rank_models(models, dataset, metric=PROBE_ACCURACY, split=split, standardize=standardize)
    scores = {r.model: r.score for r in est}
    accuracies = {r.model: r.score for r in acc}
    names = list(scores)
    s = [scores[n] for n in names]
    y = [accuracies[n] for n in names]
    return Agreement(metric, weighted_kendall_tau(s, y), kendall_tau(s, y), scores, accuracies)


# --------------------------------------------------------------------------- layer-wise transfer
