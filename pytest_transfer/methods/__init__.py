"""Transfer methods: the linear probe, k-NN, the model's own head and fine-tuning, behind one interface.

``get_method(name, k=, C=, finetune=)`` → :class:`TransferMethod`;
``.fit(model, dataset, context=)`` → :class:`Fitted` (on the clean train split);
``.predict(dataset, split=, perturbation=, context=)`` → :class:`Predictions`.
:func:`predict` is the three in one call. Methods are declared in
:data:`pytest_transfer.declarations.TRANSFER_METHODS` (a name and its class).
"""

from __future__ import annotations

from .core import Fitted, Predictions, TransferMethod, get_method, method_class, predict

__all__ = ["Fitted", "Predictions", "TransferMethod", "get_method", "method_class", "predict"]
