"""``--transfer-report=PATH``: every measurement of the session as one JSON document.

Written by the pytest controller at the end of the session (with
pytest-xdist, from the measurements every worker sent back, each exactly
once). Layout (``"schema": "pytest-transfer-report"``, ``"version": 2``)::

    {
      "schema": "pytest-transfer-report", "version": 2,
      "created": "2025-01-01T12:00:00+00:00", "duration_s": 12.3,
      "environment": {"python": ..., "platform": ..., "pytest": ..., "pytest_transfer": ...,
                      "torch": ..., "torchvision": ..., "numpy": ..., "cuda_available": ..., "cuda": ...,
                      "devices": ["cpu"], "workers": ["gw0", "gw1"]},
      "settings": {"confidence": "none", "confidence_level": 0.95, "seed": 0, "update_baselines": false, ...},
      "summary": {"measurements": 5, "passed": 4, "failed": 1, "tests": 4, "errors": 1,
                  "baselines": {"created": 0, "updated": 0, "unchanged": 0}},
      "measurements": [
        {"test": "tests/test_a.py::test_b", "test_outcome": "passed", "model": "resnet18", "dataset": "digits",
         "gate": "transfer_accuracy", "metric": "linear_probe_accuracy", "value": 0.95,
         "interval": [0.93, 0.97] | null, "threshold": 0.9 | null,
         "threshold_source": "pyproject.toml [...] linear_probe_accuracy", "comparison": ">=",
         "confidence": "none", "outcome": "passed" | "failed", "duration_s": 1.2 | null,
         "device": "cpu" | null, "worker": "gw0" | null, "details": {...}}
      ],
      "errors": [
        {"test": "tests/test_a.py::test_c", "phase": "setup", "outcome": "error",
         "reason": "pytest-transfer: cannot load model 'mystore:x': FileNotFoundError: ..."}
      ]
    }

``errors`` (new in version 2) lists the *test errors* (:mod:`pytest_transfer.report.errors`): tests of
pytest-transfer that did not pass with no failing gate, in collection order, each with its phase
(``collect``, ``setup``, ``call`` or ``teardown``) and a one-line reason; ``summary.errors`` counts them and
``summary.tests`` counts the tests with a measurement or an error. Version 1 reports (before the section)
are read as having none. Numbers that are not finite are written as ``null`` (the file is strict JSON).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from ..baselines import count_actions, write_text_file
from ..jsonable import plain
from ..text import json_surrogates

SCHEMA = "pytest-transfer-report"
VERSION = 2
#: the versions :mod:`pytest_transfer.report.combine` reads (1: before the ``errors`` section)
READABLE_VERSIONS = (1, 2)
ERROR_KEYS = ("test", "phase", "outcome", "reason")
SETTINGS_SHOWN = ("confidence", "confidence_level", "seed", "update_baselines", "device", "batch_size",
                  "test_fraction", "thresholds")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(measurements: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Versions and devices. torch's version is read from its metadata, so this does not import torch."""
    torch = sys.modules.get("torch")
    cuda = None
    if torch is not None:
        try:
            cuda = bool(torch.cuda.is_available())
        except Exception:  # pragma: no cover - a broken CUDA install must not break the report
            cuda = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pytest": _version("pytest"),
        "pytest_transfer": _version("pytest-transfer"),
        "torch": getattr(torch, "__version__", None) or _version("torch"),
        "torchvision": _version("torchvision"),
        "numpy": _version("numpy"),
        "cuda_available": cuda,
        "cuda": getattr(getattr(torch, "version", None), "cuda", None),
        "devices": sorted({str(m["device"]) for m in measurements if m.get("device")}),
        "workers": sorted({str(m["worker"]) for m in measurements if m.get("worker")}),
    }


def entry(m: Mapping[str, Any], test_outcome: str | None = None) -> dict[str, Any]:
    """One measurement (a ``Measurement.to_dict()``) as the report writes it."""
    interval = m.get("interval")
    return plain({
        "test": m.get("test"),
        "test_outcome": test_outcome,
        "model": m.get("model"),
        "dataset": m.get("dataset"),
        "gate": m.get("gate"),
        "metric": m.get("metric"),
        "value": m.get("value"),
        "interval": list(interval) if interval is not None else None,
        "threshold": m.get("threshold"),
        "threshold_source": m.get("threshold_source"),
        "comparison": m.get("comparison"),
        "confidence": m.get("confidence"),
        "outcome": "passed" if m.get("passed") else "failed",
        "duration_s": m.get("duration"),
        "device": m.get("device"),
        "worker": m.get("worker"),
        "details": dict(m.get("details") or {}),
    })


def summary(rows: Sequence[Mapping[str, Any]], baselines: Sequence[Mapping[str, Any]],
            errors: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The report's ``summary``: counts of the report ``rows``, the test ``errors`` and the baselines written
    (``count_actions`` of ``baselines``, measurements or rows); ``tests``: those with a row or an error."""
    failed = sum(1 for r in rows if r["outcome"] == "failed")
    return {"measurements": len(rows), "passed": len(rows) - failed, "failed": failed,
            "tests": len({r["test"] for r in rows} | {e["test"] for e in errors}), "errors": len(errors),
            "baselines": count_actions(baselines)}


def build_report(measurements: Sequence[Mapping[str, Any]], *, settings: Any = None,
                 outcomes: Mapping[str, str] | None = None, duration: float | None = None,
                 errors: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The report document from measurement dicts (as collected from the test reports) and the test errors
    (:mod:`pytest_transfer.report.errors` entries)."""
    errors = [{key: str(e.get(key)) for key in ERROR_KEYS} for e in errors]
    outcomes = outcomes or {}
    rows = [entry(m, outcomes.get(str(m.get("test")))) for m in measurements]
    shown = {}
    if settings is not None:
        shown = {key: getattr(settings, key) for key in SETTINGS_SHOWN if hasattr(settings, key)}
    return plain({
        "schema": SCHEMA,
        "version": VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": duration,
        "environment": environment(measurements),
        "settings": shown,
        "summary": summary(rows, measurements, errors),
        "measurements": rows,
        "errors": errors,
    })


def write_json(path: str | os.PathLike[str], report: Mapping[str, Any]) -> Path:
    """Write ``report`` atomically as indented, strict JSON in UTF-8; returns the path.

    A name that is not UTF-8 (a folder ``data_caf\xe9``, which Python reads as ``"data_caf\udce9"``) is
    written as its ``\udce9`` escape, so ``json.load`` gives back the very string (lossless)."""
    text = json.dumps(report, indent=2, allow_nan=False, ensure_ascii=False, default=str)
    return write_text_file(path, json_surrogates(text) + "\n")
