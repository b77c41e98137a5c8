"""Baselines and assert_no_regression: the whole update cycle through pytester, the file format, the paired test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests._helpers import pytester_pyproject

# A net whose penultimate features are the 4×4 average-pooled pixels. TINY_REGRESS=1 blinds it to the spots of
# classes 1 and 2 (a real regression: the probe can no longer tell them apart); TINY_FLIP=<n> adds a weight change
# that leaves the predictions as they are.
CONFTEST = '''
import os
import numpy as np

SPOTS = [(0, 0), (0, 5), (5, 0)]


def make_spots(n_per_class=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((3 * n_per_class, 1, 8, 8), dtype=np.float32) * 0.3
    y = np.repeat(np.arange(3), n_per_class)
    for i, c in enumerate(y):
        r, col = SPOTS[c]
        x[i, 0, r:r + 3, col:col + 3] += 0.6
    return np.clip(x, 0, 1), y


def make_tiny():
    import torch
    from torch import nn
    torch.manual_seed(0)
    features = nn.Linear(16, 16)
    with torch.no_grad():
        features.weight.copy_(torch.eye(16))
        features.bias.zero_()
        if os.environ.get("TINY_REGRESS"):
            for cell in (2, 3, 6, 7, 8, 9, 12, 13):  # the pooled cells of the class-1 and class-2 spots
                features.weight[cell, cell] = 0.0
        if os.environ.get("TINY_SCALE"):
            features.weight.mul_(float(os.environ["TINY_SCALE"]))  # a change the standardised probe ignores
    return nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), features, nn.Linear(16, 3))


def pytest_transfer_register_models(registry):
    registry.register("tiny", make_tiny)


def pytest_transfer_register_datasets(registry):
    registry.register("spots", make_spots)
    registry.register("spots-other", lambda: make_spots(seed=1))
'''

PYPROJECT = pytester_pyproject()

TESTS = '''
import pytest
from pytest_transfer import assert_no_regression

pytestmark = pytest.mark.transfer(model="tiny", dataset="spots")


def test_accuracy(pretrained_model, target_dataset):
    assert_no_regression(pretrained_model, target_dataset)


def test_with_fixture(transfer_baseline, pretrained_model, target_dataset):
    transfer_baseline(pretrained_model, target_dataset, metrics=["accuracy", "f1"])
'''


@pytest.fixture
def project(pytester, monkeypatch):
    for var in ("TINY_REGRESS", "TINY_SCALE"):
        monkeypatch.delenv(var, raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".toml", pyproject=PYPROJECT)
    pytester.makepyfile(test_models=TESTS)
    return pytester


def _baseline_files(pytester):
    return sorted(p.relative_to(pytester.path).as_posix() for p in pytester.path.rglob("*.json"))


EXPECTED_FILES = [
    "__transfer_baselines__/test_models/test_accuracy--tiny--spots.json",
    "__transfer_baselines__/test_models/test_with_fixture--tiny--spots.json",
]


def test_missing_baselines_are_written_and_the_tests_fail_saying_so(project):
    result = project.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*no baseline for model 'tiny' on dataset 'spots' (linear_probe, test split): wrote "
        "__transfer_baselines__/test_models/test_accuracy--tiny--spots.json (accuracy 1.0000, n=75)*",
        "*check the file in and re-run*",
        "*2 baseline file(s) were missing and have been written under __transfer_baselines__/*",
    ])
    assert _baseline_files(project) == EXPECTED_FILES
    assert project.runpytest().ret == 0  # and the next run compares against them


def test_update_rerun_regression_unchanged_and_accepting_a_change(project, monkeypatch):
    updated = project.runpytest("--transfer-update-baselines")
    updated.assert_outcomes(passed=2)
    updated.stdout.fnmatch_lines(["*--transfer-update-baselines wrote 2 baseline file(s) (2 new, 0 changed; "
                                  "0 already current)*"])
    assert _baseline_files(project) == EXPECTED_FILES
    first = {p: (project.path / p).read_bytes() for p in EXPECTED_FILES}

    project.runpytest().assert_outcomes(passed=2)  # clean rerun, no flag
    same = project.runpytest("--transfer-update-baselines")  # nothing changed: nothing rewritten
    same.stdout.fnmatch_lines(["*wrote 0 baseline file(s) (0 new, 0 changed; 2 already current)*"])
    assert {p: (project.path / p).read_bytes() for p in EXPECTED_FILES} == first

    monkeypatch.setenv("TINY_REGRESS", "1")  # an injected regression
    regressed = project.runpytest()
    regressed.assert_outcomes(failed=2)
    regressed.stdout.fnmatch_lines([
        "*accuracy of model 'tiny' on dataset 'spots' regressed: 1.0000 in the baseline, 0.6667 now (drop 0.3333, "
        "95% interval 0.2255–0.4458)*",
        "*rule: 25 sample(s) lost and 0 gained of 75; one-sided exact McNemar p = 2.98e-08*",
        "*baseline: __transfer_baselines__/test_models/test_accuracy--tiny--spots.json*",
        "*samples lost (dataset indices, first 20): 100, 104, 105, *",
        "*re-run with --transfer-update-baselines*",
    ])
    regressed.stdout.fnmatch_lines(["*f1_macro of model 'tiny' on dataset 'spots' regressed*",
                                    "*rule: paired Bayesian bootstrap with a pseudo-sample*"
                                    "the one-sided 95% lower bound of the drop is*"])

    monkeypatch.setenv("TINY_SCALE", "3.0")  # still worse, whatever else changes
    accepted = project.runpytest("--transfer-update-baselines")  # the change is intended: accept it
    accepted.assert_outcomes(passed=2)
    accepted.stdout.fnmatch_lines(["*wrote 2 baseline file(s) (0 new, 2 changed; 0 already current)*"])
    project.runpytest().assert_outcomes(passed=2)

    monkeypatch.delenv("TINY_REGRESS")
    monkeypatch.setenv("TINY_SCALE", "0.5")  # other weights, the better predictions back: an improvement passes
    project.runpytest().assert_outcomes(passed=2)


def test_damaged_baseline_is_an_error_naming_the_file_and_an_update_repairs_it(project):
    project.runpytest("--transfer-update-baselines", "-k", "test_accuracy")
    path = project.path / EXPECTED_FILES[0]
    path.write_text("{not json")
    result = project.runpytest("-k", "test_accuracy")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*BaselineError: baseline file *{EXPECTED_FILES[0]} is damaged (not valid JSON*"
                                 "--transfer-update-baselines*"])
    project.runpytest("--transfer-update-baselines", "-k", "test_accuracy").assert_outcomes(passed=1)
    assert json.loads(path.read_text())["schema"] == "pytest-transfer-baseline"


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "is damaged (not valid JSON"),
    ('{"hello": "world"}', "is not a pytest-transfer baseline"),
    ("[1, 2]", "is not a pytest-transfer baseline"),
    ('{"schema": "pytest-transfer-baseline", "version": 99}', "has version 99, this pytest-transfer reads version 1"),
    ('{"schema": "pytest-transfer-baseline", "version": 1, "n": 3}', "is damaged: the field 'metrics' is missing"),
    ('{"schema": "pytest-transfer-baseline", "version": 1, "n": 3, "metrics": {}, "model": "m", "dataset": "d", '
     '"method": "knn", "split": "test", "correct": "!!", "predictions": {}, "num_classes": 2, '
     '"dataset_fingerprint": "a", "split_fingerprint": "b"}', "is damaged"),
    ('{"schema": "pytest-transfer-baseline", "version": 1, "n": 30, "metrics": {}, "model": "m", "dataset": "d", '
     '"method": "knn", "split": "test", "correct": "BQ==", "predictions": {"dtype": "<u1", "data": "AAE="}, '
     '"num_classes": 2, "dataset_fingerprint": "a", "split_fingerprint": "b"}', "bytes of bits for 30 samples"),
])
def test_damaged_or_foreign_files_are_refused_with_the_file_named(tmp_path, content, message):
    from pytest_transfer.baselines import BaselineError, load_baseline

    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(BaselineError, match=f"baseline file {path}") as info:
        load_baseline(path)
    assert message in str(info.value)
    assert load_baseline(tmp_path / "missing.json") is None
    with pytest.raises(BaselineError, match="is not a regular file"):
        load_baseline(tmp_path)


def _pair(**kwargs):
    from pytest_transfer import load_dataset, load_model
    from tests._helpers import make_blobs_images, tiny_net

    return load_model(tiny_net(), name="tiny"), load_dataset(make_blobs_images(), name="blobs", **kwargs)


def test_a_baseline_of_another_test_or_of_changed_data_is_refused(fresh_context, tmp_path, monkeypatch):
    from pytest_transfer import assert_no_regression
    from pytest_transfer.baselines import BaselineError

    monkeypatch.chdir(tmp_path)
    model, data = _pair()
    fresh_context.current_test, fresh_context.current_test_path = "t/test_a.py::test_one", str(tmp_path / "test_a.py")
    with pytest.raises(AssertionError, match="no baseline"):
        assert_no_regression(model, data)
    one = tmp_path / "__transfer_baselines__" / "test_a" / "test_one--tiny--blobs.json"
    two = one.with_name("test_two--tiny--blobs.json")
    two.write_text(one.read_text())  # copied by hand to another test
    fresh_context.current_test = "t/test_a.py::test_two"
    with pytest.raises(BaselineError, match=r"test_two--tiny--blobs.json belongs to test 'test_a.py::test_one', "
                                            r"not 'test_a.py::test_two' \(a foreign or copied file\)"):
        assert_no_regression(model, data)

    fresh_context.current_test = "t/test_a.py::test_one"
    _, reseeded = _pair(seed=5)  # the same data, another split
    with pytest.raises(BaselineError, match=r"the 'test' split of 'blobs' changed \(.*another --transfer-seed"):
        assert_no_regression(model, reseeded)
    from pytest_transfer import load_dataset
    from tests._helpers import make_blobs_images

    x, y = make_blobs_images()
    x[0] = 1.0 - x[0]
    with pytest.raises(BaselineError, match=r"dataset 'blobs' changed since the baseline was written"):
        assert_no_regression(model, load_dataset((x, y), name="blobs"))


def test_tolerances_and_the_fixture_api(project, monkeypatch):
    project.makepyfile(test_tolerance='''
        import pytest
        from pytest_transfer import assert_no_regression

        @pytest.mark.transfer(model="tiny", dataset="spots")
        def test_tolerant(transfer_baseline, pretrained_model, target_dataset):
            assert transfer_baseline.path(pretrained_model, target_dataset).name == "test_tolerant--tiny--spots.json"
            assert transfer_baseline.directory.name == "test_tolerance"
            out = transfer_baseline(pretrained_model, target_dataset, metrics=["accuracy", "f1"],
                                    tolerance={"accuracy": 0.5}, relative_tolerance={"f1": 0.5})
            if not transfer_baseline.update:
                assert transfer_baseline.load(pretrained_model, target_dataset).n == 75
                assert set(out) == {"accuracy", "f1_macro"}
                assert out["accuracy"].threshold == 0.5
                assert out["f1_macro"].threshold == pytest.approx(0.5 * out["f1_macro"].details["baseline_value"])

        @pytest.mark.transfer(model="tiny", dataset="spots")
        def test_strict(pretrained_model, target_dataset):
            assert_no_regression(pretrained_model, target_dataset, tolerance=0.05)
    ''')
    project.runpytest("--transfer-update-baselines", "test_tolerance.py").assert_outcomes(passed=2)
    monkeypatch.setenv("TINY_REGRESS", "1")
    result = project.runpytest("test_tolerance.py")
    result.assert_outcomes(passed=1, failed=1)  # a drop of 0.33 is inside 0.5 but not inside 0.05
    result.stdout.fnmatch_lines(["*rule: the drop may be at most 0.0500 (tolerance=0.05; confidence mode none)*"])


def test_assert_no_regression_outside_pytest_uses_the_working_directory(fresh_context, tmp_path, monkeypatch):
    from pytest_transfer import assert_no_regression, load_dataset, load_model
    from tests._helpers import make_blobs_images, tiny_net

    monkeypatch.chdir(tmp_path)
    model = load_model(tiny_net(), name="tiny")
    data = load_dataset(make_blobs_images(), name="blobs")
    with pytest.raises(AssertionError, match="no baseline"):
        assert_no_regression(model, data)
    assert (tmp_path / "__transfer_baselines__" / "tiny--blobs.json").is_file()
    out = assert_no_regression(model, data)
    assert out["accuracy"].value == 0.0 and out["accuracy"].details["p_value"] == 1.0
    other = tmp_path / "elsewhere.json"
    with pytest.raises(AssertionError, match=r"elsewhere\.json"):
        assert_no_regression(model, data, path=other, method="knn")
    assert assert_no_regression(model, data, path=other, method="knn")["accuracy"].passed


def test_argument_errors(fresh_context, tmp_path, monkeypatch):
    from pytest_transfer import assert_no_regression, load_dataset, load_model
    from tests._helpers import make_blobs_images, tiny_net

    monkeypatch.chdir(tmp_path)
    model = load_model(tiny_net(), name="tiny")
    data = load_dataset(make_blobs_images(), name="blobs")
    with pytest.raises(ValueError, match=r"metrics: unknown metric 'auc'; valid: accuracy, f1_macro"):
        assert_no_regression(model, data, metrics=["auc"])
    with pytest.raises(ValueError, match=r"tolerance: 'f1' is not one of the checked metrics \(accuracy\)"):
        assert_no_regression(model, data, tolerance={"f1": 0.1})
    with pytest.raises(ValueError, match=r"alpha: got 0.7"):
        assert_no_regression(model, data, alpha=0.7)
    with pytest.raises(ValueError, match=r"min_effect: got -0.1"):
        assert_no_regression(model, data, min_effect=-0.1)
    with pytest.raises(ValueError, match=r"relative_tolerance: got 2"):
        assert_no_regression(model, data, relative_tolerance=2)
    assert not (tmp_path / "__transfer_baselines__").exists()  # nothing written on a usage error


# --------------------------------------------------------------------------- the file format


def test_bits_and_labels_round_trip_compactly():
    from pytest_transfer.baselines import decode_bits, decode_labels, encode_bits, encode_labels

    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 450):
        bits = rng.random(n) < 0.5
        text = encode_bits(bits)
        assert len(text) == 4 * -(-((n + 7) // 8) // 3)  # base64 of ceil(n / 8) bytes
        np.testing.assert_array_equal(decode_bits(text, n), bits)
    labels = rng.integers(0, 300, 50)
    doc = encode_labels(labels, 300)
    assert doc["dtype"] == "<u2"
    np.testing.assert_array_equal(decode_labels(doc, 50), labels)
    with pytest.raises(ValueError, match="bytes of bits for 9 samples"):
        decode_bits(encode_bits(bits[:8]), 9)
    with pytest.raises(ValueError, match="labels for 49 samples"):
        decode_labels(doc, 49)


def test_write_is_atomic_and_reports_created_updated_unchanged(tmp_path, monkeypatch):
    from pytest_transfer import baselines

    b = baselines.Baseline(model="m", dataset="d", method="linear_probe", split="test", metrics={"accuracy": 0.5},
                           correct=np.array([True, False]), predictions=np.array([1, 0]), num_classes=2,
                           dataset_fingerprint="f", split_fingerprint="s", test="t.py::t")
    path = tmp_path / "sub" / "b.json"
    assert baselines.write_baseline(path, b) == "created"
    assert baselines.write_baseline(path, b) == "unchanged"
    b.metrics["accuracy"], b.correct = 0.0, np.array([False, False])
    assert baselines.write_baseline(path, b) == "updated"
    assert baselines.load_baseline(path).metrics == {"accuracy": 0.0}

    def boom(*args):
        raise OSError("disk full")

    import pytest_transfer.cache as cache

    monkeypatch.setattr(cache.os, "replace", boom)
    b.metrics["accuracy"] = 1.0
    with pytest.raises(OSError, match="disk full"):
        baselines.write_baseline(path, b)
    assert baselines.load_baseline(path).metrics == {"accuracy": 0.0}  # the old file is intact
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]  # and no temporary file is left


def test_paths_are_safe_and_bounded():
    from pytest_transfer.baselines import baseline_path

    p = baseline_path(test="tests/t.py::TestA::test_b[a/b]", test_path="tests/t.py", model="torchvision:resnet18",
                      dataset="imagefolder:/data/x ray", method="knn", split="train")
    assert p.as_posix().startswith("tests/__transfer_baselines__/t/TestA.test_b[a_b]~")
    assert p.as_posix().endswith("--torchvision_resnet18--imagefolder_data_x_ray--knn--train.json")
    long = baseline_path(test="t.py::test", test_path="t.py", model="m" * 300, dataset="d")
    assert len(long.name) <= 155 and long.name.endswith(".json")


PARAM_TESTS = '''
import pytest
from pytest_transfer import assert_no_regression

pytestmark = pytest.mark.transfer(model="tiny", dataset="spots")


@pytest.mark.parametrize("name", ["a/b", "a_b"], ids=["a/b", "a_b"])
def test_ids(name, pretrained_model, target_dataset):
    assert_no_regression(pretrained_model, target_dataset)
'''


def test_ids_that_sanitise_alike_get_their_own_baseline_files(project):
    from pytest_transfer.baselines import baseline_path

    project.makepyfile(test_models=PARAM_TESTS)
    project.runpytest("--transfer-update-baselines").assert_outcomes(passed=2)
    files = _baseline_files(project)
    slash = baseline_path(test="test_models.py::test_ids[a/b]", test_path="test_models.py", model="tiny",
                          dataset="spots")
    assert len(files) == 2 and f"__transfer_baselines__/test_models/{slash.name}" in files
    assert "__transfer_baselines__/test_models/test_ids[a_b]--tiny--spots.json" in files  # a clean id keeps its name
    project.runpytest().assert_outcomes(passed=2)  # each compares against its own file


def test_the_file_name_hash_is_of_the_raw_test_id():
    import hashlib

    from pytest_transfer.baselines import baseline_path

    p = baseline_path(test="t.py::test_x[a/b]", test_path="t.py", model="m", dataset="d")
    digest = hashlib.blake2b(b"test_x[a/b]", digest_size=4).hexdigest()
    assert p.name == f"test_x[a_b]~{digest}--m--d.json"
    other = baseline_path(test="t.py::test_x[a:b]", test_path="t.py", model="m", dataset="d")
    assert other != p and baseline_path(test="t.py::test_x[a_b]", test_path="t.py", model="m", dataset="d") != p


def test_a_file_owned_by_another_result_is_never_overwritten(tmp_path):
    from pytest_transfer import baselines

    def make(model, acc):
        return baselines.Baseline(model=model, dataset="d", method="linear_probe", split="test",
                                  metrics={"accuracy": acc}, correct=np.array([True, False]),
                                  predictions=np.array([0, 1]), num_classes=2, dataset_fingerprint="f",
                                  split_fingerprint="s", test="t.py::test_x")

    first = make("hub:m", 0.5)  # "hub:m" and "hub_m" map to the same file name
    path = baselines.baseline_path(test=first.test, test_path=tmp_path / "t.py", model="hub:m", dataset="d")
    assert path == baselines.baseline_path(test=first.test, test_path=tmp_path / "t.py", model="hub_m", dataset="d")
    assert baselines.write_baseline(path, first) == "created"
    before = path.read_bytes()
    with pytest.raises(baselines.BaselineError, match=r"is the baseline of test 't.py::test_x' \(model 'hub:m'.*"
                                                      r"it was not overwritten"):
        baselines.write_baseline(path, make("hub_m", 0.0))
    assert path.read_bytes() == before
    assert baselines.write_baseline(path, make("hub:m", 1.0)) == "updated"  # its own result still updates it
    copy = path.with_name("copy.json")  # a copy under a name that is not its own is replaced
    copy.write_bytes(before)
    assert baselines.write_baseline(copy, make("hub_m", 0.0)) == "updated"
