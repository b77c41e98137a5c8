"""Layer-wise transferability: probes at several nodes of one model, from one pass with all taps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..api import resolve_pair, session
from ..context import Context, Measurement
from ..declarations import LAYER_TRANSFER
from ..engine.memo import evaluate
from ..methods import get_method
from ..methods.features import feature_methods
from .core import open_gate
from .transferability import (
    estimate,
    estimators,
    metric_label,
    standardized,
)


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
        return {"x": list(self.nodes), "y": [float(v) for v in self._get(metric)], "label": metric_label(metric)}

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
    table = estimators()
    out: list[str] = []
    for m in metrics:
        if m not in feature_methods() and (m not in table or getattr(table[m], "inputs", "") != "features"):
            feats = sorted(n for n, f in table.items() if getattr(f, "inputs", "") == "features")
            raise ValueError(f"metrics: {m!r} cannot be measured at a layer; use {', '.join(feature_methods())} or a "
                             f"feature-based estimator ({', '.join(feats)})")
        if m not in out:
            out.append(m)
    if not out:
        raise ValueError("metrics: empty; pass e.g. ('linear_probe', 'logme')")
    return out


def layerwise_transfer(model: Any, dataset: Any, nodes: Sequence[str], *,
                       metrics: Sequence[str] = ("linear_probe", "logme"), standardize: bool = True,
                       C: float = 1.0, k: int = 20, context: Context | None = None) -> LayerwiseResult:
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
    ctx = session(context)
    model, dataset = resolve_pair(model, dataset, ctx)
    if isinstance(nodes, str):
        nodes = [nodes]
    nodes = list(dict.fromkeys(nodes))
    if not nodes:
        raise ValueError("nodes: empty; name at least one node, e.g. ['penultimate']")
    for n in nodes:
        model.resolve_node(n)  # a clear error before any pass
    wanted = _check_layer_metrics(metrics)
    table = estimators()
    train = evaluate(model, dataset, split="train", taps=nodes, context=ctx)
    test = (evaluate(model, dataset, split="test", taps=nodes, context=ctx)
            if any(m in feature_methods() for m in wanted) else None)
    scores: dict[str, list[float]] = {m: [] for m in wanted}
    # the feature methods (linear probe, k-NN) at the array level: one head fitted per node on its train features
    heads = {m: get_method(m, k=k, C=C) for m in wanted if m in feature_methods()}
    correct: dict[str, list[int]] = {m: [] for m in heads}
    for n in nodes:
        xtr = train.taps[n]
        std = None
        for m in wanted:
            if m in heads:
                pred, _ = heads[m].fit_features(xtr, train.labels, context=ctx).predict_features(test.taps[n],
                                                                                                 context=ctx)
                hits = int(np.sum(pred == test.labels))
            else:
                if std is None:
                    std = standardized(xtr) if standardize else np.asarray(xtr, dtype=np.float64)
                scores[m].append(estimate(table[m], std, train.labels, {}, ctx=ctx))
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
    if method not in feature_methods():
        raise ValueError(f"method: expected one of {', '.join(feature_methods())} (the methods on features), "
                         f"got {method!r}")
    if nodes is None or isinstance(nodes, str):
        nodes = [] if nodes is None else [nodes]
    nodes = list(nodes)
    if layer != "best" and layer not in nodes:
        nodes.append(layer)
    if not nodes:
        raise ValueError("nodes: name the nodes to compare (e.g. nodes=['_blocks.5', 'penultimate']) "
                         "or a layer=")
    g = open_gate(model, dataset, threshold=threshold, argument="threshold", keys=(LAYER_TRANSFER.key,),
                  confidence=confidence)
    res = layerwise_transfer(g.model, g.dataset, nodes, metrics=(method,), C=C, k=k, context=g.ctx)
    chosen = res.best(method)[0] if layer == "best" else layer
    i = res.nodes.index(chosen)
    hits, n = res.correct[method][i], res.n_test
    curve = res.curve(method)
    return g.finish(
        gate=LAYER_TRANSFER.name, metric=LAYER_TRANSFER.key,
        label=f"Transfer accuracy ({method}) at layer {chosen!r}" + (" (best)" if layer == "best" else ""),
        value=hits / n, interval=g.accuracy_interval(hits, n), higher_is_better=LAYER_TRANSFER.higher_is_better,
        details={"method": method, "split": "test", "n": n, "layer": chosen, "selection": layer, "curve": curve,
                 "dims": res.dims},
        hint="per layer: " + ", ".join(f"{x}={y:.4f}" for x, y in zip(curve["x"], curve["y"], strict=True))
             + "; earlier layers often transfer better to targets far from the source domain",
    )


# --------------------------------------------------------------------------- drop under dataset shift
