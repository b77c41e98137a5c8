"""The declaration of every transferability estimator: name, label, direction, bounds and inputs.

This table is the one place an estimator is declared. Its function lives in
:mod:`pytest_transfer.metrics.transferability` under the same name (decorated
with ``@estimator``, which attaches this declaration to it, and found there by
name in ``TRANSFERABILITY_METRICS``: this module never imports it); threshold keys
and their valid ranges (:data:`pytest_transfer.thresholds.KNOWN_KEYS`), config
validation, gate labels, rankings and the HTML report read this table. It
imports only the standard library, so validating a config never imports numpy.

To add an estimator: one row here, and the function (same name) with
``@estimator`` in ``metrics/transferability.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

INF = math.inf


@dataclass(frozen=True)
class Estimator:
    """One transferability estimator as declared.

    ``bounds`` is the metric's range ``(low, high)`` (an infinite end: unbounded);
    ``inputs`` says what it is fed: ``"features"`` (N×D), ``"probs"`` (the
    source head's N×Z probabilities) or ``"preds"`` (source predictions).
    """

    name: str
    label: str
    higher_is_better: bool
    bounds: tuple[float, float]
    inputs: str
    standardize: bool = True  # False: the gates feed raw features (the score depends on their scale by design)


ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (
    Estimator("logme", "LogME", True, (-INF, INF), "features"),
    Estimator("leep", "LEEP", True, (-INF, 0.0), "probs"),
    Estimator("nce", "NCE", True, (-INF, 0.0), "preds"),
    Estimator("hscore", "H-score", True, (0.0, INF), "features"),
    Estimator("regularized_hscore", "regularized H-score", True, (0.0, INF), "features"),
    Estimator("transrate", "TransRate", True, (-INF, INF), "features"),
    Estimator("gbc", "GBC", True, (-INF, 0.0), "features"),
    Estimator("nleep", "N-LEEP", True, (-INF, 0.0), "features"),
    Estimator("sfda", "SFDA", True, (0.0, 1.0), "features"),
    Estimator("knn_accuracy", "k-NN accuracy", True, (0.0, 1.0), "features"),
    Estimator("lfc", "LFC", True, (-1.0, 1.0), "features"),
    Estimator("etran", "ETran", True, (-INF, INF), "features", standardize=False),
)}
"""Every transferability estimator by name, in the order the docs list them."""


@dataclass(frozen=True)
class BenchmarkRow:
    """How an estimator (or protocol) agreed with measured transfer on ``benchmarks/bench_estimator_quality.py``:
    mean weighted Kendall tau and pairwise accuracy over the targets, and seconds per model × target."""

    weighted_tau: float
    pairwise_accuracy: float
    seconds: float


#: measured agreement of each protocol with held-out linear-probe accuracy on the project's benchmark (see the
#: docs' transferability page for the zoo and its noise ceiling); estimators below 0 (worse than chance) warn
#: when used as a gate. Filled from the benchmark's printed table; a rerun that changes it must update this.
BENCHMARK: dict[str, BenchmarkRow] = {
    "linear_probe_cv_accuracy": BenchmarkRow(0.82, 0.97, 51.61),  # measured, rank_models' default: the ceiling
    "knn_accuracy": BenchmarkRow(0.85, 0.96, 0.33),  # k = 20, leave-one-out
    "lfc": BenchmarkRow(0.80, 0.90, 0.21),
    "ncti": BenchmarkRow(0.78, 0.96, 9.45),
    "logme": BenchmarkRow(0.71, 0.97, 3.21),
    "etran": BenchmarkRow(0.42, 0.72, 7.86),
    "gbc": BenchmarkRow(0.13, 0.64, 0.16),
    "sfda": BenchmarkRow(0.04, 0.65, 10.02),
    "hscore": BenchmarkRow(0.02, 0.63, 5.10),
    "transrate": BenchmarkRow(-0.25, 0.46, 1.83),
}


def label(metric: str) -> str:
    """How reports and messages name ``metric`` (an estimator's declared label; other names as they are).

    >>> label("logme"), label("layer_accuracy")
    ('LogME', 'layer_accuracy')
    """
    found: Any = ESTIMATORS.get(metric)
    return found.label if found is not None else metric


__all__ = ["BENCHMARK", "ESTIMATORS", "BenchmarkRow", "Estimator", "label"]
