"""``python -m pytest_transfer``: commands that work on what pytest-transfer sessions wrote.

``python -m pytest_transfer combine REPORT.json... [--report PATH] [--github-summary PATH] [--html PATH]
[--openmetrics PATH]`` merges the JSON reports of CI shards (:mod:`pytest_transfer.report.combine`), prints
the one gate table and its verdict, and writes the reports asked for. Exit status: 0 when every gate
passed, 1 when a gate failed, 2 for a report that cannot be combined or a file that cannot be written.
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
                    "any gate failed.")
    combine.add_argument("reports", nargs="+", metavar="REPORT.json", help="the shards' --transfer-report files")
    combine.add_argument("--report", metavar="PATH", help="write the combined JSON report to PATH")
    combine.add_argument("--github-summary", metavar="PATH",
                         help="append the Markdown job summary to PATH (default: $GITHUB_STEP_SUMMARY when set)")
    combine.add_argument("--html", metavar="PATH", help="write the self-contained HTML report to PATH")
    combine.add_argument("--openmetrics", metavar="PATH", help="write the OpenMetrics text to PATH")
    return parser


def _write_outputs(report: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, str]]:
    from .report.github import append_summary, render_summary, summary_path
    from .report.html import write_html
    from .report.json import write_json
    from .report.openmetrics import write_openmetrics

    written: list[tuple[str, str]] = []
    for what, path, write in (("JSON report", args.report, write_json), ("HTML report", args.html, write_html),
                              ("OpenMetrics report", args.openmetrics, write_openmetrics)):
        if path:
            write(path, report)
            written.append((what, path))
    summary = summary_path(args.github_summary)
    if summary:
        written.append(("GitHub job summary", append_summary(summary, render_summary(report, written=written))))
    return written


def combine(args: argparse.Namespace, out: Any = None) -> int:
    """The ``combine`` command; returns the exit status."""
    from .report.combine import ReportError, as_measurements, combine_reports, load_report
    from .report.terminal import format_table
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
    try:
        written = _write_outputs(report, args)
    except OSError as exc:
        print(f"pytest-transfer combine: error: cannot write {printable(exc.filename or '')}: "
              f"{printable(exc.strerror or exc)}", file=sys.stderr)
        return EXIT_USAGE
    s = report["summary"]
    verdict = "FAILED" if s["failed"] else "PASSED"
    print(f"{verdict}: {s['measurements']} gate(s) of {s['tests']} test(s) from {len(report['shards'])} shard "
          f"report(s), {s['failed']} failed", file=out)
    for what, path in written:
        print(f"pytest-transfer: {what} written to {printable(os.fspath(path))}", file=out)
    return EXIT_FAILED if s["failed"] else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return combine(args)  # the only command so far


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
