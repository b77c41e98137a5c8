"""``--transfer-html=PATH``: one self-contained HTML page (inline CSS, plots as inline base64 PNG).

The page has the summary (environment, settings, counts), the test errors
(tests of pytest-transfer that did not pass with no failing gate, in red, before
the measurements), the table of every measurement, the model rankings as tables, and plots drawn with matplotlib's
Agg canvas (imported lazily; without matplotlib the page has the tables and
a note saying ``pip install "pytest-transfer[plots]"``). It is built from
the same document as the JSON report (:func:`pytest_transfer.report.json.build_report`).

Plot data: gates put small, JSON-able lists in ``Measurement.details``. The
keys drawn (fill them from a gate to get its plot):

``confusion_matrix``
    list of lists of counts, rows = true class, columns = predicted class;
    with ``classes`` (names, optional). Drawn row-normalised, one figure per
    model × dataset × ``method`` × ``split``. The accuracy and F1 gates fill it
    for up to 50 classes.
``reliability``
    ``{"confidence": [...], "accuracy": [...], "count": [...]}`` per
    equal-width confidence bin (empty bins ``None`` / 0), with ``ece``
    (optional): a reliability diagram next to the confusion matrix. Filled by
    the accuracy and F1 gates when the method has scores.
``robustness``
    ``{"corruption": "fog", "severity": [1, 2, 3, 4, 5], "accuracy": [...],
    "clean_accuracy": 0.95}`` (``clean_accuracy`` optional, drawn at
    severity 0), or a list of such dicts: accuracy vs severity, one line per
    corruption, one figure per model × dataset.
``layerwise``
    ``{"layers": ["layer1", ...], "accuracy": [...]}``: transfer accuracy
    per layer, one line per model, one figure per dataset (layer names on
    the axis when the models share them, else relative depth).
    The layer-transfer gate's ``curve`` (metric ``layer_accuracy``, node
    names as ``x``) is drawn here too.
``ranking``
    ``{"metric": "logme", "models": [...], "scores": [...],
    "reference": [...], "reference_metric": "linear_probe_accuracy",
    "tau": 0.8}`` (``reference`` and any extra numbers optional), or a list
    of rows ``{"model", "score", "knn_accuracy"}`` with the estimator in
    ``details["method"]``: a table and a bar chart per dataset × metric.
``curve``
    a generic line ``{"x": [...], "y": [...], "label": "...", "xlabel": "...",
    "ylabel": "...", "title": "..."}`` (or a list of them; ``x`` may be names);
    curves with the same dataset and title (default: the metric) share a
    figure, one line per model.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..baselines import write_text_file
from ..declarations import label as metric_label
from ..text import utf8_tree
from .terminal import baseline_cells, counterpart, interval_cell, short_tests, threshold_cell, value_cell

PLOTS_HINT = 'pip install "pytest-transfer[plots]"'
_MAX_LEGEND = 16

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px 32px;color:#1f2328;background:#fff}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:28px 0 10px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.meta{color:#57606a;font-size:13px;margin:2px 0}
.cards{display:flex;gap:12px;margin:14px 0}
.card{border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:90px}
.card b{display:block;font-size:22px} .card span{font-size:12px;color:#57606a}
.card.bad b{color:#cf222e} .card.good b{color:#1a7f37}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.src{color:#57606a;font-size:12px;min-width:220px;max-width:360px;overflow-wrap:anywhere}
td.test{max-width:320px;overflow-wrap:break-word}
td.reason{max-width:720px;overflow-wrap:anywhere;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
tr.failed td{background:#ffebe9} .PASS{color:#1a7f37;font-weight:600} .FAIL{color:#cf222e;font-weight:600}
.WROTE,.SAME{color:#0969da;font-weight:600}
.note{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 12px;font-size:14px}
figure{display:inline-block;margin:8px 16px 16px 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #d0d7de;border-radius:4px}
figcaption{font-size:12px;color:#57606a;margin-top:4px;max-width:640px}
code{background:#f6f8fa;padding:1px 4px;border-radius:4px}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _num(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return _e(x)
    return f"{x:.4f}" if abs(x) < 1000 else f"{x:.4g}"


# --------------------------------------------------------------------------- plot data

def _as_list(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, Mapping):
        return [dict(value)]
    if isinstance(value, (list, tuple)):
        return [dict(v) for v in value if isinstance(v, Mapping)]
    return []


def collect_plot_data(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[Any, Any]]:
    """Group the plot-ready details of the report rows by figure (first occurrence wins, no duplicates)."""
    out: dict[str, dict[Any, Any]] = {"classification": {}, "robustness": {}, "layerwise": {}, "ranking": {},
                                      "curve": {}}
    for r in rows:
        d = r.get("details") or {}
        model, dataset = r.get("model"), r.get("dataset")
        if d.get("confusion_matrix") is not None or d.get("reliability") is not None:
            key = (model, dataset, d.get("method"), d.get("split"))
            entry = out["classification"].setdefault(key, {})
            for k in ("confusion_matrix", "classes", "reliability", "ece"):
                if d.get(k) is not None and k not in entry:
                    entry[k] = d[k]
        for item in _as_list(d.get("robustness")):
            lines = out["robustness"].setdefault((model, dataset), {})
            lines.setdefault(str(item.get("corruption", r.get("metric"))), item)
        if isinstance(d.get("layerwise"), Mapping):
            out["layerwise"].setdefault(dataset, {}).setdefault(model, dict(d["layerwise"]))
        ranking = _ranking(d.get("ranking"), d.get("method") or r.get("metric"))
        if ranking is not None:
            out["ranking"][(dataset, ranking["metric"])] = ranking
        for item in _as_list(d.get("curve")):
            xs = list(item.get("x", []))
            if r.get("metric") == "layer_accuracy" and xs and all(isinstance(x, str) for x in xs):
                # the layer-transfer gate's curve: x = node names, y = accuracy per node
                layers = {"layers": xs, "accuracy": list(item.get("y", []))}
                out["layerwise"].setdefault(dataset, {}).setdefault(model, layers)
                continue
            key = (dataset, item.get("title", r.get("metric")))
            out["curve"].setdefault(key, {}).setdefault((model, item.get("label")), item)
    return out


def _ranking(value: Any, metric: Any) -> dict[str, Any] | None:
    """A ranking as ``{"metric", "models", "scores", "reference"?, ...}``; also accepts a list of rows
    ``{"model", "score", "knn_accuracy"?, "rank"?}`` (as ``assert_ranks_above`` records it)."""
    if isinstance(value, Mapping):
        return {"metric": metric, **dict(value)}
    rows = [v for v in value if isinstance(v, Mapping) and "model" in v] if isinstance(value, (list, tuple)) else []
    if not rows:
        return None
    out: dict[str, Any] = {"metric": metric, "models": [r["model"] for r in rows],
                           "scores": [r.get("score") for r in rows]}
    if all(r.get("knn_accuracy") is not None for r in rows):
        out.update(reference=[r["knn_accuracy"] for r in rows], reference_metric="k-NN accuracy")
    return out


# --------------------------------------------------------------------------- drawing (matplotlib, lazily)

def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _floats(values: Sequence[Any]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def _draw_confusion(ax: Any, matrix: list[list[float]], classes: list[str] | None) -> None:
    import numpy as np

    cm = np.asarray(matrix, dtype=np.float64)
    k = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 12:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.55 else "#1f2328")
    names = [str(c) for c in (classes or range(k))]
    if k <= 20:
        ax.set_xticks(range(k), [n[:10] for n in names], rotation=45 if max(map(len, names)) > 3 else 0,
                      fontsize=8)
        ax.set_yticks(range(k), [n[:10] for n in names], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix", fontsize=11)


def _draw_reliability(ax: Any, rel: Mapping[str, Any], ece: Any) -> None:
    import numpy as np

    acc = np.asarray(_floats(rel.get("accuracy", [])))
    conf = np.asarray(_floats(rel.get("confidence", [])))
    count = np.asarray([c or 0 for c in rel.get("count", [0] * len(acc))], dtype=np.float64)
    b = len(acc)
    edges = np.linspace(0.0, 1.0, b + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    has = count > 0
    ax.bar(centres[has], acc[has], width=1.0 / b, edgecolor="#0969da", color="#54aeff", alpha=0.8,
           label="accuracy")
    ax.bar(centres[has], (conf - acc)[has], bottom=acc[has], width=1.0 / b, color="none", edgecolor="#cf222e",
           hatch="//", linewidth=0.8, label="gap to confidence")
    ax.plot([0, 1], [0, 1], linestyle="--", color="#57606a", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-1 confidence")
    ax.set_ylabel("accuracy")
    title = "Reliability diagram"
    if isinstance(ece, (int, float)):
        title += f" (ECE {ece:.3f})"
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="upper left")


def _classification_figure(data: Mapping[str, Any]) -> Any:
    panels = [k for k in ("confusion_matrix", "reliability") if data.get(k) is not None]
    fig = _figure(5.2 * len(panels), 4.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "confusion_matrix":
            _draw_confusion(ax, data["confusion_matrix"], data.get("classes"))
        else:
            _draw_reliability(ax, data["reliability"], data.get("ece"))
    return fig


def _legend(ax: Any, n: int) -> None:
    if n <= _MAX_LEGEND:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def _robustness_figure(lines: Mapping[str, Mapping[str, Any]]) -> Any:
    import numpy as np

    fig = _figure(7.4, 4.4)
    ax = fig.subplots()
    colors = _colors(len(lines))
    curves = []
    for color, (name, item) in zip(colors, sorted(lines.items()), strict=True):
        x = [float(s) for s in item.get("severity", [])]
        y = _floats(item.get("accuracy", []))
        if item.get("clean_accuracy") is not None:
            x, y = [0.0, *x], [float(item["clean_accuracy"]), *y]
        ax.plot(x, y, marker="o", markersize=3.5, linewidth=1.4, color=color, label=name)
        curves.append((x, y))
    if len(curves) > 1 and all(c[0] == curves[0][0] for c in curves):
        mean = np.nanmean(np.asarray([c[1] for c in curves], dtype=np.float64), axis=0)
        ax.plot(curves[0][0], mean, color="#1f2328", linewidth=2.6, label="mean")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # severities are 1..5, never 0.2
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Accuracy vs corruption severity", fontsize=11)
    _legend(ax, len(lines) + 1)
    return fig


def _layerwise_figure(models: Mapping[str, Mapping[str, Any]]) -> Any:
    fig = _figure(7.4, 4.4)
    ax = fig.subplots()
    layer_lists = [list(map(str, v.get("layers", []))) for v in models.values()]
    shared = all(lst == layer_lists[0] for lst in layer_lists) and bool(layer_lists[0])
    for color, (model, item) in zip(_colors(len(models)), sorted(models.items()), strict=True):
        y = _floats(item.get("accuracy", []))
        x = list(range(len(y))) if shared or len(y) < 2 else [i / (len(y) - 1) for i in range(len(y))]
        ax.plot(x, y, marker="o", markersize=4, linewidth=1.6, color=color, label=str(model))
    if shared:
        names = layer_lists[0]
        ax.set_xticks(range(len(names)), [n[-18:] for n in names], rotation=40, ha="right", fontsize=8)
        ax.set_xlabel("layer")
    else:
        ax.set_xlabel("relative depth")
    ax.set_ylabel("transfer accuracy")
    ax.grid(alpha=0.3)
    ax.set_title("Layer-wise transfer", fontsize=11)
    _legend(ax, len(models))
    return fig


def _ranking_figure(rk: Mapping[str, Any]) -> Any:
    models = [str(m) for m in rk.get("models", [])]
    scores = _floats(rk.get("scores", []))
    ref = _floats(rk["reference"]) if rk.get("reference") is not None else None
    order = sorted(range(len(models)), key=lambda i: (math.isnan(scores[i]), scores[i]))
    panels = 2 if ref is not None else 1
    fig = _figure(4.2 * panels + 1.6, 0.42 * len(models) + 1.4)
    axes = fig.subplots(1, panels, squeeze=False, sharey=True)[0]
    names = [models[i] if len(models[i]) <= 40 else models[i][:39] + "…" for i in order]
    bars = axes[0].barh(names, [scores[i] for i in order], color="#54aeff", edgecolor="#0969da")
    axes[0].bar_label(bars, fmt="%.3g", padding=3, fontsize=8)
    axes[0].set_xlabel(metric_label(str(rk.get("metric", "score"))))  # an estimator's declared label
    from ..estimators import ESTIMATORS

    metric = str(rk.get("metric", ""))
    axes[0].set_title("estimated transferability" if metric in ESTIMATORS and metric != "knn_accuracy"
                      else "measured transfer", fontsize=10)
    if ref is not None:
        ref_bars = axes[1].barh(names, [ref[i] for i in order], color="#aceebb", edgecolor="#1a7f37")
        axes[1].bar_label(ref_bars, fmt="%.3g", padding=3, fontsize=8)
        axes[1].set_xlabel(metric_label(str(rk.get("reference_metric", "reference"))))
        axes[1].set_title("beside it, for comparison", fontsize=10)
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)  # room for the value labels
    return fig


def _curve_figure(items: Mapping[Any, Mapping[str, Any]]) -> Any:
    fig = _figure(7.4, 4.4)
    ax = fig.subplots()
    first = next(iter(items.values()))
    labels = {label for _, label in items}
    models = {model for model, _ in items}
    names = list(map(str, first.get("x", [])))
    categorical = any(isinstance(x, str) for item in items.values() for x in item.get("x", []))
    for color, ((model, label), item) in zip(_colors(len(items)), items.items(), strict=True):
        shown = str(model) if len(labels) == 1 and len(models) > 1 else str(label or model)
        if len(labels) > 1 and len(models) > 1:
            shown = f"{model}: {label}"
        y = _floats(item.get("y", []))
        x = list(range(len(y))) if categorical else _floats(item.get("x", []))
        ax.plot(x, y, marker="o", markersize=3.5, color=color, label=shown)
    if categorical:
        ax.set_xticks(range(len(names)), [n[-18:] for n in names], rotation=40, ha="right", fontsize=8)
    ax.set_xlabel(str(first.get("xlabel", "")))
    ax.set_ylabel(str(first.get("ylabel", "")))
    ax.grid(alpha=0.3)
    ax.set_title(str(first.get("title", "")), fontsize=11)
    _legend(ax, len(items))
    return fig


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _figures(plots: Mapping[str, Mapping[Any, Any]]) -> list[tuple[str, str, Callable[[], Any]]]:
    """``(section, caption, draw)`` for every figure, in page order."""
    out: list[tuple[str, str, Callable[[], Any]]] = []
    for (model, dataset, method, split), data in plots["classification"].items():
        how = ", ".join(x for x in (method, f"{split} split" if split else None) if x)
        out.append(("Confusion matrices and calibration", f"{model} on {dataset}" + (f" ({how})" if how else ""),
                    lambda data=data: _classification_figure(data)))
    for (model, dataset), lines in plots["robustness"].items():
        out.append(("Robustness curves", f"{model} on {dataset}: accuracy vs severity per corruption",
                    lambda lines=lines: _robustness_figure(lines)))
    for dataset, models in plots["layerwise"].items():
        out.append(("Layer-wise transfer", f"linear-probe accuracy per layer on {dataset}",
                    lambda models=models: _layerwise_figure(models)))
    for (dataset, metric), rk in plots["ranking"].items():
        out.append(("Model rankings", f"{metric} on {dataset}", lambda rk=rk: _ranking_figure(rk)))
    for (dataset, title), items in plots["curve"].items():
        out.append(("Other curves", f"{title} on {dataset}", lambda items=items: _curve_figure(items)))
    return out


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401
    except ImportError:
        return False
    return True


def figure_images(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``(caption, base64 PNG)`` for every plot the rows carry; empty without matplotlib.

    A figure that cannot be drawn from malformed data is left out (the page
    built by :func:`render_html` says why).
    """
    if not _have_matplotlib():
        return []
    out = []
    for _, caption, make in _figures(collect_plot_data(rows)):
        try:
            out.append((caption, _png(make())))
        except Exception:  # one malformed plot must not lose the others
            continue
    return out


