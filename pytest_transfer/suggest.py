"""``--transfer-suggest-thresholds=PATH``: thresholds from what the gates measured, for ``--transfer-thresholds``.

A suggestion run runs the gates as usual. A gate with no threshold yet
measures against a placeholder that always passes (:func:`placeholder`);
a gate whose threshold comes from the config keeps it. At the end of the
session, for every model × dataset × threshold key measured, the controller
writes (or updates) a TOML file in the layout
:meth:`pytest_transfer.thresholds.ThresholdTable.from_file` reads::

    [thresholds."my-backbone"."imagefolder:data/xray"]
    linear_probe_accuracy = 0.912 # measured 0.9533, 95% interval [0.9287, 0.9696], n=450; ...

* the threshold is the conservative end of the measured value's interval
  (the lower bound for a higher-is-better metric, the upper bound for a drop
  or an error), rounded outwards (3 decimals for metrics in [0, 1], else 4
  significant digits) and kept inside the key's valid range. Several
  measurements of one key (parametrised tests) give the most conservative;
* the comment gives the measured value, the interval, ``n``, and the
  smallest change of the metric that makes this gate fail with 80 % power
  at this ``n`` (:func:`detectable_change`): exact binomial for the gates
  with Wilson intervals (accuracies), a normal approximation with the
  standard error read from the interval for the others;
* entries the file already has are kept (``--transfer-suggest-overwrite``
  replaces them); the rest of the file (comments, other tables, a
  ``pyproject.toml``'s other sections) is left as it was (``tomlkit``); the
  file is written atomically after the result was read back and validated.

Gates whose threshold is an argument (``threshold=0.9`` in the test) or comes
from the ``pytest_transfer_threshold`` hook are not written: both beat the file.
Gates with no config key (dataset shift, ranking margins) and baseline comparisons (their own update flow,
``--transfer-update-baselines``) are not either. Tests that errored before their gates measured (test errors,
:mod:`pytest_transfer.report.errors`) suggest nothing, and the run says so in one line.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from statistics import NormalDist
from typing import Any

import pytest

from .declarations import lower_is_better
from .thresholds import KNOWN_KEYS, PLACEHOLDER_SOURCE, Threshold, ThresholdTable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

POWER = 0.8
#: threshold keys of gates that pass when the value is at most the threshold (the others: at least)
LOWER_IS_BETTER = lower_is_better()  # from the gates' declarations (pytest_transfer.declarations)
HEADER = ("Thresholds suggested by pytest-transfer (--transfer-suggest-thresholds): each at the conservative end "
          "of the measured interval.\nRead them with --transfer-thresholds=PATH (or copy the tables into "
          "[tool.pytest_transfer.thresholds]); edit freely, a later suggestion run keeps what is here.")


def placeholder(key: str) -> Threshold:
    """The threshold a gate without one measures against in a suggestion run: the end of ``key``'s valid range
    that every value clears (0 for an accuracy, 1 for a drop, −inf for an unbounded score)."""
    lo, hi = KNOWN_KEYS.get(key, (-math.inf, math.inf))
    return Threshold(hi if key in LOWER_IS_BETTER else lo, PLACEHOLDER_SOURCE)


def round_outward(x: float, key: str, *, down: bool) -> float:
    """``x`` rounded away from the measured value: down (``down=True``) or up, to 3 decimals for a key whose
    range lies in [−1, 1] (accuracies, drops), else to 4 significant digits; clipped to the key's range.

    >>> round_outward(0.92871, "f1", down=True), round_outward(0.0312, "noise_max_drop", down=False)
    (0.928, 0.032)
    >>> round_outward(-2.34567, "leep", down=True)
    -2.346
    """
    lo, hi = KNOWN_KEYS.get(key, (-math.inf, math.inf))
    if (-1.0 <= lo and hi <= 1.0) or x == 0.0:
        step = Decimal("0.001")
    else:
        step = Decimal(1).scaleb(math.floor(math.log10(abs(x))) - 3)
    exact = Decimal(float(x)).quantize(step, rounding=ROUND_FLOOR if down else ROUND_CEILING)
    return min(hi, max(lo, float(exact)))


def _wilson_count(value: float, n: int | None, interval: tuple[float, float], level: float) -> int | None:
    """The number of successes when ``interval`` is Wilson's interval of ``value`` on ``n`` samples, else None."""
    from .metrics import wilson_interval

    if not n or n < 1:
        return None
    k = round(value * n)
    if abs(k / n - value) > 1e-9 or not 0 <= k <= n:  # a drop below 0 (accuracy rose) is no count of successes
        return None
    lo, hi = wilson_interval(k, n, confidence=level)
    return k if abs(lo - interval[0]) < 1e-9 and abs(hi - interval[1]) < 1e-9 else None


