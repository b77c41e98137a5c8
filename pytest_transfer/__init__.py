"""pytest-transfer: gate the transferability, accuracy and robustness of pretrained image classifiers.

Importing this package imports neither torch nor numpy: every public name is
loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .declarations import lazy_exports

__version__ = "0.1.0"

# public names that are not gates; each gate's function is exported by its declaration (declarations.GATES).
# The entry points that take spec strings are the door's (api.py): they read the session once.
_API = {
    "load_model": "api",
    "list_models": "api",
    "TransferModel": "models",
    "Preprocess": "models",
    "load_dataset": "api",
    "list_datasets": "api",
    "TargetDataset": "datasets",
    "evaluate": "api",
    "Evaluation": "engine",
    "corruption_sweep": "api",
    "rank_models": "gates.transferability",
    "layerwise_transfer": "gates.layers",
    "ntk_similarity": "gates.similarity",
    "estimator_agreement": "gates.transferability",
    "feature_cka": "gates.similarity",
    "GateResult": "assertions",
    "Measurement": "context",
}
_LAZY = {**_API, **lazy_exports()}  # name -> module that defines it, relative to this package

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover  (for type checkers; tests/test_declarations.py checks it matches _LAZY)
    from .api import corruption_sweep, evaluate, list_datasets, list_models, load_dataset, load_model
    from .assertions import GateResult, assert_f1_above, assert_robust_under_noise, assert_transfer_accuracy_above
    from .context import Measurement
    from .datasets import TargetDataset
    from .engine import Evaluation
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
    from .models import Preprocess, TransferModel


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_transfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)  # e.g. .gates.robustness
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