# --------------------------------------------------------------------------- page

def wrapped_test_id(test: str) -> str:
    """A test id as HTML that a narrow cell wraps after ``/`` and ``::`` (``<wbr>``), not mid-word.

    >>> wrapped_test_id("tests/unit/test_a.py::test_b[<x>]")
    'tests/<wbr>unit/<wbr>test_a.py::<wbr>test_b[&lt;x&gt;]'
    """
    return _e(test).replace("/", "/<wbr>").replace("::", "::<wbr>")


def measurement_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """An HTML ``<table>`` of report rows (as :func:`pytest_transfer.report.json.entry` makes them): the failing
    rows first, then the others, each group in the report's order."""
    head = ("test", "model", "dataset", "metric", "value", "interval", "threshold", "threshold from", "confidence",
            "result", "time (s)")
    out = ["<table><thead><tr>", *[f"<th>{h}</th>" for h in head], "</tr></thead><tbody>"]
    rows = sorted(rows, key=lambda r: r.get("outcome") == "passed")  # stable: failing rows first
    for r, test in zip(rows, short_tests([r.get("test") for r in rows]), strict=True):
        result = "PASS" if r.get("outcome") == "passed" else "FAIL"
        interval = r.get("interval")
        shown_interval = interval_cell(interval, r.get("threshold"))
        threshold = _e(threshold_cell(r.get("comparison"), r.get("threshold")))
        if r.get("comparison") == "baseline":  # a baseline written: what it replaced, not a comparison
            cells = baseline_cells(result == "PASS", r.get("details") or {})
            threshold, result = _e(cells[0]), cells[1]
        model, dataset = counterpart(r.get("gate"), str(r.get("model")), str(r.get("dataset")), r.get("details") or {})
        out.append(
            f'<tr class="{"failed" if result == "FAIL" else "passed"}">'
            f'<td class="test" title="{_e(r.get("test"))}">{wrapped_test_id(test)}</td>'
            f"<td>{_e(model)}</td><td>{_e(dataset)}</td><td>{_e(r.get('metric'))}</td>"
            f'<td class="num">{_e(value_cell(r.get("value"), None, r.get("threshold")))}</td>'
            f'<td class="num">{shown_interval}</td>'
            f'<td class="num">{threshold}</td><td class="src">{_e(r.get("threshold_source"))}</td>'
            f"<td>{_e(r.get('confidence'))}</td><td class=\"{result}\">{result}</td>"
            f'<td class="num">{_num(r.get("duration_s")) if r.get("duration_s") is not None else "–"}</td></tr>'
        )
    out.append("</tbody></table>")
    return "".join(out)