def binomial_detectable(n: int, value: float, threshold: float, *, higher_is_better: bool, mode: str,
                        level: float, power: float = POWER) -> float | None:
    """The smallest change of a proportion that makes the gate fail with probability ``power`` at ``n`` samples.

    Exact: the gate's own rule (:func:`pytest_transfer.gates.core.decide` on ``k / n`` and, in the ``strict``
    and ``lenient`` modes, Wilson's interval of ``k``) marks the counts ``k = 0..n`` it fails; the power at a
    true proportion ``p`` is ``P(K in failing counts)``, ``K ~ Binomial(n, p)``. The change is a drop from
    ``value`` (a rise for a lower-is-better proportion), found by bisection to 1e-6. ``None`` when even
    the largest possible change is caught less often than ``power``.
    """
    import numpy as np

    from .gates.core import decide
    from .metrics import wilson_interval
    from .metrics.stats import binomial_pmf, log_factorials

    fails = np.array([not decide(k / n, wilson_interval(k, n, confidence=level) if mode != "none" else None,
                                 threshold, higher_is_better=higher_is_better, mode=mode) for k in range(n + 1)])
    logf = log_factorials(n)
    room = value if higher_is_better else 1.0 - value

    def caught(change: float) -> float:
        p = value - change if higher_is_better else value + change
        return float(binomial_pmf(n, min(1.0, max(0.0, p)), logf)[fails].sum())

    if caught(room) < power:
        return None
    lo, hi = 0.0, room
    while hi - lo > 1e-6:
        mid = (lo + hi) / 2.0
        lo, hi = (lo, mid) if caught(mid) >= power else (mid, hi)
    return hi


def normal_detectable(value: float, threshold: float, interval: tuple[float, float], *, higher_is_better: bool,
                      mode: str, level: float, power: float = POWER) -> float:
    """The smallest change that makes the gate fail with probability ``power``, for a metric whose estimate is
    normal with the standard error ``se = (hi − lo) / (2 z)`` read from its ``level`` interval.

    The gate fails when the new estimate is past the threshold (mode ``none``), when its interval's near end
    is (``strict``: the estimate within ``z·se`` of it), or when the whole interval is (``lenient``: beyond it
    by ``z·se``). With ``gap`` the distance from the value to the threshold, the change is
    ``gap + z_power·se + c·z·se``, ``c`` = 0, −1, +1 for those modes (at least 0).
    """
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    se = (interval[1] - interval[0]) / (2.0 * z)
    gap = value - threshold if higher_is_better else threshold - value
    shift = {"none": 0.0, "strict": -1.0, "lenient": 1.0}[mode]
    return max(0.0, gap + NormalDist().inv_cdf(power) * se + shift * z * se)


def detectable_change(*, value: float, threshold: float, interval: tuple[float, float], n: int | None,
                      higher_is_better: bool, mode: str, level: float) -> tuple[float | None, str]:
    """``(change, how)``: :func:`binomial_detectable` when the interval is Wilson's (``how`` = ``"exact
    binomial"``), else :func:`normal_detectable` (``"normal approximation"``)."""
    k = _wilson_count(value, n, interval, level)
    if k is not None and n is not None:
        return binomial_detectable(n, value, threshold, higher_is_better=higher_is_better, mode=mode,
                                   level=level), "exact binomial"
    return normal_detectable(value, threshold, interval, higher_is_better=higher_is_better, mode=mode,
                             level=level), "normal approximation"


@dataclass(frozen=True)
class Suggestion:
    """One suggested threshold and what it was derived from."""

    model: str
    dataset: str
    key: str
    threshold: float
    value: float
    interval: tuple[float, float]
    n: int | None
    higher_is_better: bool
    mode: str
    level: float
    detectable: float | None
    how: str
    measurements: int = 1

    def comment(self) -> str:
        """The TOML comment written after the value."""
        pct = round(self.level * 100)
        lo, hi = self.interval
        n = f", n={self.n}" if self.n else ""
        change = "drop" if self.higher_is_better else "rise"
        if self.detectable is None:
            power = f"no {change} is caught with {POWER:.0%} power at this n"
        else:
            power = f"a {change} of {self.detectable:.4g} fails it with {POWER:.0%} power"
        more = f"; the most conservative of {self.measurements} measurements" if self.measurements > 1 else ""
        return (f"measured {self.value:.4f}, {pct}% interval [{lo:.4f}, {hi:.4f}]{n}; {power} ({self.how}, "
                f"confidence mode {self.mode}){more}")


