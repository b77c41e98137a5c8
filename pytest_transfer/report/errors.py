"""Test errors: tests of pytest-transfer that did not pass and that no failing gate accounts for.

A gate that fails is a row of every report. A test that errors before any gate measured (a model
source's loader raised, a dataset file is missing, the test body raised before its gate, a gate raised
before it recorded) leaves no row: without this module such a session reported "0 failed" and
``python -m pytest_transfer combine`` passed it. Every report lists these tests as *test errors*
(the JSON report's ``"errors"`` section), and any of them fails the combined verdict.

**Which tests count.** A test *uses pytest-transfer* when it carries the ``transfer`` marker, requests
one of the plugin's fixtures (:data:`FIXTURES`, directly or through another fixture), recorded a
measurement, or raised from inside pytest-transfer's own code (a gate, ``evaluate``, ``load_model``,
... that raised before measuring). Such a test is a test error when one of its phases failed (setup,
call or teardown: what pytest counts as failed or error; an xfail is not, a strict xpass is) and it
recorded no failing measurement (a failing gate already fails the verdict and names the test). One
entry per test: the first phase that failed. A module that could not be collected is one too (phase
``collect``): its tests never ran, so whether they use pytest-transfer is unknown, and a shard whose
tests did not run must not pass.

Each entry (JSON-able, ASCII when serialised by the plugin): ``{"test", "phase": "setup" | "call" |
"teardown" | "collect" | "crash", "outcome": "error" | "failed", "reason"}``, the reason one printable line
(:func:`reason`). Only pytest and the standard library are imported.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: the user property that carries a test error from the test's process to the controller (and to JUnit XML)
ERROR_PROPERTY = "pytest_transfer.error"
#: the plugin's fixtures: a test that requests any of them uses pytest-transfer
FIXTURES = ("pretrained_model", "target_dataset", "transfer_device", "transfer_baseline")
MAX_REASON = 300  # display characters of a reason; the full text is in pytest's own report
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_SPACE = re.compile(r"\s+")


def reason(report: Any) -> str:
    """One printable line saying why ``report`` (a failed pytest test or collect report) failed: the
    exception's type and the first line of its message (``pytest.fail``'s message alone), at most
    :data:`MAX_REASON` characters, control characters and bytes that are not UTF-8 escaped
    (:func:`~pytest_transfer.text.printable`)."""
    from ..text import printable

    longrepr = getattr(report, "longrepr", None)
    crash = getattr(longrepr, "reprcrash", None)
    if getattr(longrepr, "errorstring", None):  # a fixture that does not exist: pytest's own sentence
        text = str(longrepr.errorstring)
    elif crash is not None and getattr(crash, "message", None):
        text = str(crash.message)
    else:  # a string (an import error of a module, a strict xpass): its last line says what happened
        lines = [line for line in str(longrepr or "").splitlines() if line.strip()]
        text = re.sub(r"^E\s+", "", lines[-1].strip()) if lines else "unknown reason"
    text = next((line for line in text.removeprefix("Failed: ").splitlines() if line.strip()), "unknown reason")
    text = _SPACE.sub(" ", text).strip()
    if len(text) > MAX_REASON:
        text = text[:MAX_REASON - 1] + "…"
    return printable(text)


def raised_in_pytest_transfer(excinfo: Any) -> bool:
    """Whether the exception of ``excinfo`` (a pytest ``ExceptionInfo``) was raised in, or passed through,
    pytest-transfer's own code (a gate that raised before it recorded, a loader called from a test)."""
    if excinfo is None:
        return False
    try:
        return any(str(entry.path).startswith(_PACKAGE) for entry in excinfo.traceback)
    except Exception:  # a traceback pytest cannot walk: decide by the other rules
        return False


def uses_pytest_transfer(item: Any, measured: Sequence[Any], excinfo: Any) -> bool:
    """The rule of this module's docstring for one test ``item`` with its measurements ``measured``."""
    if item.get_closest_marker("transfer") is not None or measured:
        return True
    if any(name in FIXTURES for name in getattr(item, "fixturenames", ())):
        return True
    return raised_in_pytest_transfer(excinfo)


def error_entry(item: Any, call: Any, report: Any, measured: Sequence[Any], test: str) -> dict[str, str] | None:
    """The entry for a failed ``report`` of ``item`` (test id ``test``), or ``None`` when it is not a test error
    (the test does not use pytest-transfer, recorded a failing measurement, or already has an entry)."""
    if not report.failed or any(not getattr(m, "passed", True) for m in measured):
        return None
    if any(name == ERROR_PROPERTY for name, _ in item.user_properties):
        return None  # one entry per test: its first failed phase
    if not uses_pytest_transfer(item, measured, getattr(call, "excinfo", None)):
        return None
    return {"test": test, "phase": report.when, "outcome": "failed" if report.when == "call" else "error",
            "reason": reason(report)}


def collect_error(report: Any) -> dict[str, str]:
    """The entry for a collect report that failed (a module that could not be imported, a malformed marker)."""
    return {"test": report.nodeid, "phase": "collect", "outcome": "error", "reason": reason(report)}


def error_lines(errors: Sequence[Mapping[str, Any]], *, indent: str = "  ") -> list[str]:
    """One printable line per entry, ``ERROR at setup: <test>: <reason>`` (``FAILED in call: ...``)."""
    from ..text import printable

    out = []
    for e in errors:
        phase = str(e.get("phase"))
        how = f"FAILED in {phase}" if e.get("outcome") == "failed" else f"ERROR at {phase}"
        out.append(printable(f"{indent}{how}: {e.get('test')}: {e.get('reason')}"))
    return out


def headline(errors: Sequence[Mapping[str, Any]]) -> str:
    """``2 test error(s) (tests of pytest-transfer that did not pass with no failing gate)``."""
    return f"{len(errors)} test error(s) (tests of pytest-transfer that did not pass with no failing gate)"
