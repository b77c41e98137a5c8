"""``python -m pytest_transfer``: commands that work on what pytest-transfer sessions wrote.

``python -m pytest_transfer combine REPORT.json... [--report PATH] [--github-summary PATH] [--html PATH]
[--openmetrics PATH]`` merges the JSON reports of CI shards (:mod:`pytest_transfer.report.combine`), prints
the one gate table, the test errors (tests of pytest-transfer that did not pass with no failing gate) and the
verdict, and writes the reports asked for. Exit status: 0 when every gate passed and no shard had a test error,
1 when a gate failed or a shard had a test error, 2 for a report that cannot be combined or a file that cannot
be written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_transfer",
                                     description="Work on what pytest-transfer sessions wrote.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    combine = commands.add_parser(
        "combine", help="merge the JSON reports of CI shards into one gate table and one verdict",
        description="Merge the --transfer-report files of CI shards into one gate table (each shard's rows in "
                    "its collection order, the shards in the order given) and one verdict: exit status 1 when "
                    "any gate failed or any shard had a test error (a test of pytest-transfer that did not pass "
                    "with no failing gate: a setup error, a test body or gate that raised before measuring).")
    combine.add_argument("reports", nargs="+", metavar="REPORT.json", help="the shards' --transfer-report files")
    combine.add_argument("--report", metavar="PATH", help="write the combined JSON report to PATH")
    combine.add_argument("--github-summary", metavar="PATH",
                         help="append the Markdown job summary to PATH (default: $GITHUB_STEP_SUMMARY when set)")
    combine.add_argument("--html", metavar="PATH", help="write the self-contained HTML report to PATH")
    combine.add_argument("--openmetrics", metavar="PATH", help="write the OpenMetrics text to PATH")
    return parser


def _targets(args: argparse.Namespace) -> dict[str, str | None]:
    from .report.github import summary_path

    return {"report": args.report, "html": args.html, "openmetrics": args.openmetrics,
            "github_summary": summary_path(args.github_summary)}


def combine(args: argparse.Namespace, out: Any = None) -> int:
    """The ``combine`` command; returns the exit status."""
    from .report.combine import ReportError, as_measurements, combine_reports, load_report
    from .report.errors import error_lines, headline
    from .report.terminal import format_table
    from .report.writers import write_reports
    from .text import printable

    out = out or sys.stdout
    try:
        report = combine_reports([(path, load_report(path)) for path in args.reports])
    except ReportError as exc:
        print(f"pytest-transfer combine: error: {printable(exc)}", file=sys.stderr)
        return EXIT_USAGE
    measurements = as_measurements(report)
    width = shutil.get_terminal_size().columns - 1 if out.isatty() else 10**6
    for line in format_table(measurements, max_width=max(80, width)) if measurements else []:
        print(line, file=out)
    if report["errors"]:
        print(f"{headline(report['errors'])}:", file=out)
        for line in error_lines(report["errors"]):
            print(line, file=out)
    written, failed = write_reports(report, _targets(args))  # each writer's failure is one line
    for line in failed:
        print(f"pytest-transfer combine: error: {line}", file=sys.stderr)
    s = report["summary"]
    verdict = "FAILED" if s["failed"] or s["errors"] else "PASSED"
    print(f"{verdict}: {s['measurements']} gate(s) of {s['tests']} test(s) from {len(report['shards'])} shard "
          f"report(s), {s['failed']} failed" + (f", {s['errors']} test error(s)" if s["errors"] else ""), file=out)
    for what, path in written:
        print(f"pytest-transfer: {what} written to {printable(os.fspath(path))}", file=out)
    return EXIT_USAGE if failed else EXIT_FAILED if s["failed"] or s["errors"] else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return combine(args)  # the only command so far


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