def suggest(measurements: Iterable[Mapping[str, Any]], *, level: float) -> tuple[list[Suggestion], list[str]]:
    """The suggestions for measurement dicts (``Measurement.to_dict()``), and why others were left out."""
    best: dict[tuple[str, str, str], tuple[float, Mapping[str, Any], int]] = {}
    skipped: list[str] = []
    for m in measurements:
        key = m.get("threshold_key")
        if not key or m.get("comparison") not in (">=", "<="):
            continue  # no config key (shift, ranking margins) or a baseline comparison
        what = f"{key} of {m.get('model')} on {m.get('dataset')} ({m.get('test')})"
        source = str(m.get("threshold_source") or "")
        if source.startswith(("argument", "pytest_transfer_threshold hook")):
            origin = "an argument" if source.startswith("argument") else "the pytest_transfer_threshold hook"
            skipped.append(f"{what}: its threshold comes from {origin}, which beats any file")
            continue
        if m.get("interval") is None or not all(math.isfinite(float(v)) for v in m["interval"]):
            skipped.append(f"{what}: the gate gave no interval")
            continue
        higher = m["comparison"] == ">="
        lo, hi = (float(v) for v in m["interval"])
        t = round_outward(lo if higher else hi, str(key), down=higher)
        slot = (str(m["model"]), str(m["dataset"]), str(key))
        count = best[slot][2] + 1 if slot in best else 1
        if slot not in best or (t < best[slot][0] if higher else t > best[slot][0]):
            best[slot] = (t, m, count)
        else:
            best[slot] = (best[slot][0], best[slot][1], count)
    out = []
    for (model, dataset, key), (t, m, count) in best.items():
        interval = (float(m["interval"][0]), float(m["interval"][1]))
        n = (m.get("details") or {}).get("n")
        n = int(n) if isinstance(n, int) and not isinstance(n, bool) else None
        higher, mode = m["comparison"] == ">=", str(m.get("confidence") or "none")
        change, how = detectable_change(value=float(m["value"]), threshold=t, interval=interval, n=n,
                                        higher_is_better=higher, mode=mode, level=level)
        out.append(Suggestion(model, dataset, key, t, float(m["value"]), interval, n, higher, mode, level, change,
                              how, count))
    return out, skipped


@dataclass
class Written:
    """What :func:`write_suggestions` did: ``(model, dataset, key)`` per entry added, replaced and kept."""

    path: str
    added: list[tuple[str, str, str]]
    replaced: list[tuple[str, str, str]]
    kept: list[tuple[str, str, str]]


def _thresholds_container(doc: Any, shown: str, *, pyproject: bool = False) -> Any:
    """The table of models in a parsed file: ``[tool.pytest_transfer.thresholds]`` (always, in a
    ``pyproject.toml``: the only place settings read there), ``[thresholds]`` (created for a new file) or the
    top level (a file whose models are top-level tables)."""
    import tomlkit

    if pyproject and "tool" not in doc:
        doc["tool"] = tomlkit.table(is_super_table=True)
    if "tool" in doc:
        tool = doc["tool"]
        section = tool.setdefault("pytest_transfer", tomlkit.table(is_super_table=True))
        table = section.setdefault("thresholds", tomlkit.table(is_super_table=True))
        where = "[tool.pytest_transfer.thresholds]"
    elif "thresholds" in doc or not doc:
        table = doc.setdefault("thresholds", tomlkit.table(is_super_table=True))
        where = "[thresholds]"
    else:
        table, where = doc, "the top level"
    if not isinstance(table, Mapping):
        raise pytest.UsageError(f"{shown} {where}: expected a table of models to write suggested thresholds into")
    return table


def _load_document(path: str, shown: str) -> Any:
    import tomlkit

    if not os.path.exists(path):
        doc = tomlkit.document()
        for line in HEADER.splitlines():
            doc.add(tomlkit.comment(line))
        doc.add(tomlkit.nl())
        return doc
    try:
        with open(path, encoding="utf-8") as fh:
            return tomlkit.parse(fh.read())
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.ParseError) as exc:
        raise pytest.UsageError(f"{shown}: cannot read it to add suggested thresholds ({exc}); fix or move the "
                                f"file, or pick another --transfer-suggest-thresholds path") from None


