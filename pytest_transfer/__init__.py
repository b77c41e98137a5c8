"""pytest-transfer: gate the transferability, accuracy and robustness of pretrained image classifiers.

Importing this package imports neither torch nor numpy: every public name is
loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "models",
    "list_models": "models",
    "TransferModel": "models",
    "Preprocess": "models",
    "load_dataset": "datasets",
    "list_datasets": "datasets",
    "TargetDataset": "datasets",
    "evaluate": "engine",
    "Evaluation": "engine",
    "assert_transfer_accuracy_above": "assertions",
    "assert_f1_above": "assertions",
    "assert_robust_under_noise": "assertions",
    "assert_robust_under_corruption": "gates.robustness",
    "assert_robust_under_attack": "gates.robustness",
    "assert_mce_below": "gates.robustness",
    "corruption_sweep": "robustness.sweep",
    "assert_transferability_above": "gates.transferability",
    "assert_ranks_above": "gates.transferability",
    "rank_models": "gates.transferability",
    "drop_in_performance": "gates.shift",
    "layerwise_transfer": "gates.layers",
    "ntk_similarity": "gates.similarity",
    "assert_layer_transfer_above": "gates.layers",
    "estimator_agreement": "gates.transferability",
    "feature_cka": "gates.similarity",
    "assert_no_regression": "gates.regression",
    "GateResult": "assertions",
    "Measurement": "context",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from .assertions import GateResult, assert_f1_above, assert_robust_under_noise, assert_transfer_accuracy_above
    from .context import Measurement
    from .datasets import TargetDataset, list_datasets, load_dataset
    from .engine import Evaluation, evaluate
    from .gates.layers import assert_layer_transfer_above, layerwise_transfer
    from .gates.regression import assert_no_regression
    from .gates.robustness import assert_mce_below, assert_robust_under_attack, assert_robust_under_corruption
    from .gates.shift import drop_in_performance
    from .gates.similarity import feature_cka, ntk_similarity
    from .gates.transferability import (
        assert_ranks_above,
        assert_transferability_above,
        estimator_agreement,
        rank_models,
    )
    from .models import Preprocess, TransferModel, list_models, load_model
    from .robustness.sweep import corruption_sweep


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_transfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)  # e.g. .gates.robustness
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
