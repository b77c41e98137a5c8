"""Several processes: pytest-xdist workers and separate pytest runs share one locked cache and compute each entry
once; --dist loadgroup keeps a model's tests on one worker; workers divide the CPU threads.

The project below logs every forward pass (by wrapping ``engine.passes.run_pass``) and, per test, the worker and torch's
thread count, so the tests count computations rather than time them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("xdist")

CONFTEST = """
import json, os
import pytest
import torch
from torch import nn
from pytest_transfer.engine import passes

LOG = os.environ["TRANSFER_TEST_LOG"]
DEFAULT_THREADS = torch.get_num_threads()


def log(**record):
    with open(LOG, "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "worker": os.environ.get("PYTEST_XDIST_WORKER"), **record}) + "\\n")


_run_pass = passes.run_pass


def counting_run_pass(model, dataset, indices, **kwargs):
    log(kind="pass", model=model.name, n=len(indices))
    return _run_pass(model, dataset, indices, **kwargs)


passes.run_pass = counting_run_pass


@pytest.fixture(autouse=True)
def log_test(request):
    yield
    log(kind="test", test=request.node.nodeid, threads=torch.get_num_threads(), default=DEFAULT_THREADS)


def tiny(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 3))


def pytest_transfer_register_models(registry):
    registry.register("tiny-a", lambda: tiny(0))
    registry.register("tiny-b", lambda: tiny(1))


def pytest_transfer_register_datasets(registry):
    def blobs():
        g = torch.Generator().manual_seed(0)
        labels = torch.arange(60) % 3
        images = torch.rand(60, 1, 8, 8, generator=g) * 0.3
        for i, c in enumerate(labels.tolist()):
            images[i, 0, 2 * c:2 * c + 3, 2 * c:2 * c + 3] += 0.6
        return images.clamp(0, 1), labels
    registry.register("blobs", blobs)
"""

TESTS = """
import pytest
from pytest_transfer import assert_transfer_accuracy_above

# model A's tests are put in two groups of their own, so that two workers share its cache entries
# (xdist sends the largest groups out first: a-first to one worker, a-second to the other)
@pytest.mark.xdist_group("a-first")
@pytest.mark.transfer(model="tiny-a", dataset="blobs")
@pytest.mark.parametrize("k", [1, 3, 5])
def test_a1(pretrained_model, target_dataset, k):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.0, method="knn", k=k)

@pytest.mark.xdist_group("a-second")
@pytest.mark.transfer(model="tiny-a", dataset="blobs")
@pytest.mark.parametrize("C", [0.1, 1.0, 10.0])
def test_a2(pretrained_model, target_dataset, C):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.0, C=C)

