"""Regression against a stored baseline: :func:`assert_no_regression` and the paired test behind it.

A model change (new weights, a new preprocess, quantisation) is called a
regression when the new model is *significantly* worse on the same samples
as the baseline, and by at least a minimum effect, not when the noise of a
finite test set says so:

* accuracy: the exact one-sided McNemar test (McNemar 1947) on the paired
  per-sample correctness. Only the discordant samples count: ``lost`` (right
  in the baseline, wrong now) and ``gained``. Under "no change in accuracy"
  ``lost ~ Binomial(lost + gained, 1/2)``; ``p = P(X >= lost)``. The gate
  fails when ``p <= alpha`` *and* the drop ``(lost − gained) / n`` is at least
  ``min_effect``. An unchanged model has ``lost = gained = 0``, ``p = 1``: it
  never fails;
* other metrics (F1, precision, recall): a seeded paired interval of
  ``baseline − current`` (:func:`~pytest_transfer.metrics.stats.paired_metric_interval`:
  the Bayesian bootstrap with one pseudo-sample, honest when the models
  agree everywhere or differ on a handful of samples); the gate fails when
  the lower bound of its ``1 − 2·alpha`` interval is above 0 *and* the drop is
  at least ``min_effect``;
* plain tolerances instead, per metric: ``tolerance=`` (absolute) and
  ``relative_tolerance=`` (a fraction of the baseline value; with both the
  larger allowance counts, as in ``pytest.approx``); the drop is compared with
  the allowance under the confidence mode (``none``, ``strict``, ``lenient``).

:func:`regression_power` is the exact power of the paired test, so a test
can say what drop it is able to see (``details["detectable_drop"]``: the
drop caught with 80 % power at the discordance observed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..baselines import (
    Baseline,
    BaselineError,
    baseline_directory,
    baseline_path,
    baseline_test_id,
    check_consistency,
    check_identity,
    load_baseline,
    write_baseline,
)
from ..context import Context, Measurement
from ..declarations import REGRESSION
from ..jsonable import plain
from ..metrics.stats import (
    as_correct,
    binomial_half_upper_tails,
    binomial_pmf,
    log_factorials,
    mcnemar_one_sided,
)
from ..thresholds import Threshold
from .core import check_threshold, confidence_mode, decide

if TYPE_CHECKING:  # pragma: no cover
    from ..methods import TransferMethod

DEFAULT_MIN_EFFECT = 0.01
DETECTION_POWER = 0.8
METRICS = ("accuracy", "f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_macro")
ALIASES = {"f1": "f1_macro", "precision": "precision_macro", "recall": "recall_macro"}
_LOST_SHOWN = 20


# --------------------------------------------------------------------------- the paired test (numpy only)

def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 < a < 0.5:
        raise ValueError(f"alpha: got {alpha!r}; pass the one-sided significance level in (0, 0.5), e.g. 0.05")
    return a


def _check_effect(min_effect: float, name: str = "min_effect") -> float:
    e = float(min_effect)
    if not 0.0 <= e < 1.0:
        raise ValueError(f"{name}: got {min_effect!r}; pass an accuracy difference in [0, 1), e.g. 0.01")
    return e


@dataclass(frozen=True)
class PairedRegression:
    """Outcome of :func:`paired_regression`."""

    n: int
    baseline_accuracy: float
    current_accuracy: float
    lost: int
    """samples right in the baseline and wrong now"""
    gained: int
    """samples wrong in the baseline and right now"""
    p_value: float
    """exact one-sided McNemar p-value of "the current model is less accurate" """
    alpha: float
    min_effect: float

    @property
    def drop(self) -> float:
        """``baseline accuracy − current accuracy`` (``(lost − gained) / n``)."""
        return (self.lost - self.gained) / self.n

    @property
    def regressed(self) -> bool:
        return self.p_value <= self.alpha and self.drop >= self.min_effect - 1e-12


def paired_regression(baseline_correct: Any, current_correct: Any, *, alpha: float = 0.05,
                      min_effect: float = DEFAULT_MIN_EFFECT) -> PairedRegression:
    """The regression decision on paired per-sample correctness: significant (McNemar) and large enough.

    >>> base = np.array([True] * 90 + [False] * 10)
    >>> worse = base.copy(); worse[:12] = False
    >>> paired_regression(base, worse).regressed, paired_regression(base, base).regressed
    (True, False)
    """
    a = as_correct(baseline_correct, "baseline_correct")
    b = as_correct(current_correct, "current_correct")
    if a.shape != b.shape:
        raise ValueError(f"current_correct: {b.size} samples but the baseline has {a.size}; pair the same samples")
    lost = int(np.count_nonzero(a & ~b))
    gained = int(np.count_nonzero(~a & b))
    return PairedRegression(
        n=a.size, baseline_accuracy=float(a.mean()), current_accuracy=float(b.mean()), lost=lost, gained=gained,
        p_value=mcnemar_one_sided(lost, gained), alpha=_check_alpha(alpha), min_effect=_check_effect(min_effect),
    )


def regression_power(n: int, *, drop: float, discordant: float, alpha: float = 0.05,
                     min_effect: float = 0.0) -> float:
    """Exact probability that :func:`paired_regression` calls a regression, for a true accuracy ``drop``.

    Model: each of ``n`` samples is, independently, lost with probability
    ``(discordant + drop) / 2`` and gained with ``(discordant − drop) / 2``
    (``discordant`` is the fraction of samples on which the two models
    disagree in correctness). The sum runs over the number of discordant
    samples ``m ~ Binomial(n, discordant)`` and, given ``m``, over
    ``lost ~ Binomial(m, (discordant + drop) / (2·discordant))``. With
    ``drop=0`` it is the false-alarm rate (at most ``alpha``).

    >>> round(regression_power(500, drop=0.05, discordant=0.1), 2)
    0.97
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n: got {n}; pass the number of test samples")
    discordant = float(discordant)
    drop = float(drop)
    if not 0.0 <= discordant <= 1.0 or abs(drop) > discordant + 1e-12:
        raise ValueError(f"drop, discordant: need |drop| <= discordant <= 1, got drop={drop}, discordant={discordant}")
    alpha = _check_alpha(alpha)
    min_effect = _check_effect(min_effect)
    if discordant == 0.0:
        return 0.0
    logf = log_factorials(n)
    p_m = binomial_pmf(n, discordant, logf)
    q = min(1.0, max(0.0, (discordant + drop) / (2.0 * discordant)))
    need = n * min_effect - 1e-9
    power = 0.0
    for m in np.flatnonzero(p_m > 1e-15):
        m = int(m)
        tails = binomial_half_upper_tails(m, logf)
        b0 = max(int(np.argmax(tails <= alpha)), math.ceil((m + need) / 2.0))
        if b0 <= m:
            power += p_m[m] * float(binomial_pmf(m, q, logf)[b0:].sum())
    return float(min(1.0, power))


