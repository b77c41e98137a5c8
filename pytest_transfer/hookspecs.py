"""Hooks that plugins and ``conftest.py`` files implement to extend pytest-transfer."""

from __future__ import annotations

from typing import Any

import pytest


def pytest_transfer_register_models(registry: Any) -> None:
    """Register model factories by name.

    Called once, the first time a model is looked up in the session (so every
    ``conftest.py`` has been collected). ``registry.register(name, factory)``
    adds a callable that returns a ``TransferModel`` or an ``nn.Module``;
    keyword arguments given to ``load_model(name, **kwargs)`` are passed on.
    Duplicate names are refused.

    Example ``conftest.py``::

        def pytest_transfer_register_models(registry):
            def tiny():
                import torch
                return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
            registry.register("tiny", tiny)
    """


def pytest_transfer_register_datasets(registry: Any) -> None:
    """Register dataset factories by name.

    Called once, the first time a dataset is looked up. A factory returns a
    ``TargetDataset``, ``(images, labels)`` arrays or a torch ``Dataset``.

    Example ``conftest.py``::

        def pytest_transfer_register_datasets(registry):
            def blobs():
                import numpy as np
                rng = np.random.default_rng(0)
                return rng.random((100, 1, 8, 8), dtype=np.float32), rng.integers(0, 2, 100)
            registry.register("blobs", blobs)
    """


def pytest_transfer_register_model_sources(registry: Any) -> None:
    """Add model spec prefixes: ``registry.register(prefix, loader, form=None)``.

    Called once, the first time a model or dataset is looked up (after every
    ``conftest.py`` was collected), after the built-in prefixes
    (``torchvision``, ``timm``, ``hf``, ``checkpoint``) were registered the
    same way. ``loader(rest, **kwargs)`` receives the text after the first
    ``:`` of the spec and the marker's ``model_kwargs`` (or ``load_model``'s
    keyword arguments) and returns a ``TransferModel`` or an ``nn.Module``
    (a bare module is fed the images as they are, in [0, 1], without resize
    or normalisation: return a ``TransferModel`` with a ``Preprocess`` for
    those); the model is named by the spec as written.
    A loader that names ``settings`` receives the session's
    :class:`~pytest_transfer.settings.Settings` (``settings.path(p)`` takes a
    relative path from the rootdir; ``settings.seed``), one that names
    ``context`` the session itself (to load another spec in it); neither can
    be given as an option. ``form`` is the spec's shape shown in error
    messages. A prefix already registered is refused.

    Example ``conftest.py`` (a team's local model store)::

        def pytest_transfer_register_model_sources(registry):
            def from_store(rest, *, context, **kwargs):
                from pytest_transfer import load_model
                name, _, version = rest.partition("/")
                path = f"/models/{name}/{version}/model.pt"
                return load_model(f"checkpoint:{path}", arch=name, context=context, **kwargs)
            registry.register("mystore", from_store, form="mystore:<name>/<version>")
    """


def pytest_transfer_register_dataset_sources(registry: Any) -> None:
    """Add dataset spec prefixes: ``registry.register(prefix, loader, form=None)``.

    Called once, like :func:`pytest_transfer_register_model_sources`, after the
    built-in ``imagefolder`` and ``torchvision`` prefixes. ``loader(rest,
    **kwargs)`` receives the text after the first ``:`` and the marker's
    ``dataset_kwargs``, and returns a ``TargetDataset``, ``(images, labels)``
    arrays or a torch ``Dataset``. When its signature names ``name``,
    ``seed`` or ``test_fraction``, the session's values are passed too (for a
    seeded subset); otherwise the result is split with the session's seed.
    ``settings`` and ``context`` as for model sources.

    Example ``conftest.py``::

        def pytest_transfer_register_dataset_sources(registry):
            def from_npz(rest, *, settings):
                import numpy as np
                data = np.load(settings.path(rest))
                return data["images"], data["labels"]
            registry.register("npz", from_npz, form="npz:<file.npz>")
    """


@pytest.hookspec(firstresult=True)
def pytest_transfer_threshold(model: str, dataset: str, metric: str) -> float | None:
    """Supply a threshold for ``metric`` on ``model`` × ``dataset``; return ``None`` to defer.

    An explicit argument to the gate wins over this hook; this hook wins
    over the config file. Stops at first non-None result.

    Example ``conftest.py``::

        def pytest_transfer_threshold(model, dataset, metric):
            if metric == "transfer_accuracy" and dataset == "digits":
                return 0.9
    """


@pytest.hookspec(firstresult=True)
def pytest_transfer_device(worker_index: int | None, device_count: int) -> Any:
    """Choose the ``torch.device`` (or a spec string) for this process; return ``None`` to defer.

    ``worker_index`` is the pytest-xdist worker number (``None`` without
    xdist), ``device_count`` the number of visible CUDA devices. The default
    maps worker *i* to ``cuda:{i % device_count}``. Stops at first non-None
    result.
    """
