"""The end-of-session table: test, model, dataset, metric, value [interval], threshold, result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..context import Context, Measurement


def _num(x: float) -> str:
    return f"{x:.4f}" if abs(x) < 1000 else f"{x:.4g}"


def rows(measurements: Sequence[Measurement]) -> list[list[str]]:
    out = []
    for m in measurements:
        value = _num(m.value)
        if m.interval is not None:
            value += f" [{_num(m.interval[0])}, {_num(m.interval[1])}]"
        threshold = f"{m.comparison} {_num(m.threshold)}" if m.threshold is not None else "-"
        test = (m.test or "-").split("::", 1)[-1] if m.test else "-"
        out.append([test, m.model, m.dataset, m.metric, value, threshold, "PASS" if m.passed else "FAIL"])
    return out


def format_table(measurements: Sequence[Measurement], *, max_width: int = 200) -> list[str]:
    header = ["test", "model", "dataset", "metric", "value [interval]", "threshold", "result"]
    body = rows(measurements)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    # keep the table readable on narrow terminals: shorten the test column first
    over = sum(widths) + 2 * (len(widths) - 1) - max_width
    if over > 0:
        widths[0] = max(12, widths[0] - over)

    def fmt(r: list[str]) -> str:
        cells = [(c if len(c) <= w else c[: w - 1] + "…").ljust(w) for c, w in zip(r, widths, strict=True)]
        return "  ".join(cells).rstrip()

    return [fmt(header), fmt(["-" * w for w in widths]), *[fmt(r) for r in body]]


def write_summary(tr: Any, measurements: Sequence[Measurement], ctx: Context) -> None:
    tr.write_sep("=", "pytest-transfer summary")
    width = getattr(tr, "_tw", None)
    max_width = max(160, (width.fullwidth if width is not None else 200) - 1)
    for line in format_table(measurements, max_width=max_width):
        markup = {"red": True} if line.endswith("FAIL") else {}
        tr.write_line(line, **markup)
    failed = sum(1 for m in measurements if not m.passed)
    level = round(ctx.settings.confidence_level * 100)
    mode = ctx.settings.confidence
    tr.write_line(f"{len(measurements)} gate(s), {failed} failed; intervals are {level}% "
                  f"(confidence mode: {mode}); device: {ctx._device or ctx.settings.device}")
    tr.write_line(work_line(ctx))


def work_line(ctx: Context) -> str:
    """What this process computed and what it read from the disk cache: forward passes and derived results
    (probe fits, k-NN, estimator scores, attacks, fine-tuned heads), per kind.

    A warm rerun reads ``... derived results computed: none; read: ...``.
    """
    def per_kind(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "none"

    return (f"pytest-transfer work: {ctx.forward_passes} forward pass(es), {ctx.cache_hits} read from the cache; "
            f"derived results computed: {per_kind(ctx.derived_computed)}; read: {per_kind(ctx.derived_read)}")
