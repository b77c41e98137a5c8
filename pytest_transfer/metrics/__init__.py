"""Pure metric functions: numpy arrays or torch tensors in, floats or arrays out.

All maths is float64. Every metric declares ``higher_is_better`` and ``bounds``.
"""

from __future__ import annotations

from .classification import (
    accuracy,
    confusion_matrix,
    expected_calibration_error,
    f1_score,
    precision_score,
    recall_score,
    roc_auc,
)
from .similarity import linear_cka
from .stats import bootstrap_ci, mcnemar_test, wilson_interval
from .transferability import (
    TRANSFERABILITY_METRICS,
    cv_linear_probe_accuracy,
    etran,
    gbc,
    hscore,
    knn_accuracy,
    leep,
    lfc,
    logme,
    nce,
    ncti,
    ncti_components,
    nleep,
    regularized_hscore,
    sfda,
    transrate,
)

__all__ = [
    "TRANSFERABILITY_METRICS",
    "accuracy",
    "bootstrap_ci",
    "confusion_matrix",
    "cv_linear_probe_accuracy",
    "etran",
    "expected_calibration_error",
    "f1_score",
    "gbc",
    "hscore",
    "knn_accuracy",
    "leep",
    "lfc",
    "linear_cka",
    "logme",
    "mcnemar_test",
    "nce",
    "ncti",
    "ncti_components",
    "nleep",
    "precision_score",
    "recall_score",
    "regularized_hscore",
    "roc_auc",
    "sfda",
    "transrate",
    "wilson_interval",
]
