"""The state of one pytest session (or of one script): settings, registries, memo, measurements.

Inside pytest the plugin creates the context in ``pytest_configure`` and keeps
it in ``config.stash``; it is also made *current* so that the pure assertion
functions find it. Outside pytest a default context is built on first use
from ``pyproject.toml`` in the working directory.
"""

from __future__ import annotations

import os
import threading
import time
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
            for registrar in self.registrars:
                registrar(self)

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


_CURRENT: Context | None = None


def current_context(*, create: bool = True) -> Context:
    """The active context; outside pytest, one built from the working directory's pyproject."""
    global _CURRENT
    if _CURRENT is None and create:
        _CURRENT = Context(resolve(rootdir=os.getcwd()))
    return _CURRENT  # type: ignore[return-value]


def set_current_context(ctx: Context | None) -> Context | None:
    global _CURRENT
    previous, _CURRENT = _CURRENT, ctx
    return previous