def detectable_drop(n: int, *, discordant: float, alpha: float = 0.05, min_effect: float = 0.0,
                    power: float = DETECTION_POWER) -> float | None:
    """The smallest accuracy drop the paired test catches with probability ``power``.

    The discordance is taken as ``max(discordant, drop)`` (a drop needs at
    least that many discordant samples). ``None`` when even a drop to zero
    accuracy is not caught that often (too few samples).

    >>> round(detectable_drop(450, discordant=0.05), 3)
    0.027
    """
    def caught(d: float) -> float:
        return regression_power(n, drop=d, discordant=max(discordant, d), alpha=alpha, min_effect=min_effect)

    if caught(1.0) < power:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(14):  # to within 1e-4
        mid = (lo + hi) / 2.0
        if caught(mid) >= power:
            hi = mid
        else:
            lo = mid
    return hi


# --------------------------------------------------------------------------- metrics

def metric_value(name: str, y_true: Any, y_pred: Any) -> float:
    """One of :data:`METRICS` (``accuracy``, ``f1_<average>``, ``precision_macro``, ``recall_macro``)."""
    from ..metrics import accuracy, f1_score, precision_score, recall_score

    if name == "accuracy":
        return accuracy(y_true, y_pred)
    base, _, average = name.partition("_")
    fn = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[base]
    return fn(y_true, y_pred, average=average)


