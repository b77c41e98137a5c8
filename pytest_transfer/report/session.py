"""What the pytest controller does with the session's measurements: reports, job summaries, the terminal.

:class:`SessionCollector` is a pytest plugin object. It gathers the
measurements carried by test reports (its own process's, or those sent by
pytest-xdist workers), the test outcomes and locations, and at the end of the
session writes ``--transfer-report`` (JSON), ``--transfer-html``,
``--transfer-openmetrics`` and the GitHub job summary, then prints the
summary table, baseline notes, thresholds tables that matched nothing, the
files written and (for GitHub) one annotation per failing gate.
Workers write nothing. Only pytest and the standard library are imported at
module level.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from ..context import Context, Measurement
from ..text import printable
from .errors import ERROR_PROPERTY, reason
from .writers import write_reports

PROPERTY = "pytest_transfer"
PASSES_PROPERTY = "pytest_transfer.passes"
WORK_OUTPUT = "pytest_transfer_work"
PAIRS_OUTPUT = "pytest_transfer_pairs"
FILES_OUTPUT = "pytest_transfer_files"
MARKED_OUTPUT = "pytest_transfer_marked"


def without_group(nodeid: str) -> str:
    """A node id without the ``@group`` suffix ``--dist loadgroup`` adds (measurements and baselines use it)."""
    at = nodeid.rfind("@")
    return nodeid[:at] if at > nodeid.rfind("]") and at > nodeid.rfind("::") else nodeid


def install(config: pytest.Config, ctx: Context,
            measured: Callable[[pytest.Item], list[dict[str, Any]]]) -> Any:
    """Register the session's reporting with pytest and return the progress sink (also set as
    ``ctx.progress``): the :class:`SessionCollector`, and pytest-html extras when pytest-html is installed
    and ``--html`` is used (``measured(item)``: the measurement dicts of a test)."""
    from .live import LiveProgress, passes_printer

    ctx.progress = live = LiveProgress(config)
    config.pluginmanager.register(SessionCollector(config, ctx, progress=passes_printer(config)), "transfer-session")
    if config.pluginmanager.hasplugin("html") and config.getoption("htmlpath", None):
        from .html_extras import HtmlExtras

        config.pluginmanager.register(HtmlExtras(measured), "transfer-html-extras")
    return live


def unused_threshold_tables(table: Any, pairs: Iterable[tuple[str, str]],
                            known: tuple[Iterable[str], Iterable[str]] | None = None) -> list[str]:
    """The ``"model"."dataset"`` tables of a :class:`~pytest_transfer.thresholds.ThresholdTable` that match
    none of the ``(model, dataset)`` pairs, each as ``[section."m"."d"] in <file>``.

    With ``known`` (model names, dataset names: for a session that ran a subset of the tests), only
    the tables with a pattern that matches no known name and is no ``source:...`` spec: the others
    may belong to tests this session did not collect.
    """
    seen = set(pairs)
    out = []
    for mp, dp in table.entries:
        if any(fnmatch.fnmatchcase(m, mp) and fnmatch.fnmatchcase(d, dp) for m, d in seen):
            continue
        if known is not None and all(":" in p or any(fnmatch.fnmatchcase(n, p) for n in names)
                                     for p, names in zip((mp, dp), known, strict=True)):
            continue
        key = next(iter(table.entries[(mp, dp)]), "")
        origin, section = table.origins.get((mp, dp, key), (table.origin, table.section))
        name = f'"{mp}"."{dp}"'
        out.append(f"[{section}.{name}] in {origin}" if section else f"[{name}] in {origin}")
    return out


def suite_files(config: pytest.Config) -> Iterator[str]:
    """The test modules of the whole suite: the files matching ``python_files`` under ``testpaths`` (else
    the rootdir), without the folders pytest does not enter (``norecursedirs``, virtual environments) and
    what ``--ignore`` / ``--ignore-glob`` leave out."""
    import glob
    from pathlib import Path

    root = config.rootpath
    testpaths = config.getini("testpaths")
    starts = [Path(p) for pattern in testpaths for p in sorted(glob.glob(str(root / pattern)))] if testpaths \
        else [root]
    start_dir = config.invocation_params.dir
    ignored = {os.path.realpath(start_dir / p) for p in config.getoption("ignore", None) or []}
    ignore_globs = [str(start_dir / g) for g in config.getoption("ignore_glob", None) or []]

    norecurse, python_files = config.getini("norecursedirs"), config.getini("python_files")

    def skipped(path: Path, is_dir: bool) -> bool:
        if os.path.realpath(path) in ignored or any(fnmatch.fnmatch(str(path), g) for g in ignore_globs):
            return True
        return is_dir and (any(fnmatch.fnmatch(path.name, p) for p in norecurse) or (path / "pyvenv.cfg").is_file())

    for start in starts:  # a generator: a caller asking whether all were collected stops at the first that was not
        if start.is_file():
            yield str(start)
        for folder, dirs, files in os.walk(start) if start.is_dir() else ():
            here = Path(folder)
            dirs[:] = [d for d in dirs if not skipped(here / d, True)]
            yield from (str(here / f) for f in files if any(fnmatch.fnmatch(f, p) for p in python_files)
                        and not skipped(here / f, False))


def _location(report: pytest.TestReport) -> tuple[str, int]:
    """``(path relative to the rootdir, 1-based line)``: the failing line in the test's file, else the test's."""
    path, line, _ = report.location
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    if report.failed and crash is not None and str(crash.path).replace(os.sep, "/").endswith(path.replace(os.sep, "/")):
        return path, int(crash.lineno)
    return path, (line or 0) + 1


class SessionCollector:
    """Collects measurements from test reports and writes every output on the controller."""

    def __init__(self, config: pytest.Config, ctx: Context, *, progress: Callable[[list[dict[str, Any]]], None]
                 | None = None) -> None:
        self.config = config
        self.ctx = ctx
        self.measurements: list[dict[str, Any]] = []
        self.order: dict[str, int] = {}  # under pytest-xdist: node id -> position in the collection
        self.outcomes: dict[str, str] = {}
        self.locations: dict[str, tuple[str, int]] = {}
        self.started = time.time()
        self.written: list[tuple[str, str]] = []
        self.report: dict[str, Any] | None = None
        self.work: list[dict[str, Any]] = []  # what each pytest-xdist worker computed and read
        # (model, dataset) pairs this session's tests name (markers of every collected test, selected or
        # not) or looked thresholds up for: a thresholds table matching none of them is reported unused
        self.pairs: set[tuple[str, str]] = set()
        self.progress = progress  # called on the controller with the passes an xdist worker ran for a test
        self.collected_files: set[str] = set()  # test modules really collected (not skipped by --lf)
        self.not_written: list[str] = []  # why a report could not be written, one line each
        # test errors (report/errors.py): tests of pytest-transfer that did not pass with no failing gate, by test
        self.errors: dict[str, dict[str, Any]] = {}
        self.marked: set[str] = set()  # tests whose transfer marker names their (model, dataset) pairs

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def _outcome(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            outcome = report.outcome
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            self.outcomes[report.nodeid] = outcome
        elif report.failed:
            self.outcomes[report.nodeid] = "error"
        elif report.skipped and report.when == "setup":
            self.outcomes[report.nodeid] = "skipped"
        if report.failed or report.nodeid not in self.locations:
            self.locations[report.nodeid] = _location(report)

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        mark = item.get_closest_marker("transfer")
        if mark is None:
            return
        models, datasets = (mark.kwargs.get(key) for key in ("model", "dataset"))
        models = models if isinstance(models, (list, tuple)) else [models]
        datasets = datasets if isinstance(datasets, (list, tuple)) else [datasets]
        pairs = {(m, d) for m in models for d in datasets if isinstance(m, str) and isinstance(d, str)}
        self.pairs.update(pairs)
        if pairs:
            self.marked.add(without_group(item.nodeid))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """pytest-xdist: the controller learns the collection order (every worker collects the same ids)."""
        if not self.order:
            self.order = {without_group(nodeid): i for i, nodeid in enumerate(ids)}

    def errors_in_order(self) -> list[dict[str, Any]]:
        """The test errors in collection order (under pytest-xdist; else as they happened), collection errors
        first."""
        last = len(self.order)
        return sorted(self.errors.values(), key=lambda e: (e.get("phase") != "collect",
                                                           self.order.get(str(e.get("test")), last)))

    def test_errors(self) -> list[dict[str, Any]]:
        """The test errors the terminal and the job summary show: none when the session has no measurement and
        no error of a test that uses pytest-transfer (a collection error alone may be anyone's: the reports
        asked for still list it)."""
        errors = self.errors_in_order()
        return errors if self.measurements or any(e.get("phase") != "collect" for e in errors) else []

    def in_collection_order(self) -> list[dict[str, Any]]:
        """The measurements in the order the tests were collected, each test's in the order it made them.

        Under pytest-xdist they arrive as workers finish tests, which differs from run to run; without it
        they already are in run order (a plugin that reorders tests, such as pytest-randomly, keeps its order).
        """
        if self.order:
            last = len(self.order)
            self.measurements.sort(key=lambda m: self.order.get(m.get("test") or "", last))  # stable
        return self.measurements

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._outcome(report)
        for name, value in report.user_properties:  # a failed phase carries it, and the test's later reports
            if name == ERROR_PROPERTY:
                entry = json.loads(value)
                self.errors.setdefault(str(entry["test"]), entry)
        if report.failed and report.when not in ("setup", "call", "teardown"):
            # a test whose process died (pytest-xdist makes its report on the controller, without the test's
            # properties): whatever it used, its shard must not pass
            test = without_group(report.nodeid)
            self.errors.setdefault(test, {"test": test, "phase": "crash", "outcome": "error",
                                          "reason": reason(report)})
        if report.when != "teardown":
            return
        passes = []
        for name, value in report.user_properties:
            if name == PROPERTY:
                self.measurements.append(json.loads(value))
            elif name == PASSES_PROPERTY:
                passes.append(json.loads(value))
        if passes and self.progress is not None and not self.is_worker:
            self.progress(passes)

    def target(self, key: str) -> str | None:
        """The path of an output option; a relative one is relative to the rootdir, as every path of
        pytest-transfer is (:meth:`~pytest_transfer.settings.Settings.path`), wherever it was set."""
        value = getattr(self.ctx.settings, key)
        if key == "github_summary" and not value:
            from .github import summary_path

            # GitHub sets $GITHUB_STEP_SUMMARY for every step: a session without gates adds nothing to it
            value = summary_path(None)
            return value if value and (self.measurements or self.test_errors()) else None
        if not value:
            return None
        return str(self.ctx.settings.path(value))

    def build(self) -> dict[str, Any]:
        from .json import build_report

        return build_report(self.in_collection_order(), settings=self.ctx.settings, outcomes=self.outcomes,
                            duration=time.time() - self.started, errors=self.errors_in_order())

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker:  # the controller adds each worker's work to the summary (pytest_testnodedown)
            from .terminal import work_counts

            self.config.workeroutput[WORK_OUTPUT] = work_counts(self.ctx)
            # as JSON (ASCII): execnet refuses strings that are not UTF-8, such as a surrogate-escaped name
            self.config.workeroutput[PAIRS_OUTPUT] = json.dumps(sorted(self.pairs | self.ctx.thresholds.asked))
            self.config.workeroutput[FILES_OUTPUT] = json.dumps(sorted(self.collected_files))
            self.config.workeroutput[MARKED_OUTPUT] = json.dumps(sorted(self.marked))
            return
        targets = {key: self.target(key) for key in ("report", "html", "openmetrics", "github_summary")}
        if not any(targets.values()):
            return
        try:
            self.report = self.build()
        except Exception as exc:  # a report never fails the session: say why there is none
            self.not_written.append(f"pytest-transfer: no report was written: {printable(exc)} "
                                    f"({type(exc).__name__})")
            return
        written, failed = write_reports(self.report, targets)  # a failure is a line of the summary
        self.written.extend(written)
        self.not_written.extend("pytest-transfer: " + line for line in failed)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist: a worker finished; keep the work it reported."""
        output = getattr(node, "workeroutput", {})
        if output.get(WORK_OUTPUT):
            self.work.append(output[WORK_OUTPUT])
        self.pairs.update((m, d) for m, d in json.loads(output.get(PAIRS_OUTPUT, "[]")))
        self.collected_files.update(json.loads(output.get(FILES_OUTPUT, "[]")))
        self.marked.update(json.loads(output.get(MARKED_OUTPUT, "[]")))

    @pytest.hookimpl(optionalhook=True)
    def pytest_pycollect_makeitem(self, collector: Any, name: str, obj: Any) -> None:
        """A test module was really collected (pytest asks this for every name in it); a file that ``--lf``
        skipped, or that failed to import, never gets here."""
        self.collected_files.add(str(collector.path))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A module collected without error counts too (one that defines no name at all is never asked
        about), except under ``--lf``, which reports the files it skips as collected and empty. One that
        failed is a test error (phase ``collect``)."""
        if report.failed:
            from .errors import collect_error

            self.errors.setdefault(report.nodeid, collect_error(report))
        path = report.nodeid.split("::")[0]
        if report.passed and path == report.nodeid and path.endswith(".py") and not self.config.getoption("lf", False):
            self.collected_files.add(str(self.config.rootpath / path))

    def _annotations(self) -> list[str]:
        if self.report is None or not self.target("github_summary"):
            return []
        from .github import annotation_path, annotations

        rootdir = str(self.config.rootpath)
        start = str(self.config.invocation_params.dir)
        where = {test: (annotation_path(path, rootdir, start=start), line)
                 for test, (path, line) in self.locations.items()}
        for e in self.errors.values():  # a module that could not be collected: its file, at the top
            test = str(e.get("test"))
            if e.get("phase") == "collect" and test not in where:
                where[test] = (annotation_path(test.split("::")[0], rootdir, start=start), 1)
        return annotations(self.report, where)

    def _collected_the_whole_suite(self) -> bool:
        """Whether this session collected every test module of the suite (:func:`suite_files`): ``-k``,
        ``-m``, ``--deselect`` and ``--sw`` deselect collected tests, whose markers still count; a run of some
        files or folders, ``--lf`` (which skips the files without failures) or a module that failed to import
        did not, and then tests this session never saw may use any table."""
        collected = {os.path.realpath(f) for f in self.collected_files}
        return all(os.path.realpath(f) in collected for f in suite_files(self.config))

    def _report_unused_thresholds(self, tr: Any) -> None:
        """Name the thresholds tables that match no model × dataset of the suite's tests (the markers of
        every collected test, deselected ones included, threshold lookups and measurements), once the session
        used any. Only a session that collected the whole suite can tell: see :meth:`_collected_the_whole_suite`;
        and only one whose test errors all belong to tests whose marker names their pairs: another test that
        stopped before its gate looked its thresholds up may use any table."""
        if any(test not in self.marked for test in self.errors):
            return
        pairs = self.pairs | self.ctx.thresholds.asked | {(str(m["model"]), str(m["dataset"]))
                                                          for m in self.measurements}
        if not pairs or not self.ctx.thresholds.entries:
            return
        unused = unused_threshold_tables(self.ctx.thresholds, pairs)
        if unused and self._collected_the_whole_suite():  # the walk of the suite's files only when it can matter
            tr.write_line(printable("pytest-transfer: thresholds never used (their model and dataset patterns "
                                    "matched no test of the suite; a typo there disables a gate): "
                                    + "; ".join(unused)), yellow=True)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        errors = self.test_errors()
        if self.measurements or errors:
            from ..baselines import summary_lines
            from .terminal import write_summary

            write_summary(tr, [Measurement(**m) for m in self.in_collection_order()], self.ctx, workers=self.work,
                          errors=errors)
            for line in summary_lines(self.measurements, update=self.ctx.settings.update_baselines):
                tr.write_line(printable(line))
        self._report_unused_thresholds(tr)
        for what, path in self.written:
            tr.write_line(printable(f"pytest-transfer: {what} written to {path}"))
        for line in self.not_written:
            tr.write_line(printable(line), red=True)
        for line in self._annotations():  # workflow commands: escaped by text.workflow_data
            tr.write_line(line)

