"""glibc malloc tuning during a pass (set, restored, skipped when off or tuned by the user) and the layout rule."""

from __future__ import annotations

import resource

import numpy as np
import pytest
import torch
from torch import nn

from pytest_transfer import allocator
from pytest_transfer.engine import prefers_channels_last, run_pass


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("trim", pad))
        return 1


@pytest.fixture
def fake_libc(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "_glibc", lambda: libc)
    for key in (*allocator.USER_TUNING_ENV, "GLIBC_TUNABLES"):
        monkeypatch.delenv(key, raising=False)
    return libc


def _set(values):
    return [("mallopt", p, v) for p, v in values.items()]


def test_the_pass_values_are_set_once_and_the_defaults_restored_after(fake_libc):
    with allocator.tuned_malloc() as on, allocator.tuned_malloc() as nested:
        assert on and nested
        assert fake_libc.calls == _set(allocator.DURING_PASS)
    assert fake_libc.calls == [*_set(allocator.DURING_PASS), *_set(allocator.GLIBC_DEFAULTS), ("trim", 0)]
    assert allocator.DURING_PASS == {allocator.M_MMAP_MAX: 0, allocator.M_TRIM_THRESHOLD: 1 << 30}
    assert allocator.GLIBC_DEFAULTS == {allocator.M_MMAP_MAX: 65536, allocator.M_TRIM_THRESHOLD: 128 * 1024,
                                        allocator.M_MMAP_THRESHOLD: 32 << 20}


def test_restored_also_when_the_pass_raises(fake_libc):
    with pytest.raises(RuntimeError), allocator.tuned_malloc():
        raise RuntimeError("boom")
    assert fake_libc.calls[-1] == ("trim", 0)


@pytest.mark.parametrize("env", [{"MALLOC_MMAP_MAX_": "0"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}])
def test_a_user_tuned_malloc_is_left_alone(fake_libc, monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with allocator.tuned_malloc() as on:
        assert not on
    assert fake_libc.calls == []


def test_the_switch_turns_it_off_in_the_engine(fake_libc, blobs, tiny_model):
    idx = blobs.indices("test")
    run_pass(tiny_model, blobs, idx, nodes=["penultimate"], perturbation=None, batch_size=8, device="cpu",
             malloc_tuning=False)
    assert fake_libc.calls == []
    run_pass(tiny_model, blobs, idx, nodes=["penultimate"], perturbation=None, batch_size=8, device="cpu")
    assert fake_libc.calls[-1] == ("trim", 0)


def test_the_setting_reaches_the_pass(fake_libc, blobs, tiny_model, fresh_context):
    from pytest_transfer import evaluate
    from pytest_transfer.settings import resolve

    fresh_context.settings = resolve({"no_cache": True, "device": "cpu", "malloc_tuning": "off"}, environ={})
    evaluate(tiny_model, blobs, split="test")
    assert fake_libc.calls == []


@pytest.mark.skipif(not allocator.available(), reason="needs glibc without user malloc tuning")
def test_with_the_tuning_a_freed_large_buffer_is_reused_without_new_page_faults():
    def touch_fresh_64_mib() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = np.ones(8 << 20)  # 64 MiB, far above any mmap threshold glibc would pick itself
        del a
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    with allocator.tuned_malloc():
        touch_fresh_64_mib()
        assert touch_fresh_64_mib() < 1000  # 16,384 pages of 4 KiB if it had been unmapped and mapped again


# --- the layout rule ---------------------------------------------------------------


def _depthwise_net():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3))


def test_channels_last_on_the_cpu_only_for_nets_with_grouped_convolutions():
    import torchvision

    assert not prefers_channels_last(torchvision.models.resnet18(), "cpu")
    assert prefers_channels_last(torchvision.models.mobilenet_v3_small(), "cpu")
    assert prefers_channels_last(_depthwise_net(), "cpu")
    assert prefers_channels_last(torchvision.models.resnet18(), torch.device("cuda"))
    assert not prefers_channels_last(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), "cuda")


def test_the_engine_applies_the_rule(blobs):
    from pytest_transfer import load_model

    dense = load_model(nn.Sequential(*list(_depthwise_net())[:3], nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(8, 3)), name="dense")
    depthwise = load_model(_depthwise_net(), name="dw")
    idx = blobs.indices("test")
    for model, expected in ((depthwise, True), (dense, False)):
        run_pass(model, blobs, idx, nodes=["penultimate"], perturbation=None, batch_size=8, device="cpu")
        weight = model.module[1].weight  # 8×8×3×3: the two layouts differ
        assert weight.is_contiguous(memory_format=torch.channels_last) == expected
        assert weight.is_contiguous() != expected
