"""Reports: the JSON document, JUnit properties, the self-contained HTML page, and all of them under pytest-xdist."""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET

import pytest

from tests._helpers import pytester_pyproject

CONFTEST = '''
import numpy as np

SPOTS = [(0, 0), (0, 5), (5, 0)]


def make_spots(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((120, 1, 8, 8), dtype=np.float32) * 0.6
    y = np.repeat(np.arange(3), 40)
    for i, c in enumerate(y):
        r, col = SPOTS[c]
        x[i, 0, r:r + 3, col:col + 3] += 0.15
    return np.clip(x, 0, 1), y


def make_net():
    import torch
    from torch import nn
    torch.manual_seed(0)
    return nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 16), nn.Linear(16, 3))


def pytest_transfer_register_models(registry):
    registry.register("pooled", make_net)


def pytest_transfer_register_datasets(registry):
    registry.register("spots", make_spots)
'''

PYPROJECT_TABLES = '''
[tool.pytest_transfer.thresholds."pooled"."*"]
transfer_accuracy = 0.5
'''
PYPROJECT = pytester_pyproject(tables=PYPROJECT_TABLES)

TESTS = '''
import pytest
from pytest_transfer import assert_f1_above, assert_robust_under_noise, assert_transfer_accuracy_above

pytestmark = pytest.mark.transfer(model="pooled", dataset="spots")


def test_accuracy(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset)


def test_f1_fails(pretrained_model, target_dataset):
    assert_f1_above(pretrained_model, target_dataset, 0.999, method="knn")


def test_two_gates(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.3, method="knn")
    assert_robust_under_noise(pretrained_model, target_dataset, sigma=0.2, max_drop=0.9)


def test_caught(pretrained_model, target_dataset):
    with pytest.raises(AssertionError):
        assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.999, method="knn")
'''

EXPECTED = {  # (test, metric) -> (gate outcome, test outcome)
    ("test_accuracy", "linear_probe_accuracy"): ("passed", "passed"),
    ("test_f1_fails", "f1_macro"): ("failed", "failed"),
    ("test_two_gates", "knn_accuracy"): ("passed", "passed"),
    ("test_two_gates", "noise_max_drop"): ("passed", "passed"),
    ("test_caught", "knn_accuracy"): ("failed", "passed"),
}
ENTRY_KEYS = {"test", "test_outcome", "model", "dataset", "gate", "metric", "value", "interval", "threshold",
              "threshold_source", "comparison", "confidence", "outcome", "duration_s", "device", "worker", "details"}


@pytest.fixture
def project(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".toml", pyproject=PYPROJECT)
    pytester.makepyfile(test_models=TESTS)
    return pytester


def _strict_json(path):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _check_report(doc, *, xdist: bool, probe: str = "linear_probe") -> None:
    import torch

    assert doc["schema"] == "pytest-transfer-report" and doc["version"] == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", doc["created"]) and doc["duration_s"] > 0
    env = doc["environment"]
    assert env["torch"] == torch.__version__.split("+")[0] or env["torch"] == torch.__version__
    assert env["devices"] == ["cpu"] and env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert doc["settings"]["confidence"] == "none" and doc["settings"]["confidence_level"] == 0.95
    assert doc["summary"] == {"measurements": 5, "passed": 3, "failed": 2, "tests": 4, "errors": 0,
                              "baselines": {"created": 0, "updated": 0, "unchanged": 0}}
    rows = doc["measurements"]
    got = {(r["test"].split("::")[-1], r["metric"]): (r["outcome"], r["test_outcome"]) for r in rows}
    expected = {(t, m.replace("linear_probe", probe)): v for (t, m), v in EXPECTED.items()}
    assert got == expected and len(rows) == len(expected)  # every measurement exactly once
    for r in rows:
        assert set(r) == ENTRY_KEYS
        assert r["test"].startswith("test_models.py::") and (r["model"], r["dataset"]) == ("pooled", "spots")
        assert isinstance(r["value"], float) and isinstance(r["threshold"], float)
        assert r["interval"] is None or (len(r["interval"]) == 2 and r["interval"][0] <= r["interval"][1])
        assert isinstance(r["threshold_source"], str) and r["comparison"] in (">=", "<=")
        assert r["device"] == "cpu" and 0.0 <= r["duration_s"] < 60
        assert (r["worker"] in ("gw0", "gw1")) if xdist else r["worker"] is None
    acc = next(r for r in rows if r["test"].endswith("::test_accuracy"))
    assert acc["threshold_source"] == 'pyproject.toml [tool.pytest_transfer.thresholds."pooled"."*"] transfer_accuracy'
    n = acc["details"]["n"]
    cm = acc["details"]["confusion_matrix"]
    assert len(cm) == 3 and sum(map(sum, cm)) == n and sum(cm[i][i] for i in range(3)) == acc["details"]["correct"]
    assert acc["details"]["classes"] == ["0", "1", "2"]
    if probe == "linear_probe":  # the probe has class scores: a reliability diagram
        rel = acc["details"]["reliability"]
        assert len(rel["count"]) == 10 and sum(rel["count"]) == n
        assert all((a is None) == (c == 0) for a, c in zip(rel["accuracy"], rel["count"], strict=True))