def _metric_names(metrics: str | Sequence[str]) -> list[str]:
    items = [metrics] if isinstance(metrics, str) else list(metrics)
    if not items:
        raise ValueError(f"metrics: got none; pass some of {', '.join(METRICS)}")
    out = []
    for m in items:
        name = ALIASES.get(str(m), str(m))
        if name not in METRICS:
            raise ValueError(f"metrics: unknown metric {m!r}; valid: {', '.join([*METRICS, *ALIASES])}")
        if name not in out:
            out.append(name)
    return out


def _per_metric(value: float | Mapping[str, float] | None, names: list[str], argument: str) -> dict[str, float]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        out = {}
        for key, v in value.items():
            name = ALIASES.get(str(key), str(key))
            if name not in names:
                raise ValueError(f"{argument}: {key!r} is not one of the checked metrics ({', '.join(names)})")
            out[name] = _check_effect(v, f"{argument}[{key!r}]")
        return out
    return {name: _check_effect(value, argument) for name in names}


# --------------------------------------------------------------------------- the gate

def _display(path: Path, ctx: Context) -> str:
    for base in (ctx.settings.rootdir, os.getcwd()):
        try:
            rel = os.path.relpath(path.resolve(), Path(base).resolve())
        except ValueError:  # another drive on Windows
            continue
        if not rel.startswith(".."):
            return Path(rel).as_posix()
    return str(path)


def _min_effect(ctx: Context, value: float | None, model: str, dataset: str) -> Threshold:
    keys = (REGRESSION.key,)
    if value is not None:
        return check_threshold(Threshold(_check_effect(value), "argument min_effect="), argument="min_effect",
                               keys=keys)
    found = ctx.thresholds.lookup(model, dataset, keys[0])
    if found is None:
        return Threshold(DEFAULT_MIN_EFFECT, f"default min_effect={DEFAULT_MIN_EFFECT}")
    return check_threshold(found, argument="min_effect", keys=keys)


@dataclass
class _Comparison:
    metric: str
    baseline_value: float
    current_value: float
    drop: float
    interval: tuple[float, float]
    threshold: Threshold
    passed: bool
    rule: str
    confidence: str
    details: dict[str, Any]


def _compare(ctx: Context, name: str, stored: Baseline, current: Baseline, y_true: np.ndarray, ids: np.ndarray,
             *, alpha: float, effect: Threshold, abs_tol: float | None, rel_tol: float | None, mode: str,
             shown: str) -> _Comparison:
    from ..datasets.pixels import printable_ids
    from ..metrics.stats import paired_difference_interval, paired_metric_interval

    level = ctx.settings.confidence_level
    base_value = stored.metrics.get(name)
    if base_value is None:  # a metric added to the check later: recomputed from the stored predictions
        base_value = metric_value(name, y_true, stored.predictions)
    cur_value = current.metrics[name]
    drop = base_value - cur_value
    details: dict[str, Any] = {"baseline_value": base_value, "current_value": cur_value}

    def paired_interval(confidence: float) -> tuple[float, float]:
        if name == "accuracy":
            return paired_difference_interval(stored.correct, current.correct, confidence=confidence)
        return paired_metric_interval(y_true, stored.predictions, current.predictions, name=name,
                                      confidence=confidence, seed=ctx.settings.seed)

    interval = paired_interval(level)
    if abs_tol is not None or rel_tol is not None:
        allowed = max(abs_tol or 0.0, (rel_tol or 0.0) * base_value)
        parts = [f"tolerance={abs_tol}"] if abs_tol is not None else []
        parts += [f"relative_tolerance={rel_tol}"] if rel_tol is not None else []
        thr = Threshold(allowed, f"argument {' and '.join(parts)} of the baseline {shown}")
        passed = decide(drop, interval, allowed, higher_is_better=REGRESSION.higher_is_better, mode=mode)
        rule = f"the drop may be at most {allowed:.4f} ({', '.join(parts)}; confidence mode {mode})"
        return _Comparison(name, base_value, cur_value, drop, interval, thr, passed, rule, mode, details)

    thr = Threshold(effect.value, f"{effect.source}, paired test at alpha={alpha} against the baseline {shown}")
    if name == "accuracy":
        test = paired_regression(stored.correct, current.correct, alpha=alpha, min_effect=effect.value)
        observed = (test.lost + test.gained) / test.n
        details.update(lost=test.lost, gained=test.gained, p_value=test.p_value, alpha=alpha,
                       min_effect=effect.value,
                       lost_samples=printable_ids(ids[stored.correct & ~current.correct][:_LOST_SHOWN]),
                       gained_samples=printable_ids(ids[~stored.correct & current.correct][:_LOST_SHOWN]),
                       detectable_drop=detectable_drop(test.n, discordant=observed, alpha=alpha,
                                                       min_effect=effect.value))
        rule = (f"{test.lost} sample(s) lost and {test.gained} gained of {test.n}; one-sided exact McNemar "
                f"p = {test.p_value:.3g} (a regression needs p <= {alpha} and a drop >= {effect.value})")
        return _Comparison(name, base_value, cur_value, drop, interval, thr, not test.regressed, rule,
                           "mcnemar", details)
    low = paired_interval(1.0 - 2.0 * alpha)[0]
    regressed = low > 0.0 and drop >= effect.value - 1e-12
    details.update(alpha=alpha, min_effect=effect.value, one_sided_lower=low)
    rule = (f"paired Bayesian bootstrap with a pseudo-sample (honest at the boundary): the one-sided "
            f"{1 - alpha:.0%} lower bound of the drop is {low:.4f} (a regression needs it > 0 and a drop >= "
            f"{effect.value})")
    return _Comparison(name, base_value, cur_value, drop, interval, thr, not regressed, rule, "paired-bootstrap",
                       details)


