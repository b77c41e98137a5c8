"""The ``assert_*`` gates: pure functions, usable inside and outside pytest.

Each gate measures a value, finds its threshold (argument, hook, config
file), decides with or without the confidence interval, records the
measurement for the summary and reports, and returns it. On failure it raises
``AssertionError`` with the value, its interval, the threshold and where it
came from, the model, the dataset and what to try next.
"""

from __future__ import annotations

import math
from typing import Any

from .context import Context, Measurement, current_context
from .settings import CONFIDENCE_MODES
from .thresholds import Threshold, explicit

GateResult = Measurement
MAX_PLOT_CLASSES = 50  # confusion matrices of more classes are not kept (they travel through JSON and JUnit)
RELIABILITY_BINS = 10


def plain(value: Any) -> Any:
    """``value`` with numpy scalars / arrays turned into Python numbers / lists and NaN / Inf into ``None``.

    Measurement details travel as JSON (pytest-xdist, JUnit properties,
    ``--transfer-report``), so gates pass them through this.
    """
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def classification_details(y_true: Any, y_pred: Any, scores: Any, classes: list[str]) -> dict[str, Any]:
    """Plot-ready data of a classifier's test predictions for the HTML report.

    ``confusion_matrix`` (rows = true class; only up to ``MAX_PLOT_CLASSES``
    classes) with ``classes``, and, when per-class scores are there,
    ``reliability`` (``RELIABILITY_BINS`` equal-width bins of top-1
    confidence: mean ``confidence``, ``accuracy`` and ``count`` per bin, empty
    bins ``None``) and ``ece``.
    """
    from .metrics import confusion_matrix, expected_calibration_error
    from .metrics.classification import reliability_curve

    k = len(classes)
    out: dict[str, Any] = {}
    if k <= MAX_PLOT_CLASSES:
        out["confusion_matrix"] = confusion_matrix(y_true, y_pred, num_classes=k).tolist()
        out["classes"] = list(classes)
    if scores is not None and getattr(scores, "ndim", 0) == 2 and scores.shape[1] == k:
        curve = reliability_curve(y_true, scores, n_bins=RELIABILITY_BINS)
        out["reliability"] = plain({"confidence": curve.confidence, "accuracy": curve.accuracy,
                                    "count": curve.count})
        out["ece"] = expected_calibration_error(y_true, scores, n_bins=RELIABILITY_BINS)
    return out


def bootstrap_interval(ctx: Context, statistic: Any, *arrays: Any, n_resamples: int = 1000,
                       vectorized: bool = False) -> tuple[float, float]:
    """The seeded percentile bootstrap interval a gate reports for a metric that is not a proportion.

    Level ``--transfer-confidence-level``, seed ``--transfer-seed``: the same
    run gives the same interval. Samples (rows of ``arrays``) are resampled
    jointly (see :func:`pytest_transfer.metrics.bootstrap_ci`).
    """
    from .metrics import bootstrap_ci

    return bootstrap_ci(statistic, *arrays, confidence=ctx.settings.confidence_level, n_resamples=n_resamples,
                        seed=ctx.settings.seed, vectorized=vectorized)


def _confidence_mode(confidence: str | bool | None, ctx: Context) -> str:
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


def find_threshold(ctx: Context, value: float | None, argument: str, model: str, dataset: str,
                   keys: tuple[str, ...]) -> Threshold:
    __tracebackhide__ = True
    if value is not None:
        return explicit(value, argument)
    try:
        return ctx.thresholds.require(model, dataset, keys, argument=argument)
    except LookupError as exc:
        raise LookupError(str(exc)) from None


def decide(value: float, interval: tuple[float, float] | None, threshold: float, *, higher_is_better: bool,
           mode: str) -> bool:
    """Point gate (``none``), ``strict`` (the whole interval clears) or ``lenient`` (fail only when it all misses)."""
    if mode == "none" or interval is None:
        return value >= threshold if higher_is_better else value <= threshold
    lo, hi = interval
    if higher_is_better:
        return (lo if mode == "strict" else hi) >= threshold
    return (hi if mode == "strict" else lo) <= threshold


def _fmt(x: float) -> str:
    return f"{x:.4f}" if abs(x) < 1000 else f"{x:.6g}"


