"""Spec strings (or objects) of a model and a dataset → ``(TransferModel, TargetDataset)``.

Where the gates (and the public :func:`~pytest_transfer.robustness.sweep.corruption_sweep`) turn a pair of specs
into objects; everything below them (the engine, the transfer methods) takes objects. Issue 22 item 3 moves this
to the gates' door.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .datasets import TargetDataset
    from .models import TransferModel


def resolve_pair(model: Any, dataset: Any) -> tuple[TransferModel, TargetDataset]:
    """``model`` and ``dataset`` as objects: specs are loaded (:func:`~pytest_transfer.models.load_model`,
    :func:`~pytest_transfer.datasets.load_dataset`), objects returned as they are."""
    from .datasets import TargetDataset, load_dataset
    from .models import TransferModel, load_model

    if not isinstance(model, TransferModel):
        model = load_model(model)
    if not isinstance(dataset, TargetDataset):
        dataset = load_dataset(dataset)
    return model, dataset
