"""The threshold table: precedence (argument > hook > exact > wildcard), wildcards, a thresholds file, every error."""

from __future__ import annotations

import pytest

from pytest_transfer.thresholds import Threshold, ThresholdTable
from tests._helpers import pytester_pyproject

TABLE = {
    "*": {"*": {"transfer_accuracy": 0.1}, "digits": {"transfer_accuracy": 0.2}},
    "resnet*": {"*": {"transfer_accuracy": 0.3}},
    "resnet18": {"*": {"transfer_accuracy": 0.4}, "digits": {"transfer_accuracy": 0.5}},
    "res*": {"digits": {"transfer_accuracy": 0.6}},
}


@pytest.mark.parametrize(("model", "dataset", "value", "where"), [
    ("resnet18", "digits", 0.5, '"resnet18"."digits"'),  # exact × exact
    ("resnet18", "cifar", 0.4, '"resnet18"."*"'),  # exact model beats any model pattern
    ("resnet50", "digits", 0.3, '"resnet*"."*"'),  # more literal characters in the model pattern win first
    ("resnext", "digits", 0.6, '"res*"."digits"'),  # then an exact dataset beats a dataset pattern
    ("vgg", "digits", 0.2, '"*"."digits"'),
    ("vgg", "cifar", 0.1, '"*"."*"'),
])
def test_most_specific_match_wins(model, dataset, value, where):
    found = ThresholdTable(TABLE).lookup(model, dataset, "transfer_accuracy")
    assert found == Threshold(value, f"pyproject.toml [tool.pytest_transfer.thresholds.{where}] transfer_accuracy")


def test_other_glob_patterns_and_no_match():
    table = ThresholdTable({"vit_?_16": {"cifar[0-9]*": {"f1": 0.7}}})
    assert table.lookup("vit_b_16", "cifar10", "f1").value == 0.7
    assert table.lookup("vit_bb_16", "cifar10", "f1") is None
    assert table.lookup("vit_b_16", "cifar10", "transfer_accuracy") is None


def test_hook_beats_the_table_and_none_defers():
    table = ThresholdTable(TABLE)
    table.providers.append(lambda model, dataset, metric: 0.9 if dataset == "xray" else None)
    assert table.lookup("resnet18", "xray", "transfer_accuracy") == Threshold(
        0.9, "pytest_transfer_threshold hook transfer_accuracy")
    assert table.lookup("resnet18", "digits", "transfer_accuracy").value == 0.5


def test_hook_beats_the_table_across_keys_but_the_argument_beats_both(fresh_context):
    from pytest_transfer.gates.core import find_threshold

    table = ThresholdTable({"m": {"d": {"linear_probe_accuracy": 0.5}}})
    table.providers.append(lambda model, dataset, metric: 0.8 if metric == "transfer_accuracy" else None)
    fresh_context.thresholds = table
    keys = ("linear_probe_accuracy", "transfer_accuracy")
    assert table.require("m", "d", keys, argument="threshold").value == 0.8
    assert find_threshold(fresh_context, 0.3, "threshold", "m", "d", keys) == Threshold(0.3, "argument threshold=")
    table.providers.clear()
    assert table.require("m", "d", keys, argument="threshold").value == 0.5


def test_a_hook_value_is_validated():
    table = ThresholdTable()
    table.providers.append(lambda model, dataset, metric: 1.5)
    with pytest.raises(pytest.UsageError, match=r"pytest_transfer_threshold hook \(model 'm', dataset 'd'\): "
                                                r"transfer_accuracy = 1.5 is outside the metric's range \[0.0, 1.0\]"):
        table.lookup("m", "d", "transfer_accuracy")


