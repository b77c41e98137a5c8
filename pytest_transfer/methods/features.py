"""The methods on frozen features: the linear probe and k-NN.

Both read the model's features from the engine's (memoised) pass and work at
the array level beneath: :meth:`FeatureMethod.fit_features` fits a
:class:`FeatureHead` on N×D train features and N labels, whose
:meth:`~FeatureHead.predict_features` labels M×D features (the layer-wise gate
fits one per tap this way). The linear probe's head holds the fitted
:class:`~pytest_transfer.metrics.probes.LinearProbe` (its weights, for the attack
gate's gradients).

The array maths is :func:`~pytest_transfer.metrics.probes.fit_linear_probe` and
:func:`~pytest_transfer.metrics.probes.knn_predict`; here they are cached
(:func:`~pytest_transfer.cache.cached_result`, kinds ``linear_probe`` and ``knn``),
keyed by the content fingerprints of the input arrays
(:func:`~pytest_transfer.cache.array_fingerprint`), every parameter, the code
that computes them and the library versions, so a changed input, parameter
or library is a miss and a warm rerun reads the fits and predictions of the
previous run from the disk cache.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cache import array_fingerprint, cached_result
from ..declarations import TRANSFER_METHODS
from ..engine.memo import evaluate
from ..fingerprints import code_identity
from .core import Fitted, Predictions, TransferMethod, method_class

if TYPE_CHECKING:  # pragma: no cover
    from ..context import Context
    from ..datasets import TargetDataset
    from ..engine.chunks import Perturbation
    from ..metrics.probes import LinearProbe
    from ..models import TransferModel


class FeatureHead(ABC):
    """A head fitted on train features: labels (and per-class scores, or ``None``) of other features."""

    @abstractmethod
    def predict_features(self, features: Any, *, context: Context) -> tuple[np.ndarray, np.ndarray | None]:
        """``(labels (M), scores (M×C) or None)`` of M×D ``features``."""


@dataclass
class FittedOnFeatures(Fitted):
    """A feature method fitted for ``model``: ``head`` is fitted on its clean train features."""

    method: str
    model: TransferModel
    head: FeatureHead

    def predict(self, dataset: TargetDataset, *, split: str = "test", perturbation: Perturbation | None = None,
                context: Context) -> Predictions:
        ev = evaluate(self.model, dataset, split=split, perturbation=perturbation, context=context)
        pred, scores = self.head.predict_features(ev.features, context=context)
        return Predictions(ev.labels, pred, ev, self.method, scores)


class FeatureMethod(TransferMethod):
    """A method on the model's frozen features (N×D per split, from the engine's pass)."""

    def fit(self, model: TransferModel, dataset: TargetDataset, *, context: Context) -> FittedOnFeatures:
        train = evaluate(model, dataset, split="train", context=context)
        return FittedOnFeatures(self.name, model, self.fit_features(train.features, train.labels, context=context))

    @abstractmethod
    def fit_features(self, features: Any, labels: Any, *, context: Context) -> FeatureHead:
        """The head fitted on N×D ``features`` and N ``labels``."""


def feature_methods() -> tuple[str, ...]:
    """The declared methods on frozen features (a :class:`FeatureMethod`): what can be fitted at any node."""
    return tuple(name for name in TRANSFER_METHODS if issubclass(method_class(name), FeatureMethod))


# --------------------------------------------------------------------------- linear probe

@dataclass
class ProbeHead(FeatureHead):
    """The fitted linear probe: labels by its largest decision value, scores its softmax."""

    probe: LinearProbe

    def predict_features(self, features: Any, *, context: Context) -> tuple[np.ndarray, np.ndarray]:
        z = self.probe.decision_function(features)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return self.probe.classes[z.argmax(axis=1)], p


class LinearProbeMethod(FeatureMethod):
    """The linear probe (multinomial logistic regression, scikit-learn's objective with ``C``) on standardised
    frozen features."""

    hint = "check the preprocess (image size, normalisation) and the feature node; compare method='knn'"

    def __init__(self, name: str, *, C: float = 1.0) -> None:
        super().__init__(name)
        self.C = C

    def fit_features(self, features: Any, labels: Any, *, context: Context) -> ProbeHead:
        return ProbeHead(linear_probe(features, labels, C=self.C, context=context))


def _plain(a: np.ndarray) -> Any:
    """A 0-d array read back from an entry as the Python scalar it was written from."""
    return a.item() if a.ndim == 0 else a


def _encode_probe(probe: LinearProbe) -> dict[str, Any]:
    out = {f"standardizer.{f.name}": np.asarray(getattr(probe.standardizer, f.name))
           for f in fields(probe.standardizer)}
    out.update({f.name: np.asarray(getattr(probe, f.name)) for f in fields(probe) if f.name != "standardizer"})
    return out


def _decode_probe(arrays: dict[str, Any]) -> LinearProbe:
    from ..metrics.probes import LinearProbe, Standardizer

    std = Standardizer(**{f.name: arrays[f"standardizer.{f.name}"] for f in fields(Standardizer)})
    return LinearProbe(standardizer=std, **{f.name: _plain(arrays[f.name]) for f in fields(LinearProbe)
                                            if f.name != "standardizer"})


def linear_probe(features: Any, labels: Any, *, C: float = 1.0, standardize: bool = True,
                 context: Context) -> LinearProbe:
    """:func:`~pytest_transfer.metrics.probes.fit_linear_probe` (N×D ``features``, N ``labels``), cached:
    coefficients, intercepts, the standardiser and the fit's convergence are stored."""
    from ..metrics.probes import fit_linear_probe

    key = {"features": array_fingerprint(features), "labels": array_fingerprint(labels), "C": float(C),
           "standardize": bool(standardize), "code": code_identity(fit_linear_probe)}
    return cached_result("linear_probe", key,
                         lambda: fit_linear_probe(features, labels, C=C, standardize=standardize),
                         encode=_encode_probe, decode=_decode_probe, context=context, libraries=("torch",))


# --------------------------------------------------------------------------- k-NN

@dataclass
class NeighboursHead(FeatureHead):
    """k-NN on the train features: a majority vote of the ``k`` nearest train rows (cosine); no scores."""

    features: Any
    labels: Any
    k: int

    def predict_features(self, features: Any, *, context: Context) -> tuple[np.ndarray, None]:
        return knn_predictions(self.features, self.labels, features, k=self.k, context=context), None


class KNNMethod(FeatureMethod):
    """k-NN on the model's raw frozen features (cosine distance, uniform votes), scikit-learn's conventions."""

    hint = ("check the preprocess and the feature node; try another k (k=...) or compare method='linear_probe', "
            "which learns a weighting of the features that k-NN cannot")

    def __init__(self, name: str, *, k: int = 20) -> None:
        super().__init__(name)
        self.k = k

    def fit_features(self, features: Any, labels: Any, *, context: Context) -> NeighboursHead:
        return NeighboursHead(features, labels, self.k)


def knn_predictions(train_features: Any, train_labels: Any, test_features: Any, *, k: int = 20,
                    metric: str = "cosine", context: Context) -> np.ndarray:
    """:func:`~pytest_transfer.metrics.probes.knn_predict` (labels of the M test rows), cached."""
    from ..metrics.probes import knn_predict

    key = {"train": array_fingerprint(train_features, train_labels), "test": array_fingerprint(test_features),
           "k": int(k), "metric": metric, "code": code_identity(knn_predict)}
    return cached_result("knn", key, lambda: knn_predict(train_features, train_labels, test_features, k=k,
                                                         metric=metric),
                         encode=lambda pred: {"pred": pred}, decode=lambda a: a["pred"], context=context)


__all__ = [
    "FeatureHead",
    "FeatureMethod",
    "FittedOnFeatures",
    "KNNMethod",
    "LinearProbeMethod",
    "NeighboursHead",
    "ProbeHead",
    "feature_methods",
    "knn_predictions",
    "linear_probe",
]
