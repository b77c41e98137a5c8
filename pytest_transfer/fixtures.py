"""What the fixtures build: models and datasets loaded once per session and spec."""

from __future__ import annotations

import json
from typing import Any

from .context import Context


def _key(spec: Any, kwargs: dict[str, Any]) -> Any:
    if not isinstance(spec, str):
        return id(spec)
    return (spec, json.dumps(kwargs, sort_keys=True, default=repr))


def model_for(ctx: Context, spec: Any, kwargs: dict[str, Any]) -> Any:
    from .models import load_model

    key = _key(spec, kwargs)
    with ctx.lock:
        if key not in ctx.loaded_models:
            ctx.loaded_models[key] = load_model(spec, **kwargs)
        return ctx.loaded_models[key]


def dataset_for(ctx: Context, spec: Any, kwargs: dict[str, Any]) -> Any:
    from .datasets import load_dataset

    key = _key(spec, kwargs)
    with ctx.lock:
        if key not in ctx.loaded_datasets:
            ctx.loaded_datasets[key] = load_dataset(spec, **kwargs)
        return ctx.loaded_datasets[key]
