"""Where reviewers look: GitHub job summaries and annotations, OpenMetrics for GitLab, pytest-html extras,
the terminal table, and the notes at the end of the session."""

from __future__ import annotations

import json
import re

import pytest

from tests.test_reports import CONFTEST, PYPROJECT

TESTS = '''
import pytest
from pytest_transfer import assert_ranks_above, assert_transfer_accuracy_above, load_model

pytestmark = pytest.mark.transfer(model="pooled", dataset="spots")


def test_accuracy(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.3, method="knn")


def test_fails(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.999, method="knn")


def test_caught(pretrained_model, target_dataset):
    with pytest.raises(AssertionError):
        assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.999, method="knn")
'''

GITHUB_ENV = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "team/repo", "GITHUB_RUN_ID": "42"}


@pytest.fixture
def project(pytester, monkeypatch):
    for key in ("GITHUB_STEP_SUMMARY", "GITHUB_WORKSPACE", *GITHUB_ENV):
        monkeypatch.delenv(key, raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".toml", pyproject=PYPROJECT)
    pytester.makepyfile(test_models=TESTS)
    return pytester


def _rows(markdown: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in markdown.splitlines()
            if line.startswith(f"| {first_cell}")]


def test_github_summary_without_a_baseline_and_the_annotations(project, monkeypatch):
    for key, value in GITHUB_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GITHUB_WORKSPACE", str(project.path.parent))  # the test file is one folder down
    summary = project.path / "step_summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = project.runpytest("--transfer-report=out/report.json")
    result.assert_outcomes(passed=2, failed=1)
    text = summary.read_text()
    assert text.startswith("# earlier step\n## pytest-transfer: 3 gate(s), 2 failed")  # appended, not replaced
    doc = json.loads((project.path / "out/report.json").read_text())
    by_test = {r["test"].split("::")[-1]: r for r in doc["measurements"]}
    rows = _rows(text, "✅") + _rows(text, "❌")
    assert len(rows) == 3
    for cells in rows:
        r = by_test[cells[1].strip("`").split("::")[-1]]
        lo, hi = r["interval"]
        assert cells[0] == ("✅ PASS" if r["outcome"] == "passed" else "❌ FAIL")
        assert cells[2:5] == ["pooled", "spots", "knn_accuracy"]
        assert cells[5] == f"{r['value']:.4f} [{lo:.4f}, {hi:.4f}]" and cells[7] == "argument threshold="
    assert "| result | test | model | dataset | metric | value [95% interval] | threshold | threshold from |" in text
    assert "No stored baseline was compared in this run" in text
    assert ("[JSON report](https://github.com/team/repo/actions/runs/42#artifacts) (`report.json` in the run's "
            "artifacts)") in text
    # one annotation per failing gate, at the failing line of a failed test, a warning where the test passed
    folder = project.path.name
    source = (project.path / "test_models.py").read_text().splitlines()
    failing_line = next(i for i, line in enumerate(source, 1) if "0.999" in line)
    caught_def = next(i for i, line in enumerate(source, 1) if line.startswith("def test_caught"))
    out = result.stdout.str()
    error = re.findall(r"^::error file=(.*?),line=(\d+),title=(.*?)::(.*)$", out, flags=re.M)
    warning = re.findall(r"^::warning file=(.*?),line=(\d+),title=.*?::(.*)$", out, flags=re.M)
    assert len(error) == 1 and len(warning) == 1
    title = "pytest-transfer%3A knn_accuracy gate failed"
    assert error[0][:3] == (f"{folder}/test_models.py", str(failing_line), title)
    assert error[0][3].startswith(f"knn_accuracy of pooled on spots is {by_test['test_fails']['value']:.4f} [")
    assert "threshold >= 0.999 (from argument threshold=); test test_models.py::test_fails" in error[0][3]
    assert warning[0][:2] == (f"{folder}/test_models.py", str(caught_def))  # the def line: the test passed
    assert f"pytest-transfer: GitHub job summary written to {summary}" in out


def test_a_session_without_gates_adds_nothing_to_the_job_summary(project, monkeypatch):
    summary = project.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    project.makepyfile(test_models="def test_plain():\n    assert True\n")
    result = project.runpytest()
    result.assert_outcomes(passed=1)
    assert not summary.exists() and "GitHub job summary" not in result.stdout.str()


