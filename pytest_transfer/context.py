"""The state of one pytest session (or of one script): settings, registries, memo, measurements.

Inside pytest the plugin creates the context in ``pytest_configure`` and keeps
it in ``config.stash``; it is also made *current* so that the pure assertion
functions find it. Outside pytest (a script, a notebook) a default context is
built on first use from the ``pyproject.toml`` found from the working
directory upwards, and its registries are filled by the registration hooks of
the *installed* plugins that depend on pytest-transfer (their ``pytest11``
entry points: :func:`installed_plugins_registrar`); ``conftest.py`` files are
pytest's and are not read there.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .registry import Registry, SourceRegistry
from .settings import Settings, resolve
from .thresholds import ThresholdTable


@dataclass
class Measurement:
    """One gate's outcome, as the summary table and the reports show it."""

    gate: str
    metric: str
    value: float
    model: str
    dataset: str
    interval: tuple[float, float] | None = None
    threshold: float | None = None
    threshold_source: str | None = None
    comparison: str = ">="
    passed: bool = True
    test: str | None = None
    confidence: str = "none"
    details: dict[str, Any] = field(default_factory=dict)
    duration: float | None = None
    """seconds: from the start of the test's call phase, or the previous measurement of the test, to this one"""
    device: str | None = None
    """the torch device of the process that measured it (``None`` before any model ran)"""
    worker: str | None = None
    """the pytest-xdist worker id (``gw0``, ...) that measured it; ``None`` without xdist"""
    threshold_key: str | None = None
    """the config key the gate reads first (``linear_probe_accuracy``, ``f1``, ...); ``None`` for a gate without one"""

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["interval"] = list(self.interval) if self.interval is not None else None
        return out


class Context:
    def __init__(self, settings: Settings, *, thresholds: ThresholdTable | None = None) -> None:
        self.settings = settings
        self.thresholds = thresholds if thresholds is not None else build_thresholds(settings)
        self._models = Registry("model")
        self._datasets = Registry("dataset")
        self._model_sources: SourceRegistry | None = None  # built on first use: the built-ins, then the hook's
        self._dataset_sources: SourceRegistry | None = None
        self.registrars: list[Callable[[Context], None]] = []
        self._registered = False
        self._registration_error: RegistrationError | None = None
        self.loaded_models: dict[Any, Any] = {}
        self.loaded_datasets: dict[Any, Any] = {}
        self.evaluations: dict[tuple[Any, ...], Any] = {}
        self.derived: dict[tuple[str, str], Any] = {}  # the session memo of cache.cached_result
        self.derived_computed: dict[str, int] = {}  # derived results computed in this session, per kind
        self.derived_read: dict[str, int] = {}  # derived results read from the disk cache, per kind
        self.measurements: list[Measurement] = []
        self.reported = 0  # measurements[:reported] were handed out by take_new_measurements
        self.current_test: str | None = None
        self.current_test_path: str | None = None  # the test's file (baselines live next to it)
        self.worker: str | None = None  # the pytest-xdist worker id of this process (set by the plugin)
        self.clock: float | None = None  # perf_counter at the start of the test's call phase / last record
        self.forward_passes = 0
        self.cache_hits = 0
        self.progress: Callable[[Any], None] | None = None  # receives progress.PassStatus updates
        self.lock = threading.RLock()
        self._device: Any = None
        self.device_override: Callable[[], Any] | None = None

    def _ensure_registered(self) -> None:
        if not self._registered:
            self._registered = True
            from .datasets.specs import new_dataset_sources
            from .models.sources import new_model_sources

            self._model_sources, self._dataset_sources = new_model_sources(), new_dataset_sources()
            try:
                for registrar in self.registrars:
                    registrar(self)
            except RegistrationError as exc:
                self._registration_error = exc
        if self._registration_error is not None:  # every lookup fails, naming the hook and the plugin
            raise self._registration_error

    @property
    def model_sources(self) -> SourceRegistry:
        """Model spec prefixes (``torchvision:``, ..., and the plugins'); the registration hooks run on first
        access."""
        self._ensure_registered()
        assert self._model_sources is not None
        return self._model_sources

    @property
    def dataset_sources(self) -> SourceRegistry:
        """Dataset spec prefixes (``imagefolder:``, ``torchvision:``, and the plugins')."""
        self._ensure_registered()
        assert self._dataset_sources is not None
        return self._dataset_sources

    @property
    def models(self) -> Registry:
        """Model factories; the registration hooks run on first access."""
        self._ensure_registered()
        return self._models

    @property
    def datasets(self) -> Registry:
        """Dataset factories; the registration hooks run on first access."""
        self._ensure_registered()
        return self._datasets

    @property
    def device(self) -> Any:
        """The ``torch.device`` of this session (resolved on first use)."""
        if self._device is None:
            from .device import resolve_device, share_cpu_threads

            override = self.device_override() if self.device_override else None
            if isinstance(override, str):
                override = resolve_device(override)
            self._device = override if override is not None else resolve_device(self.settings.device)
            if self._device.type == "cpu":
                share_cpu_threads(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0))
        return self._device

    def record(self, measurement: Measurement) -> Measurement:
        if measurement.test is None:
            measurement.test = self.current_test
        now = time.perf_counter()
        if measurement.duration is None and self.clock is not None:
            measurement.duration = now - self.clock
        self.clock = now
        if measurement.device is None and self._device is not None:
            measurement.device = str(self._device)
        if measurement.worker is None:
            measurement.worker = self.worker
        self.measurements.append(measurement)
        return measurement

    def take_new_measurements(self) -> list[Measurement]:
        """The measurements recorded since the previous call (O(new ones)): the plugin attaches each to its
        test's report once."""
        new = self.measurements[self.reported:]
        self.reported = len(self.measurements)
        return new


