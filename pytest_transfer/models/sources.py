"""``load_model``: spec strings and modules to ``TransferModel``; the model registry; ``list_models``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..registry import Registry
from .core import TransferModel

SPEC_FORMS = ("torchvision:<arch>[:<weights>]", "timm:<name>", "hf:<folder or cached repo id>",
              "checkpoint:<path> (with arch=)")


def as_transfer_model(obj: Any, *, name: str | None = None, preprocess: Callable[..., Any] | None = None,
                      feature_node: str | None = None, **kwargs: Any) -> TransferModel:
    """Wrap what a factory returned: a ``TransferModel`` as is, an ``nn.Module`` wrapped."""
    from torch import nn

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


#: keyword arguments of a source that are paths (the spec's own path aside), resolved as it is
PATH_KWARGS = {"timm": ("weights", "cache_dir"), "hf": ("cache_dir",)}


def rooted(path: str | os.PathLike[str]) -> Path:
    """``path`` with a relative one taken from the rootdir (:meth:`pytest_transfer.settings.Settings.path`,
    the one rule for every path of pytest-transfer), so ``cd tests && pytest`` loads the same files."""
    from ..context import current_context

    return current_context().settings.path(path)


def _checkpoint_file(rest: str) -> str:
    full = rooted(rest)
    if not full.exists():
        from ..context import current_context

        where = "" if Path(rest).expanduser().is_absolute() else (
            f" (a relative path is taken from the rootdir {current_context().settings.rootdir}, as every path of "
            "pytest-transfer is; give an absolute path or one relative to it)")
        raise FileNotFoundError(f"checkpoint:{rest}: weights file {full} does not exist{where}")
    return str(full)


def _hf_ref(rest: str) -> str:
    """A folder written by ``save_pretrained`` (from the rootdir when relative), else the repo id as given."""
    full = rooted(rest)
    return str(full) if full.is_dir() else rest


def _from_source(source: str, rest: str, feature_node: str | None, kwargs: dict[str, Any]) -> TransferModel | None:
    for key in PATH_KWARGS.get(source, ()):
        if isinstance(kwargs.get(key), (str, os.PathLike)):
            kwargs[key] = str(rooted(kwargs[key]))
    if source == "torchvision":
        from .torchvision import load_torchvision

        arch, _, weights = rest.partition(":")
        if "weights" in kwargs:  # weights=None / "DEFAULT" / a WeightsEnum member, as torchvision's builders take
            given = kwargs.pop("weights")
            if weights:
                raise ValueError(f"weights: given twice, in the spec (torchvision:{rest}) and as weights={given!r}; "
                                 "keep one")
            weights = "none" if given is None else given
        return load_torchvision(arch, weights or "DEFAULT", feature_node=feature_node, **kwargs)
    if source == "checkpoint":
        from .checkpoint import load_checkpoint

        kwargs.setdefault("name", f"checkpoint:{rest}")  # named by the spec as written, not its absolute path
        return load_checkpoint(_checkpoint_file(rest), feature_node=feature_node, **kwargs)
    if source == "timm":
        from .timm import load_timm

        return load_timm(rest, feature_node=feature_node, **kwargs)
    if source == "hf":
        from .hf import load_hf

        model = load_hf(_hf_ref(rest), feature_node=feature_node, **kwargs)
        model.name = f"hf:{rest}"
        return model
    return None


def load_model(spec: Any, *, registry: Registry | None = None, name: str | None = None,
               preprocess: Callable[..., Any] | None = None, feature_node: str | None = None,
               **kwargs: Any) -> TransferModel:
    """Build a ``TransferModel`` from a spec string or an ``nn.Module``.

    Specs: ``torchvision:<arch>[:<weights>]``, ``timm:<name>``,
    ``hf:<local folder or cached repo id>``, ``checkpoint:<path>`` (with
    ``arch=``), or a name registered through the
    ``pytest_transfer_register_models`` hook. Other keyword arguments go to
    the source (``check_hash=``, ``image_size=``, ``weights=``, builder
    arguments). A model from a library is fed as that library feeds it.
    A relative path (``checkpoint:<path>``, an ``hf:`` folder, timm's
    ``weights=`` and ``cache_dir=``, hf's ``cache_dir=``) is taken from the
    rootdir, as every path of pytest-transfer is; the model keeps the spec as
    written as its name.

    >>> m = load_model("torchvision:resnet18:none", image_size=32)  # doctest: +SKIP
    """
    if not isinstance(spec, str):
        return as_transfer_model(spec, name=name, preprocess=preprocess, feature_node=feature_node, **kwargs)
    reg = registry if registry is not None else default_model_registry()
    if spec in reg:
        obj = reg.get(spec)(**kwargs)
        return as_transfer_model(obj, name=name or spec, preprocess=preprocess, feature_node=feature_node)
    source, _, rest = spec.partition(":")
    model = _from_source(source, rest, feature_node, kwargs) if rest else None
    if model is None:
        known = ", ".join(reg.list()) or "none registered"
        raise ValueError(f"unknown model spec {spec!r}; use {', '.join(SPEC_FORMS)}, or a registered name ({known})")
    if preprocess is not None:
        model.preprocess = preprocess
    if name:
        model.name = name
    if feature_node:
        model.resolve_node(feature_node)  # a misspelt node fails at load, naming close ones
    return model


_DEFAULT_REGISTRY: Registry | None = None


def default_model_registry() -> Registry:
    """The registry used outside pytest (inside, the plugin's registry is active)."""
    global _DEFAULT_REGISTRY
    from ..context import current_context

    ctx = current_context(create=False)
    if ctx is not None:
        return ctx.models
    if _DEFAULT_REGISTRY is None:
        _DEFAULT_REGISTRY = Registry("model")
    return _DEFAULT_REGISTRY


def list_models(include: str | Sequence[str] | None = None, exclude: str | Sequence[str] | None = None, *,
                torchvision: bool = False) -> list[str]:
    """Registered model names (and, with ``torchvision=True``, ``torchvision:<arch>`` specs of every
    classification model in torchvision's registry)."""
    names = default_model_registry().list(include=include, exclude=exclude)
    if torchvision:
        from .torchvision import classification_models

        reg = Registry("model")
        for arch in classification_models():
            reg.register(f"torchvision:{arch}", lambda: None)
        names += reg.list(include=include, exclude=exclude)
    return names
