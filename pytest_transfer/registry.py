"""A generic name → factory registry, in the manner of torchvision's model registry."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

#: the parameters a source loader may name to receive the session: its ``Settings`` (``settings.path(p)``
#: takes a relative path from the rootdir, ``settings.seed`` is ``--transfer-seed``) and its ``Context`` (to
#: resolve another spec in the same session: ``load_model("checkpoint:...", context=context)``)
SESSION_PARAMETERS = ("settings", "context")


def session_arguments(loader: Callable[..., Any], kwargs: dict[str, Any], spec: str,
                      session: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus those of ``session`` (``{"settings": ..., "context": ...}``) that ``loader``'s signature
    names (through ``functools.wraps``: a wrapper without it shows ``*args, **kwargs`` and gets none). A key of
    :data:`SESSION_PARAMETERS` in ``kwargs`` is refused by name: the session gives it."""
    import inspect

    given = sorted(set(kwargs) & set(SESSION_PARAMETERS))
    if given:
        raise ValueError(f"{spec!r}: {', '.join(map(repr, given))} cannot be given as an option: the session passes "
                         "it to a loader that names it; remove it from the marker's model_kwargs / dataset_kwargs")
    try:
        params = inspect.signature(loader).parameters
    except (TypeError, ValueError):  # a builtin or an object without a signature names nothing
        return dict(kwargs)
    named = {k: v for k, v in session.items() if k in params and params[k].kind is not params[k].VAR_KEYWORD}
    return {**kwargs, **named}


def _origin(factory: Callable[..., Any]) -> str:
    """Where ``factory`` was defined: its module and file (``conftest (/repo/tests/conftest.py)``)."""
    module = getattr(factory, "__module__", "") or ""
    file = getattr(getattr(factory, "__code__", None), "co_filename", None)
    return f"{module} ({file})" if module and file else module or (file or "")


class Registry:
    """Names mapped to factories.

    ``register(name, factory)`` refuses duplicates; ``get(name)`` names the
    available entries when ``name`` is unknown; ``list(include=, exclude=)``
    filters with shell-style globs.

    >>> r = Registry("model")
    >>> r.register("tiny", lambda: "a model")
    >>> r.list()
    ['tiny']
    """

    def __init__(self, kind: str, *, hook: str | None = None) -> None:
        self.kind = kind
        self.hook = hook or f"pytest_transfer_register_{kind}s"
        self._factories: dict[str, Callable[..., Any]] = {}
        self._origins: dict[str, str] = {}

    def register(self, name: str, factory: Callable[..., Any] | None = None, *, origin: str = "") -> Any:
        """Add ``factory`` under ``name``; usable as ``@registry.register("name")`` too."""
        if factory is None:
            def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
                self.register(name, fn, origin=origin)
                return fn

            return decorator
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r}: factory must be callable, got {type(factory).__name__}")
        if name in self._factories:
            first = f" by {self._origins[name]}" if self._origins.get(name) else ""
            now = origin or _origin(factory)
            raise ValueError(f"{self.kind} {name!r} is already registered{first}" + (f"; registered again by {now}"
                             if now else "") + "; pick another name (the first registration is kept)")
        self._factories[name] = factory
        self._origins[name] = origin or _origin(factory)
        return None

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._factories[name]
        except KeyError:
            available = ", ".join(sorted(self._factories)) or "none"
            raise KeyError(
                f"unknown {self.kind} {name!r}; registered: {available}. Register it with the "
                f"{self.hook}(registry) hook in conftest.py"
            ) from None

    def list(self, include: str | Iterable[str] | None = None, exclude: str | Iterable[str] | None = None) -> list[str]:
        """Registered names, sorted, filtered by ``include`` / ``exclude`` globs."""
        names = sorted(self._factories)
        if include is not None:
            pats = [include] if isinstance(include, str) else list(include)
            names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]
        if exclude is not None:
            pats = [exclude] if isinstance(exclude, str) else list(exclude)
            names = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in pats)]
        return names


class SourceRegistry(Registry):
    """Spec prefixes mapped to loaders: ``register("mystore", loader)`` makes ``"mystore:<rest>"`` a spec.

    ``loader(rest, **kwargs)`` receives the text after the first ``:`` and the
    keyword arguments of ``load_model`` / ``load_dataset`` (a marker's
    ``model_kwargs`` / ``dataset_kwargs``); a loader that names ``settings``
    or ``context`` receives the session's (:data:`SESSION_PARAMETERS`). The built-in prefixes
    (``torchvision:``, ``timm:``, ``hf:``, ``checkpoint:``, ``imagefolder:``)
    are entries of the same kind. ``form`` is the spec's shape as error
    messages show it (``"mystore:<name>/<version>"``).

    >>> r = SourceRegistry("model source", hook="pytest_transfer_register_model_sources")
    >>> r.register("mystore", lambda rest: rest.upper(), form="mystore:<name>")
    >>> r.split("mystore:resnet/3")[1]
    'resnet/3'
    >>> r.split("mystor:resnet/3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown model source prefix 'mystor' in 'mystor:resnet/3'; did you mean 'mystore:'? ...
    """

    def __init__(self, kind: str, *, hook: str | None = None) -> None:
        super().__init__(kind, hook=hook)
        self.forms: dict[str, str] = {}

    def register(self, name: str, factory: Callable[..., Any] | None = None, *, origin: str = "",
                 form: str | None = None) -> Any:
        """Add the prefix ``name`` (no ``:`` in it); usable as a decorator too."""
        if isinstance(name, str) and (":" in name or not name.strip() or name != name.strip()):
            raise ValueError(f"{self.kind} prefix must be a non-empty name without ':' or spaces around it, "
                             f"got {name!r} (register 'mystore' for specs 'mystore:<rest>')")
        if factory is not None:
            self.forms[name] = form or f"{name}:<...>"
        elif form is not None:
            def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
                self.register(name, fn, origin=origin, form=form)
                return fn

            return decorator
        return super().register(name, factory, origin=origin)

    def describe(self) -> str:
        """The registered spec forms, comma-separated, in registration order."""
        return ", ".join(self.forms[n] for n in self._factories) or "none"

    def split(self, spec: str) -> tuple[Callable[..., Any], str] | None:
        """``(loader, rest)`` for ``"<prefix>:<rest>"``; ``None`` when ``spec`` has no prefix (no ``:``, or
        nothing after it). An unregistered prefix raises ``ValueError`` listing the registered ones."""
        import difflib

        prefix, sep, rest = spec.partition(":")
        if not sep or not rest or not prefix:
            return None
        if prefix not in self._factories:
            close = difflib.get_close_matches(prefix, list(self._factories), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0] + ':'!r}?" if close else ";"
            raise ValueError(f"unknown {self.kind} prefix {prefix!r} in {spec!r}{hint} Registered prefixes: "
                             f"{self.describe()}. Add one with the {self.hook}(registry) hook (in a conftest.py or an "
                             "installed plugin; outside pytest only installed plugins' hooks run)")
        return self._factories[prefix], rest