# model B's tests get the plugin's group, transfer:tiny-b
@pytest.mark.transfer(model="tiny-b", dataset="blobs")
@pytest.mark.parametrize("k", [1, 3, 5])
def test_b(pretrained_model, target_dataset, k):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.0, method="knn", k=k)
"""

# four entries: model A and model B, each on the train split (probe) and the test split
ENTRIES = {("tiny-a", 45), ("tiny-a", 15), ("tiny-b", 45), ("tiny-b", 15)}


@pytest.fixture
def project(pytester, tmp_path):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_models=TESTS)
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\naddopts = "-p no:cacheprovider"\n'
                               '[tool.pytest_transfer]\ndevice = "cpu"\n')
    log = tmp_path / "log.jsonl"
    env = {**os.environ, "TRANSFER_TEST_LOG": str(log)}
    for key in [k for k in env if k.startswith(("PYTEST_TRANSFER_", "PYTEST_XDIST", "PYTEST_ADDOPTS"))]:
        del env[key]
    return pytester.path, log, env, tmp_path / "shared-cache"


def read(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def run(cwd, env, *args):
    return subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc):
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def test_xdist_workers_share_the_cache_keep_groups_and_divide_threads(project):
    cwd, log, env, cache = project
    out = finish(run(cwd, env, "-n", "2", "--dist", "loadgroup", "-v", f"--transfer-cache-dir={cache}",
                     "--transfer-report=report.json"))
    assert "9 passed" in out
    records = read(log)
    tests = {r["test"].split("@")[0].split("::")[1]: r for r in records if r["kind"] == "test"}
    assert len(tests) == 9
    # model A ran on both workers, yet each of its entries was computed once: the workers share the cache
    first = {tests[f"test_a1[{k}]"]["worker"] for k in (1, 3, 5)}
    second = {tests[f"test_a2[{c}]"]["worker"] for c in (0.1, 1.0, 10.0)}
    assert len(first) == len(second) == 1 and first != second
    passes = [(r["model"], r["n"]) for r in records if r["kind"] == "pass"]
    assert sorted(passes) == sorted(ENTRIES)
    # model B's tests were kept on one worker by the group the plugin gave them; a user's group is kept
    assert len({tests[f"test_b[{k}]"]["worker"] for k in (1, 3, 5)}) == 1
    assert "test_models.py::test_b[1]@transfer:tiny-b" in out and "test_models.py::test_a1[1]@a-first" in out
    # measurements (and baselines) name the test without xdist's @group suffix
    report = json.loads((cwd / "report.json").read_text())
    assert sorted(m["test"] for m in report["measurements"]) == sorted(f"test_models.py::{t}" for t in tests)
    # each worker uses its share of the cores for torch's threads
    from pytest_transfer.device import available_cpus

    for r in tests.values():
        assert r["threads"] == max(1, min(r["default"], available_cpus() // 2))


def test_two_pytest_processes_sharing_a_cache_directory_compute_each_entry_once(project):
    cwd, log, env, cache = project
    procs = [run(cwd, env, "-p", "no:xdist", "-q", f"--transfer-cache-dir={cache}") for _ in range(2)]
    for p in procs:
        assert "9 passed" in finish(p)
    records = read(log)
    assert len({r["pid"] for r in records}) == 2
    passes = [(r["model"], r["n"]) for r in records if r["kind"] == "pass"]
    assert sorted(passes) == sorted(ENTRIES)  # four entries, four computations, not eight
    assert len(list(cache.glob("*.npz"))) == 4


def test_loadgroup_is_only_added_under_dist_loadgroup(pytester, monkeypatch):
    from pytest_transfer.engine import passes

    # the conftest, imported in this process, replaces passes.run_pass: put it back afterwards, or every later
    # test of this process would log its passes to ./log.jsonl
    monkeypatch.setattr(passes, "run_pass", passes.run_pass)
    pytester.makeconftest(CONFTEST.replace('os.environ["TRANSFER_TEST_LOG"]', '"log.jsonl"'))
    pytester.makepyfile(test_models=TESTS)
    items, _ = pytester.inline_genitems("-p", "no:cacheprovider", "--dist", "loadgroup")
    groups = {i.name: [m.kwargs.get("name", m.args[0] if m.args else None)
                       for m in i.iter_markers("xdist_group")] for i in items}
    assert groups["test_b[1]"] == ["transfer:tiny-b"] and groups["test_a1[1]"] == ["a-first"]
    items, _ = pytester.inline_genitems("-p", "no:cacheprovider")
    assert all(not list(i.iter_markers("xdist_group")) or i.name.startswith("test_a") for i in items)


def test_summary_rows_follow_the_collection_order_not_the_finishing_order(pytester):
    from tests._helpers import BLOBS_CONFTEST

    pytester.makeconftest(BLOBS_CONFTEST)
    pytester.makepyfile(test_order="""
        import time
        import pytest
        from pytest_transfer import assert_transfer_accuracy_above

        pytestmark = pytest.mark.transfer(model="tiny", dataset="blobs")

        def test_1_slow(pretrained_model, target_dataset):
            time.sleep(3)  # finishes after the others
            assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.0)

        @pytest.mark.parametrize("n", [2, 3, 4])
        def test_n(pretrained_model, target_dataset, n):
            assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.0)
    """)
    result = pytester.runpytest("-n", "2", "-p", "no:cacheprovider", "--transfer-no-cache", "--transfer-device=cpu")
    result.assert_outcomes(passed=4)
    rows = [line.split()[0] for line in result.outlines if line.startswith("test_order.py::")]
    assert rows == ["test_order.py::test_1_slow", "test_order.py::test_n[2]", "test_order.py::test_n[3]",
                    "test_order.py::test_n[4]"], result.outlines