@pytest.mark.parametrize(("table", "message"), [
    ({"m": {"d": {"acuracy": 0.9}}},
     r'pyproject.toml \[tool.pytest_transfer.thresholds."m"."d"\]: unknown threshold key \'acuracy\'.* Valid keys: '
     r"attack_min_accuracy, corruption_max_drop"),
    ({"m": {"d": {"linear_probe_acuracy": 0.9}}},
     r"unknown threshold key 'linear_probe_acuracy'; did you mean 'linear_probe_accuracy'\? Valid keys: "),
    ({"m": {"d": {"f1": "high"}}},
     r'pyproject.toml \[tool.pytest_transfer.thresholds."m"."d"\]: f1 = \'high\' is not a number'),
    ({"m": {"d": {"f1": True}}}, r"f1 = True is not a number"),
    ({"m": {"d": {"transfer_accuracy": 1.5}}},
     r'\[tool.pytest_transfer.thresholds."m"."d"\]: transfer_accuracy = 1.5 is outside the metric\'s range '
     r"\[0.0, 1.0\]"),
    ({"m": {"d": {"noise_max_drop": -0.1}}}, r"noise_max_drop = -0.1 is outside the metric's range"),
    ({"m": {"d": {"leep": 0.5}}}, r"leep = 0.5 is outside the metric's range \[-inf, 0.0\]"),
    ({"m": {"d": {"f1": float("nan")}}}, r"f1 = nan is not a finite number"),
    ({"m": {"transfer_accuracy": 0.9}},
     r'\[tool.pytest_transfer.thresholds."m"\] transfer_accuracy: a threshold needs a model and a dataset; write it '
     r'under \[tool.pytest_transfer.thresholds."m"."\*"\]'),
    ({"m": {"d": 3}}, r'\[tool.pytest_transfer.thresholds."m"."d"\]: expected a table of metric = number'),
    ({"m": 0.5}, r'\[tool.pytest_transfer.thresholds."m"\]: expected a table of datasets'),
])
def test_every_bad_entry_is_a_usage_error_naming_file_and_key(table, message):
    with pytest.raises(pytest.UsageError, match=message):
        ThresholdTable(table)


@pytest.mark.parametrize("layout", [
    '[thresholds."m"."d"]\nf1 = 0.7\n',
    '[tool.pytest_transfer.thresholds."m"."d"]\nf1 = 0.7\n',
    '["m"."d"]\nf1 = 0.7\n',
])
def test_a_thresholds_file_in_each_layout(tmp_path, layout):
    path = tmp_path / "gates.toml"
    path.write_text(layout)
    found = ThresholdTable.from_file(path, display="ci/gates.toml").lookup("m", "d", "f1")
    assert found.value == 0.7
    assert found.source.startswith("ci/gates.toml [") and found.source.endswith('"m"."d"] f1')


def test_thresholds_file_errors_name_the_file(tmp_path):
    with pytest.raises(pytest.UsageError, match=r"thresholds file nope.toml .* does not exist or is not a file"):
        ThresholdTable.from_file(tmp_path / "nope.toml", display="nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[thresholds\n")
    with pytest.raises(pytest.UsageError, match=r"bad.toml: not valid TOML"):
        ThresholdTable.from_file(bad)
    bad.write_text('[thresholds."m"."d"]\nf2 = 0.1\n')
    with pytest.raises(pytest.UsageError, match=r'bad.toml \[thresholds."m"."d"\]: unknown threshold key \'f2\''):
        ThresholdTable.from_file(bad)
    bad.write_text('thresholds = 3\n')
    with pytest.raises(pytest.UsageError, match=r"bad.toml \[thresholds\]: expected a table of models"):
        ThresholdTable.from_file(bad)


def test_file_entries_win_and_each_keeps_its_own_source(tmp_path):
    from pytest_transfer.context import build_thresholds
    from pytest_transfer.settings import resolve

    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest_transfer.thresholds."m"."*"]\nf1 = 0.5\ntransfer_accuracy = 0.6\n'
    )
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "gates.toml").write_text('[thresholds."m"."*"]\nf1 = 0.9\n')
    table = build_thresholds(resolve({"thresholds": "ci/gates.toml"}, rootdir=tmp_path, environ={}))
    assert table.lookup("m", "d", "f1") == Threshold(0.9, 'ci/gates.toml [thresholds."m"."*"] f1')
    assert table.lookup("m", "d", "transfer_accuracy") == Threshold(
        0.6, 'pyproject.toml [tool.pytest_transfer.thresholds."m"."*"] transfer_accuracy')


def test_the_thresholds_file_can_be_named_in_pyproject(tmp_path):
    from pytest_transfer.context import build_thresholds
    from pytest_transfer.settings import resolve

    (tmp_path / "pyproject.toml").write_text('[tool.pytest_transfer]\nthresholds = "gates.toml"\n')
    (tmp_path / "gates.toml").write_text('[thresholds."*"."*"]\nf1 = 0.9\n')
    settings = resolve(rootdir=tmp_path, environ={})
    assert settings.thresholds == "gates.toml"
    assert build_thresholds(settings).lookup("m", "d", "f1").value == 0.9


# --------------------------------------------------------------------------- through pytest

CONFTEST = '''
import numpy as np


def make_net():
    import torch
    from torch import nn
    torch.manual_seed(0)
    return nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 8), nn.Linear(8, 2))


def make_data():
    rng = np.random.default_rng(0)
    x = rng.random((60, 1, 8, 8), dtype=np.float32) * 0.5
    y = np.repeat([0, 1], 30)
    x[y == 1, 0, :4] += 0.5
    return x, y


def pytest_transfer_register_models(registry):
    registry.register("net", make_net)


def pytest_transfer_register_datasets(registry):
    registry.register("halves", make_data)
    registry.register("halves-hooked", make_data)


def pytest_transfer_threshold(model, dataset, metric):
    if dataset == "halves-hooked" and metric == "knn_accuracy":
        return 0.25
'''

