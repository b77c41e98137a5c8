"""The report writers, by option, and the loop that runs them: for a session (:mod:`.session`) and for
``python -m pytest_transfer combine``. Only the standard library is imported here (the command does not
import pytest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _write_json(path: str, report: dict[str, Any], written: list[tuple[str, str]]) -> str:
    from .json import write_json

    return str(write_json(path, report))


def _write_html(path: str, report: dict[str, Any], written: list[tuple[str, str]]) -> str:
    from .html import write_html

    return str(write_html(path, report))


def _write_openmetrics(path: str, report: dict[str, Any], written: list[tuple[str, str]]) -> str:
    from .openmetrics import write_openmetrics

    return str(write_openmetrics(path, report))


def _append_github_summary(path: str, report: dict[str, Any], written: list[tuple[str, str]]) -> str:
    from .github import append_summary, render_summary

    return append_summary(path, render_summary(report, written=written))


#: the report writers, by option: ``writer(path, report, reports written before) -> the path written``
_WRITERS: dict[str, Callable[..., str]] = {"report": _write_json, "html": _write_html,
                                           "openmetrics": _write_openmetrics, "github_summary": _append_github_summary}
#: the reports by option, in the order they are written (the job summary last: it links the others)
REPORTS = (("report", "JSON report"), ("html", "HTML report"), ("openmetrics", "OpenMetrics report"),
           ("github_summary", "GitHub job summary"))


def write_reports(report: dict[str, Any], targets: dict[str, str | None]) -> tuple[list[tuple[str, str]], list[str]]:
    """Write ``report`` to each target (``targets``: option of :data:`REPORTS` -> path or ``None``); returns
    ``(what, path)`` of those written and one line per writer that failed (a directory given as the file, a
    read-only or full disk, a name no writer expected: :func:`~pytest_transfer.text.write_error`), never a
    traceback: one failure does not stop the other writers. The session and ``python -m pytest_transfer
    combine`` write through this."""
    from ..text import write_error

    written: list[tuple[str, str]] = []
    failed: list[str] = []
    for key, what in REPORTS:
        path = targets.get(key)
        if path:
            try:
                written.append((what, _WRITERS[key](path, report, list(written))))
            except Exception as exc:
                failed.append(write_error(f"the {what}", path, exc))
    return written, failed


__all__ = ["REPORTS", "write_reports"]