def write_suggestions(path: str | os.PathLike[str], suggestions: Iterable[Suggestion], *, overwrite: bool = False,
                      display: str | None = None) -> Written:
    """Add ``suggestions`` to the TOML file at ``path`` (created when missing) and write it atomically.

    An entry the file already has for the same model × dataset × key is kept
    unless ``overwrite``. The result is read back through
    :class:`~pytest_transfer.thresholds.ThresholdTable` before the file is
    replaced, so a file that ``--transfer-thresholds`` would refuse is never written.
    """
    import tomlkit

    from .baselines import write_text_file

    path = os.fspath(path)
    shown = display or path
    doc = _load_document(path, shown)
    models = _thresholds_container(doc, shown, pyproject=os.path.basename(path) == "pyproject.toml")
    done = Written(shown, [], [], [])
    for s in suggestions:
        per_model = models.setdefault(s.model, tomlkit.table(is_super_table=True))
        table = per_model.setdefault(s.dataset, tomlkit.table())
        slot = (s.model, s.dataset, s.key)
        if s.key in table and not overwrite:
            done.kept.append(slot)
            continue
        (done.replaced if s.key in table else done.added).append(slot)
        item = tomlkit.item(s.threshold)
        item.comment(s.comment())
        table[s.key] = item
    text = tomlkit.dumps(doc)
    _validate(text, shown)
    write_text_file(path, text)
    return done


def _validate(text: str, shown: str) -> None:
    data = tomllib.loads(text)
    if "tool" in data:
        table, section = data["tool"]["pytest_transfer"]["thresholds"], "tool.pytest_transfer.thresholds"
    elif "thresholds" in data:
        table, section = data["thresholds"], "thresholds"
    else:
        table, section = data, ""
    ThresholdTable(table, origin=shown, section=section)


class SuggestionWriter:
    """A pytest plugin object: at the end of the session, the controller writes the suggestions and says so."""

    def __init__(self, config: pytest.Config, collector: Any) -> None:
        self.config = config
        self.collector = collector
        self.lines: list[str] = []

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):
            return
        settings = self.collector.ctx.settings
        path, given = self.collector.target("suggest_thresholds"), settings.suggest_thresholds
        try:
            found, skipped = suggest(self.collector.in_collection_order(), level=settings.confidence_level)
        except Exception as exc:  # a fault here must not hide the session's own results behind a traceback
            self.lines = [f"pytest-transfer: suggested thresholds NOT written: {type(exc).__name__}: {exc} "
                          "(a fault of pytest-transfer; please report it with this line)"]
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
            return
        self.lines = [f"pytest-transfer: thresholds not suggested for {s}" for s in skipped]
        errors = self.collector.test_errors()
        if errors:  # their gates measured nothing: a suggestion file from this run lacks their keys
            self.lines.append(f"pytest-transfer: thresholds not suggested for the gates of {len(errors)} test(s) "
                              "that did not pass with no failing gate (test errors: they measured nothing); fix "
                              "them and run again")
        if not found:
            self.lines.append(f"pytest-transfer: no gate measured a value with a config key; {given} not written")
            return
        try:
            done = write_suggestions(path, found, overwrite=settings.suggest_overwrite, display=given)
        except (pytest.UsageError, OSError, UnicodeError) as exc:  # UnicodeError: a name that is not UTF-8
            why = f"cannot write {given} ({exc.strerror or exc})" if isinstance(exc, OSError) else str(exc)
            self.lines.append(f"pytest-transfer: suggested thresholds NOT written: {why}")
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        kept = (f"; {len(done.kept)} kept as they were (--transfer-suggest-overwrite replaces them)"
                if done.kept else "")
        use = ("every run reads them from there" if os.path.basename(path) == "pyproject.toml"
               else f"gate with them: --transfer-thresholds={given}")
        self.lines.append(f"pytest-transfer: suggested thresholds written to {given}: {len(done.added)} added, "
                          f"{len(done.replaced)} replaced{kept}; {use}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from .text import printable

        for line in self.lines:
            # paths, model and dataset names are the user's: escaped like every other printed line
            terminalreporter.write_line(printable(line), yellow="NOT written" in line or "not suggested" in line)
