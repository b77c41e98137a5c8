"""The ``assert_*`` gates of transfer accuracy, F1 and noise: pure functions, usable inside and outside pytest.

Each gate measures a value, finds its threshold (argument, hook, config
file), decides with or without the confidence interval, records the
measurement for the summary and reports, and returns it. On failure it raises
``AssertionError`` with the value, its interval, the threshold and where it
came from, the model, the dataset and what to try next. All but the
measurement is :mod:`pytest_transfer.gates.core`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .context import Measurement
from .declarations import F1, GATES, NOISE, TRANSFER_ACCURACY
from .gates.core import Gate, open_gate
from .jsonable import plain

if TYPE_CHECKING:  # pragma: no cover
    from .methods import TransferMethod

GateResult = Measurement
MAX_PLOT_CLASSES = 50  # confusion matrices of more classes are not kept (they travel through JSON and JUnit)
RELIABILITY_BINS = 10


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
    from .methods import get_method

    transfer = get_method(method, k=k, C=C, finetune=finetune)
    g = open_gate(model, dataset, threshold=threshold, argument="threshold",
                  keys=(f"{method}_accuracy", TRANSFER_ACCURACY.key), confidence=confidence)
    pr = transfer.fit(g.model, g.dataset, context=g.ctx).predict(g.dataset, split=split, context=g.ctx)
    hits = int(pr.correct.sum())
    return g.finish(
        gate=TRANSFER_ACCURACY.name, metric=f"{method}_accuracy", label=f"{TRANSFER_ACCURACY.label} ({method})",
        value=hits / pr.n, interval=g.accuracy_interval(hits, pr.n),
        higher_is_better=TRANSFER_ACCURACY.higher_is_better, best=g.accuracy_interval(pr.n, pr.n),
        details={"method": method, "split": split, "n": pr.n, "correct": hits,
                 **classification_details(pr.y_true, pr.y_pred, pr.scores, g.dataset.classes)},
        hint=transfer.hint + "; a larger test split narrows the interval",
    )


def assert_f1_above(model: Any, dataset: Any, threshold: float | None = None, *, average: str = "macro",
                    method: str = "linear_probe", split: str = "test", confidence: str | None = None,
                    k: int = 20) -> Measurement:
    """Gate on the F1 score (``macro``, ``micro`` or ``weighted``) of the transfer predictions.

    Threshold key: ``f1``. With a confidence mode the interval is
    :func:`~pytest_transfer.metrics.stats.f1_interval` (Clopper–Pearson's
    construction on the confusion matrix: honest width when every prediction
    is right, where a percentile bootstrap gives [1, 1]); when even a perfect
    score could not clear the threshold in ``strict`` mode, the message says
    the test split is too small for the asked confidence.
    """
    __tracebackhide__ = True
    from .methods import get_method
    from .metrics import f1_score

    transfer = get_method(method, k=k)
    if average not in ("macro", "micro", "weighted"):
        raise ValueError(f"average: expected macro, micro or weighted, got {average!r}")
    g = open_gate(model, dataset, threshold=threshold, argument="threshold", keys=(F1.key,), confidence=confidence)
    pr = transfer.fit(g.model, g.dataset, context=g.ctx).predict(g.dataset, split=split, context=g.ctx)
    value = f1_score(pr.y_true, pr.y_pred, average=average)
    return g.finish(
        gate=F1.name, metric=f"f1_{average}", label=f"{F1.label} ({average}, {method})", value=value,
        interval=g.f1_interval(pr.y_true, pr.y_pred, average), higher_is_better=F1.higher_is_better,
        best=g.f1_interval(pr.y_true, pr.y_true, average),
        details={"method": method, "split": split, "n": pr.n, "average": average,
                 **classification_details(pr.y_true, pr.y_pred, pr.scores, g.dataset.classes)},
        hint="look at the confusion matrix for the classes that fail (pytest_transfer.metrics.confusion_matrix)",
    )


def drop_gate(g: Gate, *, perturbation: Any, method: TransferMethod, split: str, relative: bool, gate: str,
              label: str, details: dict[str, Any], hint: str) -> Measurement:
    """Shared by the noise and corruption gates: clean vs perturbed accuracy on the same samples, by ``method``
    fitted once on the clean train split."""
    __tracebackhide__ = True
    from .metrics.stats import paired_difference_interval

    ctx, model, dataset = g.ctx, g.model, g.dataset
    fitted = method.fit(model, dataset, context=ctx)
    clean = fitted.predict(dataset, split=split, context=ctx)
    noisy = fitted.predict(dataset, split=split, perturbation=perturbation, context=ctx)
    acc_clean = float(clean.correct.mean())
    acc_noisy = float(noisy.correct.mean())
    drop = acc_clean - acc_noisy
    interval = paired_difference_interval(clean.correct, noisy.correct, confidence=ctx.settings.confidence_level)
    if relative:
        if acc_clean == 0:
            raise ValueError(f"relative drop is undefined: clean accuracy of {model.name!r} on {dataset.name!r} is 0")
        drop, interval = drop / acc_clean, (interval[0] / acc_clean, interval[1] / acc_clean)
    info = {"method": method.name, "split": split, "n": clean.n, "clean_accuracy": acc_clean,
            "perturbed_accuracy": acc_noisy, "relative": relative, **details}
    return g.finish(
        gate=gate, metric=gate, label=label, value=drop, interval=interval,
        higher_is_better=GATES[gate].higher_is_better, details=info,
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
    from .methods import get_method
    from .robustness.perturbations import gaussian_noise

    transfer = get_method(method, k=k)
    g = open_gate(model, dataset, threshold=max_drop, argument="max_drop", keys=(NOISE.key,),
                  confidence=confidence)
    pert = gaussian_noise(sigma, seed=g.ctx.settings.seed if seed is None else seed)
    return drop_gate(
        g, perturbation=pert, method=transfer, split=split, relative=relative, gate=NOISE.name,
        label=f"{NOISE.label} (sigma={sigma})",
        details={"sigma": sigma}, hint="train with noise augmentation, or check that sigma is in [0, 1] pixel units",
    )