def test_github_summary_option_and_the_change_against_a_stored_baseline(project):
    project.makepyfile(test_models='''
        import pytest

        @pytest.mark.transfer(model="pooled", dataset="spots")
        def test_no_regression(transfer_baseline, pretrained_model, target_dataset):
            transfer_baseline(pretrained_model, target_dataset, metrics=["accuracy"], method="knn")
    ''')
    project.runpytest("--transfer-update-baselines", "--transfer-github-summary=first.md").assert_outcomes(passed=1)
    first = (project.path / "first.md").read_text()
    assert "- new baseline `__transfer_baselines__/test_models/test_no_regression--pooled--spots" in first
    result = project.runpytest("--transfer-github-summary=gh/second.md")
    result.assert_outcomes(passed=1)
    text = (project.path / "gh" / "second.md").read_text()
    assert "### Change against the stored baselines" in text and "No stored baseline" not in text
    assert "| result | test | model" not in text.split("### Change")[0]  # no gate table: only a comparison ran
    (row,) = _rows(text, "✅")
    stored = json.loads(next((project.path / "__transfer_baselines__" / "test_models").glob("*.json")).read_text())
    accuracy = stored["metrics"]["accuracy"]
    assert row[1:5] == ["`test_models.py::test_no_regression`", "pooled", "spots", "accuracy"]
    assert row[5] == row[6] == f"{accuracy:.4f}"  # the same model on the same data: baseline = now
    assert row[7].startswith("+0.0000 [")
    assert row[9].startswith("`__transfer_baselines__/test_models/test_no_regression--pooled--spots")
    assert not re.search(r"^::(error|warning)", result.stdout.str(), flags=re.M)  # nothing failed


def test_openmetrics_file_is_read_by_a_real_parser(project):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    project.makeconftest(CONFTEST + '''
def pytest_transfer_register_models(registry):
    registry.register("pooled", make_net)
    registry.register("other", lambda: make_net()[:2].append(__import__("torch").nn.Linear(16, 3)))
''')
    project.makepyfile(test_rank='''
        import pytest
        from pytest_transfer import assert_ranks_above

        @pytest.mark.transfer(model="pooled", dataset="spots")
        def test_rank(pretrained_model, target_dataset):
            for margin in (-1.0, -2.0):
                assert_ranks_above(pretrained_model, "other", target_dataset, metric="knn_accuracy", margin=margin)
    ''')
    result = project.runpytest("--transfer-openmetrics=metrics.txt", "--transfer-report=report.json")
    result.assert_outcomes(passed=3, failed=1)
    text = (project.path / "metrics.txt").read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    doc = json.loads((project.path / "report.json").read_text())
    assert {f.type for f in families.values()} == {"gauge"}
    knn = {s.labels["test"].split("::")[-1]: s for s in families["transfer_knn_accuracy"].samples}
    for r in doc["measurements"]:
        if r["metric"] == "knn_accuracy":
            sample = knn[r["test"].split("::")[-1]]
            assert sample.value == r["value"] and sample.labels == {"test": r["test"], "model": "pooled",
                                                                    "dataset": "spots"}
    leads = families["transfer_knn_accuracy_lead"].samples
    assert [s.labels.get("occurrence") for s in leads] == [None, "2"]  # the same gate twice: still unique
    assert all(s.labels["vs"] == "other" for s in leads) and leads[0].value == leads[1].value
    passed = {(s.labels["test"].split("::")[-1], s.labels["metric"]): s.value
              for s in families["transfer_gate_passed"].samples}
    assert passed[("test_fails", "knn_accuracy")] == 0 and passed[("test_accuracy", "knn_accuracy")] == 1
    assert families["transfer_gates"].samples[0].value == len(doc["measurements"]) == 5
    assert families["transfer_gates_failed"].samples[0].value == doc["summary"]["failed"] == 2
    assert text.endswith("# EOF\n")


def test_pytest_html_rows_carry_the_measurement_table(project):
    result = project.runpytest("--html=page.html", "--self-contained-html")
    result.assert_outcomes(passed=2, failed=1)
    page = (project.path / "page.html").read_text()
    blob = re.search(r'data-jsonblob="([^"]*)"', page).group(1)
    import html

    data = json.loads(html.unescape(blob))
    extras = {t["testId"].split("::")[-1]: [e for e in t["extras"] if e["format_type"] == "html"]
              for tests in data["tests"].values() for t in tests if t.get("extras")}
    assert set(extras) == {"test_accuracy", "test_fails", "test_caught"}
    for name, (extra, *_) in extras.items():
        assert 'class="pytest-transfer-measurements"' in extra["content"]
        assert "knn_accuracy" in extra["content"] and ("FAIL" in extra["content"]) == (name != "test_accuracy")


