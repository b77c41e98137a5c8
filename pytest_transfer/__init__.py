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
    "assert_robust_under_corruption": "assertions",
    "assert_robust_under_attack": "assertions",
    "assert_transferability_above": "assertions",
    "assert_ranks_above": "assertions",
    "assert_no_regression": "assertions",
    "GateResult": "assertions",
    "Measurement": "context",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from .assertions import (
        GateResult,
        assert_f1_above,
        assert_no_regression,
        assert_ranks_above,
        assert_robust_under_attack,
        assert_robust_under_corruption,
        assert_robust_under_noise,
        assert_transfer_accuracy_above,
        assert_transferability_above,
    )
    from .context import Measurement
    from .datasets import TargetDataset, list_datasets, load_dataset
    from .engine import Evaluation, evaluate
    from .models import Preprocess, TransferModel, list_models, load_model


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_transfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