def _id_kind(ids: Sequence[Any]) -> str:
    return "files relative to the dataset's folder" if any(isinstance(i, str) for i in ids) else "dataset indices"


def _record(ctx: Context, c: _Comparison, *, model: str, dataset: str, common: dict[str, Any],
            passed: bool | None = None) -> Measurement:
    return ctx.record(Measurement(
        gate=REGRESSION.name, metric=f"{c.metric}_drop", value=float(c.drop), model=model, dataset=dataset,
        interval=(float(c.interval[0]), float(c.interval[1])), threshold=c.threshold.value,
        threshold_source=c.threshold.source, comparison="<=", passed=c.passed if passed is None else passed,
        confidence=c.confidence, details=plain({**common, **c.details}),
    ))


def assert_no_regression(model: Any, dataset: Any, *, metrics: str | Sequence[str] = ("accuracy",),
                         method: str = "linear_probe", split: str = "test", min_effect: float | None = None,
                         alpha: float | None = None, tolerance: float | Mapping[str, float] | None = None,
                         relative_tolerance: float | Mapping[str, float] | None = None,
                         confidence: str | None = None, path: str | os.PathLike[str] | None = None,
                         k: int = 20, C: float = 1.0) -> dict[str, Measurement]:
    """Gate: the model is not worse than its stored baseline on the same test samples.

    ``metrics``: any of ``accuracy``, ``f1`` (= ``f1_macro``), ``f1_micro``,
    ``f1_weighted``, ``precision``, ``recall``. Without a tolerance a metric
    fails only when it is significantly worse (one-sided, ``alpha``, default
    ``1 − --transfer-confidence-level``) and by at least ``min_effect``
    (default: config key ``regression_min_effect``, else 0.01); see the module
    docstring. ``tolerance`` / ``relative_tolerance`` (a number, or a dict per
    metric) switch a metric to a plain allowance, decided under
    ``confidence`` (``none``, ``strict``, ``lenient``).

    The baseline file is ``__transfer_baselines__/<test module>/<test>--<model>--<dataset>.json``
    next to the test (or ``path``, a relative one taken from the rootdir). A missing one is written and the gate
    fails saying so; ``--transfer-update-baselines`` rewrites it and passes.
    Returns ``{metric: Measurement}`` (value = baseline − current).

    >>> assert_no_regression(model, "digits", metrics=["accuracy", "f1"])  # doctest: +SKIP
    """
    __tracebackhide__ = True
    from ..api import resolve_pair, session
    from ..methods import get_method

    ctx = session()
    transfer = get_method(method, k=k, C=C)
    names = _metric_names(metrics)
    model, dataset = resolve_pair(model, dataset, ctx)
    run = _Run(
        ctx=ctx, model=model, dataset=dataset, method=method, split=split, names=names,
        alpha=_check_alpha(alpha if alpha is not None else round(1.0 - ctx.settings.confidence_level, 10)),
        effect=_min_effect(ctx, min_effect, model.name, dataset.name),
        abs_tol=_per_metric(tolerance, names, "tolerance"),
        rel_tol=_per_metric(relative_tolerance, names, "relative_tolerance"),
        mode=confidence_mode(confidence, ctx),
    )
    run.measure(transfer, path=path)
    stored = run.stored(check_test=path is None)
    if stored is None or run.update:
        return run.write(stored)
    return run.compare(stored)


