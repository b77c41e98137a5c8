"""The end-of-session table: test, model, dataset, metric, value [interval], threshold, result.

Test ids are wrapped over several lines when the terminal is narrow, never
cut. A comparison row names its counterpart (``a vs b`` for a ranking,
``vs baseline`` for a regression, ``reference → shifted`` for a dataset
shift), so two rows of one test never look the same. The footer names the
devices every process (every pytest-xdist worker) actually ran on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..context import Context, Measurement
from ..text import cut, display_width, ljust, printable
from ..thresholds import PLACEHOLDER_SOURCE, format_threshold, format_value

HEADER = ["test", "model", "dataset", "metric", "value [interval]", "threshold", "result"]
MIN_TEST_WIDTH = 16
GROUPED_BELOW = 40  # a test column squeezed narrower than this turns into heading lines


def value_cell(value: float | None, interval: Sequence[float] | None = None, threshold: float | None = None) -> str:
    """A measured value (and its interval) with 4 decimals, or the digits it takes to stay on its side of
    ``threshold`` (:func:`~pytest_transfer.thresholds.format_value`); ``"–"`` for none."""
    if value is None:
        return "–"
    text = format_value(value, threshold)
    return f"{text} {interval_cell(interval, threshold)}" if interval is not None and len(interval) == 2 else text


def interval_cell(interval: Sequence[float] | None, threshold: float | None = None) -> str:
    """``"[lo, hi]"`` formatted as :func:`value_cell` formats values; ``"–"`` for none."""
    if interval is None or len(interval) != 2:
        return "–"
    return f"[{format_value(interval[0], threshold)}, {format_value(interval[1], threshold)}]"


def threshold_cell(comparison: str | None, threshold: float | None) -> str:
    """``">= 0.99999"``: the threshold as configured (:func:`~pytest_transfer.thresholds.format_threshold`)."""
    return "–" if threshold is None else f"{comparison} {format_threshold(threshold)}"


def baseline_cells(passed: bool, details: Mapping[str, Any]) -> tuple[str, str]:
    """``(threshold cell, result cell)`` of a row that wrote a baseline (``comparison == "baseline"``): what the
    write did and what it replaced, instead of a comparison that no longer gates anything.

    >>> baseline_cells(True, {"baseline_action": "updated", "previous_value": 0.9533})
    ('replaced 0.9533', 'WROTE')
    """
    action = details.get("baseline_action")
    previous = details.get("previous_value")
    if action == "unchanged":
        return "baseline already current", "SAME"
    if action == "updated" and isinstance(previous, (int, float)):
        return f"replaced {format_value(previous)}", "WROTE"
    return "new baseline", "WROTE" if passed else "FAIL"


def short_tests(tests: Sequence[str | None]) -> list[str]:
    """The node ids without the folders they all share, ``-`` for a missing one.

    Every test in one folder: ``test_file.py::test_name[param]``. Files in
    different folders keep the part of their path that tells them apart
    (``unit/test_model.py::...`` and ``integration/test_model.py::...``), so
    no two tests of a table look alike.
    """
    folders = [t.partition("::")[0].split("/")[:-1] for t in tests if t]
    shared = 0
    for parts in zip(*folders, strict=False):  # to the shallowest file: one in the root folder keeps every path
        if len(set(parts)) > 1:
            break
        shared += 1
    out = []
    for test in tests:
        path, sep, rest = (test or "").partition("::")
        out.append("/".join(path.split("/")[shared:]) + sep + rest if test else "-")
    return out


def counterpart(gate: str | None, model: str, dataset: str, details: Mapping[str, Any]) -> tuple[str, str]:
    """``(model, dataset)`` cells that name what a comparison gate compared against.

    ``ranks_above``: ``"a vs b"``; ``regression``: ``"a vs baseline"``;
    ``shift_max_drop``: dataset ``"reference → shifted"``; others unchanged.
    """
    reference = details.get("reference")
    if gate == "ranks_above" and reference:
        return f"{model} vs {reference}", dataset
    if gate == "regression":
        return f"{model} vs baseline", dataset
    if gate == "shift_max_drop" and reference:
        return model, f"{reference} → {dataset}"
    return model, dataset


def rows(measurements: Sequence[Measurement]) -> list[list[str]]:
    """One list of cells (as :data:`HEADER`) per measurement."""
    out = []
    for m, test in zip(measurements, short_tests([m.test for m in measurements]), strict=True):
        value = value_cell(m.value, m.interval, m.threshold)
        threshold = threshold_cell(m.comparison, m.threshold) if m.threshold is not None else "-"
        if m.threshold_source == PLACEHOLDER_SOURCE:  # a --transfer-suggest-thresholds run without one yet
            threshold = "none yet"
        result = "PASS" if m.passed else "FAIL"
        if m.comparison == "baseline":
            threshold, result = baseline_cells(m.passed, m.details or {})
        model, dataset = counterpart(m.gate, m.model, m.dataset, m.details or {})
        cells = [test, model, dataset, m.metric, value, threshold, result]
        out.append([printable(c) for c in cells])  # names are user-controlled: no control character is printed
    return out


_BREAK = re.compile(r"(?<=::)|(?<=/)|(?<=\[)|(?<=-)|(?<=_)|(?<= )")


def wrap_cell(cell: str, width: int) -> list[str]:
    """``cell`` in lines of at most ``width`` display columns (:func:`~pytest_transfer.text.display_width`:
    a CJK character or an emoji takes two), broken after ``::``, ``/``, ``[``, ``-``, ``_`` or a space where
    possible (a piece wider than ``width`` is split), nothing dropped."""
    if display_width(cell) <= width:
        return [cell]
    lines = [""]
    for piece in _BREAK.split(cell):
        while display_width(piece) > width:
            if lines[-1]:
                lines.append("")
            lines[-1], piece = cut(piece, width)
            lines.append("")
        if display_width(lines[-1]) + display_width(piece.rstrip()) > width:
            lines.append("")
        lines[-1] += piece
    return [line.rstrip() for line in lines if line.strip()] or [""]


SHRINK = {"test": MIN_TEST_WIDTH, "model": 20, "metric": 14}
"""Columns that may shrink to fit a terminal, in order, with their least width (their cells wrap after
``-``, ``_`` or a space; numbers never wrap)."""


def _fit(body: list[list[str]], header: list[str], max_width: int) -> list[int]:
    """Column widths: natural, then the :data:`SHRINK` columns narrowed in turn until the line fits."""
    widths = [max(display_width(r[i]) for r in [header, *body]) for i in range(len(header))]
    for name, least in SHRINK.items():
        if name not in header:
            continue
        col = header.index(name)
        over = sum(widths) + 2 * (len(widths) - 1) - max_width
        if over > 0:
            floor = least
            widths[col] = max(min(floor, widths[col]), widths[col] - over)
    return widths


def _formatter(widths: list[int], indent: str = "") -> Any:
    def fmt(r: list[str]) -> list[str]:
        cells = [wrap_cell(c, w) for c, w in zip(r, widths, strict=True)]
        height = max(len(c) for c in cells)
        return [indent + "  ".join(ljust(c[i] if i < len(c) else "", w)
                                   for c, w in zip(cells, widths, strict=True)).rstrip() for i in range(height)]

    return fmt


def table_blocks(measurements: Sequence[Measurement], *,
                 max_width: int = 200) -> list[tuple[list[str], list[str]]]:
    """The table as ``(heading lines, row lines)`` blocks: the header block, then one per measurement.

    When every column fits in ``max_width`` characters, or the test column
    still has :data:`GROUPED_BELOW` characters after shrinking, it is one
    flat table; a cell wider than its column continues on the next line of
    its block (:func:`wrap_cell`). On a narrower terminal the test id becomes
    a heading line above its rows (wrapped only when longer than the line),
    and the rows lose the test column. Nothing is ever cut.
    """
    body = rows(measurements)
    widths = _fit(body, HEADER, max_width)
    if widths[0] >= min(GROUPED_BELOW, max(display_width(r[0]) for r in [HEADER, *body])):
        fmt = _formatter(widths)
        return [([], [*fmt(HEADER), "  ".join("-" * w for w in widths)]), *[([], fmt(r)) for r in body]]
    indent = "  "
    widths = _fit([r[1:] for r in body], HEADER[1:], max_width - len(indent))
    fmt = _formatter(widths, indent)
    out = [(["test"], [*fmt(HEADER[1:]), indent + "  ".join("-" * w for w in widths)])]
    previous = None
    for r in body:
        heading = wrap_cell(r[0], max_width) if r[0] != previous else []
        out.append((heading, fmt(r[1:])))
        previous = r[0]
    return out


def format_table(measurements: Sequence[Measurement], *, max_width: int = 200) -> list[str]:
    """The table's lines (see :func:`table_blocks`)."""
    return [line for heading, lines in table_blocks(measurements, max_width=max_width) for line in heading + lines]


def devices_line(measurements: Sequence[Measurement], requested: str) -> str:
    """``devices: cpu`` or ``devices: cuda:0 (gw0), cuda:1 (gw1)``: what each process actually used."""
    used: dict[str, set[str]] = {}
    for m in measurements:
        if m.device:
            used.setdefault(m.device, set()).update([m.worker] if m.worker else [])
    if not used:
        return f"devices: none used (--transfer-device {requested})"
    parts = [f"{dev} ({', '.join(sorted(workers))})" if workers else dev for dev, workers in sorted(used.items())]
    return ("device: " if len(parts) == 1 else "devices: ") + ", ".join(parts)


def write_summary(tr: Any, measurements: Sequence[Measurement], ctx: Context, *,
                  workers: Sequence[Mapping[str, Any]] = (), errors: Sequence[Mapping[str, Any]] = ()) -> None:
    """Write the table, the test errors and the footer through pytest's terminal reporter ``tr`` (failing rows
    and the errors in red).

    ``workers``: the :func:`work_counts` of each pytest-xdist worker, added to this process's own; ``errors``:
    the test errors (:mod:`pytest_transfer.report.errors`: tests of pytest-transfer that did not pass with no
    failing gate), one line each after the table.
    """
    from .errors import error_lines, headline

    tr.write_sep("=", "pytest-transfer summary")
    if measurements:
        _write_table(tr, measurements)
    if errors:
        tr.write_line(headline(errors) + ":", red=True)
        for line in error_lines(errors):
            tr.write_line(line, red=True)
    failed = sum(1 for m in measurements if not m.passed)
    level = round(ctx.settings.confidence_level * 100)
    errored = f", {len(errors)} test error(s)" if errors else ""
    tr.write_line(printable(f"{len(measurements)} gate(s), {failed} failed{errored}; intervals are {level}% "
                            f"(confidence mode: {ctx.settings.confidence}); "
                            f"{devices_line(measurements, ctx.settings.device)}"))
    tr.write_line(printable(work_line(ctx, workers=workers)))


def _write_table(tr: Any, measurements: Sequence[Measurement]) -> None:
    # a terminal wraps long lines: fit its width; a log file has none, so nothing needs wrapping there
    writer = getattr(tr, "_tw", None)
    tty = bool(getattr(tr, "isatty", False)) and writer is not None
    max_width = max(80, writer.fullwidth - 1) if tty else 10**6
    (top, header), *blocks = table_blocks(measurements, max_width=max_width)
    for line in top + header:
        tr.write_line(line)
    for m, (heading, lines) in zip(measurements, blocks, strict=True):
        for line in heading:
            tr.write_line(line, bold=True)
        for line in lines:
            tr.write_line(line, **({} if m.passed else {"red": True}))


def work_counts(ctx: Context) -> dict[str, Any]:
    """This process's work: forward passes computed and read, derived results computed and read per kind."""
    return {"forward_passes": ctx.forward_passes, "cache_hits": ctx.cache_hits,
            "derived_computed": dict(ctx.derived_computed), "derived_read": dict(ctx.derived_read)}


def _total(counts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"forward_passes": 0, "cache_hits": 0, "derived_computed": {}, "derived_read": {}}
    for c in counts:
        out["forward_passes"] += int(c.get("forward_passes", 0))
        out["cache_hits"] += int(c.get("cache_hits", 0))
        for key in ("derived_computed", "derived_read"):
            for kind, n in (c.get(key) or {}).items():
                out[key][kind] = out[key].get(kind, 0) + int(n)
    return out


def work_line(ctx: Context, *, workers: Sequence[Mapping[str, Any]] = ()) -> str:
    """What the session computed and what it read from the disk cache: forward passes and derived results
    (probe fits, k-NN, estimator scores, attacks, fine-tuned heads), per kind; this process's work plus that
    of every pytest-xdist worker in ``workers`` (their :func:`work_counts`).

    A warm rerun reads ``... derived results computed: none; read: ...``.
    """
    total = _total([work_counts(ctx), *workers])

    def per_kind(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "none"

    return (f"pytest-transfer work: {total['forward_passes']} forward pass(es), {total['cache_hits']} read from the "
            f"cache; derived results computed: {per_kind(total['derived_computed'])}; "
            f"read: {per_kind(total['derived_read'])}")
