"""What a reviewer sees: report links that work in a job page, HTML test ids that wrap at separators with the
failing rows first, update-baselines rows that say what they wrote, and `pytest --fixtures` with signatures."""

from __future__ import annotations

import inspect
import re

import pytest

from tests._helpers import NOISY_CONFTEST, pytester_pyproject


def _row(test, outcome, **extra):
    return {"test": test, "test_outcome": outcome, "model": "m", "dataset": "d", "gate": "transfer_accuracy",
            "metric": "knn_accuracy", "value": 0.9, "interval": [0.8, 0.95], "threshold": 0.85,
            "threshold_source": "argument threshold=", "comparison": ">=", "confidence": "none",
            "outcome": outcome, "duration_s": 0.1, "device": "cpu", "worker": None, "details": {}, **extra}


def test_summary_links_are_workspace_relative_without_a_run_url(tmp_path):
    from pytest_transfer.report.github import links

    written = [("JSON report", str(tmp_path / "out" / "my report.json")), ("HTML report", str(tmp_path / "r.html"))]
    line = links(written, {"GITHUB_WORKSPACE": str(tmp_path)})[0]
    assert line == "Reports: [JSON report](out/my%20report.json) · [HTML report](r.html)"
    assert str(tmp_path) not in line and "`" not in line


def test_summary_links_go_to_the_run_artifacts_on_github(tmp_path):
    from pytest_transfer.report.github import links

    env = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "7",
           "GITHUB_WORKSPACE": str(tmp_path)}
    line = links([("HTML report", "/home/runner/work/r/r/out/report.html")], env)[0]
    assert line == ("Reports: [HTML report](https://github.com/o/r/actions/runs/7#artifacts) (`report.html` in the "
                    "run's artifacts)")


def test_html_test_ids_wrap_at_separators_and_failing_rows_come_first():
    from pytest_transfer.report.html import CSS, measurement_table

    rows = [_row("tests/models/test_backbone.py::test_a", "passed"),
            _row("tests/data/test_folder.py::test_b[x<y]", "failed"),
            _row("tests/models/test_backbone.py::test_c", "passed")]
    table = measurement_table(rows)
    cells = re.findall(r'<td class="test" title="([^"]*)">(.*?)</td>', table)
    assert [title for title, _ in cells] == ["tests/data/test_folder.py::test_b[x&lt;y]",
                                             "tests/models/test_backbone.py::test_a",
                                             "tests/models/test_backbone.py::test_c"]
    assert cells[0][1] == "data/<wbr>test_folder.py::<wbr>test_b[x&lt;y]"
    assert re.findall(r'<tr class="(\w+)">', table) == ["failed", "passed", "passed"]
    assert "break-all" not in CSS and "td.test{max-width:320px;overflow-wrap:break-word}" in CSS


BASELINE_TEST = '''
import pytest

@pytest.mark.transfer(model="tiny", dataset="blobs")
def test_no_regression(transfer_baseline, pretrained_model, target_dataset):
    transfer_baseline(pretrained_model, target_dataset, metrics=["accuracy"], method="knn")
'''


def test_an_update_run_says_it_wrote_the_baseline_and_what_it_replaced(pytester, monkeypatch):
    pytester.makeconftest(NOISY_CONFTEST)
    pytester.makefile(".toml", pyproject=pytester_pyproject())
    pytester.makepyfile(test_models=BASELINE_TEST)
    pytester.runpytest("--transfer-update-baselines").assert_outcomes(passed=1)
    monkeypatch.setenv("TINY_SEED", "5")  # other weights: other predictions
    result = pytester.runpytest("--transfer-update-baselines", "--transfer-github-summary=s.md",
                                "--transfer-html=r.html")
    result.assert_outcomes(passed=1)
    row = next(line for line in result.stdout.lines if line.startswith("test_models.py::test_no_regression"))
    shown = re.fullmatch(r"test_models\.py::test_no_regression +tiny vs baseline +blobs +accuracy +(\d\.\d{4}) "
                         r"+replaced (\d\.\d{4}) +WROTE", row)
    assert shown is not None, row  # no "accuracy_drop ... PASS" on the comparison with the old file
    now, previous = float(shown[1]), float(shown[2])
    assert previous != now
    summary = (pytester.path / "s.md").read_text()
    assert re.search(r"- baseline `__transfer_baselines__/test_models/test_no_regression--tiny--blobs[^`]*` "
                     rf"rewritten: accuracy {previous:.4f} → {now:.4f} \(tiny on blobs\)", summary)
    page = (pytester.path / "r.html").read_text()
    assert f'<td class="num">replaced {shown[2]}</td>' in page and '<td class="WROTE">WROTE</td>' in page


def test_pytest_fixtures_documents_every_plugin_fixture_with_its_signature(pytester):
    import pytest_transfer.plugin as plugin
    from pytest_transfer.gates.regression import assert_no_regression

    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    out = pytester.runpytest("--fixtures", "-p", "no:cacheprovider").stdout.str()
    section = out.split("fixtures defined from pytest_transfer.plugin")[1].split(" fixtures defined from ")[0]
    entries = dict(re.findall(r"^(\w+)(?: \[session scope\])? -- .*\n((?:    .*\n)+)", section, flags=re.M))
    ours = {name for name, value in vars(plugin).items() if type(value).__name__ == "FixtureFunctionDefinition"}
    assert set(entries) == ours == {"transfer_device", "pretrained_model", "target_dataset", "transfer_baseline"}
    text = {name: " ".join(line.strip() for line in doc.splitlines()) for name, doc in entries.items()}
    assert text["transfer_device"].startswith("``transfer_device -> torch.device``")
    assert text["pretrained_model"].startswith("``pretrained_model -> TransferModel``")
    assert text["target_dataset"].startswith("``target_dataset -> TargetDataset``")
    params = list(inspect.signature(assert_no_regression).parameters.values())
    plain = inspect.Signature([p.replace(annotation=inspect.Parameter.empty) for p in params])
    assert text["transfer_baseline"].startswith(f"``transfer_baseline{plain} -> dict[str, Measurement]``")


@pytest.mark.parametrize("name", ["transfer_device", "pretrained_model", "target_dataset", "transfer_baseline"])
def test_every_fixture_docstring_shows_use(name):
    import pytest_transfer.plugin as plugin

    assert "Example::" in getattr(plugin, name).__doc__
