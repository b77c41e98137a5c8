"""Predictions of a model on a target split by one of the transfer methods.

``direct`` uses the model's own head; ``linear_probe`` and ``knn`` fit on
frozen train-split features (clean) and predict test-split features, clean or
perturbed. Probe fits and k-NN predictions are cached (:mod:`pytest_transfer.derived`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .context import Context
from .engine.chunks import Perturbation
from .engine.memo import Evaluation, evaluate

if TYPE_CHECKING:  # pragma: no cover
    from .datasets import TargetDataset
    from .models import TransferModel

METHODS = ("linear_probe", "knn", "direct", "finetune")


@dataclass
class Predictions:
    """True labels (codes 0..C−1 of the dataset), predicted labels and the evaluation they came from."""

    y_true: np.ndarray
    y_pred: np.ndarray
    evaluation: Evaluation
    method: str
    scores: np.ndarray | None = None  # per-class scores (probabilities for direct, probe probabilities)

    @property
    def correct(self) -> np.ndarray:
        return self.y_true == self.y_pred

    @property
    def n(self) -> int:
        return len(self.y_true)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    return method


def direct_mapping(model: TransferModel, dataset: TargetDataset) -> np.ndarray | None:
    """Map the model's output columns to dataset class codes, or raise when they cannot match."""
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


def probe_for(model: TransferModel, dataset: TargetDataset, method: str, *, ctx: Context,
              k: int = 20, C: float = 1.0) -> Any:
    """The probe fitted on clean train features (cached: :func:`~pytest_transfer.derived.linear_probe`);
    for ``knn``, the train features and labels."""
    from .derived import linear_probe

    train = evaluate(model, dataset, split="train", context=ctx)
    if method == "linear_probe":
        return linear_probe(train.features, train.labels, C=C, context=ctx)
    return train.features, train.labels


def predict(model: Any, dataset: Any, *, method: str = "linear_probe", split: str = "test",
            perturbation: Perturbation | None = None, k: int = 20, C: float = 1.0,
            finetune: dict[str, Any] | None = None, context: Context) -> Predictions:
    """Labels and predictions of ``model`` on ``split`` of ``dataset`` by ``method``.

    ``finetune`` holds the options of :class:`~pytest_transfer.finetune.FinetuneConfig`
    (``epochs``, ``lr``, ``last_blocks``, ``batch_size``, ``weight_decay``) for ``method="finetune"``.
    """
    from .derived import knn_predictions

    ctx = context
    check_method(method)
    if method == "finetune":
        from .finetune import FinetuneConfig, finetuned_model

        tuned = finetuned_model(model, dataset, FinetuneConfig.from_dict(finetune), ctx=ctx, seed=ctx.settings.seed)
        direct = predict(tuned, dataset, method="direct", split=split, perturbation=perturbation, context=ctx)
        return Predictions(direct.y_true, direct.y_pred, direct.evaluation, method, direct.scores)
    if finetune is not None:
        raise ValueError("finetune= options apply to method='finetune' only")
    if method == "direct":
        mapping = direct_mapping(model, dataset)
    ev = evaluate(model, dataset, split=split, perturbation=perturbation, context=ctx)
    if method == "direct":
        pred = ev.preds
        scores = ev.probs
        if mapping is not None:
            pred = mapping[pred]
            scores = scores[:, np.argsort(mapping)]
        return Predictions(ev.labels, pred, ev, method, scores)
    probe = probe_for(model, dataset, method, ctx=ctx, k=k, C=C)
    if method == "linear_probe":
        z = probe.decision_function(ev.features)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return Predictions(ev.labels, probe.classes[z.argmax(axis=1)], ev, method, p)
    train_x, train_y = probe
    return Predictions(ev.labels, knn_predictions(train_x, train_y, ev.features, k=k, context=ctx), ev, method)