def test_json_junit_and_html_reports(project):
    result = project.runpytest("--transfer-report=out/report.json", "--transfer-html=out/report.html",
                               "--junitxml=junit.xml")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*pytest-transfer: JSON report written to */out/report.json",
                                 "*pytest-transfer: HTML report written to */out/report.html"])
    doc = _strict_json(project.path / "out" / "report.json")
    _check_report(doc, xdist=False)

    # JUnit: each test case carries its measurements as properties (what record_property writes)
    cases = {c.get("name"): c for c in ET.parse(project.path / "junit.xml").getroot().iter("testcase")}
    props = {name: [(p.get("name"), p.get("value")) for p in case.iter("property")] for name, case in cases.items()}
    two = props["test_two_gates"]
    carried = [json.loads(v) for k, v in two if k == "pytest_transfer"]
    assert [m["metric"] for m in carried] == ["knn_accuracy", "noise_max_drop"]
    values = dict((k, v) for k, v in two if k.startswith("transfer."))
    assert float(values["transfer.knn_accuracy"]) == carried[0]["value"]
    assert float(values["transfer.noise_max_drop"]) == carried[1]["value"]
    assert [k for k, _ in props["test_f1_fails"]] == ["pytest_transfer", "transfer.f1_macro"]

    page = (project.path / "out" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>pytest-transfer report – 2 failed</title>" in page
    assert page.count('<tr class="passed">') == 3 and page.count('<tr class="failed">') == 2
    assert page.count("data:image/png;base64,") == 2  # probe: confusion matrix + reliability; k-NN: its matrix
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)|<script|<link|url\(""", page)  # self-contained


def test_report_paths_from_pyproject_are_relative_to_it(project):
    project.makefile(".toml", pyproject=pytester_pyproject('report = "r.json"', PYPROJECT_TABLES))
    sub = project.mkdir("sub")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sub)
        project.runpytest(str(project.path), "-k", "test_accuracy").assert_outcomes(passed=1)
    assert _strict_json(project.path / "r.json")["summary"]["measurements"] == 1


def test_under_xdist_every_measurement_reaches_the_controller_once(project):
    # k-NN only: each worker process would otherwise pay torch's one-off optimizer start-up for the probe
    project.makepyfile(test_models=TESTS.replace("(pretrained_model, target_dataset)\n", "(pretrained_model, "
                                                 "target_dataset, method='knn')\n"))
    result = project.runpytest("-n", "2", "--transfer-report=report.json", "--transfer-html=report.html")
    result.assert_outcomes(passed=3, failed=1)
    _check_report(_strict_json(project.path / "report.json"), xdist=True, probe="knn")
    summary = result.stdout.str().split("pytest-transfer summary", 1)[1]
    for test, metric in EXPECTED:
        metric = metric.replace("linear_probe", "knn")
        assert len(re.findall(rf"^test_models.py::{test}\s+pooled\s+spots\s+{metric}\s", summary, flags=re.M)) == 1
    assert "5 gate(s), 2 failed" in summary
    # the work line adds up the workers' passes (the controller ran none): a test and a train pass on each
    # worker that ran a test, and one noisy pass
    passes = int(re.search(r"^pytest-transfer work: (\d+) forward pass\(es\)", summary, flags=re.M).group(1))
    assert passes in (3, 5)
    page = (project.path / "report.html").read_text()
    assert page.count('<tr class="passed">') + page.count('<tr class="failed">') == 5


# --------------------------------------------------------------------------- the HTML page from a report document

def _report_with_every_plot() -> dict:
    from pytest_transfer.report.json import build_report

    def m(metric, details, model="resnet18", dataset="digits", passed=True):
        return {"gate": metric, "metric": metric, "value": 0.9, "model": model, "dataset": dataset,
                "interval": [0.85, 0.95], "threshold": 0.8, "threshold_source": "argument threshold=",
                "comparison": ">=", "passed": passed, "test": f"tests/test_x.py::test_{metric}", "confidence": "none",
                "details": details, "duration": 0.5, "device": "cpu", "worker": None}

    reliability = {"confidence": [None, 0.45, 0.75, 0.95], "accuracy": [None, 0.4, 0.7, 0.97], "count": [0, 3, 5, 40]}
    rows = [
        m("linear_probe_accuracy", {"method": "linear_probe", "split": "test", "n": 48,
                                    "confusion_matrix": [[15, 1], [2, 30]], "classes": ["cat", "dog"],
                                    "reliability": reliability, "ece": 0.03}),
        m("f1_macro", {"method": "linear_probe", "split": "test", "confusion_matrix": [[15, 1], [2, 30]]}),  # dup
        m("corruption_max_drop", {"robustness": [
            {"corruption": "fog", "severity": [1, 2, 3, 4, 5], "accuracy": [0.9, 0.85, 0.8, 0.7, 0.6],
             "clean_accuracy": 0.93},
            {"corruption": "gaussian_noise", "severity": [1, 2, 3, 4, 5], "accuracy": [0.88, 0.8, 0.6, 0.4, 0.3],
             "clean_accuracy": 0.93}]}, passed=False),
        m("layer_accuracy", {"layerwise": {"layers": ["layer1", "layer2", "layer3", "layer4"],
                                           "accuracy": [0.5, 0.7, 0.85, 0.9]}}),
        m("layer_accuracy", {"layerwise": {"layers": ["layer1", "layer2", "layer3", "layer4"],
                                           "accuracy": [0.45, 0.6, 0.7, 0.72]}}, model="<script>vgg</script>"),
        m("logme", {"ranking": {"metric": "logme", "models": ["a", "b", "c"], "scores": [1.2, 2.5, 0.3],
                                "reference": [0.8, 0.9, 0.6], "reference_metric": "linear_probe_accuracy",
                                "tau": 1.0}}),
        m("ntk", {"curve": {"x": [0, 1, 2], "y": [0.1, 0.5, 0.7], "label": "ntk", "xlabel": "epoch",
                            "ylabel": "similarity", "title": "NTK similarity"}}),
    ]
    return build_report(rows, duration=3.0)


def test_every_kind_of_plot_is_drawn_once_and_names_are_escaped(tmp_path):
    from pytest_transfer.report.html import write_html

    page = write_html(tmp_path / "r.html", _report_with_every_plot()).read_text()
    for heading in ("Confusion matrices and calibration", "Robustness curves", "Layer-wise transfer",
                    "Model rankings", "Other curves"):
        assert f"<h3>{heading}</h3>" in page
    assert page.count("data:image/png;base64,") == 5  # the duplicate confusion matrix is drawn once
    assert "<script>" not in page and "&lt;script&gt;vgg&lt;/script&gt;" in page
    ranks = re.findall(r'<tr><td class="num">(\d)</td><td>(\w)</td>', page)
    assert ranks == [("1", "b"), ("2", "a"), ("3", "c")]  # the ranking table is sorted by score
    assert 'class="card bad"><b>1</b><span>failed' in page


def test_without_matplotlib_the_page_has_the_tables_and_says_how_to_get_plots(tmp_path, monkeypatch):
    from pytest_transfer.report.html import write_html

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    page = write_html(tmp_path / "r.html", _report_with_every_plot()).read_text()
    assert "data:image/png" not in page
    assert "5 plot(s) are available for these measurements but matplotlib is not installed" in page
    assert "pip install &quot;pytest-transfer[plots]&quot;" in page
    assert page.count("<tr class=") == 7 and "<h2>Model rankings</h2>" in page


def test_a_malformed_plot_is_reported_and_the_others_are_drawn(tmp_path):
    from pytest_transfer.report.html import render_html

    report = _report_with_every_plot()
    report["measurements"][3]["details"]["layerwise"]["accuracy"] = ["not", "numbers"]
    page = render_html(report)
    assert "Could not draw linear-probe accuracy per layer on digits: ValueError" in page
    assert page.count("data:image/png;base64,") == 4


def test_the_json_writer_refuses_nothing_and_writes_strict_json(tmp_path):
    from pytest_transfer.report.json import build_report, write_json

    row = {"gate": "g", "metric": "m", "value": float("nan"), "model": "a", "dataset": "b", "interval": None,
           "passed": False, "details": {"curve": [float("inf"), 1.0]}}
    path = write_json(tmp_path / "deep" / "r.json", build_report([row]))
    doc = _strict_json(path)
    assert doc["measurements"][0]["value"] is None and doc["measurements"][0]["details"]["curve"] == [None, 1.0]
    assert doc["summary"]["failed"] == 1 and doc["environment"]["workers"] == []


def test_the_shapes_the_layer_and_ranking_gates_record_are_drawn(tmp_path):
    from pytest_transfer.report.html import render_html
    from pytest_transfer.report.json import build_report

    def m(model, metric, details):
        return {"gate": metric, "metric": metric, "value": 0.8, "model": model, "dataset": "digits", "passed": True,
                "test": "t.py::test", "details": details}

    curve = {"x": ["_blocks.5", "_blocks.10", "penultimate"], "label": "linear_probe accuracy"}
    rows = [
        m("lite0", "layer_accuracy", {"curve": {**curve, "y": [0.6, 0.8, 0.9]}}),
        m("lite0-random", "layer_accuracy", {"curve": {**curve, "y": [0.3, 0.25, 0.2]}}),
        m("lite0", "logme_lead", {"method": "logme", "ranking": [
            {"model": "lite0", "score": 1.5, "knn_accuracy": 0.9, "rank": 1},
            {"model": "lite0-random", "score": -0.2, "knn_accuracy": 0.2, "rank": 2}]}),
    ]
    page = render_html(build_report(rows))
    assert "<h3>Layer-wise transfer</h3>" in page and "<h3>Other curves</h3>" not in page
    assert "<h3>logme on digits</h3>" in page and "<th>k-NN accuracy</th>" in page
    assert re.findall(r'<tr><td class="num">(\d)</td><td>([\w-]+)</td>', page) == [("1", "lite0"),
                                                                                   ("2", "lite0-random")]
    assert page.count("data:image/png;base64,") == 2
