"""A generic name → factory registry, in the manner of torchvision's model registry."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any


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

    def __init__(self, kind: str) -> None:
        self.kind = kind
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
            where = f" (registered by {self._origins[name]})" if self._origins.get(name) else ""
            raise ValueError(f"{self.kind} {name!r} is already registered{where}; pick another name")
        self._factories[name] = factory
        self._origins[name] = origin or getattr(factory, "__module__", "")
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
                f"pytest_transfer_register_{self.kind}s(registry) hook in conftest.py"
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
