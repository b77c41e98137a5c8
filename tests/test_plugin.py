"""The pytest face, tested through pytester: options, config, marker, fixtures, hooks, summary."""

from __future__ import annotations

import re

import pytest

from tests._helpers import BLOBS_CONFTEST

CONFTEST = BLOBS_CONFTEST

PYPROJECT = '''
[tool.pytest.ini_options]
addopts = "-p no:cacheprovider"

[tool.pytest_transfer]
device = "cpu"
no_cache = true

[tool.pytest_transfer.thresholds."tiny"."blobs"]
transfer_accuracy = 0.5
'''


@pytest.fixture
def project(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".toml", pyproject=PYPROJECT)
    return pytester


def test_options_are_listed_with_defaults_and_keys(pytester):
    result = pytester.runpytest("--help")
    for flag in ("--transfer-device", "--transfer-seed", "--transfer-cache-dir", "--transfer-no-cache",
                 "--transfer-report", "--transfer-html", "--transfer-update-baselines", "--transfer-confidence"):
        result.stdout.fnmatch_lines([f"*{flag}*"])
    result.stdout.fnmatch_lines(["*pytest-transfer*", "*(default: auto; [[]tool.pytest_transfer] device; env*"])


def test_bad_option_value_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--transfer-device=tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown device 'tpu'; valid: auto, cpu, cuda, cuda:N or mps*"])


def test_passing_and_failing_gates_and_the_summary_table(project):
    project.makepyfile(test_gates='''
        import pytest
        from pytest_transfer import assert_transfer_accuracy_above

        @pytest.mark.transfer(model="tiny", dataset="blobs")
        def test_passes(pretrained_model, target_dataset):
            assert_transfer_accuracy_above(pretrained_model, target_dataset)

        @pytest.mark.transfer(model="tiny", dataset="blobs")
        def test_fails(pretrained_model, target_dataset):
            assert_transfer_accuracy_above(pretrained_model, target_dataset, 1.0, confidence="strict")
    ''')
    result = project.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*AssertionError: Transfer accuracy (linear_probe) of model 'tiny' on dataset 'blobs' is *below the minimum*",
        "*threshold from: argument threshold=*",
        "*= pytest-transfer summary =*",
        "test*model*dataset*metric*value [[]interval]*threshold*result",
        "test_gates.py::test_passes*tiny*blobs*linear_probe_accuracy*>= 0.5 *PASS",
        "test_gates.py::test_fails*tiny*blobs*linear_probe_accuracy*>= 1 *FAIL",
        "2 gate(s), 1 failed*",
    ])
    # the threshold of the passing gate came from pyproject.toml
    assert "threshold from: pyproject.toml" not in result.stdout.str()


def test_threshold_source_from_pyproject_is_named(project):
    project.makepyfile('''
        import pytest
        from pytest_transfer import assert_transfer_accuracy_above

        @pytest.mark.transfer(model="tiny-b", dataset="blobs")
        def test_missing(pretrained_model, target_dataset):
            assert_transfer_accuracy_above(pretrained_model, target_dataset)
    ''')
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*LookupError: no threshold for 'linear_probe_accuracy' on model 'tiny-b'*"])


def test_marker_lists_parametrise_over_models_and_datasets(project):
    project.makepyfile('''
        import pytest

        @pytest.mark.transfer(model=["tiny", "tiny-b"], dataset=["blobs", "blobs-2"])
        def test_pair(pretrained_model, target_dataset):
            assert pretrained_model.name in ("tiny", "tiny-b")
            assert target_dataset.name in ("blobs", "blobs-2")
    ''')
    result = project.runpytest("-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_pair[[]tiny-blobs]*PASSED*", "*test_pair[[]tiny-b-blobs-2]*PASSED*"])


def test_indirect_parametrisation(project):
    project.makepyfile('''
        import pytest

        @pytest.mark.parametrize("pretrained_model", ["tiny", "tiny-b"], indirect=True)
        @pytest.mark.parametrize("target_dataset", ["blobs"], indirect=True)
        def test_pair(pretrained_model, target_dataset):
            assert target_dataset.name == "blobs"
    ''')
    project.runpytest().assert_outcomes(passed=2)


def test_models_are_loaded_once_per_session(project):
    project.makepyfile('''
        import pytest

        SEEN = []

        @pytest.mark.parametrize("i", range(3))
        @pytest.mark.transfer(model="tiny", dataset="blobs")
        def test_same(pretrained_model, target_dataset, i):
            SEEN.append(id(pretrained_model))
            assert len(set(SEEN)) == 1
    ''')
    project.runpytest().assert_outcomes(passed=3)