def test_without_html_nothing_of_the_extras_is_imported(project):
    project.makeconftest(CONFTEST + '''
def pytest_sessionfinish(session):
    import sys
    open("imported.txt", "w").write(" ".join(m for m in ("pytest_transfer.report.html_extras", "matplotlib")
                                             if m in sys.modules))
''')
    project.runpytest_subprocess("-k", "test_accuracy").assert_outcomes(passed=1)
    assert (project.path / "imported.txt").read_text() == ""


def test_a_thresholds_table_that_matched_nothing_is_reported(project):
    project.makefile(".toml", pyproject=PYPROJECT + '''
[tool.pytest_transfer.thresholds."pooled"."spot"]
knn_accuracy = 0.5
''')
    result = project.runpytest("-k", "test_accuracy")
    result.stdout.fnmatch_lines(['pytest-transfer: thresholds never used (*): '
                                 '[[]tool.pytest_transfer.thresholds."pooled"."spot"] in pyproject.toml'])
    assert '"pooled"."*"' not in result.stdout.str().split("thresholds never used")[1]  # that one matched


def test_tables_of_deselected_tests_are_not_reported_unused(project):
    project.makefile(".toml", pyproject=PYPROJECT + '''
[tool.pytest_transfer.thresholds."other-model"."spots"]
knn_accuracy = 0.5
''')
    project.makepyfile(test_other='''
import pytest

@pytest.mark.transfer(model=["other-model", "third"], dataset="spots")
def test_other(pretrained_model):
    pass
''')
    result = project.runpytest("-k", "test_accuracy")
    result.assert_outcomes(passed=1)
    assert "never used" not in result.stdout.str()  # test_other names it, though -k did not select it


def test_a_session_of_some_files_names_no_table(project):
    """Tests in files this session did not collect may use any table: only a session that collected the whole
    suite names unused ones (every kind of run: tests/test_files_reports.py)."""
    project.makefile(".toml", pyproject=PYPROJECT + """
[tool.pytest_transfer.thresholds."pooled"."spotz"]
knn_accuracy = 0.5
""")
    project.makepyfile(test_b="def test_b():\n    pass\n")
    some = project.runpytest("test_models.py", "-k", "test_accuracy")  # test_b.py is not collected
    some.assert_outcomes(passed=1)
    assert "never used" not in some.stdout.str()
    everything = project.runpytest("-k", "test_accuracy or test_b")
    everything.assert_outcomes(passed=2)
    everything.stdout.fnmatch_lines(['pytest-transfer: thresholds never used (*matched no test of the suite*): '
                                     '*"pooled"."spotz"*'])


def test_a_misspelt_table_is_named_when_its_gate_finds_no_threshold(project):
    project.makefile(".toml", pyproject=PYPROJECT + '''
[tool.pytest_transfer.thresholds."pooled"."spot"]
f1 = 0.5
''')
    project.makepyfile(test_f1='''
import pytest
from pytest_transfer import assert_f1_above

@pytest.mark.transfer(model="pooled", dataset="spots")
def test_f1(pretrained_model, target_dataset):
    assert_f1_above(pretrained_model, target_dataset, method="knn")
''')
    result = project.runpytest("-k", "test_f1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*LookupError: no threshold for 'f1'*a table spelt close to it exists: "
                                 '[[]tool.pytest_transfer.thresholds."pooled"."spot"]*',
                                 'pytest-transfer: thresholds never used (*): '
                                 '[[]tool.pytest_transfer.thresholds."pooled"."spot"] in pyproject.toml'])


# --------------------------------------------------------------------------- the terminal table

def _measurement(test, *, gate="transfer_accuracy", model="resnet18", dataset="digits", details=None, **kw):
    from pytest_transfer.context import Measurement

    return Measurement(gate=gate, metric="linear_probe_accuracy", value=0.9, model=model, dataset=dataset,
                       threshold=0.8, test=test, details=details or {}, **kw)