def finish_gate(ctx: Context, *, gate: str, metric: str, label: str, value: float,
                interval: tuple[float, float] | None, threshold: Threshold, higher_is_better: bool, mode: str,
                model: str, dataset: str, details: dict[str, Any], hint: str) -> Measurement:
    """Decide, record and either return the measurement or raise ``AssertionError``."""
    __tracebackhide__ = True
    passed = decide(value, interval, threshold.value, higher_is_better=higher_is_better, mode=mode)
    m = ctx.record(Measurement(
        gate=gate, metric=metric, value=float(value), model=model, dataset=dataset,
        interval=(float(interval[0]), float(interval[1])) if interval is not None else None,
        threshold=threshold.value, threshold_source=threshold.source,
        comparison=">=" if higher_is_better else "<=", passed=passed, confidence=mode, details=plain(details),
    ))
    if passed:
        return m
    level = round(ctx.settings.confidence_level * 100)
    shown = _fmt(value)
    if interval is not None:
        shown += f" ({level}% interval {_fmt(interval[0])}–{_fmt(interval[1])})"
    side = "below the minimum" if higher_is_better else "above the maximum"
    rule = {"none": "", "strict": f" [confidence=strict: the whole {level}% interval must clear it]",
            "lenient": f" [confidence=lenient: the whole {level}% interval is on the wrong side]"}[mode]
    where = ", ".join(f"{k}={v}" for k, v in details.items() if k in ("method", "split", "n", "sigma", "relative"))
    raise AssertionError(
        f"{label} of model {model!r} on dataset {dataset!r} is {shown}, {side} {_fmt(threshold.value)}{rule}\n"
        f"  threshold from: {threshold.source}\n"
        + (f"  measured with: {where}\n" if where else "")
        + f"  next: {hint}"
    )


def _accuracy_interval(correct_count: int, n: int, ctx: Context) -> tuple[float, float]:
    from .metrics import wilson_interval

    return wilson_interval(correct_count, n, confidence=ctx.settings.confidence_level)


def assert_transfer_accuracy_above(model: Any, dataset: Any, threshold: float | None = None, *,
                                   method: str = "linear_probe", split: str = "test",
                                   confidence: str | None = None, k: int = 20, C: float = 1.0,
                                   finetune: dict[str, Any] | None = None) -> Measurement:
    """Gate on transfer accuracy: linear probe (default), k-NN on frozen features, the model's own head
    (``direct``), or ``finetune`` (a new head, optionally with the last blocks; options in ``finetune={...}``).

    The threshold comes from the argument or from the config keys
    ``<method>_accuracy`` then ``transfer_accuracy`` for the model × dataset.
    The interval is Wilson's.

    >>> assert_transfer_accuracy_above(model, "digits", 0.9)  # doctest: +SKIP
    """
    __tracebackhide__ = True
    from .predictions import check_method, predict, resolve_pair

    ctx = current_context()
    check_method(method)
    model, dataset = resolve_pair(model, dataset)
    thr = find_threshold(ctx, threshold, "threshold", model.name, dataset.name,
                         (f"{method}_accuracy", "transfer_accuracy"))
    mode = _confidence_mode(confidence, ctx)
    pr = predict(model, dataset, method=method, split=split, k=k, C=C, finetune=finetune, context=ctx)
    hits = int(pr.correct.sum())
    return finish_gate(
        ctx, gate="transfer_accuracy", metric=f"{method}_accuracy", label=f"Transfer accuracy ({method})",
        value=hits / pr.n, interval=_accuracy_interval(hits, pr.n, ctx), threshold=thr,
        higher_is_better=True, mode=mode, model=model.name, dataset=dataset.name,
        details={"method": method, "split": split, "n": pr.n, "correct": hits,
                 **classification_details(pr.y_true, pr.y_pred, pr.scores, dataset.classes)},
        hint="check the preprocess (image size, normalisation) and the feature node; compare method='knn'; "
             "a larger test split narrows the interval",
    )


