"""Test errors: tests of pytest-transfer that did not pass with no failing gate (a model loader that raised, a
dataset file that is missing, a test body or a gate that raised before measuring) are counted and listed in
every report, and fail the verdict of ``python -m pytest_transfer combine``; a clean session has none."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from pytest_transfer.__main__ import main as transfer_main
from tests._helpers import BLOBS_CONFTEST, pytester_pyproject

CONFTEST = BLOBS_CONFTEST + '''

def broken_loader(rest, **kwargs):
    raise RuntimeError(f"store {rest!r} is offline\\x1b[31m\\nretry later")


def pytest_transfer_register_model_sources(registry):
    registry.register("brokenstore", broken_loader)
'''

ERRTESTS = '''
import pytest
from pytest_transfer import assert_transfer_accuracy_above


@pytest.mark.transfer(model="brokenstore:resnet", dataset="blobs")
def test_loader(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.5, method="knn")


@pytest.mark.transfer(model="tiny", dataset="imagefolder:data/missing")
def test_missing_file(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.5, method="knn")


@pytest.mark.transfer(model="tiny", dataset="blobs")
def test_body(pretrained_model, target_dataset):
    raise ValueError("the preprocessing changed")
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.5, method="knn")


def test_gate_raises():  # no marker, no fixture: the gate itself raises before it records
    assert_transfer_accuracy_above("brokenstore:x", "blobs", 0.5, method="knn")
'''

CLEAN = '''
import pytest
from pytest_transfer import assert_transfer_accuracy_above

pytestmark = pytest.mark.transfer(model="tiny", dataset="blobs")


def test_knn(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.5, method="knn")


def test_knn_again(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.6, method="knn")


def test_knn_once_more(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.7, method="knn")
'''

NOT_COUNTED = '''
import pytest
from pytest_transfer import assert_transfer_accuracy_above


def test_unrelated():  # does not use pytest-transfer: pytest's own business
    assert 1 == 2


@pytest.mark.xfail(reason="known")
@pytest.mark.transfer(model="brokenstore:resnet", dataset="blobs")
def test_expected_to_fail(pretrained_model):
    pass


@pytest.mark.transfer(model="tiny", dataset="blobs")
def test_gate_fails_then_body(pretrained_model, target_dataset):  # the failing gate already names it
    try:
        assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.999, method="direct")
    finally:
        raise RuntimeError("after the gate")
'''

#: fault -> (test, outcomes, phase, outcome, a piece of the reason)
FAULTS = {
    "loader": ("test_loader", {"errors": 1}, "setup", "error",
               "pytest-transfer: cannot load model 'brokenstore:resnet': RuntimeError: store 'resnet' is offline"
               "\\x1b[31m"),
    "missing_file": ("test_missing_file", {"errors": 1}, "setup", "error", "data/missing"),
    "body": ("test_body", {"failed": 1}, "call", "failed", "ValueError: the preprocessing changed"),
    "gate": ("test_gate_raises", {"failed": 1}, "call", "failed", "RuntimeError: store 'x' is offline"),
}


@pytest.fixture
def project(pytester, monkeypatch):
    for key in ("GITHUB_STEP_SUMMARY", "GITHUB_WORKSPACE", "GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".toml", pyproject=pytester_pyproject())
    (pytester.path / "errtests").mkdir()
    (pytester.path / "errtests" / "test_errors.py").write_text(ERRTESTS)
    (pytester.path / "errtests" / "test_clean.py").write_text(CLEAN)
    (pytester.path / "errtests" / "test_not_counted.py").write_text(NOT_COUNTED)
    return pytester


def _combine(*args):
    return transfer_main(["combine", *map(str, args)])


def _load(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_session_that_errors_before_any_gate_fails_its_report_and_the_combined_verdict(project, fault, capsys):
    test, outcomes, phase, outcome, why = FAULTS[fault]
    result = project.runpytest(f"errtests/test_errors.py::{test}", "--transfer-report=reports/err.json")
    result.assert_outcomes(**outcomes)
    doc = _load(project.path / "reports" / "err.json")
    assert doc["version"] == 2
    assert doc["summary"] == {"measurements": 0, "passed": 0, "failed": 0, "tests": 1, "errors": 1,
                              "baselines": {"created": 0, "updated": 0, "unchanged": 0}}
    [entry] = doc["errors"]
    assert entry["test"] == f"errtests/test_errors.py::{test}"
    assert (entry["phase"], entry["outcome"]) == (phase, outcome)
    assert why in entry["reason"] and "\n" not in entry["reason"] and "\x1b" not in entry["reason"]
    how = "ERROR at setup" if phase == "setup" else "FAILED in call"
    result.stdout.fnmatch_lines(["*= pytest-transfer summary =*", "1 test error(s) (tests of pytest-transfer that "
                                 "did not pass with no failing gate):", f"  {how}: errtests/test_errors.py::{test}: *",
                                 "0 gate(s), 0 failed, 1 test error(s); *"])
    capsys.readouterr()
    assert _combine(project.path / "reports" / "err.json") == 1
    out = capsys.readouterr().out
    assert f"  {how}: errtests/test_errors.py::{test}: " in out
    assert "FAILED: 0 gate(s) of 1 test(s) from 1 shard report(s), 0 failed, 1 test error(s)" in out


def test_a_clean_session_has_no_test_error_and_passes_the_combined_verdict(project, capsys):
    result = project.runpytest("errtests/test_clean.py", "--transfer-report=clean.json",
                               "--transfer-openmetrics=clean.txt", "--transfer-html=clean.html")
    result.assert_outcomes(passed=3)
    doc = _load(project.path / "clean.json")
    assert doc["errors"] == [] and doc["summary"]["errors"] == 0 and doc["summary"]["tests"] == 3
    assert "test error" not in result.stdout.str()
    result.stdout.fnmatch_lines(["3 gate(s), 0 failed; intervals are *"])
    assert "transfer_test_errors 0" in (project.path / "clean.txt").read_text()
    assert "Tests that did not pass" not in (project.path / "clean.html").read_text()
    capsys.readouterr()
    assert _combine(project.path / "clean.json") == 0
    assert "PASSED: 3 gate(s) of 3 test(s) from 1 shard report(s), 0 failed" in capsys.readouterr().out


def test_a_mixed_session_lists_its_error_in_every_report(project, monkeypatch):
    summary = project.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = project.runpytest("errtests/test_clean.py", "errtests/test_errors.py::test_missing_file",
                               "errtests/test_not_counted.py", "--transfer-report=reports/mixed.json",
                               "--transfer-html=reports/mixed.html", "--transfer-openmetrics=reports/mixed.txt",
                               "--junitxml=reports/junit.xml")
    result.assert_outcomes(passed=3, failed=2, errors=1, xfailed=1)
    doc = _load(project.path / "reports" / "mixed.json")
    assert [(e["test"].split("::")[-1], e["phase"]) for e in doc["errors"]] == [("test_missing_file", "setup")]
    assert doc["summary"]["errors"] == 1 and doc["summary"]["failed"] == 1 and doc["summary"]["measurements"] == 4
    result.stdout.fnmatch_lines(["4 gate(s), 1 failed, 1 test error(s); *"])

    page = (project.path / "reports" / "mixed.html").read_text()
    assert "<title>pytest-transfer report – 1 failed, 1 test error(s)</title>" in page
    assert re.search(r'<div class="card bad"><b>1</b><span>test errors</span>', page)
    errors_at, measurements_at = page.index("Tests that did not pass with no failing gate (1)"), page.index(
        "<h2>Measurements</h2>")
    assert errors_at < measurements_at  # the errors first, in red rows
    assert re.findall(r'<tr class="(failed error)">', page) == ["failed error"]
    assert "test_errors.py::<wbr>test_missing_file" in page

    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families((project.path / "reports" / "mixed.txt").read_text())}
    assert families["transfer_test_errors"].samples[0].value == 1

    markdown = summary.read_text()
    assert "## pytest-transfer: 4 gate(s), 1 failed, 1 test error(s) ❌" in markdown
    assert re.search(r"^\| ❌ ERROR \| setup \| `test_errors.py::test_missing_file` \| .*data/missing", markdown,
                     flags=re.M)
    annotations = [line for line in result.outlines if line.startswith("::error")]
    assert any("title=pytest-transfer%3A test error at setup" in a and "test_errors.py,line=" in a
               for a in annotations)

    cases = {c.get("name"): c for c in ET.parse(project.path / "reports" / "junit.xml").getroot().iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["test_missing_file"].iter("property")}
    assert json.loads(props["pytest_transfer.error"])["phase"] == "setup"
    others = [c for name, c in cases.items() if name != "test_missing_file"]
    assert not any(p.get("name") == "pytest_transfer.error" for c in others for p in c.iter("property"))


def test_a_teardown_error_and_a_strict_xpass_are_test_errors_an_xfail_is_not(project):
    project.makepyfile(test_phases='''
        import pytest

        @pytest.fixture
        def broken_teardown():
            yield
            raise OSError("cleanup failed")

        @pytest.mark.transfer(model="tiny", dataset="blobs")
        def test_teardown(broken_teardown):
            pass

        @pytest.mark.xfail(strict=True)
        @pytest.mark.transfer(model="tiny", dataset="blobs")
        def test_strict_xpass():
            pass

        @pytest.mark.xfail
        @pytest.mark.transfer(model="tiny", dataset="blobs")
        def test_xfail():
            raise RuntimeError("known")
    ''')
    result = project.runpytest("test_phases.py", "--transfer-report=phases.json")
    result.assert_outcomes(passed=1, errors=1, failed=1, xfailed=1)
    errors = _load(project.path / "phases.json")["errors"]
    assert [(e["test"], e["phase"], e["outcome"], e["reason"]) for e in errors] == [
        ("test_phases.py::test_teardown", "teardown", "error", "OSError: cleanup failed"),
        ("test_phases.py::test_strict_xpass", "call", "failed", "[XPASS(strict)]")]


def test_under_xdist_each_error_reaches_the_controller_once(project):
    pytest.importorskip("xdist")
    result = project.runpytest_subprocess("errtests/test_errors.py", "-n", "2", "--transfer-report=x.json")
    result.assert_outcomes(errors=2, failed=2)
    doc = _load(project.path / "x.json")
    assert [e["test"].split("::")[-1] for e in doc["errors"]] == ["test_loader", "test_missing_file", "test_body",
                                                                  "test_gate_raises"]  # collection order


def test_combine_fails_when_one_shard_errored_and_reads_reports_from_before(project, capsys):
    project.runpytest("errtests/test_clean.py", "--transfer-report=shard-1.json").assert_outcomes(passed=3)
    project.runpytest("errtests/test_errors.py::test_loader", "errtests/test_errors.py::test_body",
                      "--transfer-report=shard-2.json").assert_outcomes(errors=1, failed=1)
    capsys.readouterr()
    assert _combine(project.path / "shard-1.json", project.path / "shard-2.json", "--report",
                    project.path / "all.json", "--github-summary", project.path / "s.md") == 1
    out = capsys.readouterr().out
    assert "FAILED: 3 gate(s) of 5 test(s) from 2 shard report(s), 0 failed, 2 test error(s)" in out
    merged = _load(project.path / "all.json")
    assert [(e["test"].split("::")[-1], e["phase"]) for e in merged["errors"]] == [("test_loader", "setup"),
                                                                                   ("test_body", "call")]
    assert [s["errors"] for s in merged["shards"]] == [0, 2]
    assert "`shard-2.json` 0 gate(s), 0 failed, 2 test error(s)" in (project.path / "s.md").read_text()

    old = _load(project.path / "shard-1.json")  # as a pytest-transfer from before the errors section wrote it
    old["version"] = 1
    del old["errors"], old["summary"]["errors"]
    (project.path / "old.json").write_text(json.dumps(old))
    assert _combine(project.path / "old.json") == 0
    assert _combine(project.path / "old.json", project.path / "shard-2.json") == 1
    damaged = _load(project.path / "shard-2.json")
    damaged["errors"][0].pop("reason")
    (project.path / "damaged.json").write_text(json.dumps(damaged))
    capsys.readouterr()
    assert _combine(project.path / "damaged.json") == 2
    assert "damaged.json: errors[0] lacks reason" in capsys.readouterr().err


def test_a_module_that_cannot_be_collected_is_a_test_error_listed_once_across_shards(project, capsys):
    (project.path / "errtests" / "test_broken.py").write_text("import not_a_module_anywhere\n")
    for shard in (1, 2):
        project.runpytest("errtests/test_broken.py", f"--transfer-report=c{shard}.json")
    doc = _load(project.path / "c1.json")
    assert [(e["test"], e["phase"]) for e in doc["errors"]] == [("errtests/test_broken.py", "collect")]
    assert "not_a_module_anywhere" in doc["errors"][0]["reason"]
    capsys.readouterr()
    assert _combine(project.path / "c1.json", project.path / "c2.json", "--report", project.path / "c.json") == 1
    assert len(_load(project.path / "c.json")["errors"]) == 1  # every shard collects every file: no overlap


def test_suggestions_and_unused_tables_do_not_misread_a_run_with_test_errors(project):
    (project.path / "pyproject.toml").write_text(pytester_pyproject(tables=(
        '[tool.pytest_transfer.thresholds."tinny"."blobs"]\nknn_accuracy = 0.5\n')))
    errors_file = project.path / "errtests" / "test_errors.py"
    (project.path / "errtests" / "test_not_counted.py").unlink()
    errors_file.unlink()
    clean = project.runpytest()  # the whole suite, no error: the misspelt table is named
    clean.stdout.fnmatch_lines(["*thresholds never used*tinny*"])
    errors_file.write_text(ERRTESTS)
    marked_only = project.runpytest("-k", "not gate_raises")  # errors of tests whose marker names their pair
    marked_only.assert_outcomes(passed=3, errors=2, failed=1)
    marked_only.stdout.fnmatch_lines(["*thresholds never used*tinny*"])
    result = project.runpytest("--transfer-suggest-thresholds=suggested.toml")
    result.assert_outcomes(passed=3, errors=2, failed=2)
    assert "thresholds never used" not in result.stdout.str()  # a test stopped before looking thresholds up
    result.stdout.fnmatch_lines(["pytest-transfer: thresholds not suggested for the gates of 4 test(s) that did not "
                                 "pass with no failing gate *"])


def test_a_worker_that_dies_is_a_test_error(project, capsys):
    """pytest-xdist makes the report of a test whose worker died on the controller, without the test's
    properties: it is still a test error, and the combined verdict fails (it passed)."""
    pytest.importorskip("xdist")
    project.makepyfile(test_dies='''
        import os

        def test_dies():
            os._exit(3)
    ''')
    result = project.runpytest_subprocess("test_dies.py", "-n", "2", "--transfer-report=dies.json")
    errors = json.loads((project.path / "dies.json").read_text())["errors"]
    assert [(e["test"], e["phase"]) for e in errors] == [("test_dies.py::test_dies", "crash")], result.stdout.str()
    assert transfer_main(["combine", str(project.path / "dies.json")]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_reasons_name_a_missing_fixture_and_keep_a_leading_e():
    from types import SimpleNamespace

    from pytest_transfer.report.errors import reason

    missing = SimpleNamespace(longrepr=SimpleNamespace(errorstring="fixture 'pretrained_modle' not found",
                                                       reprcrash=None))
    assert reason(missing) == "fixture 'pretrained_modle' not found"  # was the test's file:line
    assert reason(SimpleNamespace(longrepr="Traceback...\nE   Empty parameter set")) == "Empty parameter set"
    assert reason(SimpleNamespace(longrepr="ERROR: file not found")) == "ERROR: file not found"  # was "RROR: ..."
