"""``python -m pytest_transfer combine REPORT.json...``: the JSON reports of CI shards as one gate table.

Each shard of a CI matrix (pytest-split, ``-k`` halves, one job per folder)
writes its own ``--transfer-report``. :func:`combine_reports` merges them into
one report document of the same schema (:mod:`pytest_transfer.report.json`):
the rows of each shard in its collection order, the shards in the order
given, the summary counted again over all rows, the shards listed under
``"shards"``; likewise the test errors (``"errors"``: tests of pytest-transfer
that did not pass with no failing gate, :mod:`pytest_transfer.report.errors`).
The existing writers then render it: the GitHub job summary, the HTML page and
the OpenMetrics text. Reports of version 1 (written before the ``errors``
section) are read as having no test error; the combined report is version 2.

A report that is not JSON, not a pytest-transfer report, of another schema
version, whose rows lack a field, or that holds ``NaN`` or ``Infinity`` (which
Python's ``json`` reads, but the writer never writes: it writes a number that
is not finite as ``null``, e.g. the relative drop of a model whose clean
accuracy is 0) is a :class:`ReportError` naming the file (and the row or the
field). Reports that do not belong together are refused too: other
confidence settings, seed or test fraction (their numbers would not be
comparable), or a test that appears in two shards (the shards overlap, and
one verdict would count it twice).

Only the standard library is imported here.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .json import ERROR_KEYS, READABLE_VERSIONS, SCHEMA, VERSION, summary

#: settings every shard must share: the gates' numbers are only comparable under the same ones
MATCHED_SETTINGS = ("confidence", "confidence_level", "seed", "test_fraction", "update_baselines")
ROW_KEYS = ("test", "model", "dataset", "gate", "metric", "value", "outcome")


class ReportError(ValueError):
    """A report cannot be combined: malformed, of another schema, or not from the same kind of run."""


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check one ``--transfer-report`` file; a :class:`ReportError` names the file and the problem."""
    shown = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise ReportError(f"{shown}: cannot read it ({exc.strerror or exc}); pass the file a shard's "
                          f"--transfer-report wrote") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{shown}: not a JSON document ({exc}); pass the file a shard's --transfer-report "
                          f"wrote") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ReportError(f"{shown}: not a pytest-transfer report (no \"schema\": \"{SCHEMA}\"); pass the file a "
                          f"shard's --transfer-report wrote")
    if doc.get("version") not in READABLE_VERSIONS:
        raise ReportError(f"{shown}: report version {doc.get('version')!r}, this pytest-transfer reads version(s) "
                          f"{', '.join(map(str, READABLE_VERSIONS))}; combine reports written by the same "
                          f"pytest-transfer")
    rows = doc.get("measurements")
    if not isinstance(rows, list):
        raise ReportError(f"{shown}: \"measurements\" is missing or not a list")
    for i, row in enumerate(rows):
        missing = [k for k in ROW_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise ReportError(f"{shown}: measurement {i} lacks {', '.join(missing)}; the file is damaged or was "
                              f"edited: write it again with --transfer-report")
        if row["outcome"] not in ("passed", "failed"):
            raise ReportError(f"{shown}: measurement {i} has outcome {row['outcome']!r}; expected passed or failed")
    _check_errors(doc, shown)
    if not isinstance(doc.get("settings", {}), dict):
        raise ReportError(f"{shown}: \"settings\" is not an object")
    field = _non_finite(doc, "")
    if field is not None:
        where, value = field
        raise ReportError(f"{shown}: {where} is {value}, which the writer never writes (a number that is not finite "
                          f"is written as null); the file is damaged or was edited: write it again with "
                          f"--transfer-report")
    return doc


def _check_errors(doc: dict[str, Any], shown: str) -> None:
    """``doc["errors"]`` as the writer writes it (a version 1 report has none: set to ``[]``)."""
    errors = doc.setdefault("errors", []) if doc.get("version") == 1 else doc.get("errors")
    if not isinstance(errors, list):
        raise ReportError(f"{shown}: \"errors\" is missing or not a list; the file is damaged or was edited: "
                          f"write it again with --transfer-report")
    for i, entry in enumerate(errors):
        missing = [k for k in ERROR_KEYS if not isinstance(entry, dict) or not isinstance(entry.get(k), str)]
        if missing:
            raise ReportError(f"{shown}: errors[{i}] lacks {', '.join(missing)} (or it is not a string); the file "
                              f"is damaged or was edited: write it again with --transfer-report")


def _non_finite(value: Any, where: str) -> tuple[str, str] | None:
    """``(the field's path, "NaN" | "Infinity" | "-Infinity")`` of the first number in ``value`` that is not finite
    (``measurements[1].details.drop``), or ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else key)
        if found is not None:
            return found
    return None


def _check_together(reports: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    first_path, first = reports[0]
    for path, doc in reports[1:]:
        for key in MATCHED_SETTINGS:
            a, b = first.get("settings", {}).get(key), doc.get("settings", {}).get(key)
            if a is not None and b is not None and a != b:
                option = "--transfer-" + key.replace("_", "-")
                raise ReportError(f"{path}: {key} = {b!r}, but {first_path} has {a!r}; the shards of one run must "
                                  f"share their settings (run every shard with the same {option})")
    seen: dict[str, str] = {}
    for path, doc in reports:
        # a module that failed to collect fails in every shard that collects it (pytest-split shards all collect
        # every file): that is no overlap, and it is listed once
        tests = [*(str(r["test"]) for r in doc["measurements"]),
                 *(e["test"] for e in doc["errors"] if e["phase"] != "collect")]
        for test in dict.fromkeys(tests):
            if test in seen:
                raise ReportError(f"{path}: test {test} is also in {seen[test]}; the shards overlap (or one report "
                                  f"was passed twice): give each test to one shard")
            seen[test] = path


def combine_reports(reports: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """One report document from ``(path, document)`` pairs (each as :func:`load_report` returns it)."""
    if not reports:
        raise ReportError("no report given; pass the JSON reports of the shards")
    _check_together(reports)
    rows = [dict(r) for _, doc in reports for r in doc["measurements"]]
    errors = list({(e["test"], e["phase"]): dict(e) for _, doc in reports for e in doc["errors"]}.values())
    envs = [doc.get("environment") or {} for _, doc in reports]
    environment = {**envs[0],
                   "devices": sorted({str(d) for e in envs for d in e.get("devices") or []}),
                   "workers": sorted({str(w) for e in envs for w in e.get("workers") or []})}
    durations = [doc.get("duration_s") for _, doc in reports if isinstance(doc.get("duration_s"), (int, float))]
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": max(durations) if durations else None,  # the shards ran side by side: the slowest one
        "environment": environment,
        "settings": dict(reports[0][1].get("settings") or {}),
        "summary": summary(rows, rows, errors),
        "shards": [{"report": path, "created": doc.get("created"), "measurements": len(doc["measurements"]),
                    "failed": sum(1 for r in doc["measurements"] if r["outcome"] == "failed"),
                    "errors": len(doc["errors"])}
                   for path, doc in reports],
        "measurements": rows,
        "errors": errors,
    }


def as_measurements(report: Mapping[str, Any]) -> list[Any]:
    """The report's rows as :class:`~pytest_transfer.context.Measurement` objects (for the terminal table)."""
    from ..context import Measurement

    out = []
    for r in report["measurements"]:
        interval = r.get("interval")
        out.append(Measurement(
            gate=str(r["gate"]), metric=str(r["metric"]), value=r["value"], model=str(r["model"]),
            dataset=str(r["dataset"]), interval=tuple(interval) if interval else None, threshold=r.get("threshold"),
            threshold_source=r.get("threshold_source"), comparison=str(r.get("comparison") or ">="),
            passed=r["outcome"] == "passed", test=r.get("test"), confidence=str(r.get("confidence") or "none"),
            details=dict(r.get("details") or {}), duration=r.get("duration_s"), device=r.get("device"),
            worker=r.get("worker"),
        ))
    return out
