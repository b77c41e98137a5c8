"""Derived results (probe fits, k-NN, estimator scores, attacks, fine-tuned heads) across pytest sessions.

Each session is a new pytest run (pytester) in the same project and cache
folder. The plugin's summary line ``pytest-transfer work: ... derived results
computed: ...; read: ...`` counts, per kind, what the session computed and what
it read from the disk cache: a second session computes nothing, and changing
one parameter recomputes that parameter's kind only.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from pytest_transfer.cache import CacheWarning, array_fingerprint, cached_result
from pytest_transfer.context import Context
from pytest_transfer.settings import resolve
from tests._helpers import BLOBS_CONFTEST

CONFTEST = BLOBS_CONFTEST

PYPROJECT = '''
[tool.pytest.ini_options]
addopts = "-p no:cacheprovider"

[tool.pytest_transfer]
device = "cpu"
cache_dir = "cache"
'''

# every gate that derives a result, with its parameters read from params.json
TESTS = '''
import json
import pytest
from pytest_transfer import (assert_robust_under_attack, assert_transfer_accuracy_above,
                             assert_transferability_above, rank_models)

P = json.load(open("params.json"))
pair = pytest.mark.transfer(model="tiny", dataset="blobs")


@pair
def test_probe(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.0, C=P["C"])


@pair
def test_knn(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.0, method="knn", k=P["k"])


def test_estimators():
    rank_models(["tiny", "tiny-b"], "blobs", metric=P["metric"], k=P["k_loo"], standardize=P["standardize"])
    floor = {"logme": -1e9, "hscore": 0.0}[P["metric"]]  # a threshold inside each metric's range, always cleared
    assert_transferability_above("tiny", "blobs", floor, metric=P["metric"], standardize=P["standardize"])


@pair
def test_attack(pretrained_model, target_dataset):
    assert_robust_under_attack(pretrained_model, target_dataset, attack=P["attack"], eps=P["eps"],
                               steps=P["steps"], seed=P["seed"], min_accuracy=0.0)


@pair
def test_finetune(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.0, method="finetune",
                                   finetune={"epochs": P["epochs"]})
'''

DEFAULTS = {"C": 1.0, "k": 5, "metric": "logme", "k_loo": 5, "standardize": True, "attack": "pgd", "eps": 0.02,
            "steps": 2, "seed": 0, "epochs": 2}
KINDS = {"attack", "estimate", "finetune", "knn", "linear_probe"}
LINE = re.compile(r"pytest-transfer work: (\d+) forward pass\(es\), (\d+) read from the cache; "
                  r"derived results computed: (.*); read: (.*)$")


def _counts(text: str) -> dict[str, int]:
    return {} if text == "none" else {k: int(n) for k, n in (part.rsplit(" ", 1) for part in text.split(", "))}


def session(project, **changes) -> tuple[int, dict[str, int], dict[str, int]]:
    """Run the gates once with ``changes`` to the parameters: (forward passes, computed, read) per kind."""
    (project.path / "params.json").write_text(json.dumps({**DEFAULTS, **changes}))
    result = project.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=5)
    found = [m for m in map(LINE.search, result.outlines) if m]
    assert found, result.stdout.str()
    m = found[-1]
    return int(m.group(1)), _counts(m.group(3)), _counts(m.group(4))


@pytest.fixture
def project(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".toml", pyproject=PYPROJECT)
    pytester.makepyfile(test_gates=TESTS)
    return pytester


def test_a_second_session_recomputes_nothing(project):
    passes, computed, read = session(project)
    assert passes > 0 and set(computed) == KINDS and read == {}
    assert computed["estimate"] >= 4  # LogME and the leave-one-out k-NN of both models in rank_models
    passes, computed, read = session(project)
    assert (passes, computed) == (0, {})
    assert set(read) == KINDS


CHANGES = [  # one parameter changed at a time, and the kinds it must recompute
    ({"C": 0.5}, {"linear_probe"}),  # (the attack gate keeps its own C=1 probe: read)
    ({"k": 3}, {"knn"}),
    ({"metric": "hscore"}, {"estimate"}),
    ({"k_loo": 3}, {"estimate"}),
    ({"standardize": False}, {"estimate"}),
    ({"eps": 0.03}, {"attack"}),
    ({"steps": 3}, {"attack"}),
    ({"seed": 1}, {"attack"}),
    ({"attack": "fgsm"}, {"attack"}),
    ({"epochs": 3}, {"finetune"}),
]


def test_a_changed_parameter_recomputes_its_kind_only(project):
    session(project)  # one cold session; then each change against the cache it and the defaults left
    for change, kinds in CHANGES:
        passes, computed, _ = session(project, **change)
        assert set(computed) == kinds, change
        assert passes == (1 if kinds == {"finetune"} else 0), change  # a new fine-tuned model is a new model
        assert all(n == 1 for k, n in computed.items() if k != "estimate"), (change, computed)


def test_no_cache_reads_and_writes_nothing(project):
    session(project)
    (project.path / "params.json").write_text(json.dumps(DEFAULTS))
    result = project.runpytest("--transfer-no-cache")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*derived results computed: attack 1, estimate *, finetune 1, knn 1, "
                                 "linear_probe 1; read: none"])


# --- the mechanism itself ------------------------------------------------------------------------


def _ctx(tmp_path, **settings) -> Context:
    return Context(resolve({"device": "cpu", "cache_dir": str(tmp_path / "cache"), **settings}, rootdir=tmp_path,
                           pyproject=None, environ={}))


def _cached(ctx, calls, key=None):
    def compute():
        calls.append(1)
        return np.arange(4.0)

    return cached_result("demo", key or {"x": 1}, compute, encode=lambda v: {"v": v}, decode=lambda a: a["v"],
                         context=ctx)


def test_memo_then_disk_then_recompute_on_a_new_key(tmp_path):
    calls: list[int] = []
    first = _ctx(tmp_path)
    np.testing.assert_array_equal(_cached(first, calls), np.arange(4.0))
    _cached(first, calls)  # session memo
    second = _ctx(tmp_path)
    np.testing.assert_array_equal(_cached(second, calls), np.arange(4.0))  # disk
    assert len(calls) == 1
    assert (first.derived_computed, second.derived_read) == ({"demo": 1}, {"demo": 1})
    _cached(second, calls, key={"x": 2})
    assert len(calls) == 2


def test_an_entry_that_does_not_decode_is_damaged_and_recomputed(tmp_path):
    calls: list[int] = []
    _cached(_ctx(tmp_path), calls)
    ctx = _ctx(tmp_path)
    with pytest.warns(CacheWarning, match="is damaged"):
        value = cached_result("demo", {"x": 1}, lambda: calls.append(1) or np.ones(2), encode=lambda v: {"w": v},
                              decode=lambda a: a["w"], context=ctx)  # the entry holds "v", not "w"
    np.testing.assert_array_equal(value, np.ones(2))
    assert ctx.derived_computed == {"demo": 1}


def test_a_read_only_cache_warns_and_the_result_is_still_used(tmp_path, monkeypatch):
    import filelock

    from pytest_transfer import cache

    def refuse(*_args, **_kwargs):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(filelock.FileLock, "acquire", refuse)
    monkeypatch.setattr(cache, "atomic_write_bytes", refuse)
    calls: list[int] = []
    with pytest.warns(CacheWarning) as record:
        np.testing.assert_array_equal(_cached(_ctx(tmp_path), calls), np.arange(4.0))
    messages = " | ".join(str(w.message) for w in record)
    assert "cannot lock the cache directory" in messages and "the result is used but not cached" in messages
    assert len(calls) == 1


def test_array_fingerprint_sees_values_dtype_and_shape():
    a = np.arange(6, dtype=np.float32)
    assert array_fingerprint(a) == array_fingerprint(a.copy())
    assert len({array_fingerprint(a), array_fingerprint(a.astype(np.float64)), array_fingerprint(a.reshape(2, 3)),
                array_fingerprint(a + 1)}) == 4