def assert_f1_above(model: Any, dataset: Any, threshold: float | None = None, *, average: str = "macro",
                    method: str = "linear_probe", split: str = "test", confidence: str | None = None,
                    k: int = 20) -> Measurement:
    """Gate on the F1 score (``macro``, ``micro`` or ``weighted``) of the transfer predictions.

    Threshold key: ``f1``. With a confidence mode the interval is a seeded
    percentile bootstrap over test samples.
    """
    __tracebackhide__ = True
    from .metrics import f1_score
    from .predictions import check_method, predict, resolve_pair

    ctx = current_context()
    check_method(method)
    if average not in ("macro", "micro", "weighted"):
        raise ValueError(f"average: expected macro, micro or weighted, got {average!r}")
    model, dataset = resolve_pair(model, dataset)
    thr = find_threshold(ctx, threshold, "threshold", model.name, dataset.name, ("f1",))
    mode = _confidence_mode(confidence, ctx)
    pr = predict(model, dataset, method=method, split=split, k=k, context=ctx)
    value = f1_score(pr.y_true, pr.y_pred, average=average)
    interval = None
    if mode != "none":
        interval = bootstrap_interval(ctx, lambda t, p: f1_score(t, p, average=average), pr.y_true, pr.y_pred)
    return finish_gate(
        ctx, gate="f1", metric=f"f1_{average}", label=f"F1 ({average}, {method})", value=value, interval=interval,
        threshold=thr, higher_is_better=True, mode=mode, model=model.name, dataset=dataset.name,
        details={"method": method, "split": split, "n": pr.n, "average": average,
                 **classification_details(pr.y_true, pr.y_pred, pr.scores, dataset.classes)},
        hint="look at the confusion matrix for the classes that fail (pytest_transfer.metrics.confusion_matrix)",
    )


def drop_gate(ctx: Context, model: Any, dataset: Any, *, perturbation: Any, method: str, split: str,
              max_drop: Threshold, relative: bool, mode: str, gate: str, label: str, k: int,
              details: dict[str, Any], hint: str) -> Measurement:
    """Shared by the noise and corruption gates: clean vs perturbed accuracy on the same samples."""
    __tracebackhide__ = True
    from .metrics.stats import paired_difference_interval
    from .predictions import predict

    clean = predict(model, dataset, method=method, split=split, k=k, context=ctx)
    noisy = predict(model, dataset, method=method, split=split, perturbation=perturbation, k=k, context=ctx)
    acc_clean = float(clean.correct.mean())
    acc_noisy = float(noisy.correct.mean())
    drop = acc_clean - acc_noisy
    interval = paired_difference_interval(clean.correct, noisy.correct, confidence=ctx.settings.confidence_level)
    if relative:
        if acc_clean == 0:
            raise ValueError(f"relative drop is undefined: clean accuracy of {model.name!r} on {dataset.name!r} is 0")
        drop, interval = drop / acc_clean, (interval[0] / acc_clean, interval[1] / acc_clean)
    info = {"method": method, "split": split, "n": clean.n, "clean_accuracy": acc_clean,
            "perturbed_accuracy": acc_noisy, "relative": relative, **details}
    return finish_gate(
        ctx, gate=gate, metric=gate, label=label, value=drop, interval=interval, threshold=max_drop,
        higher_is_better=False, mode=mode, model=model.name, dataset=dataset.name, details=info,
        hint=f"clean accuracy {acc_clean:.4f}, perturbed {acc_noisy:.4f}; {hint}",
    )


def assert_robust_under_noise(model: Any, dataset: Any, *, sigma: float, max_drop: float | None = None,
                              relative: bool = False, method: str = "linear_probe", split: str = "test",
                              seed: int | None = None, confidence: str | None = None, k: int = 20) -> Measurement:
    """Gate on the accuracy drop under Gaussian noise of ``sigma`` added to the [0, 1] images before preprocess.

    ``drop = clean accuracy − noisy accuracy`` on the same test samples
    (divided by the clean accuracy when ``relative=True``); it must not exceed
    ``max_drop`` (config key ``noise_max_drop``). Probe methods train the probe
    on clean features. The interval is Newcombe's for a paired difference.
    """
    __tracebackhide__ = True
    from .engine import gaussian_noise
    from .predictions import check_method, resolve_pair

    ctx = current_context()
    check_method(method)
    model, dataset = resolve_pair(model, dataset)
    thr = find_threshold(ctx, max_drop, "max_drop", model.name, dataset.name, ("noise_max_drop",))
    mode = _confidence_mode(confidence, ctx)
    pert = gaussian_noise(sigma, seed=ctx.settings.seed if seed is None else seed)
    return drop_gate(
        ctx, model, dataset, perturbation=pert, method=method, split=split, max_drop=thr, relative=relative,
        mode=mode, gate="noise_max_drop", label=f"Accuracy drop under Gaussian noise (sigma={sigma})", k=k,
        details={"sigma": sigma}, hint="train with noise augmentation, or check that sigma is in [0, 1] pixel units",
    )
