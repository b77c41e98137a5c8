"""GitHub Actions: a Markdown job summary and workflow annotations for failing gates.

When ``$GITHUB_STEP_SUMMARY`` is set (GitHub sets it in every job step), or
``--transfer-github-summary PATH`` is given, the pytest controller appends to
that file (GitHub's documented contract for job summaries: append Markdown,
https://docs.github.com/actions/using-workflows/workflow-commands-for-github-actions#adding-a-job-summary):

* a headline with the counts;
* the test errors (tests of pytest-transfer that did not pass with no failing
  gate: :mod:`pytest_transfer.report.errors`), one row each: phase, test, reason;
* the gate table: result, test, model (``vs`` its counterpart), dataset,
  metric, value with its interval, threshold, and where the threshold came from;
* "Change against the stored baselines": for every ``assert_no_regression``
  comparison, the baseline value, the current value, the change and its
  interval; new baselines are listed as written. Without any, one line says
  that no baseline was compared in this run;
* links to the JSON and HTML reports when they were written (to the run's
  artifacts when ``$GITHUB_SERVER_URL``, ``$GITHUB_REPOSITORY`` and
  ``$GITHUB_RUN_ID`` are set, else their paths).

Every failing gate, and every test error, also gives one workflow command on standard output,
``::error file=<path>,line=<line>,title=<title>::<message>``, pointing at the
test (at the failing line when the test failed there). A gate that failed
inside a test that passed (``pytest.raises`` around a gate shown biting) gives
``::warning`` instead. Paths are relative to ``$GITHUB_WORKSPACE`` when set
(the repository root GitHub resolves annotation paths against), else to the
directory pytest was started in. Escaping follows GitHub's toolkit (``%``, CR, LF, and in properties
``:`` and ``,``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from ..text import markdown_cell, markdown_code, workflow_data, workflow_property
from ..thresholds import format_threshold
from .terminal import counterpart, short_tests, threshold_cell, value_cell

PASS, FAIL = "✅ PASS", "❌ FAIL"


def summary_path(option: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Where the job summary goes: the option's path, else ``$GITHUB_STEP_SUMMARY``, else ``None``."""
    environ = os.environ if environ is None else environ
    return option or environ.get("GITHUB_STEP_SUMMARY") or None


def _num(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.4f}" if abs(x) < 1000 else f"{x:.4g}"


def _signed(x: float) -> str:
    return f"{x + 0.0:+.4f}"  # + 0.0: no "-0.0000"


def _cell(text: Any) -> str:
    """A Markdown table cell (:func:`~pytest_transfer.text.markdown_cell`): control characters and bytes
    that are not UTF-8 escaped, backslashes and pipes escaped."""
    return markdown_cell(text)


def _code(text: Any) -> str:
    return f"`{_cell(text).replace('`', '')}`"


def _value(r: Mapping[str, Any]) -> str:
    return value_cell(r.get("value"), r.get("interval"), r.get("threshold"))


def _is_regression(r: Mapping[str, Any]) -> bool:
    return r.get("gate") == "regression"


def gate_table(rows: Sequence[Mapping[str, Any]], *, level: int) -> list[str]:
    """The Markdown gate table (every measurement except regression comparisons)."""
    out = [f"| result | test | model | dataset | metric | value [{level}% interval] | threshold | threshold from |",
           "|---|---|---|---|---|---|---|---|"]
    for r, test in zip(rows, short_tests([r.get("test") for r in rows]), strict=True):
        model, dataset = counterpart(r.get("gate"), str(r.get("model")), str(r.get("dataset")), r.get("details") or {})
        threshold = threshold_cell(r.get("comparison"), r.get("threshold"))
        out.append(f"| {PASS if r.get('outcome') == 'passed' else FAIL} | {_code(test)} "
                   f"| {_cell(model)} | {_cell(dataset)} | {_cell(r.get('metric'))} | {_value(r)} "
                   f"| {_cell(threshold)} | {_cell(r.get('threshold_source') or '–')} |")
    return out


def errors_section(errors: Sequence[Mapping[str, Any]]) -> list[str]:
    """The test errors as a Markdown table (nothing when there are none)."""
    if not errors:
        return []
    out = ["### Tests that did not pass with no failing gate", "", "| result | phase | test | reason |",
           "|---|---|---|---|"]
    tests = short_tests([str(e.get("test")) for e in errors])
    for e, test in zip(errors, tests, strict=True):
        result = "❌ FAILED" if e.get("outcome") == "failed" else "❌ ERROR"
        out.append(f"| {result} | {_cell(e.get('phase'))} | {_code(test)} | {markdown_code(e.get('reason'))} |")
    return [*out, ""]


