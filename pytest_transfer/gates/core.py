"""What every gate does, in one place (public-internal: for gate modules, not for users).

A gate: resolves the model × dataset pair (:func:`open_gate`), finds its
threshold and says where it came from (:func:`find_threshold`), range-checks
it (:func:`check_threshold`, the one hook every threshold passes through,
from an argument or from a config file), measures (the gate's own part),
computes the interval in the chosen confidence mode (:func:`confidence_mode`,
:meth:`Gate.accuracy_interval`, :meth:`Gate.bootstrap_interval`), decides
(:func:`decide`), records the measurement and raises the message
(:func:`finish_gate`).

>>> gate = open_gate(model, "digits", threshold=None, argument="threshold", keys=("f1",),
...                  confidence=None)  # doctest: +SKIP
>>> gate.finish(gate="f1", metric="f1_macro", label="F1", value=0.93, interval=None,
...             higher_is_better=True, details={}, hint="...")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..context import Context, Measurement, current_context
from ..jsonable import plain
from ..settings import CONFIDENCE_MODES
from ..thresholds import Threshold, check_threshold_value, explicit, format_threshold, format_value

if TYPE_CHECKING:  # pragma: no cover
    from ..datasets import TargetDataset
    from ..models import TransferModel


def confidence_mode(confidence: str | bool | None, ctx: Context) -> str:
    """The gate's confidence mode: the argument (``True`` = ``strict``, ``False`` = ``none``), else
    ``--transfer-confidence``; a ``ValueError`` lists the valid modes."""
    if confidence is None:
        return ctx.settings.confidence
    if confidence is True:
        return "strict"
    if confidence is False:
        return "none"
    mode = str(confidence).lower()
    if mode not in CONFIDENCE_MODES:
        raise ValueError(f"confidence: expected one of {', '.join(CONFIDENCE_MODES)}, got {confidence!r}")
    return mode


def check_threshold(threshold: Threshold, *, argument: str, keys: Sequence[str]) -> Threshold:
    """Every threshold of every gate passes through here, from an argument or from a config file.

    An argument gets the rule config values got when the file was read
    (:func:`pytest_transfer.thresholds.check_threshold_value`: a number, not
    NaN, inside the key's range, ``85`` refused as a percentage).
    ``argument`` and ``keys`` name the gate's argument and config keys.
    """
    if threshold.source.startswith("argument"):  # config values passed the same rule when the file was read
        check_threshold_value(threshold.value, key=keys[0] if keys else None, argument=argument)
    elif math.isnan(threshold.value):
        raise ValueError(f"{threshold.source}: the threshold is NaN; pass a number")
    elif math.isinf(threshold.value):
        raise ValueError(f"{threshold.source}: the threshold is {threshold.value}, which makes a gate that cannot "
                         "fail or cannot pass; pass a finite number")
    return threshold


def find_threshold(ctx: Context, value: float | None, argument: str, model: str, dataset: str,
                   keys: Sequence[str]) -> Threshold:
    """The argument ``value`` when given, else the first of ``keys`` in the hook / config table (see
    :mod:`pytest_transfer.thresholds`), checked by :func:`check_threshold`; a ``LookupError`` says where to
    set one."""
    __tracebackhide__ = True
    if value is not None:
        return check_threshold(explicit(value, argument), argument=argument, keys=keys)
    try:
        found = ctx.thresholds.require(model, dataset, tuple(keys), argument=argument)
    except LookupError as exc:
        if ctx.settings.suggest_thresholds and keys:  # a suggestion run measures gates that have no threshold yet
            from ..suggest import placeholder

            return placeholder(keys[0])
        raise LookupError(str(exc)) from None
    return check_threshold(found, argument=argument, keys=keys)


def decide(value: float, interval: tuple[float, float] | None, threshold: float, *, higher_is_better: bool,
           mode: str) -> bool:
    """Point gate (``none``), ``strict`` (the whole interval clears) or ``lenient`` (fail only when it all misses)."""
    if mode == "none" or interval is None:
        return value >= threshold if higher_is_better else value <= threshold
    lo, hi = interval
    if higher_is_better:
        return (lo if mode == "strict" else hi) >= threshold
    return (hi if mode == "strict" else lo) <= threshold


def failure_message(*, label: str, value: float, interval: tuple[float, float] | None, threshold: Threshold,
                    higher_is_better: bool, mode: str, level: float, model: str, dataset: str,
                    details: dict[str, Any], hint: str) -> str:
    """The ``AssertionError`` text of a failed gate: value, interval, threshold and its source, what to try."""
    pct = round(level * 100)
    t = threshold.value
    shown = format_value(value, t)
    if interval is not None:
        shown += f" ({pct}% interval {format_value(interval[0], t)}–{format_value(interval[1], t)})"
    side = "below the minimum" if higher_is_better else "above the maximum"
    rule = {"none": "", "strict": f" [confidence=strict: the whole {pct}% interval must clear it]",
            "lenient": f" [confidence=lenient: the whole {pct}% interval is on the wrong side]"}[mode]
    where = ", ".join(f"{k}={v}" for k, v in details.items() if k in ("method", "split", "n", "sigma", "relative"))
    return (
        f"{label} of model {model!r} on dataset {dataset!r} is {shown}, {side} {format_threshold(t)}{rule}\n"
        f"  threshold from: {threshold.source}\n"
        + (f"  measured with: {where}\n" if where else "")
        + f"  next: {hint}"
    )


def too_small_note(best: tuple[float, float] | None, threshold: float, *, higher_is_better: bool, mode: str,
                   level: float, n: Any) -> str | None:
    """What to say when the sample is too small for the asked confidence: in ``strict`` mode even the best
    possible result (``best``: the interval of a perfect score on the same samples) cannot clear the
    threshold. ``None`` when it can, or without a confidence mode."""
    if best is None or mode != "strict":
        return None
    bound = best[0] if higher_is_better else best[1]
    if (bound >= threshold) if higher_is_better else (bound <= threshold):
        return None
    return (f"the sample (n={n}) is too small for confidence=strict at {round(level * 100)}%: even a perfect "
            f"score's interval reaches only {bound:.4f} on that side of {format_threshold(threshold)}; add samples, "
            "lower --transfer-confidence-level, or gate without confidence")


def finish_gate(ctx: Context, *, gate: str, metric: str, label: str, value: float,
                interval: tuple[float, float] | None, threshold: Threshold, higher_is_better: bool, mode: str,
                model: str, dataset: str, details: dict[str, Any], hint: str, threshold_key: str | None = None,
                best: tuple[float, float] | None = None) -> Measurement:
    """Decide, record the measurement in ``ctx``, and return it or raise ``AssertionError``.

    ``threshold_key``: the config key the gate reads first (what ``--transfer-suggest-thresholds`` writes).
    ``best``: the interval a perfect score would get on the same samples; when even it cannot pass the
    strict gate, the message and ``details["too_small"]`` say the sample is too small (:func:`too_small_note`).
    """
    __tracebackhide__ = True
    note = too_small_note(best, threshold.value, higher_is_better=higher_is_better, mode=mode,
                          level=ctx.settings.confidence_level, n=details.get("n"))
    if note:
        details, hint = {**details, "too_small": note}, f"{note}; or {hint}"
    passed = decide(value, interval, threshold.value, higher_is_better=higher_is_better, mode=mode)
    m = ctx.record(Measurement(
        gate=gate, metric=metric, value=float(value), model=model, dataset=dataset,
        interval=(float(interval[0]), float(interval[1])) if interval is not None else None,
        threshold=threshold.value, threshold_source=threshold.source,
        comparison=">=" if higher_is_better else "<=", passed=passed, confidence=mode, details=plain(details),
        threshold_key=threshold_key,
    ))
    if passed:
        return m
    raise AssertionError(failure_message(
        label=label, value=value, interval=interval, threshold=threshold, higher_is_better=higher_is_better,
        mode=mode, level=ctx.settings.confidence_level, model=model, dataset=dataset, details=details, hint=hint,
    ))


def bootstrap_interval(ctx: Context, statistic: Any, *arrays: Any, n_resamples: int = 1000,
                       vectorized: bool = False) -> tuple[float, float]:
    """The seeded percentile bootstrap interval of a statistic (no built-in gate uses it any more).

    Degenerate at the boundary (every resample agrees: [1, 1] for F1 when every prediction is right), so
    a gate should prefer an interval with coverage there: Wilson / Newcombe for proportions,
    :func:`~pytest_transfer.metrics.stats.f1_interval`, :func:`~pytest_transfer.metrics.stats.bounded_mean_interval`
    or :func:`~pytest_transfer.metrics.stats.bayesian_bootstrap_interval` with pseudo-rows.

    Level ``--transfer-confidence-level``, seed ``--transfer-seed``: the same
    run gives the same interval. Samples (rows of ``arrays``) are resampled
    jointly (see :func:`pytest_transfer.metrics.bootstrap_ci`).
    """
    from ..metrics import bootstrap_ci

    return bootstrap_ci(statistic, *arrays, confidence=ctx.settings.confidence_level, n_resamples=n_resamples,
                        seed=ctx.settings.seed, vectorized=vectorized)


def accuracy_interval(correct_count: int, n: int, ctx: Context) -> tuple[float, float]:
    """Wilson's interval of ``correct_count / n`` at ``--transfer-confidence-level``."""
    from ..metrics import wilson_interval

    return wilson_interval(correct_count, n, confidence=ctx.settings.confidence_level)


@dataclass(frozen=True)
class Gate:
    """A gate once its pair, threshold and confidence mode are known; :meth:`finish` decides and records."""

    ctx: Context
    model: TransferModel
    dataset: TargetDataset
    threshold: Threshold
    mode: str
    keys: tuple[str, ...] = ()
    """the config keys the gate looks its threshold up under, most specific first"""

    @property
    def wants_interval(self) -> bool:
        """Whether to compute an interval that costs extra work: a confidence mode other than ``none``, or a
        ``--transfer-suggest-thresholds`` run (a suggestion sits at the interval's conservative end)."""
        return self.mode != "none" or bool(self.ctx.settings.suggest_thresholds)

    def accuracy_interval(self, correct_count: int, n: int) -> tuple[float, float]:
        return accuracy_interval(correct_count, n, self.ctx)

    def f1_interval(self, y_true: Any, y_pred: Any, average: str) -> tuple[float, float] | None:
        """:func:`~pytest_transfer.metrics.stats.f1_interval` at the session's level and seed (``None`` when no
        interval is wanted: :attr:`wants_interval`)."""
        from ..metrics.stats import f1_interval

        if not self.wants_interval:
            return None
        return f1_interval(y_true, y_pred, average=average, confidence=self.ctx.settings.confidence_level,
                           seed=self.ctx.settings.seed)

    def bootstrap_interval(self, statistic: Callable[..., float], *arrays: Any) -> tuple[float, float] | None:
        """The bootstrap interval, or ``None`` when no interval is wanted (:attr:`wants_interval`)."""
        return bootstrap_interval(self.ctx, statistic, *arrays) if self.wants_interval else None

    def finish(self, *, gate: str, metric: str, label: str, value: float, interval: tuple[float, float] | None,
               higher_is_better: bool, details: dict[str, Any], hint: str, dataset: str | None = None,
               best: tuple[float, float] | None = None) -> Measurement:
        """:func:`finish_gate` for this gate's model and dataset (``dataset`` names another, e.g. the shifted one)."""
        __tracebackhide__ = True
        return finish_gate(self.ctx, gate=gate, metric=metric, label=label, value=value, interval=interval,
                           threshold=self.threshold, higher_is_better=higher_is_better, mode=self.mode,
                           model=self.model.name, dataset=dataset or self.dataset.name, details=details, hint=hint,
                           threshold_key=self.keys[0] if self.keys else None, best=best)


def open_gate(model: Any, dataset: Any, *, threshold: float | None, argument: str, keys: Sequence[str],
              confidence: str | bool | None, ctx: Context | None = None) -> Gate:
    """Resolve the pair (spec strings or objects), find and check the threshold, pick the confidence mode."""
    __tracebackhide__ = True
    from ..resolve import resolve_pair

    ctx = ctx or current_context()
    model, dataset = resolve_pair(model, dataset)
    thr = find_threshold(ctx, threshold, argument, model.name, dataset.name, keys)
    return Gate(ctx, model, dataset, thr, confidence_mode(confidence, ctx), tuple(keys))


__all__ = [
    "Gate", "accuracy_interval", "bootstrap_interval", "check_threshold", "confidence_mode", "decide",
    "failure_message", "find_threshold", "finish_gate", "open_gate", "too_small_note",
]
