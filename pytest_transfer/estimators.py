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
)}
"""Every transferability estimator by name, in the order the docs list them."""


def label(metric: str) -> str:
    """How reports and messages name ``metric`` (an estimator's declared label; other names as they are).

    >>> label("logme"), label("layer_accuracy")
    ('LogME', 'layer_accuracy')
    """
    found: Any = ESTIMATORS.get(metric)
    return found.label if found is not None else metric


__all__ = ["ESTIMATORS", "Estimator", "label"]