def errors_table(errors: Sequence[Mapping[str, Any]]) -> str:
    """The test errors (:mod:`pytest_transfer.report.errors` entries) as an HTML ``<table>`` of red rows."""
    out = ["<table><thead><tr><th>test</th><th>phase</th><th>result</th><th>reason</th></tr></thead><tbody>"]
    for e, test in zip(errors, short_tests([str(e.get("test")) for e in errors]), strict=True):
        result = "FAILED" if e.get("outcome") == "failed" else "ERROR"
        out.append(f'<tr class="failed error"><td class="test" title="{_e(e.get("test"))}">{wrapped_test_id(test)}'
                   f'</td><td>{_e(e.get("phase"))}</td><td class="FAIL">{result}</td>'
                   f'<td class="reason">{_e(e.get("reason"))}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _errors_section(errors: Sequence[Mapping[str, Any]]) -> list[str]:
    if not errors:
        return []
    return [f"<h2>Tests that did not pass with no failing gate ({len(errors)})</h2>",
            '<p class="meta">Errors before any gate measured (a model or dataset that could not be loaded, a test '
            "body or a gate that raised before recording): they fail the verdict like a failing gate.</p>",
            errors_table(errors)]


def _ranking_tables(rankings: Mapping[Any, Mapping[str, Any]]) -> str:
    parts = []
    for (dataset, metric), rk in rankings.items():
        models = [str(m) for m in rk.get("models", [])]
        scores = _floats(rk.get("scores", []))
        ref = _floats(rk["reference"]) if rk.get("reference") is not None else None
        order = sorted(range(len(models)), key=lambda i: (math.isnan(scores[i]), -scores[i]))
        extra = ", ".join(f"{_e(k)} {_num(v)}" for k, v in rk.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool))
        parts.append(f"<h3>{_e(metric)} on {_e(dataset)}</h3>" + (f'<p class="meta">{extra}</p>' if extra else ""))
        head = "<tr><th>rank</th><th>model</th><th>" + _e(metric) + "</th>"
        head += f"<th>{_e(rk.get('reference_metric', 'reference'))}</th>" if ref is not None else ""
        body = "".join(
            f'<tr><td class="num">{rank}</td><td>{_e(models[i])}</td><td class="num">{_num(scores[i])}</td>'
            + (f'<td class="num">{_num(ref[i])}</td>' if ref is not None else "") + "</tr>"
            for rank, i in enumerate(order, start=1)
        )
        parts.append(f"<table><thead>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "".join(parts)


def render_html(report: Mapping[str, Any], *, plots: bool | None = None) -> str:
    """The page for a report document; ``plots=None`` draws them when matplotlib is importable."""
    rows = list(report.get("measurements", []))
    summary = report.get("summary", {})
    env = report.get("environment", {})
    settings = report.get("settings", {})
    data = collect_plot_data(rows)
    figures = _figures(data)
    draw = _have_matplotlib() if plots is None else plots

    failed = int(summary.get("failed", 0))
    errors = list(report.get("errors") or [])
    bad = failed + len(errors)
    baselines = summary.get("baselines", {})
    written = int(baselines.get("created", 0)) + int(baselines.get("updated", 0))
    cards = [("measurements", summary.get("measurements", len(rows)), ""), ("passed", summary.get("passed", 0), "good"),
             ("failed", failed, "bad" if failed else "" if errors else "good"),
             ("test errors", len(errors), "bad" if errors else "good"), ("tests", summary.get("tests", 0), ""),
             ("baselines written", written, "")]
    env_line = ", ".join(f"{k} {_e(v)}" for k, v in (
        ("torch", env.get("torch")), ("torchvision", env.get("torchvision")), ("python", env.get("python")),
        ("pytest", env.get("pytest")), ("pytest-transfer", env.get("pytest_transfer"))) if v)
    devices = ", ".join(env.get("devices") or []) or "–"
    workers = ", ".join(env.get("workers") or []) or "none"
    level = settings.get("confidence_level")
    set_line = (f"confidence mode {_e(settings.get('confidence', 'none'))}"
                + (f", {round(float(level) * 100)}% intervals" if level is not None else "")
                + (f", seed {_e(settings.get('seed'))}" if "seed" in settings else ""))

    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>pytest-transfer report{' – ' + _title_counts(failed, len(errors)) if bad else ''}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>pytest-transfer report</h1>",
        f'<p class="meta">{_e(report.get("created"))}'
        + (f" · {float(report['duration_s']):.1f} s" if report.get("duration_s") is not None else "")
        + f" · devices: {_e(devices)} · xdist workers: {_e(workers)}</p>",
        f'<p class="meta">{env_line}</p><p class="meta">{set_line}</p>',
        '<div class="cards">' + "".join(f'<div class="card {cls}"><b>{_e(v)}</b><span>{_e(k)}</span></div>'
                                        for k, v, cls in cards) + "</div>",
        *_errors_section(errors),
        "<h2>Measurements</h2>",
        measurement_table(rows) if rows else "<p>No measurements were recorded.</p>",
    ]
    if data["ranking"]:
        parts += ["<h2>Model rankings</h2>", _ranking_tables(data["ranking"])]
    parts += ["<h2>Plots</h2>", *_plots_section(figures, draw), "</body></html>\n"]
    return "\n".join(parts)