@dataclass
class _Run:
    """One call of :func:`assert_no_regression`: its settings, then the current result and the baseline file."""

    ctx: Context
    model: Any
    dataset: Any
    method: str
    split: str
    names: list[str]
    alpha: float
    effect: Threshold
    abs_tol: dict[str, float]
    rel_tol: dict[str, float]
    mode: str
    pr: Any = None
    current: Any = None
    file: Path = Path()
    shown: str = ""
    common: dict[str, Any] = field(default_factory=dict)

    @property
    def update(self) -> bool:
        return bool(self.ctx.settings.update_baselines)

    def measure(self, transfer: TransferMethod, *, path: str | os.PathLike[str] | None) -> None:
        """The current predictions by ``transfer`` as a :class:`Baseline`, and the baseline file's path."""
        ctx, model, dataset, split = self.ctx, self.model, self.dataset, self.split
        self.pr = pr = transfer.fit(model, dataset, context=ctx).predict(dataset, split=split, context=ctx)
        test_path = ctx.current_test_path
        self.current = Baseline(
            model=model.name, dataset=dataset.name, method=self.method, split=split,
            metrics={name: metric_value(name, pr.y_true, pr.y_pred) for name in METRICS},
            correct=np.asarray(pr.correct, dtype=bool), predictions=np.asarray(pr.y_pred, dtype=np.int64),
            num_classes=dataset.num_classes, dataset_fingerprint=dataset.fingerprint(),
            split_fingerprint=dataset.split_fingerprint(split), test=baseline_test_id(ctx.current_test, test_path),
            model_fingerprint=model.fingerprint(),
        )
        self.file = ctx.settings.path(path) if path is not None else baseline_path(
            test=ctx.current_test, test_path=test_path, model=model.name, dataset=dataset.name, method=self.method,
            split=split)
        self.shown = _display(self.file, ctx)
        self.common = {"method": self.method, "split": split, "n": self.current.n, "baseline": self.shown}

    def stored(self, *, check_test: bool) -> Baseline | None:
        """The baseline on disk (``None``: none, or a damaged / foreign one under --transfer-update-baselines)."""
        try:
            stored = load_baseline(self.file)
            if stored is not None:
                check_identity(stored, self.current, self.file, check_test=check_test)
                check_consistency(stored, self.pr.y_true, self.file, metric_value)
            return stored
        except BaselineError as exc:
            if not self.update:
                raise BaselineError(str(exc)) from None
            return None  # --transfer-update-baselines rewrites a damaged or foreign file

    def comparison(self, name: str, stored: Baseline) -> _Comparison:
        return _compare(self.ctx, name, stored, self.current, self.pr.y_true, self.pr.evaluation.sample_ids,
                        alpha=self.alpha, effect=self.effect, abs_tol=self.abs_tol.get(name),
                        rel_tol=self.rel_tol.get(name), mode=self.mode, shown=self.shown)

    def write(self, stored: Baseline | None) -> dict[str, Measurement]:
        """Create (and fail, unless updating) or update the baseline file."""
        __tracebackhide__ = True
        try:
            action = self.common["baseline_action"] = write_baseline(self.file, self.current)
        except OSError as exc:  # a read-only or full disk, a folder in the way: one line, the old file kept
            from ..text import write_error

            raise BaselineError(write_error("the baseline", self.shown, exc)) from None
        results = {}
        for name in self.names:
            value = float(self.current.metrics[name])
            details = {**self.common, "current_value": value}
            if stored is not None:  # an update: what it replaced, and whether a comparison would have failed
                c = self.comparison(name, stored)
                details.update(previous_value=c.baseline_value, would_have_failed=not c.passed)
            source = f"new baseline {self.shown}" if stored is None else f"baseline {self.shown} ({action})"
            results[name] = self.ctx.record(Measurement(
                gate=REGRESSION.name, metric=name, value=value, model=self.model.name, dataset=self.dataset.name,
                threshold_source=source, comparison="baseline", passed=self.update, details=plain(details),
            ))
        if self.update:
            return results
        values = ", ".join(f"{name} {self.current.metrics[name]:.4f}" for name in self.names)
        raise AssertionError(
            f"no baseline for model {self.model.name!r} on dataset {self.dataset.name!r} ({self.method}, "
            f"{self.split} split): wrote {self.shown} ({values}, n={self.current.n})\n"
            f"  next: check the file in and re-run: later runs compare against it "
            f"(--transfer-update-baselines writes missing baselines without failing)"
        )

    def compare(self, stored: Baseline) -> dict[str, Measurement]:
        """Compare every metric with the baseline; one ``AssertionError`` lists every regression."""
        __tracebackhide__ = True
        failures = []
        results = {}
        level = round(self.ctx.settings.confidence_level * 100)
        for name in self.names:
            c = self.comparison(name, stored)
            results[name] = _record(self.ctx, c, model=self.model.name, dataset=self.dataset.name,
                                    common=self.common)
            if not c.passed:
                failures.append(
                    f"{name} of model {self.model.name!r} on dataset {self.dataset.name!r} regressed: "
                    f"{c.baseline_value:.4f} in the baseline, {c.current_value:.4f} now (drop {c.drop:.4f}, "
                    f"{level}% interval {c.interval[0]:.4f}–{c.interval[1]:.4f})\n  rule: {c.rule}"
                )
        if failures:
            lost = results.get("accuracy")
            where = lost.details.get("lost_samples") if lost is not None else None
            raise AssertionError(
                "\n".join(failures)
                + f"\n  baseline: {self.shown} (method {self.method}, {self.split} split, n={self.current.n})"
                + (f"\n  samples lost ({_id_kind(where)}, first {_LOST_SHOWN}): {', '.join(map(str, where))}"
                   if where else "")
                + "\n  next: if the change is intended, re-run with --transfer-update-baselines and commit the new "
                  "baseline; otherwise look at the lost samples and what changed in the model or its preprocess"
            )
        return results


