"""Drop in performance between a reference dataset and a shifted one with the same label space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import resolve_pair, session
from ..context import Context
from ..declarations import SHIFT
from ..methods import get_method
from ..metrics.stats import newcombe_independent_interval
from .core import open_gate


@dataclass(frozen=True)
class DropResult:
    """Accuracy on a reference dataset minus accuracy on a shifted one (same label space)."""

    model: str
    reference: str
    shifted: str
    method: str
    reference_accuracy: float
    shifted_accuracy: float
    absolute: float
    relative: float
    interval: tuple[float, float]
    relative_interval: tuple[float, float]
    n_reference: int
    n_shifted: int
    confidence: float


def drop_in_performance(model: Any, reference_dataset: Any, shifted_dataset: Any, *, method: str = "linear_probe",
                        split: str = "test", shifted_split: str | None = None, max_drop: float | None = None,
                        relative: bool = False, confidence: str | None = None, k: int = 20,
                        C: float = 1.0, finetune: dict[str, Any] | None = None,
                        context: Context | None = None) -> DropResult:
    """Accuracy on ``reference_dataset`` minus accuracy on ``shifted_dataset`` (same classes), with an interval.

    The probe (``linear_probe`` or ``knn``) is fitted on the reference
    dataset's train split and scored on the reference ``split`` and on the
    shifted dataset's ``shifted_split`` (default: the same name): a shift the
    probe never saw. ``finetune`` fine-tunes on the reference train split (options
    in ``finetune=``, see :func:`assert_transfer_accuracy_above`) and scores the
    tuned model on both; ``direct`` uses the model's own head on both. The two
    accuracies come from different samples, so the interval is Newcombe's
    hybrid score interval for independent proportions (see
    :func:`newcombe_independent_interval`); the relative drop is
    ``absolute / reference accuracy`` with its interval divided by the same
    (the reference accuracy treated as fixed; NaN when it is 0).

    With ``max_drop`` it is also a gate (on the relative drop when
    ``relative=True``): it records a measurement and raises when exceeded.

    >>> d = drop_in_performance("efficientnet-lite0", "digits", "digits-shifted")  # doctest: +SKIP
    >>> d.absolute, d.interval  # doctest: +SKIP
    """
    __tracebackhide__ = True
    transfer = get_method(method, k=k, C=C, finetune=finetune)
    ctx = session(context)
    model, ref = resolve_pair(model, reference_dataset, ctx)
    _, shifted = resolve_pair(model, shifted_dataset, ctx)
    if list(ref.classes) != list(shifted.classes):
        raise ValueError(
            f"shifted_dataset: {shifted.name!r} has classes {shifted.classes[:10]} but the reference {ref.name!r} "
            f"has {ref.classes[:10]}; a drop in performance needs the same label space (relabel one of them)"
        )
    shifted_split = split if shifted_split is None else shifted_split
    fitted = transfer.fit(model, ref, context=ctx)  # on the reference's clean train split, for both
    base = fitted.predict(ref, split=split, context=ctx)
    other = fitted.predict(shifted, split=shifted_split, context=ctx)
    hits_ref, n_ref = int(base.correct.sum()), base.n
    hits_shift, n_shift = int(other.correct.sum()), other.n
    level = ctx.settings.confidence_level
    acc_ref, acc_shift = hits_ref / n_ref, hits_shift / n_shift
    absolute = acc_ref - acc_shift
    interval = newcombe_independent_interval(hits_ref, n_ref, hits_shift, n_shift, confidence=level)
    nan = float("nan")
    rel = absolute / acc_ref if acc_ref > 0 else nan
    rel_interval = (interval[0] / acc_ref, interval[1] / acc_ref) if acc_ref > 0 else (nan, nan)
    result = DropResult(model.name, ref.name, shifted.name, method, acc_ref, acc_shift, absolute, rel, interval,
                        rel_interval, n_ref, n_shift, level)
    if max_drop is not None:
        g = open_gate(model, ref, threshold=max_drop, argument="max_drop", keys=(), confidence=confidence, ctx=ctx)
        if relative and acc_ref == 0:
            raise ValueError(f"relative drop is undefined: accuracy of {model.name!r} on {ref.name!r} is 0")
        g.finish(
            gate=SHIFT.name, metric=SHIFT.name,
            label=f"Accuracy drop from {ref.name!r} to {shifted.name!r}" + (" (relative)" if relative else ""),
            value=rel if relative else absolute, interval=rel_interval if relative else interval,
            higher_is_better=SHIFT.higher_is_better, dataset=shifted.name,
            details={"method": method, "split": shifted_split, "n": n_shift, "relative": relative,
                     "reference": ref.name, "reference_accuracy": acc_ref, "shifted_accuracy": acc_shift,
                     "n_reference": n_ref},
            hint=f"accuracy {acc_ref:.4f} on {ref.name!r}, {acc_shift:.4f} on {shifted.name!r}; train with "
                 "augmentations that cover the shift, or compare layers with layerwise_transfer()",
        )
    return result


# --------------------------------------------------------------------------- model similarity