def _title_counts(failed: int, errors: int) -> str:
    return ", ".join(part for part in (f"{failed} failed" if failed else "",
                                       f"{errors} test error(s)" if errors else "") if part)


def _plots_section(figures: Sequence[tuple[str, str, Callable[[], Any]]], draw: bool) -> list[str]:
    if not figures:
        return ["<p>No measurement carried plot data (confusion matrices, reliability, robustness or "
                "layer-wise curves, rankings).</p>"]
    if not draw:
        return [f'<p class="note">{len(figures)} plot(s) are available for these measurements but '
                f"matplotlib is not installed. To get them: <code>{_e(PLOTS_HINT)}</code></p>"]
    parts, section = [], None
    for title, caption, make in figures:
        if title != section:
            parts.append(f"<h3>{_e(title)}</h3>")
            section = title
        try:
            img = _png(make())
        except Exception as exc:  # a gate's malformed plot data must not lose the whole report
            parts.append(f'<p class="note">Could not draw {_e(caption)}: {_e(type(exc).__name__)}: '
                         f"{_e(exc)}</p>")
            continue
        parts.append(f'<figure><img alt="{_e(title)}: {_e(caption)}" src="data:image/png;base64,{img}">'
                     f"<figcaption>{_e(caption)}</figcaption></figure>")
    return parts


def write_html(path: str | os.PathLike[str], report: Mapping[str, Any], *, plots: bool | None = None) -> Path:
    """Write the page for ``report`` atomically; returns the path. Text that is not UTF-8 (a surrogate-escaped
    name) is shown with ``\\xNN`` escapes (:func:`~pytest_transfer.text.utf8_tree`)."""
    return write_text_file(path, render_html(utf8_tree(report), plots=plots))