class BaselineFixture:
    """What the ``transfer_baseline`` fixture returns: :func:`assert_no_regression` bound to the test.

    ``transfer_baseline(model, dataset, **kw)`` (or ``.check(...)``) runs the
    gate; ``.path(model, dataset)`` is where the baseline file lives;
    ``.directory`` its folder; ``.update`` is ``True`` under
    ``--transfer-update-baselines``; ``.load(model, dataset)`` reads it.
    """

    def __init__(self, ctx: Context, nodeid: str, test_path: str | os.PathLike[str]) -> None:
        self.ctx = ctx
        self.nodeid = nodeid
        self.test_path = str(test_path)

    @property
    def update(self) -> bool:
        return self.ctx.settings.update_baselines

    @property
    def directory(self) -> Path:
        return baseline_directory(self.test_path)

    def path(self, model: Any, dataset: Any, *, method: str = "linear_probe", split: str = "test") -> Path:
        name = getattr(model, "name", model)
        data = getattr(dataset, "name", dataset)
        return baseline_path(test=self.nodeid, test_path=self.test_path, model=str(name), dataset=str(data),
                             method=method, split=split)

    def load(self, model: Any, dataset: Any, *, method: str = "linear_probe", split: str = "test") -> Baseline | None:
        return load_baseline(self.path(model, dataset, method=method, split=split))

    def check(self, model: Any, dataset: Any, **kwargs: Any) -> dict[str, Measurement]:
        __tracebackhide__ = True
        return assert_no_regression(model, dataset, **kwargs)

    __call__ = check