def baseline_section(rows: Sequence[Mapping[str, Any]], *, level: int) -> list[str]:
    """The change of every compared metric against its stored baseline (or one line saying there was none)."""
    compared = [r for r in rows if _is_regression(r) and r.get("comparison") != "baseline"]
    written = [r for r in rows if _is_regression(r) and r.get("comparison") == "baseline"]
    out = ["### Change against the stored baselines", ""]
    if not compared and not written:
        return [*out, "No stored baseline was compared in this run (`assert_no_regression` / "
                      "`transfer_baseline` compare against `__transfer_baselines__/`).", ""]
    if compared:
        out += [f"| result | test | model | dataset | metric | baseline | now | change [{level}% interval] "
                "| allowed drop | baseline file |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r, test in zip(compared, short_tests([r.get("test") for r in compared]), strict=True):
            d = r.get("details") or {}
            interval = r.get("interval")
            drop = r.get("value")
            change = _signed(-drop) if drop is not None else "–"
            if interval:
                change += f" [{_signed(-interval[1])}, {_signed(-interval[0])}]"
            allowed = r.get("threshold")
            min_effect = format_threshold(allowed) if allowed is not None else "–"
            out.append(f"| {PASS if r.get('outcome') == 'passed' else FAIL} | {_code(test)} "
                       f"| {_cell(r.get('model'))} | {_cell(r.get('dataset'))} "
                       f"| {_cell(str(r.get('metric')).removesuffix('_drop'))} | {_num(d.get('baseline_value'))} "
                       f"| {_num(d.get('current_value'))} | {change} | {min_effect} "
                       f"| {_code(d.get('baseline', '–'))} |")
        out.append("")
    for r in written:
        d = r.get("details") or {}
        what, value = f"new baseline {_code(d.get('baseline', '–'))}", _num(r.get("value"))
        if d.get("baseline_action") == "updated" and d.get("previous_value") is not None:
            what, value = f"baseline {_code(d.get('baseline'))} rewritten", f"{_num(d['previous_value'])} → {value}"
        elif d.get("baseline_action") == "unchanged":
            what = f"baseline {_code(d.get('baseline'))} already current"
        out.append(f"- {what}: {_cell(r.get('metric'))} {value} ({_cell(r.get('model'))} on "
                   f"{_cell(r.get('dataset'))})")
    return [*out, ""] if written else out


def _run_url(environ: Mapping[str, str]) -> str | None:
    parts = [environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")]
    if not all(parts):
        return None
    return f"{parts[0]}/{parts[1]}/actions/runs/{parts[2]}"


def _relative_link(path: str, environ: Mapping[str, str]) -> str:
    """``path`` relative to ``$GITHUB_WORKSPACE`` (else the working directory), ``/``-separated and
    percent-encoded: a Markdown link target that resolves next to the workspace's files."""
    base = environ.get("GITHUB_WORKSPACE") or os.getcwd()
    try:
        rel = os.path.relpath(os.path.abspath(path), base)
    except ValueError:  # another drive on Windows
        rel = os.path.basename(path)
    return quote(rel.replace(os.sep, "/"))


def links(written: Sequence[tuple[str, str]], environ: Mapping[str, str]) -> list[str]:
    """One line linking the reports written: on GitHub to the run's artifacts (the file name said, as
    uploaded), else to each file by its path relative to the workspace. Never an absolute runner path."""
    if not written:
        return []
    url = _run_url(environ)
    if url:
        shown = [f"[{_cell(what)}]({url}#artifacts) (`{_cell(os.path.basename(path))}` in the run's artifacts)"
                 for what, path in written]
    else:
        shown = [f"[{_cell(what)}]({_relative_link(path, environ)})" for what, path in written]
    return ["Reports: " + " · ".join(shown), ""]


def shards_line(report: Mapping[str, Any]) -> list[str]:
    """For a report combined from CI shards (``python -m pytest_transfer combine``): what each shard gave."""
    shards = report.get("shards") or []
    if not shards:
        return []
    parts = []
    for s in shards:
        name = str(s.get("report"))
        name = os.path.basename(name) if os.path.isabs(name) else name  # no runner path
        errors = f", {s['errors']} test error(s)" if s.get("errors") else ""
        parts.append(f"{_code(name)} {s.get('measurements', 0)} gate(s), {s.get('failed', 0)} failed{errors}")
    return [f"Combined from {len(shards)} shard report(s): " + "; ".join(parts), ""]


def render_summary(report: Mapping[str, Any], *, written: Sequence[tuple[str, str]] = (),
                   environ: Mapping[str, str] | None = None) -> str:
    """The Markdown job summary for a report document (:func:`pytest_transfer.report.json.build_report`)."""
    environ = os.environ if environ is None else environ
    rows = list(report.get("measurements", []))
    settings = report.get("settings", {})
    level = round(float(settings.get("confidence_level", 0.95)) * 100)
    errors = list(report.get("errors") or [])
    failed = sum(1 for r in rows if r.get("outcome") != "passed")
    gates = [r for r in rows if not _is_regression(r)]
    head = f"## pytest-transfer: {len(rows)} gate(s), " + (f"{failed} failed" if failed or errors else "all passed")
    head += (f", {len(errors)} test error(s) ❌" if errors else " ❌" if failed else " ✅")
    env = report.get("environment", {})
    devices = ", ".join(env.get("devices") or []) or "none"
    out = [head, "", *shards_line(report), *errors_section(errors)]
    if gates:
        out += [*gate_table(gates, level=level), ""]
    out += baseline_section(rows, level=level)
    out += links(written, environ)
    out.append(f"<sub>confidence mode {_cell(settings.get('confidence', 'none'))}, {level}% intervals; "
               f"devices: {_cell(devices)}; pytest-transfer {_cell(env.get('pytest_transfer') or '?')}</sub>")
    return "\n".join(out) + "\n\n"


def append_summary(path: str | os.PathLike[str], markdown: str) -> str:
    """Append ``markdown`` to ``path`` (created with its folder if missing), as GitHub expects; returns the path."""
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "a", encoding="utf-8", errors="backslashreplace") as fh:
        fh.write(markdown)
    return os.fspath(path)


def annotation(r: Mapping[str, Any], location: tuple[str, int] | None) -> str:
    """The workflow command for one failing gate (``::error`` or, when its test passed, ``::warning``)."""
    level = "warning" if r.get("test_outcome") in ("passed", "xfailed") else "error"
    model, dataset = counterpart(r.get("gate"), str(r.get("model")), str(r.get("dataset")), r.get("details") or {})
    threshold = threshold_cell(r.get("comparison"), r.get("threshold"))
    message = (f"{r.get('metric')} of {model} on {dataset} is {_value(r)}, threshold {threshold} "
               f"(from {r.get('threshold_source') or '–'}); test {r.get('test')}")
    props = [] if location is None else [f"file={workflow_property(location[0])}", f"line={int(location[1])}"]
    props.append(f"title={workflow_property('pytest-transfer: ' + str(r.get('metric')) + ' gate failed')}")
    return f"::{level} {','.join(props)}::{workflow_data(message)}"


def error_annotation(e: Mapping[str, Any], location: tuple[str, int] | None) -> str:
    """The ``::error`` workflow command for one test error (at the test's location, else none)."""
    how = "failed in" if e.get("outcome") == "failed" else "error at"
    message = f"test {e.get('test')} {how} {e.get('phase')}, with no failing gate: {e.get('reason')}"
    props = [] if location is None else [f"file={workflow_property(location[0])}", f"line={int(location[1])}"]
    props.append(f"title={workflow_property('pytest-transfer: test ' + how + ' ' + str(e.get('phase')))}")
    return f"::error {','.join(props)}::{workflow_data(message)}"


def annotations(report: Mapping[str, Any], locations: Mapping[str, tuple[str, int]]) -> list[str]:
    """One workflow command per failing gate, then per test error; ``locations`` maps test ids to ``(path,
    1-based line)``."""
    return [*(annotation(r, locations.get(str(r.get("test"))))
              for r in report.get("measurements", []) if r.get("outcome") != "passed"),
            *(error_annotation(e, locations.get(str(e.get("test")))) for e in report.get("errors") or [])]


def annotation_path(path: str, rootdir: str, environ: Mapping[str, str] | None = None, *,
                    start: str | None = None) -> str:
    """``path`` (relative to ``rootdir``) made relative to ``$GITHUB_WORKSPACE`` when set (where GitHub resolves
    annotation paths), else to ``start`` (default: the working directory), with ``/`` separators."""
    environ = os.environ if environ is None else environ
    base = environ.get("GITHUB_WORKSPACE") or start or os.getcwd()
    full = os.path.normpath(os.path.join(rootdir, path))
    try:
        full = os.path.relpath(full, base)
    except ValueError:  # another drive on Windows: keep the absolute path
        pass
    return full.replace(os.sep, "/")
