"""What the fixtures build: models and datasets loaded once per session and spec.

A spec that cannot be loaded is tried once: every test that uses it fails
at setup with the same one-paragraph message (the error's type and text,
which name the file or cache looked in and the fix), without a fixture
traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .context import Context


class LoadFailure:
    """Why a spec could not be loaded this session (kept in place of the object)."""

    def __init__(self, what: str, spec: Any, exc: Exception) -> None:
        self.message = f"pytest-transfer: cannot load {what} {spec!r}: {type(exc).__name__}: {exc}"


def _key(spec: Any, kwargs: dict[str, Any]) -> Any:
    if not isinstance(spec, str):
        return id(spec)
    return (spec, json.dumps(kwargs, sort_keys=True, default=repr))


def _load_once(ctx: Context, store: dict[Any, Any], what: str, spec: Any, kwargs: dict[str, Any],
               load: Callable[..., Any]) -> Any:
    import pytest

    key = _key(spec, kwargs)
    with ctx.lock:
        if key not in store:
            try:
                store[key] = load(spec, **kwargs)
            except Exception as exc:  # any reason: reported once per test, never retried in this session
                store[key] = LoadFailure(what, spec, exc)
        found = store[key]
    if isinstance(found, LoadFailure):
        pytest.fail(found.message, pytrace=False)
    return found


def model_for(ctx: Context, spec: Any, kwargs: dict[str, Any]) -> Any:
    from .models import load_model

    return _load_once(ctx, ctx.loaded_models, "model", spec, kwargs, load_model)


def dataset_for(ctx: Context, spec: Any, kwargs: dict[str, Any]) -> Any:
    from .datasets import load_dataset

    return _load_once(ctx, ctx.loaded_datasets, "dataset", spec, kwargs, load_dataset)
