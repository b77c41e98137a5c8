"""Transferability gates, model rankings, layer-wise transfer, drop under dataset shift and model similarity.

Conventions shared by everything here:

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..assertions import _confidence_mode, find_threshold, finish_gate
from ..context import Context, Measurement, current_context
from ..engine import evaluate
from ..predictions import probe_for, resolve_pair
from ..thresholds import explicit

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..datasets import TargetDataset
    from ..models import TransferModel

#: measured transfer accuracy on the test split (not an estimator): usable as ``metric=`` in rankings
PROBE_ACCURACY = "linear_probe_accuracy"
LAYER_ACCURACIES = ("linear_probe", "knn")
_LABELS = {"linear_probe": "linear probe accuracy", "knn": "k-NN accuracy", PROBE_ACCURACY: "linear probe accuracy",
           "logme": "LogME", "leep": "LEEP", "nce": "NCE", "hscore": "H-score", "knn_accuracy": "k-NN accuracy"}


def _label(metric: str) -> str:
    return _LABELS.get(metric, metric)


def _estimators() -> dict[str, Callable[..., float]]:
    from ..metrics.transferability import TRANSFERABILITY_METRICS

    return TRANSFERABILITY_METRICS


def _check_metric(metric: str, *, accuracy_ok: bool = False) -> Callable[..., float] | None:
    """The estimator named ``metric`` (``None`` for the measured probe accuracy), or a ``ValueError``."""
    table = _estimators()
    if metric in table:
        return table[metric]
    if accuracy_ok and metric == PROBE_ACCURACY:
        return None
    valid = sorted(table) + ([PROBE_ACCURACY] if accuracy_ok else [])
    raise ValueError(f"metric: unknown transferability metric {metric!r}; valid: {', '.join(valid)}")


def _standardized(x: np.ndarray) -> np.ndarray:
    from ..probes import Standardizer

    x = np.asarray(x, dtype=np.float64)
    return Standardizer.fit(x)(x)


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
    feats = _standardized(ev.features) if standardize else np.asarray(ev.features, dtype=np.float64)
    kind = getattr(fn, "inputs", "features")
    values = {"features": feats, "probs": ev.probs, "preds": ev.preds}[kind]
    return EstimatorInput(values, ev.labels, kind, feats)


def _estimate(fn: Callable[..., float], values: np.ndarray, labels: np.ndarray, kw: dict[str, Any], *,
              key: tuple[Any, ...], ctx: Context) -> float:
    """``fn(values, labels, **kw)``, memoised in the session: rankings and gates ask for the same scores."""
    full = ("estimate", *key, getattr(fn, "__name__", repr(fn)), repr(sorted(kw.items())))
    with ctx.lock:
        if full not in ctx.probes:
            ctx.probes[full] = float(fn(values, labels, **kw))
        return ctx.probes[full]


def _memo_key(model: TransferModel, dataset: TargetDataset, split: str, node: str, standardize: bool) -> tuple[
        Any, ...]:
    from ..engine import data_fingerprint, model_fingerprint  # these see in-place weight changes too

    return (model_fingerprint(model), data_fingerprint(dataset), dataset.split_fingerprint(split), node, standardize)


def half_sample_interval(statistic: Callable[..., float], value: float, *arrays: np.ndarray, labels: np.ndarray,
                         confidence: float = 0.95, n_resamples: int = 200, seed: int = 0,
                         bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """Normal interval ``value ± z·SE`` with SE from stratified half-samples drawn without replacement.

    Each resample keeps half of every class (rounded up) without replacement
    and calls ``statistic(*arrays_subset, labels_subset)``; for a statistic
    that behaves like a mean, the spread of half-sample values equals the
    standard error of the full-sample one (half-sampling, McCarthy 1969: the
    finite-population correction of m = N/2 cancels the 1/m). Unlike the
    with-replacement bootstrap it never duplicates a sample, which
    leave-one-out k-NN and evidence-based scores (LogME) would count as extra
    signal: a bootstrap interval of LogME can miss its own point estimate. The
    interval is clipped to ``bounds``.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=400); y = np.arange(400) % 2
    >>> lo, hi = half_sample_interval(lambda v, y: v.mean(), x.mean(), x, labels=y)
    >>> bool(lo < x.mean() < hi)
    True
    """
    from ..metrics.stats import normal_quantile

    if isinstance(n_resamples, bool) or int(n_resamples) < 2:
        raise ValueError(f"n_resamples: need at least 2 half-samples, got {n_resamples!r}")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    values = np.empty(int(n_resamples))
    for r in range(int(n_resamples)):
        idx = np.sort(np.concatenate([rng.choice(g, size=(len(g) + 1) // 2, replace=False) for g in groups]))
        values[r] = statistic(*(a[idx] for a in arrays), labels[idx])
    half = normal_quantile(confidence) * float(np.std(values, ddof=1))
    lo, hi = value - half, value + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return float(lo), float(hi)


def _interval(statistic: Callable[..., float], value: float, *arrays: np.ndarray, labels: np.ndarray,
              ctx: Context, n_resamples: int, bounds: tuple[float, float] | None) -> tuple[float, float]:
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
    ctx = current_context()
    model, dataset = resolve_pair(model, dataset)
    thr = find_threshold(ctx, threshold, "threshold", model.name, dataset.name, (metric,))
    mode = _confidence_mode(confidence, ctx)
    kw = dict(metric_kwargs or {})
    inp = estimator_input(model, dataset, metric, split=split, standardize=standardize, context=ctx)
    value = _estimate(fn, inp.values, inp.labels, kw, ctx=ctx,
                      key=_memo_key(model, dataset, split, model.feature_node, standardize))
    interval = None
    if mode != "none":
        interval = _interval(lambda v, y: fn(v, y, **kw), value, inp.values, labels=inp.labels, ctx=ctx,
                             n_resamples=n_resamples, bounds=fn.bounds)
    return finish_gate(
        ctx, gate="transferability", metric=metric, label=f"Transferability ({_label(metric)})", value=value,
        interval=interval, threshold=thr, higher_is_better=bool(fn.higher_is_better), mode=mode, model=model.name,
        dataset=dataset.name,
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
    key = _memo_key(model, dataset, split, model.feature_node, standardize)
    if fn is None:  # measured: probe fitted on train, scored on test
        from ..predictions import predict

        pr = predict(model, dataset, method="linear_probe", split="test", context=ctx)
        train = estimator_input(model, dataset, "knn_accuracy", split=split, standardize=standardize, context=ctx)
        return (float(pr.correct.mean()),
                _estimate(knn_accuracy, train.features, train.labels, {"k": k}, key=key, ctx=ctx), pr.correct)
    inp = estimator_input(model, dataset, metric, split=split, standardize=standardize, context=ctx)
    score = _estimate(fn, inp.values, inp.labels, kw, key=key, ctx=ctx)
    return score, _estimate(knn_accuracy, inp.features, inp.labels, {"k": k}, key=key, ctx=ctx), inp


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
    ctx = current_context()
    mode = _confidence_mode(confidence, ctx)
    a, ds = resolve_pair(model_a, dataset)
    b, _ = resolve_pair(model_b, ds)
    if a.name == b.name:
        raise ValueError(f"model_b: has the same name as model_a ({a.name!r}); give them distinct names")
    kw = dict(metric_kwargs or {})
    sa, ka, da = _model_score(a, ds, metric, split=split, standardize=standardize, k=k, ctx=ctx, kw=kw)
    sb, kb, db = _model_score(b, ds, metric, split=split, standardize=standardize, k=k, ctx=ctx, kw=kw)
    higher = True if fn is None else bool(fn.higher_is_better)
    diff = sa - sb if higher else sb - sa
    interval = None
    if mode != "none":
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
    return finish_gate(
        ctx, gate="ranks_above", metric=f"{metric}_lead", label=f"{_label(metric)} lead over reference {b.name!r}",
        value=diff, interval=interval, threshold=explicit(margin, "margin"), higher_is_better=True, mode=mode,
        model=a.name, dataset=ds.name,
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


@dataclass
class LayerwiseResult:
    """Per-node scores of one model on one dataset, all read from one forward pass per split.

    ``scores[metric]`` lists one value per node of ``nodes``; ``correct[metric]``
    the number of correct test predictions for the accuracy metrics
    (``linear_probe``, ``knn``), out of ``n_test``.
    """

    model: str
    dataset: str
    nodes: list[str]
    dims: list[int]
    scores: dict[str, list[float]]
    correct: dict[str, list[int]] = field(default_factory=dict)
    n_train: int = 0
    n_test: int = 0

    def curve(self, metric: str = "linear_probe") -> dict[str, Any]:
        """Plot-ready ``{"x": nodes, "y": values, "label": ...}``."""
        return {"x": list(self.nodes), "y": [float(v) for v in self._get(metric)], "label": _label(metric)}

    def best(self, metric: str = "linear_probe") -> tuple[str, float]:
        """``(node, value)`` of the best node (first one on ties)."""
        values = self._get(metric)
        i = int(np.argmax(values))
        return self.nodes[i], float(values[i])

    def _get(self, metric: str) -> list[float]:
        if metric not in self.scores:
            raise ValueError(f"metric: {metric!r} was not computed; available: {', '.join(self.scores)}")
        return self.scores[metric]


def _check_layer_metrics(metrics: Sequence[str]) -> list[str]:
    table = _estimators()
    out: list[str] = []
    for m in metrics:
        if m not in LAYER_ACCURACIES and (m not in table or getattr(table[m], "inputs", "") != "features"):
            feats = sorted(n for n, f in table.items() if getattr(f, "inputs", "") == "features")
            raise ValueError(f"metrics: {m!r} cannot be measured at a layer; use linear_probe, knn or a "
                             f"feature-based estimator ({', '.join(feats)})")
        if m not in out:
            out.append(m)
    if not out:
        raise ValueError("metrics: empty; pass e.g. ('linear_probe', 'logme')")
    return out


def _layer_probe(model: TransferModel, dataset: TargetDataset, node: str, train_x: np.ndarray,
                 train_y: np.ndarray, *, C: float, ctx: Context) -> Any:
    """The linear probe at ``node`` (shared with the accuracy gates at the model's own feature node)."""
    from ..probes import fit_linear_probe

    if node == model.feature_node:
        return probe_for(model, dataset, "linear_probe", ctx=ctx, C=C)
    key = ("linear_probe", *_memo_key(model, dataset, "train", node, True), C)
    with ctx.lock:
        if key not in ctx.probes:
            ctx.probes[key] = fit_linear_probe(train_x, train_y, C=C)
        return ctx.probes[key]


def layerwise_transfer(model: Any, dataset: Any, nodes: Sequence[str], *,
                       metrics: Sequence[str] = ("linear_probe", "logme"), standardize: bool = True,
                       C: float = 1.0, k: int = 20) -> LayerwiseResult:
    """Transfer at several nodes of one model: linear-probe accuracy, k-NN accuracy or an estimator per node.

    ``nodes`` are feature-node names (``"penultimate"``, a submodule name such
    as ``"_blocks.5"`` whose 4-d output is globally average-pooled, or
    ``"<submodule>:input"``). All nodes are read in **one forward pass** per
    split (train, test), whatever their number. ``linear_probe`` /
    ``knn``: fitted on train features, accuracy on the test split (as
    :func:`assert_transfer_accuracy_above`); estimators (``logme``, ...): on the
    train features, standardised with their own statistics.

    >>> nodes = ["_blocks.5", "_blocks.10", "penultimate"]
    >>> r = layerwise_transfer("efficientnet-lite0", "digits", nodes)  # doctest: +SKIP
    >>> r.best("linear_probe")  # doctest: +SKIP
    """
    from ..probes import knn_predict

    ctx = current_context()
    model, dataset = resolve_pair(model, dataset)
    if isinstance(nodes, str):
        nodes = [nodes]
    nodes = list(dict.fromkeys(nodes))
    if not nodes:
        raise ValueError("nodes: empty; name at least one node, e.g. ['penultimate']")
    for n in nodes:
        model.resolve_node(n)  # a clear error before any pass
    wanted = _check_layer_metrics(metrics)
    table = _estimators()
    train = evaluate(model, dataset, split="train", taps=nodes, context=ctx)
    test = (evaluate(model, dataset, split="test", taps=nodes, context=ctx)
            if any(m in LAYER_ACCURACIES for m in wanted) else None)
    scores: dict[str, list[float]] = {m: [] for m in wanted}
    correct: dict[str, list[int]] = {m: [] for m in wanted if m in LAYER_ACCURACIES}
    for n in nodes:
        xtr = train.taps[n]
        std = None
        for m in wanted:
            if m == "linear_probe":
                hits = int(np.sum(_layer_probe(model, dataset, n, xtr, train.labels, C=C, ctx=ctx)
                                  .predict(test.taps[n]) == test.labels))
            elif m == "knn":
                hits = int(np.sum(knn_predict(xtr, train.labels, test.taps[n], k=k) == test.labels))
            else:
                if std is None:
                    std = _standardized(xtr) if standardize else np.asarray(xtr, dtype=np.float64)
                scores[m].append(_estimate(table[m], std, train.labels, {}, ctx=ctx,
                                           key=_memo_key(model, dataset, "train", n, standardize)))
                continue
            correct[m].append(hits)
            scores[m].append(hits / len(test.labels))
    return LayerwiseResult(model.name, dataset.name, nodes, [int(train.taps[n].shape[1]) for n in nodes], scores,
                           correct, len(train.labels), len(test.labels) if test is not None else 0)


def assert_layer_transfer_above(model: Any, dataset: Any, threshold: float | None = None, *,
                                nodes: Sequence[str] | None = None, layer: str = "best",
                                method: str = "linear_probe", confidence: str | None = None, C: float = 1.0,
                                k: int = 20) -> Measurement:
    """Gate on the transfer accuracy at the best of several nodes, or at a named node.

    Accuracies at every node of ``nodes`` come from :func:`layerwise_transfer`
    (one forward pass per split); ``layer="best"`` gates the best of them,
    ``layer="<node>"`` that node (added to ``nodes`` if missing). Threshold key
    ``layer_accuracy``; Wilson interval. The best of k layers is picked on the
    test split, so it is optimistically biased when k is large: name the layer
    for an unbiased gate. The per-layer curve goes to ``details["curve"]``.

    >>> assert_layer_transfer_above(model, "digits-shifted", 0.9, nodes=["_blocks.5", "penultimate"])  # doctest: +SKIP
    """
    __tracebackhide__ = True
    from ..metrics import wilson_interval

    if method not in LAYER_ACCURACIES:
        raise ValueError(f"method: expected one of {', '.join(LAYER_ACCURACIES)}, got {method!r}")
    if nodes is None or isinstance(nodes, str):
        nodes = [] if nodes is None else [nodes]
    nodes = list(nodes)
    if layer != "best" and layer not in nodes:
        nodes.append(layer)
    if not nodes:
        raise ValueError("nodes: name the nodes to compare (e.g. nodes=['_blocks.5', 'penultimate']) "
                         "or a layer=")
    ctx = current_context()
    model, dataset = resolve_pair(model, dataset)
    thr = find_threshold(ctx, threshold, "threshold", model.name, dataset.name, ("layer_accuracy",))
    mode = _confidence_mode(confidence, ctx)
    res = layerwise_transfer(model, dataset, nodes, metrics=(method,), C=C, k=k)
    chosen = res.best(method)[0] if layer == "best" else layer
    i = res.nodes.index(chosen)
    hits, n = res.correct[method][i], res.n_test
    curve = res.curve(method)
    return finish_gate(
        ctx, gate="layer_transfer", metric="layer_accuracy",
        label=f"Transfer accuracy ({method}) at layer {chosen!r}" + (" (best)" if layer == "best" else ""),
        value=hits / n, interval=wilson_interval(hits, n, confidence=ctx.settings.confidence_level), threshold=thr,
        higher_is_better=True, mode=mode, model=model.name, dataset=dataset.name,
        details={"method": method, "split": "test", "n": n, "layer": chosen, "selection": layer, "curve": curve,
                 "dims": res.dims},
        hint="per layer: " + ", ".join(f"{x}={y:.4f}" for x, y in zip(curve["x"], curve["y"], strict=True))
             + "; earlier layers often transfer better to targets far from the source domain",
    )


# --------------------------------------------------------------------------- drop under dataset shift


@dataclass(frozen=True)
class DropResult:
    """Accuracy on a reference dataset minus accuracy on a shifted one (same label space)."""

    model: str
    reference: str
    shifted: str
    method: str
    reference_accuracy: float
    shifted_accuracy: float
    absolute: float
    relative: float
    interval: tuple[float, float]
    relative_interval: tuple[float, float]
    n_reference: int
    n_shifted: int
    confidence: float


def newcombe_independent_interval(successes_a: int, n_a: int, successes_b: int, n_b: int, *,
                                  confidence: float = 0.95) -> tuple[float, float]:
    """Interval for ``p_a − p_b`` from two independent samples: Newcombe's hybrid score interval.

    Newcombe (1998), "Interval estimation for the difference between independent
    proportions: comparison of eleven methods", Statistics in Medicine 17:873-890,
    method 10. With Wilson intervals ``(l_a, u_a)``, ``(l_b, u_b)`` and ``θ = p_a − p_b``:
    ``[θ − sqrt((p_a − l_a)² + (u_b − p_b)²), θ + sqrt((u_a − p_a)² + (p_b − l_b)²)]``.
    Close to nominal coverage, never outside [−1, 1], defined at 0 and 1.

    >>> [round(v, 4) for v in newcombe_independent_interval(56, 70, 48, 80)]  # Newcombe's example (a)
    [0.0524, 0.3339]
    """
    from ..metrics import wilson_interval

    for name, s, n in (("a", successes_a, n_a), ("b", successes_b, n_b)):
        if n < 1 or not 0 <= s <= n:
            raise ValueError(f"successes_{name}/n_{name}: need 0 <= successes <= n and n >= 1, got {s}/{n}")
    pa, pb = successes_a / n_a, successes_b / n_b
    la, ua = wilson_interval(successes_a, n_a, confidence=confidence)
    lb, ub = wilson_interval(successes_b, n_b, confidence=confidence)
    theta = pa - pb
    return (max(-1.0, theta - float(np.hypot(pa - la, ub - pb))),
            min(1.0, theta + float(np.hypot(ua - pa, pb - lb))))


def drop_in_performance(model: Any, reference_dataset: Any, shifted_dataset: Any, *, method: str = "linear_probe",
                        split: str = "test", shifted_split: str | None = None, max_drop: float | None = None,
                        relative: bool = False, confidence: str | None = None, k: int = 20,
                        C: float = 1.0, finetune: dict[str, Any] | None = None) -> DropResult:
    """Accuracy on ``reference_dataset`` minus accuracy on ``shifted_dataset`` (same classes), with an interval.

    The probe (``linear_probe`` or ``knn``) is fitted on the reference
    dataset's train split and scored on the reference ``split`` and on the
    shifted dataset's ``shifted_split`` (default: the same name): a shift the
    probe never saw. ``finetune`` fine-tunes on the reference train split (options
    in ``finetune=``, see :func:`assert_transfer_accuracy_above`) and scores the
    tuned model on both; ``direct`` uses the model's own head on both. The two
    accuracies come from different samples, so the interval is Newcombe's
    hybrid score interval for independent proportions (see
    :func:`newcombe_independent_interval`); the relative drop is
    ``absolute / reference accuracy`` with its interval divided by the same
    (the reference accuracy treated as fixed; NaN when it is 0).

    With ``max_drop`` it is also a gate (on the relative drop when
    ``relative=True``): it records a measurement and raises when exceeded.

    >>> d = drop_in_performance("efficientnet-lite0", "digits", "digits-shifted")  # doctest: +SKIP
    >>> d.absolute, d.interval  # doctest: +SKIP
    """
    __tracebackhide__ = True
    from ..predictions import check_method, predict
    from ..probes import knn_predict

    check_method(method)
    ctx = current_context()
    model, ref = resolve_pair(model, reference_dataset)
    _, shifted = resolve_pair(model, shifted_dataset)
    if list(ref.classes) != list(shifted.classes):
        raise ValueError(
            f"shifted_dataset: {shifted.name!r} has classes {shifted.classes[:10]} but the reference {ref.name!r} "
            f"has {ref.classes[:10]}; a drop in performance needs the same label space (relabel one of them)"
        )
    shifted_split = split if shifted_split is None else shifted_split
    base = predict(model, ref, method=method, split=split, k=k, C=C, context=ctx,
                   **({"finetune": finetune} if method == "finetune" else {}))
    if method in ("direct", "finetune"):
        head = model
        if method == "finetune":
            from ..finetune import FinetuneConfig, finetuned_model

            head = finetuned_model(model, ref, FinetuneConfig.from_dict(finetune), ctx=ctx, seed=ctx.settings.seed)
        other = predict(head, shifted, method="direct", split=shifted_split, context=ctx)
        pred, y_shift = other.y_pred, other.y_true
    else:
        ev = evaluate(model, shifted, split=shifted_split, context=ctx)
        probe = probe_for(model, ref, method, ctx=ctx, k=k, C=C)
        if method == "linear_probe":
            pred = probe.predict(ev.features)
        else:
            pred = knn_predict(probe[0], probe[1], ev.features, k=k)
        y_shift = ev.labels
    hits_ref, n_ref = int(base.correct.sum()), base.n
    hits_shift, n_shift = int(np.sum(pred == y_shift)), len(y_shift)
    level = ctx.settings.confidence_level
    acc_ref, acc_shift = hits_ref / n_ref, hits_shift / n_shift
    absolute = acc_ref - acc_shift
    interval = newcombe_independent_interval(hits_ref, n_ref, hits_shift, n_shift, confidence=level)
    nan = float("nan")
    rel = absolute / acc_ref if acc_ref > 0 else nan
    rel_interval = (interval[0] / acc_ref, interval[1] / acc_ref) if acc_ref > 0 else (nan, nan)
    result = DropResult(model.name, ref.name, shifted.name, method, acc_ref, acc_shift, absolute, rel, interval,
                        rel_interval, n_ref, n_shift, level)
    if max_drop is not None:
        mode = _confidence_mode(confidence, ctx)
        if relative and acc_ref == 0:
            raise ValueError(f"relative drop is undefined: accuracy of {model.name!r} on {ref.name!r} is 0")
        finish_gate(
            ctx, gate="shift_max_drop", metric="shift_max_drop",
            label=f"Accuracy drop from {ref.name!r} to {shifted.name!r}" + (" (relative)" if relative else ""),
            value=rel if relative else absolute, interval=rel_interval if relative else interval,
            threshold=explicit(max_drop, "max_drop"), higher_is_better=False, mode=mode, model=model.name,
            dataset=shifted.name,
            details={"method": method, "split": shifted_split, "n": n_shift, "relative": relative,
                     "reference": ref.name, "reference_accuracy": acc_ref, "shifted_accuracy": acc_shift,
                     "n_reference": n_ref},
            hint=f"accuracy {acc_ref:.4f} on {ref.name!r}, {acc_shift:.4f} on {shifted.name!r}; train with "
                 "augmentations that cover the shift, or compare layers with layerwise_transfer()",
        )
    return result


# --------------------------------------------------------------------------- model similarity


def feature_cka(model_a: Any, model_b: Any, dataset: Any, *, split: str = "test", node_a: str | None = None,
                node_b: str | None = None, debiased: bool = False) -> float:
    """Linear CKA (Kornblith et al. 2019) between two models' features on the same images.

    Features at each model's feature node (or ``node_a`` / ``node_b``) on
    ``split`` of ``dataset``, from the engine's memoised passes; 1 for
    representations equal up to rotation and isotropic scaling.

    >>> feature_cka("efficientnet-lite0", "efficientnet-lite0-random", "digits")  # doctest: +SKIP
    """
    from ..metrics.similarity import linear_cka

    ctx = current_context()
    a, ds = resolve_pair(model_a, dataset)
    b, _ = resolve_pair(model_b, ds)
    ea = evaluate(a, ds, split=split, taps=[node_a] if node_a else [], context=ctx)
    eb = evaluate(b, ds, split=split, taps=[node_b] if node_b else [], context=ctx)
    return linear_cka(ea.taps[node_a] if node_a else ea.features, eb.taps[node_b] if node_b else eb.features,
                      debiased=debiased)


NTK_KERNELS = ("pntk", "trace")
NTK_MAX_BYTES = 4 << 30


def _param_owner(name: str) -> str:
    return name.rpartition(".")[0]


def select_ntk_parameters(module: Any, *, layers: int | str | Sequence[str] | None = None,
                          max_params: int | None = None) -> list[str]:
    """Names of the parameters whose gradients make the empirical NTK.

    ``layers``: ``None`` (all), an int k (the parameters of the last k
    submodules that own parameters, in registration order) or submodule name
    prefixes. ``max_params``: then keep the longest run of parameter tensors
    from the end whose total size fits the budget.
    """
    named = [(n, p) for n, p in module.named_parameters()]
    if layers is not None:
        if isinstance(layers, bool) or (isinstance(layers, int) and layers < 1):
            raise ValueError(f"layers: expected a positive number of layers or submodule names, got {layers!r}")
        if isinstance(layers, int):
            owners = list(dict.fromkeys(_param_owner(n) for n, _ in named))
            keep = set(owners[-layers:])
            named = [(n, p) for n, p in named if _param_owner(n) in keep]
        else:
            prefixes = [layers] if isinstance(layers, str) else list(layers)
            for pre in prefixes:
                if not any(n == pre or n.startswith(pre + ".") for n, _ in named):
                    owners = list(dict.fromkeys(_param_owner(n) for n, _ in named))
                    raise ValueError(f"layers: {pre!r} owns no parameters; the last ones are "
                                     f"{', '.join(owners[-6:])}")
            named = [(n, p) for n, p in named if any(n == pre or n.startswith(pre + ".") for pre in prefixes)]
    if max_params is not None:
        if int(max_params) < 1:
            raise ValueError(f"max_params: expected a positive parameter budget, got {max_params}")
        kept: list[tuple[str, Any]] = []
        total = 0
        for n, p in reversed(named):
            if total + p.numel() > max_params:
                break
            kept.insert(0, (n, p))
            total += p.numel()
        if not kept:
            n, p = named[-1]
            raise ValueError(f"max_params: {max_params} is smaller than the last parameter tensor {n!r} "
                             f"({p.numel()} values); raise the budget or choose layers=")
        named = kept
    if not named:
        raise ValueError("layers: selects no parameters; the model has none to take gradients of")
    return [n for n, _ in named]


def _as_images(images: Any, *, n_samples: int, split: str) -> torch.Tensor:
    import torch

    from ..datasets import TargetDataset, load_dataset

    if isinstance(images, (str, TargetDataset)):
        ds = images if isinstance(images, TargetDataset) else load_dataset(images)
        idx = ds.indices(split)[:n_samples]
        return ds.batch(idx)
    x = torch.as_tensor(np.asarray(images) if not hasattr(images, "detach") else images.detach()).float()
    if x.ndim != 4:
        raise ValueError(f"images: expected N×C×H×W float images in [0, 1], got shape {tuple(x.shape)}")
    if len(x) < 2:
        raise ValueError(f"images: got {len(x)} image(s); NTK similarity needs at least 2 (CKA on an N×N Gram)")
    return x


def ntk_gram(model: Any, images: Any, *, layers: int | str | Sequence[str] | None = None,
             max_params: int | None = None, kernel: str = "pntk", n_samples: int = 64, split: str = "test",
             batch_size: int = 16, centered: bool = False) -> np.ndarray:
    """The empirical neural-tangent-kernel Gram matrix of ``model`` on ``images`` (N×N, float64).

    ``Θ(x, x') = J(x) J(x')ᵀ`` with ``J`` the gradient of the outputs with
    respect to the selected parameters (see :func:`select_ntk_parameters`), per
    sample, computed with ``torch.func`` (``vmap`` of ``grad``/``jacrev`` over a
    ``functional_call``; the module in eval mode, images through its preprocess).
    ``kernel="pntk"`` (default): the pseudo-NTK of Mohamadi et al. 2023, the NTK
    of the summed logits divided by the number of outputs C, one gradient per
    sample. ``kernel="trace"``: the mean over the C outputs of each output's NTK
    (the trace of the full NC×NC eNTK over C), C gradients per sample.
    Memory: N × P × 4 bytes (× C for ``trace``) for P selected parameters.
    ``centered=True`` returns ``H Θ H`` (``H = I − 11ᵀ/N``), computed from
    gradients centred over the samples: exact where forming Θ first would lose
    the small sample-dependent part against a large constant one (the bias
    gradients of a network whose features are tiny, e.g. at random init).
    """
    import torch
    from torch.func import functional_call, grad, jacrev, vmap

    from ..models import load_model

    if kernel not in NTK_KERNELS:
        raise ValueError(f"kernel: expected one of {', '.join(NTK_KERNELS)}, got {kernel!r}")
    if not hasattr(model, "module"):
        model = load_model(model)
    ctx = current_context()
    x_all = _as_images(images, n_samples=n_samples, split=split)
    module = model.module.eval()
    device = ctx.device
    model.to(device)
    names = select_ntk_parameters(module, layers=layers, max_params=max_params)
    params = dict(module.named_parameters())
    chosen = {n: params[n].detach() for n in names}
    fixed = {n: p.detach() for n, p in params.items() if n not in chosen}
    buffers = {n: b.detach() for n, b in module.named_buffers()}
    with torch.inference_mode():
        n_out = int(torch.as_tensor(model(x_all[:1].to(device))).reshape(-1).numel())
    p_total = sum(t.numel() for t in chosen.values())
    width = p_total * (n_out if kernel == "trace" else 1)
    need = len(x_all) * width * 4
    if need > NTK_MAX_BYTES:
        raise ValueError(
            f"images: {len(x_all)} samples × {width:,} gradient entries need {need / 2**30:.1f} GiB; restrict the "
            "parameters (layers=..., max_params=...), use fewer images, or kernel='pntk'"
        )

    def outputs(p: dict[str, Any], xi: Any) -> Any:
        out = functional_call(module, ({**fixed, **p}, buffers), (xi.unsqueeze(0),))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(-1)

    def summed(p: dict[str, Any], xi: Any) -> Any:
        return outputs(p, xi).sum()

    per_sample = vmap(grad(summed) if kernel == "pntk" else jacrev(outputs), in_dims=(None, 0))
    rows = torch.empty(len(x_all), width, dtype=torch.float32, device=device)
    with torch.enable_grad(), torch.inference_mode(False):
        for start in range(0, len(x_all), batch_size):
            xb = model.preprocess(x_all[start:start + batch_size].to(device))
            g = per_sample(chosen, xb)
            rows[start:start + len(xb)] = torch.cat([g[n].reshape(len(xb), -1) for n in names], dim=1)
    gram = torch.zeros(len(x_all), len(x_all), dtype=torch.float64, device=device)
    step = max(1, (1 << 24) // max(1, len(x_all)))
    for c0 in range(0, width, step):
        block = rows[:, c0:c0 + step].double()
        if centered:  # H J Jᵀ H = (H J)(H J)ᵀ: no cancellation against large constant gradients (biases)
            block -= block.mean(dim=0, keepdim=True)
        gram += block @ block.T
    return (gram / n_out).cpu().numpy()


def ntk_similarity(model_a: Any, model_b: Any, images: Any, *, layers: int | str | Sequence[str] | None = None,
                   max_params: int | None = None, kernel: str = "pntk", n_samples: int = 64, split: str = "test",
                   debiased: bool = False, batch_size: int = 16) -> float:
    """CKA between two models' empirical NTK Gram matrices on the same images.

    What it means: the empirical NTK ``Θ(x, x') = ⟨∂f(x)/∂θ, ∂f(x')/∂θ⟩`` says
    which samples a small gradient step on ``x`` also moves; two models with a
    high NTK-CKA (near 1) would *change* alike under fine-tuning from here,
    which feature CKA (:func:`feature_cka`) does not see. Restricted to the
    final linear layer it equals the linear CKA of the penultimate features.

    ``images``: float [0, 1] images N×C×H×W, or a dataset (spec or object)
    whose ``split`` gives the first ``n_samples`` images. Each model applies
    its own preprocess. ``layers`` / ``max_params`` restrict the parameters
    (the same rule for both models, see :func:`select_ntk_parameters`);
    ``kernel`` is ``"pntk"`` or ``"trace"`` (see :func:`ntk_gram`).

    Cost per model: N per-sample gradients (vmapped in batches of
    ``batch_size``: about N forward+backward passes), N × P × 4 bytes of memory
    for P selected parameters (× C outputs with ``kernel="trace"``; more than
    4 GiB is refused), and an O(N² P) Gram product. For EfficientNet-Lite0
    (4.7 M parameters) and 64 images: about 1.2 GiB; ``layers=3`` or
    ``max_params=500_000`` makes it a few MB.

    >>> ntk_similarity("efficientnet-lite0", "efficientnet-lite0-random", "digits", layers=2)  # doctest: +SKIP
    """
    from ..metrics.similarity import cka_from_grams

    x = _as_images(images, n_samples=n_samples, split=split)
    ka = ntk_gram(model_a, x, layers=layers, max_params=max_params, kernel=kernel, batch_size=batch_size,
                  centered=not debiased)
    kb = ntk_gram(model_b, x, layers=layers, max_params=max_params, kernel=kernel, batch_size=batch_size,
                  centered=not debiased)
    for name, k, m in (("model_a", ka, model_a), ("model_b", kb, model_b)):
        if _centered_norm(k) == 0.0:
            raise ValueError(
                f"{name}: every image gets the same gradient for the selected parameters of "
                f"{getattr(m, 'name', m)!r} (e.g. only a bias), so its NTK carries no information; select more "
                "parameters (layers=..., a larger max_params)"
            )
    return cka_from_grams(ka, kb, debiased=debiased)


def _centered_norm(k: np.ndarray) -> float:
    """Frobenius norm of ``H K H``: 0 when the kernel does not depend on the sample."""
    kc = k - k.mean(axis=0) - k.mean(axis=1)[:, None] + k.mean()
    return float(np.linalg.norm(kc)) if np.abs(kc).max(initial=0.0) > 1e-12 * np.abs(k).max(initial=0.0) else 0.0


__all__ = [
    "Agreement",
    "DropResult",
    "LayerwiseResult",
    "RankedModel",
    "assert_layer_transfer_above",
    "assert_ranks_above",
    "assert_transferability_above",
    "drop_in_performance",
    "estimator_agreement",
    "feature_cka",
    "half_sample_interval",
    "layerwise_transfer",
    "newcombe_independent_interval",
    "ntk_gram",
    "ntk_similarity",
    "rank_models",
    "select_ntk_parameters",
]