PYPROJECT = pytester_pyproject(tables='''
[tool.pytest_transfer.thresholds."*"."*"]
knn_accuracy = 0.1
[tool.pytest_transfer.thresholds."net"."halves-hooked"]
knn_accuracy = 0.2
''')


def test_precedence_through_pytest_with_a_thresholds_file(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".toml", pyproject=PYPROJECT)
    pytester.makefile(".toml", gates='[thresholds."net"."halves"]\nknn_accuracy = 0.3\n')
    pytester.makepyfile('''
        import re

        import pytest
        from pytest_transfer import assert_transfer_accuracy_above

        @pytest.mark.transfer(model="net", dataset="halves")
        def test_file_beats_pyproject(pretrained_model, target_dataset):
            m = assert_transfer_accuracy_above(pretrained_model, target_dataset, method="knn")
            assert (m.threshold, m.threshold_source) == (0.3, 'gates.toml [thresholds."net"."halves"] knn_accuracy')

        @pytest.mark.transfer(model="net", dataset="halves-hooked")
        def test_hook_beats_exact_match(pretrained_model, target_dataset):
            m = assert_transfer_accuracy_above(pretrained_model, target_dataset, method="knn")
            assert m.threshold == 0.25  # the source names the conftest.py whose hook answered
            assert re.fullmatch(r"pytest_transfer_threshold hook knn_accuracy in .*conftest[.]py", m.threshold_source)

        @pytest.mark.transfer(model="net", dataset="halves-hooked")
        def test_argument_beats_hook(pretrained_model, target_dataset):
            m = assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.05, method="knn")
            assert (m.threshold, m.threshold_source) == (0.05, "argument threshold=")
    ''')
    pytester.runpytest("--transfer-thresholds=gates.toml").assert_outcomes(passed=3)


def test_a_bad_table_stops_the_run_before_any_test(pytester):
    pytester.makefile(".toml", pyproject='[tool.pytest_transfer.thresholds."*"."digits"]\naccuracy = 0.9\n')
    pytester.makepyfile("def test_never_runs(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(['*pyproject.toml [[]tool.pytest_transfer.thresholds."[*]"."digits"]: unknown '
                                 "threshold key 'accuracy'* Valid keys: *"])


def test_thresholds_from_arguments_get_the_config_range_checks(tiny_model, blobs):
    from pytest_transfer import assert_robust_under_noise, assert_transfer_accuracy_above

    with pytest.raises(ValueError, match=r"threshold=85: outside the valid range \[0, 1\] of linear_probe_accuracy; "
                                         r"85 looks like a percentage: use 0.85"):
        assert_transfer_accuracy_above(tiny_model, blobs, 85)
    with pytest.raises(ValueError, match=r"max_drop=5: outside the valid range \[0, 1\] of noise_max_drop; 5 looks "
                                         r"like a percentage: use 0.05"):
        assert_robust_under_noise(tiny_model, blobs, sigma=0.1, max_drop=5)  # a gate that could never fail
    with pytest.raises(ValueError, match=r"threshold=nan: the threshold is NaN"):
        assert_transfer_accuracy_above(tiny_model, blobs, float("nan"))


def test_the_config_says_the_same_about_a_percentage():
    from pytest_transfer.thresholds import ThresholdTable

    with pytest.raises(pytest.UsageError, match=r"transfer_accuracy = 85 is outside the metric's range \[0.0, 1.0\]; "
                                                r"85 looks like a percentage: use 0.85"):
        ThresholdTable({"m": {"d": {"transfer_accuracy": 85}}})


def test_thresholds_are_shown_as_configured_and_values_on_their_side():
    from pytest_transfer.thresholds import check_threshold_value, format_threshold, format_value

    assert [format_threshold(v) for v in (0.99999, 0.85, 1.0, 0.1 + 0.2, float("inf"))] == [
        "0.99999", "0.85", "1", "0.30000000000000004", "inf"]
    assert format_value(0.9123456) == "0.9123"
    assert format_value(0.999985, 0.99999) == "0.999985"  # not "1.0000", which would read as above the minimum
    assert format_value(0.99999, 0.99999) == "0.99999"
    assert format_value(0.8, 0.99999) == "0.8000"
    assert check_threshold_value(-3.5, key="logme", argument="threshold") == -3.5  # unbounded estimators pass
    with pytest.raises(ValueError, match=r"leep.*pass a value from -inf to 0"):
        check_threshold_value(0.5, key="leep", argument="threshold")