def test_fixture_without_a_model_says_how_to_give_one(project):
    project.makepyfile('''
        def test_nothing(pretrained_model):
            pass
    ''')
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_nothing*",
                                 '*::test_nothing: the pretrained_model fixture needs a model: mark the test with '
                                 '@pytest.mark.transfer(model="...") or parametrize pretrained_model indirectly',
                                 "*short test summary info*"])
    assert "plugin.py" not in result.stdout.str()  # the one line, no traceback through the plugin


def test_unknown_marker_keyword_is_a_usage_error(project):
    project.makepyfile('''
        import pytest

        @pytest.mark.transfer(modle="tiny")
        def test_typo(pretrained_model):
            pass
    ''')
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED  # reported as a collection error of that test
    result.stdout.fnmatch_lines([
        "*ERROR collecting*",
        "*::test_typo: @pytest.mark.transfer got unknown keyword(s) modle (did you mean model?); "
        "valid: model, dataset, model_kwargs, dataset_kwargs",
        "*short test summary info*",
    ])
    # the one clear line, without the plugin's (or pluggy's) traceback
    # up to the next section: pytest may add a warnings summary of its own (assertion rewriting, editable installs)
    errors = re.split(r"=+ (?:warnings summary|short test summary info) =+",
                      result.stdout.str().split("ERROR collecting", 1)[1])[0]
    assert len(errors.strip().splitlines()) == 2  # the rest of the title, then the message
    assert "pluggy" not in errors and "plugin.py" not in errors and "Traceback" not in errors


def test_marker_kwargs_reach_the_factories(project):
    project.makepyfile('''
        import pytest

        @pytest.mark.transfer(model="tiny", dataset="blobs", model_kwargs={"n_classes": 7})
        def test_kwargs(pretrained_model):
            assert pretrained_model.num_classes == 7
    ''')
    project.runpytest().assert_outcomes(passed=1)


def test_unknown_registered_name_lists_the_known_ones(project):
    project.makepyfile('''
        import pytest

        @pytest.mark.transfer(model="tiny-c", dataset="blobs")
        def test_x(pretrained_model):
            pass
    ''')
    result = project.runpytest()
    result.stdout.fnmatch_lines(["*unknown model spec 'tiny-c'*registered name (tiny, tiny-b)*"])


def test_duplicate_registration_is_refused(project):
    project.makepyfile(otherplugin='''
        def pytest_transfer_register_models(registry):
            registry.register("tiny", lambda: None)
    ''')
    project.syspathinsert()
    project.makepyfile('''
        import pytest

        @pytest.mark.transfer(model="tiny", dataset="blobs")
        def test_x(pretrained_model):
            pass
    ''')
    result = project.runpytest("-p", "otherplugin")
    result.stdout.fnmatch_lines(["*model 'tiny' is already registered by conftest (*conftest.py); registered again by "
                                 "otherplugin (*otherplugin.py)*"])


def test_settings_from_pyproject_and_cli(project):
    project.makepyfile('''
        from pytest_transfer.context import current_context

        def test_settings(transfer_device):
            ctx = current_context()
            assert str(transfer_device) == "cpu"
            assert ctx.settings.seed == 11
            assert ctx.settings.no_cache is True
    ''')
    project.runpytest("--transfer-seed=11").assert_outcomes(passed=1)


def test_hooks_from_an_installed_plugin_entry_point(pytester, monkeypatch):
    """A separate distribution exposing a pytest11 entry point registers a model and a dataset."""
    pytester.makefile(".toml", pyproject=PYPROJECT)
    site = pytester.mkdir("site")
    (site / "zooplugin.py").write_text(CONFTEST)
    dist = site / "zooplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zooplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pytest11]\nzoo = zooplugin\n")
    pytester.makepyfile('''
        import pytest
        from pytest_transfer import assert_transfer_accuracy_above

        @pytest.mark.transfer(model="tiny", dataset="blobs")
        def test_from_plugin(pretrained_model, target_dataset):
            assert_transfer_accuracy_above(pretrained_model, target_dataset)
    ''')
    monkeypatch.setenv("PYTHONPATH", str(site))
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


def test_threshold_hook_supplies_a_threshold(project):
    project.makeconftest(CONFTEST + '''

def pytest_transfer_threshold(model, dataset, metric):
    if model == "tiny-b" and metric == "transfer_accuracy":
        return 0.99
''')
    project.makepyfile('''
        import pytest
        from pytest_transfer import assert_transfer_accuracy_above

        @pytest.mark.transfer(model="tiny-b", dataset="blobs")
        def test_hook(pretrained_model, target_dataset):
            result = assert_transfer_accuracy_above(pretrained_model, target_dataset)
            assert result.threshold == 0.99
            assert result.threshold_source.startswith("pytest_transfer_threshold hook")
    ''')
    project.runpytest().assert_outcomes(passed=1)
