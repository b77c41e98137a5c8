"""What the fixtures build: models and datasets loaded once per session and spec.

A spec that cannot be loaded is tried once: every test that uses it fails
at setup with the same one-paragraph message (the error's type and text,
which name the file or cache looked in and the fix), without a fixture
traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from .context import Context
from .text import printable


class LoadFailure:
    """Why a spec could not be loaded this session (kept in place of the object): the error's type and text,
    and where it was raised outside pytest-transfer (a plugin's loader, a ``conftest.py``, a library)."""

    def __init__(self, what: str, spec: Any, exc: Exception) -> None:
        head = f"pytest-transfer: cannot load {what} {spec!r}: {type(exc).__name__}: {exc}"
        self.message = "\n".join(printable(line) for line in [head, *raised_at(exc)])


def raised_at(exc: BaseException, *, limit: int = 4) -> list[str]:
    """The last ``limit`` frames outside pytest-transfer's package where ``exc`` (or, for an error raised
    ``from`` another, the innermost of those causes) was raised, innermost last: a loader's own line is shown
    although the failure is reported without a fixture traceback. An exception merely raised while another
    was being handled is not followed (the loader's own, clearer error is the one that says what happened)."""
    import traceback

    while exc.__cause__ is not None:
        exc = exc.__cause__
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not os.path.abspath(f.filename).startswith(package)]
    if not frames:
        return []
    shown = [f"  {f.filename}:{f.lineno} in {f.name}" + (f": {f.line}" if f.line else "") for f in frames[-limit:]]
    return ["raised at (innermost last):", *shown]


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
                store[key] = load(spec, context=ctx, **kwargs)
            except Exception as exc:  # any reason: reported once per test, never retried in this session
                store[key] = LoadFailure(what, spec, exc)
        found = store[key]
    if isinstance(found, LoadFailure):
        pytest.fail(found.message, pytrace=False)
    return found


def _spec_name(spec: Any) -> str:
    return spec if isinstance(spec, str) else getattr(spec, "name", type(spec).__name__)


def kwargs_for(spec: Any, given: Any, listed: Any, key: str) -> dict[str, Any]:
    """The keywords for ``spec`` out of a marker's ``<key>_kwargs`` (``given``), ``listed`` being its ``<key>=``.

    ``given`` is one dict for every spec, or, per spec, a list of dicts in the order of the list (several
    listed), or a dict whose keys are listed specs (strings) and values their dicts (a spec not named gets
    none; with one spec listed, ``{spec: {...}}`` is its dict too). A malformed one fails the test's
    setup in one line naming the mistake.
    """
    import pytest

    if given is None:
        return {}
    several = isinstance(listed, (list, tuple))
    if isinstance(given, (list, tuple)):
        if not several or len(given) != len(listed) or not all(isinstance(g, dict) or g is None for g in given):
            n = len(listed) if several else 1
            pytest.fail(f"{key}_kwargs: a list needs one dict per {key} listed ({n}), in order; got {given!r}",
                        pytrace=False)
        return dict(given[next(i for i, s in enumerate(listed) if s is spec or s == spec)] or {})
    if not isinstance(given, dict):
        pytest.fail(f"{key}_kwargs: expected a dict (or, with several {key}s, a list of dicts or a dict of dicts "
                    f"keyed by spec), got {given!r}", pytrace=False)
    names = {_spec_name(s) for s in listed} if several else {_spec_name(listed)}
    per_spec = [k for k in given if k in names]
    # keyed by spec: with several specs, or with one whose only key is that spec (the form the errors suggest)
    if per_spec and all(isinstance(v, dict) for v in given.values()) and (several or len(given) == 1):
        stray = sorted(set(given) - names)
        if stray:
            pytest.fail(f"{key}_kwargs: keys {stray} are not among the listed {key}s {sorted(names)}; key each "
                        "dict by one of them", pytrace=False)
        return dict(given.get(_spec_name(spec)) or {})
    return dict(given)


def model_for(ctx: Context, spec: Any, kwargs: dict[str, Any]) -> Any:
    from .models.sources import load_model

    return _load_once(ctx, ctx.loaded_models, "model", spec, kwargs, load_model)


def dataset_for(ctx: Context, spec: Any, kwargs: dict[str, Any]) -> Any:
    from .datasets.specs import load_dataset

    return _load_once(ctx, ctx.loaded_datasets, "dataset", spec, kwargs, load_dataset)
