"""``--transfer-openmetrics=PATH``: every gate's value in the OpenMetrics text format.

GitLab's merge-request widget reads a metrics report in this format
(``artifacts: reports: metrics: PATH``) and shows each sample beside the
target branch's value (https://docs.gitlab.com/ci/testing/metrics_reports/).
The format is OpenMetrics 1.0 text exposition
(https://github.com/prometheus/OpenMetrics/blob/main/specification/OpenMetrics.md).

One gauge family per gate metric, named ``transfer_<metric>`` (characters
outside ``[a-zA-Z0-9_]`` become ``_``), one sample per measurement, labelled
``test``, ``model``, ``dataset`` and, for comparisons, ``vs`` (the reference
model or dataset, or ``baseline``). Then ``transfer_gate_passed`` (1 or 0)
per measurement with the same labels plus ``metric``, and ``transfer_gates``
/ ``transfer_gates_failed`` / ``transfer_test_errors`` (tests of pytest-transfer
that did not pass with no failing gate) for the session. The file ends with ``# EOF``.
A repeated label set (the same gate twice in one test) gets an
``occurrence`` label from 2 on, so every sample is unique. Values that are
not finite are written ``NaN``, ``+Inf`` or ``-Inf``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..baselines import write_text_file
from ..text import utf8_tree

PREFIX = "transfer_"
_BAD = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(metric: str) -> str:
    """``transfer_<metric>`` with every character outside ``[a-zA-Z0-9_]`` replaced by ``_``."""
    return PREFIX + _BAD.sub("_", str(metric))


def _label_value(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(x: Any) -> str:
    if x is None:
        return "NaN"
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


def labels(r: Mapping[str, Any]) -> dict[str, str]:
    """The labels of a report row: test, model, dataset, and ``vs`` for a comparison."""
    out = {"test": str(r.get("test") or ""), "model": str(r.get("model")), "dataset": str(r.get("dataset"))}
    details = r.get("details") or {}
    if r.get("gate") == "regression":
        out["vs"] = "baseline"
    elif r.get("gate") in ("ranks_above", "shift_max_drop") and details.get("reference"):
        out["vs"] = str(details["reference"])
    return out


def _sample(name: str, lab: Mapping[str, str], value: Any) -> str:
    shown = ",".join(f'{k}="{_label_value(v)}"' for k, v in lab.items())
    return f"{name}{{{shown}}} {_number(value)}"


def _unique(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    seen: dict[tuple[Any, ...], int] = {}
    out = []
    for r in rows:
        lab = labels(r)
        key = (metric_name(str(r.get("metric"))), *sorted(lab.items()))
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            lab["occurrence"] = str(seen[key])
        out.append(lab)
    return out


def render_openmetrics(report: Mapping[str, Any]) -> str:
    """The OpenMetrics text for a report document (:func:`pytest_transfer.report.json.build_report`)."""
    rows = list(report.get("measurements", []))
    labelled = _unique(rows)
    families: dict[str, list[str]] = {}
    for r, lab in zip(rows, labelled, strict=True):
        families.setdefault(metric_name(str(r.get("metric"))), []).append(_sample(
            metric_name(str(r.get("metric"))), lab, r.get("value")))
    lines = []
    for name, samples in families.items():
        lines += [f"# TYPE {name} gauge", f"# HELP {name} pytest-transfer gate value", *samples]
    passed = "transfer_gate_passed"
    lines += [f"# TYPE {passed} gauge", f"# HELP {passed} 1 when the gate passed, 0 when it failed"]
    lines += [_sample(passed, {**lab, "metric": str(r.get("metric"))}, 1 if r.get("outcome") == "passed" else 0)
              for r, lab in zip(rows, labelled, strict=True)]
    failed = sum(1 for r in rows if r.get("outcome") != "passed")
    lines += ["# TYPE transfer_gates gauge", "# HELP transfer_gates gates measured in the session",
              f"transfer_gates {len(rows)}", "# TYPE transfer_gates_failed gauge",
              "# HELP transfer_gates_failed gates that failed in the session", f"transfer_gates_failed {failed}",
              "# TYPE transfer_test_errors gauge",
              "# HELP transfer_test_errors tests of pytest-transfer that did not pass with no failing gate",
              f"transfer_test_errors {len(report.get('errors') or [])}", "# EOF"]
    return "\n".join(lines) + "\n"


def write_openmetrics(path: str | os.PathLike[str], report: Mapping[str, Any]) -> Path:
    """Write the OpenMetrics text for ``report`` atomically; returns the path. Text that is not UTF-8 (a
    surrogate-escaped name) is written with ``\\xNN`` escapes (:func:`~pytest_transfer.text.utf8`):
    the format is UTF-8 only."""
    return write_text_file(path, render_openmetrics(utf8_tree(report)))
