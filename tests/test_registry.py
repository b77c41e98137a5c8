from __future__ import annotations

import pytest

from pytest_transfer.registry import Registry


def test_register_get_and_list_with_globs():
    r = Registry("model")
    r.register("resnet-a", lambda: 1)
    r.register("resnet-b", lambda: 2)
    r.register("vit", lambda: 3)
    assert r.get("vit")() == 3
    assert r.list() == ["resnet-a", "resnet-b", "vit"]
    assert r.list(include="resnet-*") == ["resnet-a", "resnet-b"]
    assert r.list(include=["resnet-*", "vit"], exclude="*-b") == ["resnet-a", "vit"]


def test_decorator_form():
    r = Registry("dataset")

    @r.register("toy")
    def toy():
        return "data"

    assert r.get("toy") is toy


def test_duplicates_are_refused():
    r = Registry("model")
    r.register("x", lambda: 1)
    with pytest.raises(ValueError, match="'x' is already registered"):
        r.register("x", lambda: 2)


def test_unknown_name_lists_available_names():
    r = Registry("model")
    r.register("alpha", lambda: 1)
    with pytest.raises(KeyError, match="unknown model 'beta'; registered: alpha"):
        r.get("beta")


def test_factory_must_be_callable():
    with pytest.raises(TypeError, match="factory must be callable"):
        Registry("model").register("x", 3)
