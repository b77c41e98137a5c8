"""Devices: specs, xdist workers spread over (simulated) GPUs, the device hook, CPU threads shared between workers."""

from __future__ import annotations

import pytest
import torch

from pytest_transfer import device as dev


@pytest.fixture(autouse=True)
def outside_xdist(monkeypatch):
    """These tests say which worker they are; the suite itself may run under xdist."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)


@pytest.fixture
def gpus(monkeypatch):
    """Pretend ``n`` CUDA devices are visible (``torch.device("cuda", i)`` needs no GPU to exist)."""

    def visible(n):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return visible


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("spec", "normal"), [("auto", "auto"), (" CPU ", "cpu"), ("cuda", "cuda"),
                                              ("cuda:3", "cuda:3"), ("mps", "mps")])
def test_valid_specs(spec, normal):
    assert dev.validate_device_spec(spec) == normal


@pytest.mark.parametrize("spec", ["tpu", "cuda:", "cuda:x", "gpu0", ""])
def test_invalid_specs_list_the_valid_ones(spec):
    with pytest.raises(ValueError, match="valid: auto, cpu, cuda, cuda:N or mps"):
        dev.validate_device_spec(spec)


def test_worker_index_and_count_from_xdist_environment(monkeypatch):
    assert dev.xdist_worker_index() is None and dev.xdist_worker_count() is None
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw12")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "16")
    assert dev.xdist_worker_index() == 12 and dev.xdist_worker_count() == 16
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "master")
    assert dev.xdist_worker_index() is None


def test_without_gpus_auto_is_the_cpu_and_cuda_is_refused(gpus, monkeypatch):
    gpus(0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert dev.resolve_device("auto", worker=3) == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available here; use --transfer-device=cpu"):
        dev.resolve_device("cuda")
    with pytest.raises(ValueError, match="'mps' asked for, but MPS is not available"):
        dev.resolve_device("mps")


@pytest.mark.parametrize(("worker", "expected"), [(None, 0), (0, 0), (1, 1), (2, 2), (3, 0), (7, 1)])
def test_workers_are_spread_over_the_visible_gpus(gpus, worker, expected):
    gpus(3)
    assert dev.resolve_device("auto", worker=worker) == torch.device("cuda", expected)
    assert dev.resolve_device("cuda", worker=worker) == torch.device("cuda", expected)
    assert dev.resolve_device("cuda:1", worker=worker) == torch.device("cuda", 1)  # an explicit index is kept


def test_the_worker_index_is_read_from_xdist(gpus, monkeypatch):
    gpus(2)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw5")
    assert dev.resolve_device("auto") == torch.device("cuda", 1)


def test_a_gpu_index_that_is_not_visible(gpus):
    gpus(2)
    with pytest.raises(ValueError, match=r"only 2 CUDA device\(s\) are visible \(cuda:0 to cuda:1"):
        dev.resolve_device("cuda:2")


@pytest.mark.parametrize(("workers", "cpus", "had", "expected"),
                         [(2, 8, 8, 4), (3, 8, 8, 2), (4, 2, 2, 1), (16, 2, 2, 1), (2, 16, 3, 3)])
def test_cpu_threads_are_divided_between_workers(restore_threads, workers, cpus, had, expected):
    torch.set_num_threads(had)
    assert dev.share_cpu_threads(workers, cpus=cpus) == expected
    assert torch.get_num_threads() == expected


@pytest.mark.parametrize("workers", [None, 0, 1])
def test_threads_are_left_alone_without_several_workers(restore_threads, workers):
    torch.set_num_threads(2)
    assert dev.share_cpu_threads(workers, cpus=64) is None
    assert torch.get_num_threads() == 2


def test_available_cpus_follows_the_affinity_mask():
    import os

    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert dev.available_cpus() == expected


def test_the_session_device_shares_threads_under_xdist(restore_threads, monkeypatch, tmp_path):
    from pytest_transfer.context import Context
    from pytest_transfer.settings import resolve

    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "64")
    ctx = Context(resolve({"device": "cpu"}, rootdir=tmp_path, pyproject=None, environ={}))
    assert ctx.device == torch.device("cpu")
    assert torch.get_num_threads() == 1  # 64 workers on the cores of this machine: one thread each


HOOK = """
import torch

def pytest_transfer_device(worker_index, device_count):
    seen.append((worker_index, device_count))
    return {choice}

seen = []
"""


@pytest.mark.parametrize("choice", ['"cpu"', 'torch.device("cpu")'])
def test_the_device_hook_overrides_the_setting(pytester, choice):
    pytester.makeconftest(HOOK.format(choice=choice))
    pytester.makepyfile(test_d="""
        import torch
        def test_device(transfer_device, request):
            import conftest
            assert transfer_device == torch.device("cpu")
            assert conftest.seen == [(None, torch.cuda.device_count())]
    """)
    # --transfer-device=mps is not available here: the hook's answer is what is used
    pytester.runpytest("-p", "no:cacheprovider", "--transfer-device=mps").assert_outcomes(passed=1)


def test_a_hook_returning_none_defers_to_the_setting(pytester):
    pytester.makeconftest("def pytest_transfer_device(worker_index, device_count):\n    return None\n")
    pytester.makepyfile(test_d="""
        def test_device(transfer_device):
            assert str(transfer_device) == "cpu"
    """)
    pytester.runpytest("-p", "no:cacheprovider", "--transfer-device=cpu").assert_outcomes(passed=1)