def test_thresholds_are_shown_as_configured_and_values_on_their_side():
    """0.99999 is not shown as 1.0000, and 0.999985 against it is not rounded up past it."""
    from dataclasses import replace

    from pytest_transfer.report.github import gate_table
    from pytest_transfer.report.json import entry
    from pytest_transfer.report.terminal import format_table

    m = replace(_measurement("t.py::test_x", passed=False), value=0.999985, threshold=0.99999,
                interval=(0.99997, 0.99999))
    row = format_table([m])[-1]
    assert ">= 0.99999 " in row and "0.999985 [0.99997, 0.99999]" in row and "1.0000" not in row
    markdown = "\n".join(gate_table([entry(m.to_dict())], level=95))
    assert "| >= 0.99999 |" in markdown and "0.999985 [0.99997, 0.99999]" in markdown


def test_long_test_ids_wrap_instead_of_being_cut():
    from pytest_transfer.report.terminal import format_table

    long_id = "tests/deep/test_module.py::test_" + "a_very_long_name_" * 3 + "[resnet18-digits]"
    short = "tests/test_b.py::test_short"
    both = [_measurement(long_id), _measurement(short)]
    # room for the test column: one flat table, the long id continued on the lines below its row
    lines = format_table(both, max_width=125)
    assert all(len(line) <= 125 for line in lines) and not any("…" in line for line in lines)
    width = lines[1].index("  ")
    cells = [line[:width].strip() for line in lines[2:]]
    shown = long_id.removeprefix("tests/")  # the folder every test shares is dropped, the one that differs kept
    assert "".join(cells[:-1]) == shown and cells[-1] == "test_b.py::test_short"
    assert lines[2].endswith("PASS") and not lines[3].endswith("PASS")  # the other cells are on the first line
    # no room: each test id is a heading line, whole, above its rows
    lines = format_table(both, max_width=100)
    assert lines[0] == "test" and lines[3] == shown and lines[5] == "test_b.py::test_short"
    assert re.fullmatch(r"  resnet18 +digits +linear_probe_accuracy +0.9000 +>= 0.8 +PASS", lines[4])
    assert all(len(line) <= 100 for line in lines[4:]) and not any("…" in line for line in lines)
    # an id longer than the line is wrapped, every character kept
    lines = format_table([_measurement(long_id)], max_width=60)
    heading = [line for line in lines[3:] if not line.startswith("  ")]
    assert len(heading) > 1 and "".join(heading) == long_id.split("/")[-1] and all(len(h) <= 60 for h in heading)


def test_test_ids_keep_the_folders_that_tell_them_apart():
    from pytest_transfer.report.terminal import short_tests

    # one folder: only the file and the test, as before
    assert short_tests(["tests/test_a.py::test_x", "tests/test_b.py::test_y[p/q]"]) == [
        "test_a.py::test_x", "test_b.py::test_y[p/q]"]
    # the same file name in two folders: the folders that differ stay, the shared one goes
    assert short_tests(["tests/unit/test_model.py::test_acc", "tests/integration/test_model.py::test_acc", None]) == [
        "unit/test_model.py::test_acc", "integration/test_model.py::test_acc", "-"]
    # a file in the root folder: every path is kept whole
    assert short_tests(["test_root.py::t", "sub/test_root.py::t"]) == ["test_root.py::t", "sub/test_root.py::t"]


def test_comparison_rows_name_their_counterpart():
    from pytest_transfer.report.terminal import format_table

    lines = format_table([
        _measurement("t.py::test_rank", gate="ranks_above", details={"reference": "random-a"}),
        _measurement("t.py::test_rank", gate="ranks_above", details={"reference": "random-b"}),
        _measurement("t.py::test_shift", gate="shift_max_drop", dataset="shifted", details={"reference": "digits"}),
        _measurement("t.py::test_reg", gate="regression"),
    ])
    assert "resnet18 vs random-a" in lines[2] and "resnet18 vs random-b" in lines[3]
    assert "digits → shifted" in lines[4] and "resnet18 vs baseline" in lines[5]


def test_the_footer_names_the_devices_of_every_worker():
    from pytest_transfer.report.terminal import devices_line

    assert devices_line([_measurement("a", device="cpu")], "auto") == "device: cpu"
    assert devices_line([_measurement("a", device="cuda:1", worker="gw1"),
                         _measurement("b", device="cuda:0", worker="gw0"),
                         _measurement("c", device="cuda:0", worker="gw2")], "auto") == \
        "devices: cuda:0 (gw0, gw2), cuda:1 (gw1)"
    assert devices_line([_measurement("a")], "auto") == "devices: none used (--transfer-device auto)"