def build_thresholds(settings: Settings) -> ThresholdTable:
    table = ThresholdTable(settings.threshold_table,
                           origin=os.path.basename(settings.pyproject) if settings.pyproject else "pyproject.toml")
    if settings.thresholds:
        extra = ThresholdTable.from_file(settings.path(settings.thresholds), display=settings.thresholds)
        table.update(extra)  # the file's entries win; each keeps its own origin
        table.origin = f"{table.origin} / {extra.origin}"
    return table


#: the registration hooks, in the order a session runs them, with the registry each one fills
REGISTRATION_HOOKS = {
    "pytest_transfer_register_models": "_models",
    "pytest_transfer_register_datasets": "_datasets",
    "pytest_transfer_register_model_sources": "_model_sources",
    "pytest_transfer_register_dataset_sources": "_dataset_sources",
}


class RegistrationError(RuntimeError):
    """A registration hook raised: which hook, in which plugin (the original error is its ``__cause__``)."""


def run_registration(ctx: Context, hook: str, impl: Callable[..., Any], where: str) -> None:
    """Call one implementation of a registration ``hook`` with the registry it fills (as pluggy does, only
    when it names the ``registry`` argument); an error it raises becomes a :class:`RegistrationError`
    naming ``hook`` and ``where`` (its plugin or ``conftest.py``)."""
    import inspect

    try:
        takes = "registry" in inspect.signature(impl).parameters
    except (TypeError, ValueError):
        takes = True
    try:
        impl(**({"registry": getattr(ctx, REGISTRATION_HOOKS[hook])} if takes else {}))
    except Exception as exc:
        raise RegistrationError(f"{hook} in {where} raised {type(exc).__name__}: {exc} (every model and dataset "
                                "lookup of this session fails until it is fixed)") from exc


def _depends_on_us(dist: Any) -> bool:
    import re

    for req in (getattr(dist, "requires", None) or []):
        name = re.split(r"[\s;<>=!~\[(]", req.strip(), maxsplit=1)[0]
        if re.sub(r"[-_.]+", "-", name).lower() == "pytest-transfer":
            return True
    return False


def installed_plugins_registrar(ctx: Context) -> None:
    """Outside pytest: run the registration hooks (:data:`REGISTRATION_HOOKS`) that the installed plugins
    define in the module of their ``pytest11`` entry point, for the distributions that require
    pytest-transfer (others are not imported), in the entry points' name order. A plugin that cannot be
    imported warns and is skipped; a hook that raises is a :class:`RegistrationError`."""
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group="pytest11"), key=lambda e: e.name):
        if ep.value.startswith("pytest_transfer") or not _depends_on_us(getattr(ep, "dist", None)):
            continue
        try:
            module = ep.load()
        except Exception as exc:  # any reason: the script goes on without that plugin's sources
            warnings.warn(f"pytest-transfer: the plugin {ep.name} ({ep.value}) could not be imported outside "
                          f"pytest ({type(exc).__name__}: {exc}); its models and sources are not registered",
                          stacklevel=2)
            continue
        for hook in REGISTRATION_HOOKS:
            impl = getattr(module, hook, None)
            if callable(impl):
                run_registration(ctx, hook, impl, f"the plugin {ep.name} ({ep.value})")


_CURRENT: Context | None = None


def current_context(*, create: bool = True) -> Context:
    """The active context; outside pytest, one built from the working directory's pyproject."""
    global _CURRENT
    if _CURRENT is None and create:
        _CURRENT = Context(resolve(rootdir=os.getcwd()))
        _CURRENT.registrars.append(installed_plugins_registrar)
    return _CURRENT  # type: ignore[return-value]


def set_current_context(ctx: Context | None) -> Context | None:
    global _CURRENT
    previous, _CURRENT = _CURRENT, ctx
    return previous
