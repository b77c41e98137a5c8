"""Settings: CLI > environment > [tool.pytest_transfer] > defaults, and clear errors for bad values."""

from __future__ import annotations

import pytest

from pytest_transfer.settings import OPTIONS, resolve


def write_pyproject(tmp_path, body: str):
    path = tmp_path / "pyproject.toml"
    path.write_text(body)
    return path


def test_defaults_when_nothing_is_set(tmp_path):
    s = resolve({}, rootdir=tmp_path, environ={})
    assert (s.device, s.seed, s.batch_size, s.confidence, s.no_cache) == ("auto", 0, 64, "none", False)
    assert s.source("seed") == "default"


def test_precedence_cli_over_env_over_file(tmp_path):
    pp = write_pyproject(tmp_path, "[tool.pytest_transfer]\nseed = 3\nbatch_size = 16\ndevice = 'cpu'\n")
    env = {"PYTEST_TRANSFER_SEED": "5", "PYTEST_TRANSFER_BATCH_SIZE": "32"}
    s = resolve({"seed": "7"}, rootdir=tmp_path, pyproject=pp, environ=env)
    assert s.seed == 7 and s.source("seed") == "--transfer-seed"
    assert s.batch_size == 32 and s.source("batch_size") == "environment variable PYTEST_TRANSFER_BATCH_SIZE"
    assert s.device == "cpu" and "pyproject.toml" in s.source("device")


def test_pyproject_is_found_upwards(tmp_path):
    write_pyproject(tmp_path, "[tool.pytest_transfer]\nconfidence = 'strict'\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert resolve({}, rootdir=sub, environ={}).confidence == "strict"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("device", "tpu", "auto, cpu, cuda, cuda:N or mps"),
        ("confidence", "sometimes", "none, strict, lenient"),
        ("batch_size", "0", "integer >= 1"),
        ("seed", "abc", "invalid value"),
        ("test_fraction", "1.5", "between 0 and 1"),
    ],
)
def test_bad_values_are_usage_errors_listing_valid_ones(tmp_path, key, value, expected):
    with pytest.raises(pytest.UsageError, match=expected):
        resolve({key: value}, rootdir=tmp_path, environ={})


def test_bad_value_in_file_names_the_file(tmp_path):
    pp = write_pyproject(tmp_path, "[tool.pytest_transfer]\ndevice = 'gpu0'\n")
    with pytest.raises(pytest.UsageError, match=r"pyproject.toml.*device"):
        resolve({}, rootdir=tmp_path, pyproject=pp, environ={})


def test_unknown_key_lists_valid_keys(tmp_path):
    pp = write_pyproject(tmp_path, "[tool.pytest_transfer]\ndevcie = 'cpu'\n")
    with pytest.raises(pytest.UsageError, match=r"unknown key\(s\) devcie; did you mean device\? valid keys: "
                                                 r"autocast, .*device, github_summary, "):
        resolve({}, rootdir=tmp_path, pyproject=pp, environ={})


def test_a_threshold_key_in_the_settings_table_says_where_it_belongs(tmp_path):
    pp = write_pyproject(tmp_path, "[tool.pytest_transfer]\nregression_min_effect = 0.02\n")
    with pytest.raises(pytest.UsageError, match=r"regression_min_effect is a threshold, set per model and dataset: "
                                                 r'write it under \[tool.pytest_transfer.thresholds."<model>"'):
        resolve({}, rootdir=tmp_path, pyproject=pp, environ={})


def test_malformed_toml_is_a_usage_error(tmp_path):
    pp = write_pyproject(tmp_path, "[tool.pytest_transfer\nseed = \n")
    with pytest.raises(pytest.UsageError, match="not valid TOML"):
        resolve({}, rootdir=tmp_path, pyproject=pp, environ={})


def test_boolean_env_values(tmp_path):
    assert resolve({}, rootdir=tmp_path, environ={"PYTEST_TRANSFER_NO_CACHE": "yes"}).no_cache is True
    with pytest.raises(pytest.UsageError, match="true/false"):
        resolve({}, rootdir=tmp_path, environ={"PYTEST_TRANSFER_NO_CACHE": "maybe"})


def test_cache_path_is_relative_to_rootdir(tmp_path):
    s = resolve({}, rootdir=tmp_path, environ={})
    assert s.cache_path() == tmp_path / ".transfer_cache"
    assert resolve({"no_cache": True}, rootdir=tmp_path, environ={}).cache_path() is None


def test_every_option_has_flag_key_and_env():
    for opt in OPTIONS:
        assert opt.cli == "--transfer-" + opt.key.replace("_", "-")
        assert opt.env == "PYTEST_TRANSFER_" + opt.key.upper()
