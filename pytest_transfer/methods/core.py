"""The one interface of a transfer method: fit on a dataset's clean train split, predict a split.

``get_method(name, k=, C=, finetune=)`` validates the name (declared in
:data:`pytest_transfer.declarations.TRANSFER_METHODS`) and the options together
and returns a :class:`TransferMethod`; ``method.fit(model, dataset, context=)``
fits it on the **clean train split** of ``dataset`` and returns a
:class:`Fitted`, whose ``predict(dataset, split=, perturbation=, context=)``
gives the :class:`Predictions` on a split of that dataset or of another one with
the same classes (a shifted one), clean or perturbed. The methods take objects
(:class:`~pytest_transfer.models.TransferModel`,
:class:`~pytest_transfer.datasets.TargetDataset`) and the session's
:class:`~pytest_transfer.context.Context`, never spec strings.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..declarations import TRANSFER_METHODS
from ..engine.memo import check_objects

if TYPE_CHECKING:  # pragma: no cover
    from ..context import Context
    from ..datasets import TargetDataset
    from ..engine.chunks import Perturbation
    from ..engine.memo import Evaluation
    from ..models import TransferModel

#: the options :func:`get_method` hands to a method's class when its constructor names them
OPTIONS = ("k", "C", "finetune")


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


class Fitted(ABC):
    """A transfer method fitted for ``model`` on a dataset's clean train split.

    ``model`` is the model whose forward passes the predictions read (for
    ``finetune``, the fine-tuned model).
    """

    method: str
    model: TransferModel

    @abstractmethod
    def predict(self, dataset: TargetDataset, *, split: str = "test", perturbation: Perturbation | None = None,
                context: Context) -> Predictions:
        """Predictions on ``split`` of ``dataset`` (the fitted one, or another with the same classes), with
        ``perturbation`` applied to its images (the fit stays the clean one)."""


class TransferMethod(ABC):
    """A transfer method: :meth:`fit` on the clean train split, then :meth:`Fitted.predict`.

    A subclass's constructor takes the declared ``name`` first, then the options
    of :data:`OPTIONS` it uses as keywords (``k`` for k-NN, ``C`` for the linear
    probe, ``finetune`` for fine-tuning); ``hint`` is what a failed accuracy gate
    suggests trying next.
    """

    hint = "check the preprocess (image size, normalisation) and the feature node"

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def fit(self, model: TransferModel, dataset: TargetDataset, *, context: Context) -> Fitted:
        """Fit on the clean train split of ``dataset`` (cached where the method says)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def method_class(name: Any) -> type[TransferMethod]:
    """The class declared for ``name``; an unknown name raises ``ValueError`` listing the declared ones."""
    declaration = TRANSFER_METHODS.get(name) if isinstance(name, str) else None
    if declaration is None:
        close = difflib.get_close_matches(str(name), list(TRANSFER_METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"method: expected one of {', '.join(TRANSFER_METHODS)}, got {name!r}{hint}")
    return getattr(importlib.import_module(f"pytest_transfer.{declaration.module}"), declaration.cls)


def _options(cls: type[TransferMethod]) -> tuple[str, ...]:
    params = inspect.signature(cls).parameters
    return tuple(o for o in OPTIONS if o in params)


def get_method(name: str, *, k: int = 20, C: float = 1.0, finetune: dict[str, Any] | None = None
               ) -> TransferMethod:
    """The transfer method ``name`` with its options, validated together, before any pass.

    ``k`` (k-NN's neighbours) and ``C`` (the linear probe's inverse regularisation)
    go to the methods that take them; ``finetune`` holds the options of
    :class:`~pytest_transfer.methods.finetune.FinetuneConfig` and is refused, by
    name, for a method that does not fine-tune. An unknown ``name`` raises
    ``ValueError`` with the declared names and a did-you-mean.

    >>> get_method("knn", k=5)
    KNNMethod('knn')
    """
    cls = method_class(name)
    takes = _options(cls)
    if finetune is not None and "finetune" not in takes:
        tuning = [n for n in TRANSFER_METHODS if "finetune" in _options(method_class(n))]
        raise ValueError(f"finetune= options apply to method={' or '.join(map(repr, tuning))} only; "
                         f"method={name!r} takes {', '.join(takes) or 'no options'}")
    given = {"k": k, "C": C, "finetune": finetune}
    return cls(name, **{o: given[o] for o in takes})


def predict(model: TransferModel, dataset: TargetDataset, *, method: str = "linear_probe", split: str = "test",
            perturbation: Perturbation | None = None, k: int = 20, C: float = 1.0,
            finetune: dict[str, Any] | None = None, context: Context) -> Predictions:
    """Labels and predictions of ``model`` on ``split`` of ``dataset`` by ``method``: the convenience form of
    ``get_method(method, k=k, C=C, finetune=finetune).fit(model, dataset, context=context).predict(dataset,
    split=split, perturbation=perturbation, context=context)``.

    ``finetune`` holds the options of :class:`~pytest_transfer.methods.finetune.FinetuneConfig`
    (``epochs``, ``lr``, ``last_blocks``, ``batch_size``, ``weight_decay``) for ``method="finetune"``.
    """
    transfer = get_method(method, k=k, C=C, finetune=finetune)
    check_objects(model, dataset, "methods.predict", "a gate (assert_transfer_accuracy_above, ...)")
    fitted = transfer.fit(model, dataset, context=context)
    return fitted.predict(dataset, split=split, perturbation=perturbation, context=context)
