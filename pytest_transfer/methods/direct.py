"""``direct``: the model's own head, its output columns mapped to the dataset's classes.

Its fit is the mapping (:func:`direct_mapping`): nothing is trained, but a head
that cannot predict the dataset's classes is refused before any pass. A
fine-tuned model is predicted the same way (:class:`FittedHead`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..engine.memo import evaluate
from .core import Fitted, Predictions, TransferMethod

if TYPE_CHECKING:  # pragma: no cover
    from ..context import Context
    from ..datasets import TargetDataset
    from ..engine.chunks import Perturbation
    from ..models import TransferModel


def direct_mapping(model: TransferModel, dataset: TargetDataset) -> np.ndarray | None:
    """Map the model's output columns to dataset class codes (``None``: the identity), or raise when they
    cannot match."""
    if model.num_classes is None:
        raise ValueError(f"method='direct': model {model.name!r} has no classification head (a headless backbone: "
                         "its output is read as features), so the number of outputs is unknown; use "
                         "method='linear_probe', 'knn' or 'finetune', or pass num_classes= to load_model when the "
                         "output is logits")
    if model.num_classes != dataset.num_classes:
        raise ValueError(
            f"method='direct' needs the model's head to predict the dataset's classes, but {model.name!r} has "
            f"{model.num_classes} outputs and {dataset.name!r} has {dataset.num_classes} classes; use "
            "method='linear_probe' or method='knn' to measure transfer through frozen features"
        )
    if model.categories is not None and model.categories != dataset.classes:
        if sorted(model.categories) == sorted(dataset.classes):
            return np.array([dataset.classes.index(c) for c in model.categories], dtype=np.int64)
        if not all(c.isdigit() for c in dataset.classes):
            raise ValueError(
                f"method='direct': the model's categories {model.categories[:5]}... do not match the dataset's "
                f"classes {dataset.classes[:5]}...; relabel the dataset or use method='linear_probe'"
            )
    return None


@dataclass
class FittedHead(Fitted):
    """``model``'s own head; ``mapping`` takes its output columns to the dataset's class codes (``None``: the
    identity). Scores are the head's probabilities, columns in class-code order."""

    method: str
    model: TransferModel
    mapping: np.ndarray | None

    def predict(self, dataset: TargetDataset, *, split: str = "test", perturbation: Perturbation | None = None,
                context: Context) -> Predictions:
        ev = evaluate(self.model, dataset, split=split, perturbation=perturbation, context=context)
        pred = ev.preds
        scores = ev.probs
        if self.mapping is not None:
            pred = self.mapping[pred]
            scores = scores[:, np.argsort(self.mapping)]
        return Predictions(ev.labels, pred, ev, self.method, scores)


class DirectMethod(TransferMethod):
    """The model's own classification head (no training)."""

    hint = ("the model's own head must predict the target's classes in the same order; if it was trained on "
            "other classes use method='linear_probe' or 'finetune'")

    def fit(self, model: TransferModel, dataset: TargetDataset, *, context: Context) -> FittedHead:
        return FittedHead(self.name, model, direct_mapping(model, dataset))


__all__ = ["DirectMethod", "FittedHead", "direct_mapping"]
