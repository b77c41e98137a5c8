"""Shared fixtures for the plugin's own tests: a fresh context, small nets and small data."""

from __future__ import annotations

import numpy  # noqa: F401  (imported once here: pytester's in-process runs cannot re-import numpy)
import pytest
import torch  # noqa: F401

from tests._helpers import make_blobs_images, tiny_net


@pytest.fixture
def fresh_context(tmp_path, monkeypatch):
    """A context of its own (no disk cache unless a test asks), made current for the test."""
    from pytest_transfer.context import Context, set_current_context
    from pytest_transfer.settings import resolve

    for key in list(__import__("os").environ):
        if key.startswith("PYTEST_TRANSFER_"):
            monkeypatch.delenv(key)
    ctx = Context(resolve({"no_cache": True, "device": "cpu"}, rootdir=tmp_path, pyproject=None))
    previous = set_current_context(ctx)
    yield ctx
    set_current_context(previous)


@pytest.fixture
def blobs(fresh_context):
    from pytest_transfer import load_dataset

    x, y = make_blobs_images()
    return load_dataset((x, y), name="blobs")


@pytest.fixture
def squares(fresh_context):
    """Three classes of bright squares at distinct places on 10×10 noise (90 images)."""
    from pytest_transfer import load_dataset

    x, y = make_blobs_images(n_per_class=30, n_classes=3, size=10)
    return load_dataset((x, y), name="squares")


@pytest.fixture
def tiny_model(fresh_context):
    from pytest_transfer import load_model

    return load_model(tiny_net(), name="tiny")


# pytest_transfer too: a function the package memoised during an inner run would otherwise keep the dropped
# modules' classes (an inner run's BaselineError is not the one a later test imports), an order-dependent failure
_HEAVY = {"torch", "torchvision", "numpy", "scipy", "sklearn", "PIL", "matplotlib", "functorch", "sympy", "filelock",
          "pytest_transfer"}


@pytest.fixture(autouse=True)
def _keep_heavy_modules_across_pytester_runs(monkeypatch):
    """pytester's in-process runs drop the modules they imported; torch and numpy cannot be imported twice,
    and two copies of pytest_transfer's modules would have two copies of each exception class."""
    from _pytest import pytester as _pt

    original = _pt.SysModulesSnapshot.__init__

    def init(self, preserve=None):
        def keep(name):
            return name.partition(".")[0] in _HEAVY or bool(preserve and preserve(name))

        original(self, preserve=keep)

    monkeypatch.setattr(_pt.SysModulesSnapshot, "__init__", init)
