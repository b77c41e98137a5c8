"""``load_model``: spec strings and modules to ``TransferModel``; the model registry; ``list_models``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import Registry, SourceRegistry, session_arguments
from .core import TransferModel

if TYPE_CHECKING:  # pragma: no cover
    from ..context import Context
    from ..settings import Settings


def as_transfer_model(obj: Any, *, name: str | None = None, preprocess: Callable[..., Any] | None = None,
                      feature_node: str | None = None, **kwargs: Any) -> TransferModel:
    """Wrap what a factory returned: a ``TransferModel`` as is, an ``nn.Module`` wrapped."""
    from torch import nn

    _refuse_keywords(obj, kwargs, name)
    if isinstance(obj, TransferModel):
        if feature_node:
            obj.feature_node = feature_node
            obj.resolve_node(feature_node)
        if name:
            obj.name = name
        if preprocess is not None:
            obj.preprocess = preprocess
        return obj
    if isinstance(obj, nn.Module):
        model = TransferModel(obj, name=name, preprocess=preprocess, feature_node=feature_node, **kwargs)
        if feature_node:
            model.resolve_node(feature_node)
        return model
    raise TypeError(f"expected a TransferModel or an nn.Module, got {type(obj).__name__}")


#: what ``TransferModel(module, ...)`` takes beyond name, preprocess and feature_node
MODULE_KEYWORDS = ("num_classes", "categories", "in_channels")


def _checkpoint_file(rest: str, settings: Settings) -> str:
    full = settings.path(rest)
    if not full.exists():
        where = "" if Path(rest).expanduser().is_absolute() else (
            f" (a relative path is taken from the rootdir {settings.rootdir}, as every path of "
            "pytest-transfer is; give an absolute path or one relative to it)")
        raise FileNotFoundError(f"checkpoint:{rest}: weights file {full} does not exist{where}")
    return str(full)


def _hf_ref(rest: str, settings: Settings) -> str:
    """A folder written by ``save_pretrained`` (from the rootdir when relative), else the repo id as given."""
    full = settings.path(rest)
    return str(full) if full.is_dir() else rest


def _refuse_keywords(obj: Any, kwargs: dict[str, Any], name: str | None) -> None:
    """Refuse, by name, keywords that a module or ``TransferModel`` object does not take (they would be
    dropped silently, or reach ``TransferModel`` as an unexpected keyword)."""
    allowed = () if isinstance(obj, TransferModel) else MODULE_KEYWORDS
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        what = f"a {type(obj).__name__} object" + (f" ({name!r})" if name else "")
        takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none (it is already loaded)"
        raise ValueError(f"model keyword(s) {', '.join(map(repr, unknown))} are not taken by {what}: {takes}. "
                         "With several models in a marker, give keywords per model: model_kwargs=[{...}, {...}] "
                         "(one dict per model, in order) or model_kwargs={'<spec>': {...}}")


def _unexpected_keyword(exc: TypeError, spec: str) -> ValueError | None:
    """A ``TypeError`` about an unexpected keyword from deep inside a source, said by name (``None`` for
    any other ``TypeError``)."""
    import re

    found = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
    if found is None:
        return None
    return ValueError(f"model {spec!r}: the keyword {found.group(1)!r} is not taken by this source "
                      f"({str(exc).splitlines()[0]}); remove it, or give keywords per model: "
                      "model_kwargs=[{...}, {...}] or model_kwargs={'<spec>': {...}}")


def _rooted_kwargs(kwargs: dict[str, Any], keys: Sequence[str], settings: Settings) -> dict[str, Any]:
    """``kwargs`` with the path-valued ``keys`` taken from the rootdir (:meth:`Settings.path
    <pytest_transfer.settings.Settings.path>`, the one rule for every path of pytest-transfer)."""
    return {k: str(settings.path(v)) if k in keys and isinstance(v, (str, os.PathLike)) else v
            for k, v in kwargs.items()}


# The built-in loaders name ``settings``: :func:`load_model` passes the session's (the rootdir of relative
# paths, the seed of random weights) to every loader that names it, a plugin's too (and ``context`` to one
# that names that: registry.session_arguments); what a loader reads of the session is an argument, never a
# global.

def _torchvision_source(rest: str, *, settings: Settings, **kwargs: Any) -> TransferModel:
    """``torchvision:<arch>[:<weights>]``."""
    from .torchvision import load_torchvision

    arch, _, weights = rest.partition(":")
    if "weights" in kwargs:  # weights=None / "DEFAULT" / a WeightsEnum member, as torchvision's builders take
        given = kwargs.pop("weights")
        if weights:
            raise ValueError(f"weights: given twice, in the spec (torchvision:{rest}) and as weights={given!r}; "
                             "keep one")
        weights = "none" if given is None else given
    kwargs.setdefault("seed", settings.seed)
    return load_torchvision(arch, weights or "DEFAULT", **kwargs)


def _checkpoint_source(rest: str, *, settings: Settings, **kwargs: Any) -> TransferModel:
    """``checkpoint:<path>`` (with ``arch=``)."""
    from .checkpoint import load_checkpoint

    kwargs.setdefault("name", f"checkpoint:{rest}")  # named by the spec as written, not its absolute path
    kwargs.setdefault("seed", settings.seed)
    return load_checkpoint(_checkpoint_file(rest, settings), **kwargs)


def _timm_source(rest: str, *, settings: Settings, **kwargs: Any) -> TransferModel:
    """``timm:<name>``."""
    from .timm import load_timm

    kwargs.setdefault("seed", settings.seed)
    return load_timm(rest, **_rooted_kwargs(kwargs, ("weights", "cache_dir"), settings))


def _hf_source(rest: str, *, settings: Settings, **kwargs: Any) -> TransferModel:
    """``hf:<local folder or cached repo id>``."""
    from .hf import load_hf

    model = load_hf(_hf_ref(rest, settings), **_rooted_kwargs(kwargs, ("cache_dir",), settings))
    model.name = f"hf:{rest}"  # named by the spec as written
    return model


#: the built-in model sources: prefix → (loader, spec form); registered in every session like a plugin's
BUILTIN_MODEL_SOURCES: dict[str, tuple[Callable[..., Any], str]] = {
    "torchvision": (_torchvision_source, "torchvision:<arch>[:<weights>]"),
    "timm": (_timm_source, "timm:<name>"),
    "hf": (_hf_source, "hf:<folder or cached repo id>"),
    "checkpoint": (_checkpoint_source, "checkpoint:<path> (with arch=)"),
}
SPEC_FORMS = tuple(form for _, form in BUILTIN_MODEL_SOURCES.values())


def register_builtin_model_sources(registry: SourceRegistry) -> None:
    """Add :data:`BUILTIN_MODEL_SOURCES` to ``registry`` (before the plugins' hook runs)."""
    for prefix, (loader, form) in BUILTIN_MODEL_SOURCES.items():
        registry.register(prefix, loader, form=form, origin="pytest_transfer")


def load_model(spec: Any, *, context: Context, registry: Registry | None = None, name: str | None = None,
               preprocess: Callable[..., Any] | None = None, feature_node: str | None = None,
               **kwargs: Any) -> TransferModel:
    """Build a ``TransferModel`` from a spec string or an ``nn.Module``, in the session ``context``.

    This is :func:`pytest_transfer.load_model` with the session given: its
    model registry and sources (plugins' included), and its settings (the
    rootdir relative paths are taken from, the seed of random weights).
    Specs, keywords and errors: see :func:`pytest_transfer.load_model`.
    """
    if not isinstance(spec, str):
        return as_transfer_model(spec, name=name, preprocess=preprocess, feature_node=feature_node, **kwargs)
    reg = registry if registry is not None else context.models
    found = None
    try:
        if spec in reg:
            obj = reg.get(spec)(**kwargs)
            return as_transfer_model(obj, name=name or spec, preprocess=preprocess, feature_node=feature_node)
        found = context.model_sources.split(spec)
        if found is not None:
            loader, rest = found
            obj = loader(rest, **session_arguments(loader, kwargs, spec, {"settings": context.settings,
                                                                          "context": context}))
    except TypeError as exc:
        said = _unexpected_keyword(exc, spec)
        if said is None:
            raise
        raise said from None
    if found is None:
        known = ", ".join(reg.list()) or "none registered"
        raise ValueError(f"unknown model spec {spec!r}; use {context.model_sources.describe()}, or a registered "
                         f"name ({known})")
    # a plugin's model is named by the spec as written, even when its loader delegates to another spec (a
    # store resolving to a checkpoint: thresholds tables and baselines key on what the user wrote); a built-in
    # source names its model itself (torchvision's canonical weights name)
    builtin = BUILTIN_MODEL_SOURCES.get(spec.partition(":")[0], (None,))[0] is loader
    default_name = obj.name if builtin and isinstance(obj, TransferModel) else spec
    return as_transfer_model(obj, name=name or default_name, preprocess=preprocess, feature_node=feature_node)


def new_model_sources() -> SourceRegistry:
    """A registry of model sources holding the built-in prefixes."""
    sources = SourceRegistry("model source", hook="pytest_transfer_register_model_sources")
    register_builtin_model_sources(sources)
    return sources


def list_models(include: str | Sequence[str] | None = None, exclude: str | Sequence[str] | None = None, *,
                context: Context, torchvision: bool = False) -> list[str]:
    """:func:`pytest_transfer.list_models` in the session ``context`` (its registered model names)."""
    names = context.models.list(include=include, exclude=exclude)
    if torchvision:
        from .torchvision import classification_models

        reg = Registry("model")
        for arch in classification_models():
            reg.register(f"torchvision:{arch}", lambda: None)
        names += reg.list(include=include, exclude=exclude)
    return names
