"""``python -m pytest_transfer combine``: the JSON reports of two real shards of one project as one gate table,
one verdict and the reports a reviewer reads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests._helpers import BLOBS_CONFTEST, pytester_pyproject

TABLES = '''
[tool.pytest_transfer.thresholds."tiny*"."*"]
knn_accuracy = 0.5
'''

SHARD_A = '''
import pytest
from pytest_transfer import assert_transfer_accuracy_above

pytestmark = pytest.mark.transfer(model="tiny", dataset="blobs")


def test_zeta(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, method="knn")


def test_alpha_fails(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.9, method="direct")  # an untrained head
'''

SHARD_B = '''
import pytest
from pytest_transfer import assert_transfer_accuracy_above

@pytest.mark.transfer(model=["tiny", "tiny-b"], dataset="blobs-2")
def test_both(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, method="knn")
'''


_REPORTS: dict[str, str] = {}  # the shards' reports, from the first test's two real sessions (module-wide)


@pytest.fixture
def project(pytester):
    """A project of two test files, run as two shards (one session each) that wrote their JSON reports."""
    pytester.makeconftest(BLOBS_CONFTEST)
    pytester.makefile(".toml", pyproject=pytester_pyproject(tables=TABLES))
    (pytester.path / "tests" / "unit").mkdir(parents=True)
    (pytester.path / "tests" / "unit" / "test_shard_a.py").write_text(SHARD_A)
    (pytester.path / "tests" / "test_shard_b.py").write_text(SHARD_B)
    if not _REPORTS:
        pytester.runpytest("tests/unit", "--transfer-report=shard-1/transfer.json").assert_outcomes(passed=1,
                                                                                                   failed=1)
        pytester.runpytest("tests/test_shard_b.py", "--transfer-report=shard-2/transfer.json").assert_outcomes(
            passed=2)
        _REPORTS.update({name: (pytester.path / name).read_text()
                         for name in ("shard-1/transfer.json", "shard-2/transfer.json")})
    for name, text in _REPORTS.items():
        (pytester.path / name).parent.mkdir(exist_ok=True)
        (pytester.path / name).write_text(text)
    return pytester


def _combine(project, *args, env=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PYTEST_TRANSFER_"))}
    return subprocess.run([sys.executable, "-m", "pytest_transfer", "combine", *args], cwd=project.path,
                          capture_output=True, text=True, env={**environ, **(env or {})}, timeout=120)


def _load(path):
    return json.loads(path.read_text())


def test_two_shards_make_one_table_one_verdict_and_every_report(project):
    done = _combine(project, "shard-1/transfer.json", "shard-2/transfer.json", "--report=all.json",
                    "--github-summary=summary.md", "--html=out/report.html", "--openmetrics=metrics.txt")
    assert done.returncode == 1, done.stderr  # a gate failed in shard 1
    one, two = (_load(project.path / f"shard-{i}" / "transfer.json") for i in (1, 2))
    combined = _load(project.path / "all.json")
    assert combined["measurements"] == one["measurements"] + two["measurements"]  # each shard in collection order
    assert [r["test"].split("::")[-1] for r in combined["measurements"]] == [
        "test_zeta", "test_alpha_fails", "test_both[tiny]", "test_both[tiny-b]"]
    assert combined["summary"] == {"measurements": 4, "passed": 3, "failed": 1, "tests": 4, "errors": 0,
                                   "baselines": {"created": 0, "updated": 0, "unchanged": 0}}
    assert [s["report"] for s in combined["shards"]] == ["shard-1/transfer.json", "shard-2/transfer.json"]
    lines = done.stdout.splitlines()
    table = [line for line in lines if line.startswith(("unit/", "test_shard_b.py"))]
    assert [line.split()[0] for line in table] == ["unit/test_shard_a.py::test_zeta",
                                                   "unit/test_shard_a.py::test_alpha_fails",
                                                   "test_shard_b.py::test_both[tiny]",
                                                   "test_shard_b.py::test_both[tiny-b]"]
    assert [line.split()[-1] for line in table] == ["PASS", "FAIL", "PASS", "PASS"]
    assert "FAILED: 4 gate(s) of 4 test(s) from 2 shard report(s), 1 failed" in lines

    summary = (project.path / "summary.md").read_text()
    assert "## pytest-transfer: 4 gate(s), 1 failed ❌" in summary
    assert "Combined from 2 shard report(s): `shard-1/transfer.json` 2 gate(s), 1 failed; " in summary
    assert len(re.findall(r"^\| (✅ PASS|❌ FAIL) \|", summary, flags=re.M)) == 4
    assert ("Reports: [JSON report](all.json) · [HTML report](out/report.html) · "
            "[OpenMetrics report](metrics.txt)") in summary
    assert str(project.path) not in summary  # no runner path

    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families((project.path / "metrics.txt").read_text())}
    assert families["transfer_gates"].samples[0].value == 4
    assert families["transfer_gates_failed"].samples[0].value == 1
    page = (project.path / "out" / "report.html").read_text()
    assert re.findall(r'<tr class="(\w+)">', page) == ["failed", "passed", "passed", "passed"]  # failing first


def test_passing_shards_exit_zero_and_on_github_link_the_run_artifacts(project):
    env = {"GITHUB_STEP_SUMMARY": str(project.path / "step.md"), "GITHUB_SERVER_URL": "https://github.com",
           "GITHUB_REPOSITORY": "acme/models", "GITHUB_RUN_ID": "42"}
    done = _combine(project, "shard-2/transfer.json", "--openmetrics=metrics.txt", env=env)
    assert done.returncode == 0, done.stderr
    assert "PASSED: 2 gate(s) of 2 test(s) from 1 shard report(s), 0 failed" in done.stdout
    summary = (project.path / "step.md").read_text()
    assert ("Reports: [OpenMetrics report](https://github.com/acme/models/actions/runs/42#artifacts) "
            "(`metrics.txt` in the run's artifacts)") in summary


@pytest.mark.parametrize(("damage", "message"), [
    (lambda doc: "{not json", "shard-2/transfer.json: not a JSON document"),
    (lambda doc: json.dumps({"hello": 1}), "shard-2/transfer.json: not a pytest-transfer report"),
    (lambda doc: json.dumps({**doc, "version": 99}), "shard-2/transfer.json: report version 99"),
    (lambda doc: json.dumps({**doc, "measurements": [{"test": "x"}]}),
     "shard-2/transfer.json: measurement 0 lacks model, dataset, gate, metric, value, outcome"),
    (lambda doc: json.dumps({**doc, "settings": {**doc["settings"], "confidence_level": 0.9}}),
     "shard-2/transfer.json: confidence_level = 0.9, but shard-1/transfer.json has 0.95; the shards of one run "
     "must share their settings (run every shard with the same --transfer-confidence-level)"),
])
def test_a_malformed_or_mismatched_report_is_a_clear_error(project, damage, message):
    path = project.path / "shard-2" / "transfer.json"
    path.write_text(damage(_load(path)))
    done = _combine(project, "shard-1/transfer.json", "shard-2/transfer.json", "--html=never.html")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"pytest-transfer combine: error: {message}"), done.stderr
    assert not (project.path / "never.html").exists()


def test_overlapping_shards_are_refused(project):
    done = _combine(project, "shard-1/transfer.json", "shard-1/transfer.json")
    assert done.returncode == 2
    assert ("test tests/unit/test_shard_a.py::test_zeta is also in shard-1/transfer.json; the shards overlap"
            in done.stderr)


def test_a_report_name_with_control_characters_is_printed_escaped(tmp_path, capsys):
    """A path is the user's text: an escape sequence or a workflow command in it is printed as text."""
    from pytest_transfer.__main__ import main

    bad = tmp_path / "shard\x1b[31m\n::error::x.json"
    bad.write_text("not json")
    assert main(["combine", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\n::error" not in err and "\\x1b[31m\\n::error::x.json" in err


def test_a_writer_that_fails_is_one_line_and_the_others_are_still_written(project):
    (project.path / "taken").mkdir()  # a directory given as the JSON report's file: the first writer fails
    done = _combine(project, "shard-1/transfer.json", "shard-2/transfer.json", "--report=taken",
                    "--html=out/report.html", "--openmetrics=metrics.txt", "--github-summary=summary.md")
    assert done.returncode == 2  # still a failure, though every other report was written
    errors = done.stderr.splitlines()
    assert errors == ["pytest-transfer combine: error: could not write the JSON report to taken: it is a directory; "
                      "give a file name in it (IsADirectoryError); any previous file there is left unchanged"]
    assert "FAILED: 4 gate(s) of 4 test(s) from 2 shard report(s), 1 failed" in done.stdout
    for name in ("out/report.html", "metrics.txt", "summary.md"):
        assert (project.path / name).stat().st_size > 0, name
    assert "pytest-transfer: OpenMetrics report written to metrics.txt" in done.stdout
    assert "[JSON report]" not in (project.path / "summary.md").read_text()  # links only what was written


@pytest.mark.parametrize(("damage", "field", "shown"), [
    (lambda doc: doc["measurements"][1].update(value=float("nan")), "measurements[1].value", "NaN"),
    (lambda doc: doc["measurements"][0].update(interval=[0.5, float("inf")]), "measurements[0].interval[1]",
     "Infinity"),
    (lambda doc: doc["measurements"][0]["details"].update(drop=-float("inf")), "measurements[0].details.drop",
     "-Infinity"),
    (lambda doc: doc.update(duration_s=float("nan")), "duration_s", "NaN"),
])
def test_a_number_the_writer_never_writes_is_refused_naming_the_file_and_the_field(project, damage, field, shown):
    path = project.path / "shard-2" / "transfer.json"
    doc = _load(path)
    damage(doc)
    path.write_text(json.dumps(doc))  # Python's json writes NaN / Infinity unless told not to, and reads them
    assert shown in path.read_text()
    done = _combine(project, "shard-1/transfer.json", "shard-2/transfer.json", "--report=all.json")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"pytest-transfer combine: error: shard-2/transfer.json: {field} is {shown}, "
                                  "which the writer never writes"), done.stderr
    assert not (project.path / "all.json").exists()


def test_a_null_number_as_the_writer_writes_a_non_finite_one_is_combined(project):
    """The writer turns a value that is not finite (a relative drop at clean accuracy 0) into null: kept."""
    path = project.path / "shard-2" / "transfer.json"
    doc = _load(path)
    doc["measurements"][0]["details"]["relative_drop"] = None
    path.write_text(json.dumps(doc, allow_nan=False))
    done = _combine(project, "shard-1/transfer.json", "shard-2/transfer.json", "--report=all.json")
    assert done.returncode == 1, done.stderr  # shard 1's failed gate, nothing refused
    assert _load(project.path / "all.json")["measurements"][2]["details"]["relative_drop"] is None
