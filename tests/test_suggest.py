"""--transfer-suggest-thresholds: thresholds from the measured intervals, a file that gates the next run, and the
power figures in its comments checked by simulation and against closed forms."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from tests._helpers import NOISY_CONFTEST, pytester_pyproject

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


TESTS = '''
import pytest
from pytest_transfer import assert_f1_above, assert_robust_under_noise, assert_transfer_accuracy_above

pytestmark = pytest.mark.transfer(model="tiny", dataset="blobs")


def test_accuracy(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, method="knn")


def test_f1(pretrained_model, target_dataset):
    assert_f1_above(pretrained_model, target_dataset, method="knn")


def test_noise(pretrained_model, target_dataset):
    assert_robust_under_noise(pretrained_model, target_dataset, sigma=0.3, method="knn")


def test_argument(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.0, method="direct")
'''


@pytest.fixture
def project(pytester, monkeypatch):
    monkeypatch.delenv("ZERO_FIRST_LAYER", raising=False)
    monkeypatch.delenv("TINY_SEED", raising=False)
    pytester.makeconftest(NOISY_CONFTEST)
    pytester.makefile(".toml", pyproject=pytester_pyproject())
    pytester.makepyfile(test_gates=TESTS)
    return pytester


def _floor3(x: float) -> float:
    return math.floor(round(x * 1000, 9)) / 1000  # by hand: the interval's end, rounded outwards to 3 decimals


def _ceil3(x: float) -> float:
    return math.ceil(round(x * 1000, 9)) / 1000


def test_a_suggestion_run_writes_thresholds_that_pass_again_and_catch_a_zeroed_layer(project, monkeypatch):
    result = project.runpytest("--transfer-suggest-thresholds=suggested.toml", "--transfer-report=first.json")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*not suggested for direct_accuracy of tiny on blobs*comes from an argument, which "
                                 "beats any file",
                                 "*suggested thresholds written to suggested.toml: 3 added, 0 replaced;*"])
    rows = {r["metric"]: r for r in json.loads((project.path / "first.json").read_text())["measurements"]}
    text = (project.path / "suggested.toml").read_text()
    table = tomllib.loads(text)["thresholds"]["tiny"]["blobs"]
    acc, f1, noise = rows["knn_accuracy"], rows["f1_macro"], rows["noise_max_drop"]
    assert table == {"knn_accuracy": _floor3(acc["interval"][0]), "f1": _floor3(f1["interval"][0]),
                     "noise_max_drop": _ceil3(noise["interval"][1])}
    assert acc["threshold_source"].startswith("none yet") and 0.6 < acc["value"]
    result.stdout.fnmatch_lines(["test_gates.py::test_accuracy *knn_accuracy *none yet *PASS"])
    n = acc["details"]["n"]
    line = next(x for x in text.splitlines() if x.startswith("knn_accuracy"))
    assert (f"measured {acc['value']:.4f}, 95% interval [{acc['interval'][0]:.4f}, {acc['interval'][1]:.4f}], "
            f"n={n}; a drop of ") in line and "80% power (exact binomial, confidence mode none)" in line
    assert "a rise of" in next(x for x in text.splitlines() if x.startswith("noise_max_drop"))
    assert "normal approximation" in next(x for x in text.splitlines() if x.startswith("f1"))

    # the written file gates the next run: it passes on the same model ...
    again = project.runpytest("--transfer-thresholds=suggested.toml", "--transfer-report=second.json")
    again.assert_outcomes(passed=4)
    sources = {r["metric"]: r["threshold_source"] for r in json.loads((project.path / "second.json").read_text())[
        "measurements"]}
    assert sources["knn_accuracy"] == ('suggested.toml [thresholds."tiny"."blobs"] knn_accuracy')

    # ... and fails the model with its first layer zeroed
    monkeypatch.setenv("ZERO_FIRST_LAYER", "1")
    broken = project.runpytest("--transfer-thresholds=suggested.toml", "-k", "accuracy or f1")
    broken.assert_outcomes(failed=2)
    broken.stdout.fnmatch_lines(["*Transfer accuracy (knn) of model 'tiny' on dataset 'blobs' is *, "
                                 f"below the minimum {table['knn_accuracy']}*"])


def test_entries_the_file_has_are_kept_unless_overwrite_is_asked(project):
    project.makefile(".toml", pyproject=pytester_pyproject('suggest_thresholds = "conf/limits.toml"'))
    (project.path / "conf").mkdir()
    mine = ('# our limits, reviewed by the team\n[thresholds."tiny"."blobs"]\nknn_accuracy = 0.5  # agreed\n'
            '\n[thresholds."other"."*"]\nf1 = 0.25\n')
    (project.path / "conf" / "limits.toml").write_text(mine)
    project.runpytest("-k", "accuracy or f1").stdout.fnmatch_lines(
        ["*suggested thresholds written to conf/limits.toml: 1 added, 0 replaced; 1 kept*"])
    text = (project.path / "conf" / "limits.toml").read_text()
    assert text.startswith(mine.split("\n\n")[0]) and '[thresholds."other"."*"]\nf1 = 0.25' in text
    assert tomllib.loads(text)["thresholds"]["tiny"]["blobs"]["knn_accuracy"] == 0.5

    project.runpytest("-k", "accuracy", "--transfer-suggest-overwrite").stdout.fnmatch_lines(
        ["*: 0 added, 1 replaced*"])
    table = tomllib.loads((project.path / "conf" / "limits.toml").read_text())["thresholds"]
    assert 0.5 < table["tiny"]["blobs"]["knn_accuracy"] < 1 and table["other"]["*"] == {"f1": 0.25}


def test_an_unreadable_file_is_left_alone_and_the_run_says_so(project):
    (project.path / "bad.toml").write_text("[thresholds\n")
    result = project.runpytest("-k", "accuracy", "--transfer-suggest-thresholds=bad.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*suggested thresholds NOT written: bad.toml: cannot read it*"])
    assert (project.path / "bad.toml").read_text() == "[thresholds\n"


def _m(key, value, interval, *, source="none yet", comparison=">=", model="m", n=100):
    return {"threshold_key": key, "value": value, "interval": interval, "threshold_source": source, "n": n,
            "comparison": comparison, "model": model, "dataset": "d", "test": "t.py::t", "confidence": "none",
            "details": {"n": n}}


def test_which_measurements_become_suggestions():
    from pytest_transfer.suggest import suggest

    found, skipped = suggest([
        _m("f1", 0.8, [0.7512, 0.85]), _m("f1", 0.82, [0.7433, 0.88]),  # a key twice: the more conservative
        _m("noise_max_drop", 0.05, [0.01, 0.0912], comparison="<="),
        _m("f1", 0.9, [0.8, 0.95], model="arg", source="argument threshold="),
        _m("f1", 0.9, [0.8, 0.95], model="hook", source="pytest_transfer_threshold hook f1"),
        _m("f1", 0.9, None, model="none"),
        _m(None, 0.1, [0.0, 0.2], model="shift"),  # no config key: a shift gate or a ranking margin
        {**_m("accuracy", 0.9, None, model="baseline"), "comparison": "baseline"},
    ], level=0.95)
    assert [(s.model, s.key, s.threshold, s.measurements) for s in found] == [
        ("m", "f1", 0.743, 2), ("m", "noise_max_drop", 0.092, 1)]
    assert found[0].value == 0.82 and found[0].how == "normal approximation"
    assert [line.split(":")[0] for line in skipped] == ["f1 of arg on d (t.py", "f1 of hook on d (t.py",
                                                        "f1 of none on d (t.py"]
    assert "the pytest_transfer_threshold hook, which beats any file" in skipped[1]
    assert skipped[2].endswith("the gate gave no interval")


def test_a_negative_drop_is_suggested_with_the_normal_approximation():
    """Accuracy that rose under a corruption (drop −1/15) is no binomial count: the suggestion uses the normal
    approximation instead of failing (a new user's suggestion run crashed at the session's end on it)."""
    from pytest_transfer.suggest import suggest

    found, skipped = suggest([_m("corruption_max_drop", -1 / 15, [-0.1902, 0.0613], comparison="<=", n=15)],
                             level=0.95)
    assert not skipped and [(s.key, s.threshold, s.how) for s in found] == [
        ("corruption_max_drop", 0.062, "normal approximation")]
    assert found[0].detectable is not None and found[0].detectable > 0


# --------------------------------------------------------------------------- the numbers in the comments

def test_rounding_is_outwards_exact_and_inside_the_range():
    from pytest_transfer.suggest import round_outward

    assert round_outward(0.9287, "knn_accuracy", down=True) == 0.928
    assert round_outward(0.928, "knn_accuracy", down=True) == 0.928  # already on the grid
    assert round_outward(0.0311, "noise_max_drop", down=False) == 0.032
    assert round_outward(-0.0004, "noise_max_drop", down=True) == 0.0  # clipped to the key's range [0, 1]
    assert round_outward(123.456, "max_mce", down=False) == 123.5
    assert round_outward(-2.34561, "leep", down=True) == -2.346
    rng = np.random.default_rng(0)
    for x in rng.random(200):
        assert round_outward(x, "f1", down=True) <= x <= round_outward(x, "f1", down=False)


def _simulated_power(n, p, threshold, mode, level, *, draws=40_000, seed=0):
    from pytest_transfer.gates.core import decide
    from pytest_transfer.metrics import wilson_interval

    counts = np.random.default_rng(seed).binomial(n, p, size=draws)
    fail = {k: not decide(k / n, wilson_interval(k, n, confidence=level) if mode != "none" else None, threshold,
                          higher_is_better=True, mode=mode) for k in np.unique(counts)}
    return float(np.mean([fail[k] for k in counts]))


@pytest.mark.parametrize("mode", ["none", "strict", "lenient"])
def test_the_binomial_detectable_drop_is_caught_80_percent_of_the_time_in_simulation(mode):
    from pytest_transfer.metrics import wilson_interval
    from pytest_transfer.suggest import binomial_detectable, round_outward

    n, hits = 180, 162
    value = hits / n
    threshold = round_outward(wilson_interval(hits, n)[0], "transfer_accuracy", down=True)
    drop = binomial_detectable(n, value, threshold, higher_is_better=True, mode=mode, level=0.95)
    sim = _simulated_power(n, value - drop, threshold, mode, 0.95)
    assert abs(sim - 0.8) < 0.03  # discrete: the exact power at `drop` is the first step at or above 0.8
    assert sim >= 0.8 - 3 * math.sqrt(0.16 / 40_000)
    assert _simulated_power(n, value - drop + 0.02, threshold, mode, 0.95) < 0.8


def test_the_binomial_detectable_drop_matches_the_closed_form_at_large_n():
    from statistics import NormalDist

    from pytest_transfer.metrics import wilson_interval
    from pytest_transfer.suggest import binomial_detectable

    n, hits = 4000, 3200
    p = hits / n
    threshold = wilson_interval(hits, n)[0]  # the interval's end, not rounded
    drop = binomial_detectable(n, p, threshold, higher_is_better=True, mode="none", level=0.95)
    z = NormalDist().inv_cdf
    closed = (z(0.975) + z(0.8)) * math.sqrt(p * (1 - p) / n)  # one-sample power formula, Wald standard errors
    assert drop == pytest.approx(closed, rel=0.05)


@pytest.mark.parametrize("mode", ["none", "strict", "lenient"])
@pytest.mark.parametrize("higher", [True, False])
def test_the_normal_detectable_change_is_caught_80_percent_of_the_time_in_simulation(mode, higher):
    from pytest_transfer.gates.core import decide
    from pytest_transfer.suggest import normal_detectable

    value, se, z = 0.70, 0.02, 1.959963984540054
    interval = (value - z * se, value + z * se)
    threshold = interval[0] - 0.004 if higher else interval[1] + 0.004
    change = normal_detectable(value, threshold, interval, higher_is_better=higher, mode=mode, level=0.95)
    new = np.random.default_rng(1).normal(value - change if higher else value + change, se, size=40_000)
    fails = [not decide(v, (v - z * se, v + z * se), threshold, higher_is_better=higher, mode=mode) for v in new]
    assert abs(np.mean(fails) - 0.8) < 0.01


@pytest.mark.parametrize("before", ["", '[project]\nname = "mine"\n'])
def test_suggestions_into_a_pyproject_go_where_settings_read_them(tmp_path, before):
    """A new pyproject.toml, or one without [tool], gets [tool.pytest_transfer.thresholds] (a top-level
    [thresholds] there would be read by nothing)."""
    import tomllib

    from pytest_transfer.settings import resolve
    from pytest_transfer.suggest import suggest, write_suggestions

    path = tmp_path / "pyproject.toml"
    path.write_text(before)
    found, _ = suggest([_m("f1", 0.8, [0.7512, 0.85])], level=0.95)
    write_suggestions(path, found)
    doc = tomllib.loads(path.read_text())
    assert doc["tool"]["pytest_transfer"]["thresholds"]["m"]["d"]["f1"] == 0.751
    assert "thresholds" not in doc and resolve(rootdir=str(tmp_path), pyproject=path).threshold_table == {
        "m": {"d": {"f1": 0.751}}}
