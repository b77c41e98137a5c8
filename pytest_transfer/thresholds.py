"""Thresholds per model × dataset × metric, with ``"*"`` (and other glob) wildcards.

Layout, in ``pyproject.toml`` or in a file named by ``--transfer-thresholds``::

    [tool.pytest_transfer.thresholds."torchvision:resnet18"."digits"]
    transfer_accuracy = 0.9
    [tool.pytest_transfer.thresholds."*"."digits"]
    noise_max_drop = 0.1

Precedence: an explicit argument, then a ``pytest_transfer_threshold`` hook,
then the table's most specific match: an exact model beats a pattern, an
exact dataset beats a pattern, and among patterns the one with more literal
characters wins.
"""

from __future__ import annotations

import fnmatch
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

INF = math.inf
# metric key -> (low, high) of valid thresholds; kept here (not imported from the
# metrics package) so that validating a config never imports numpy.
KNOWN_KEYS: dict[str, tuple[float, float]] = {
    "transfer_accuracy": (0.0, 1.0),
    "linear_probe_accuracy": (0.0, 1.0),
    "knn_accuracy": (0.0, 1.0),
    "finetune_accuracy": (0.0, 1.0),
    "direct_accuracy": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "noise_max_drop": (0.0, 1.0),
    "corruption_max_drop": (0.0, 1.0),
    "attack_min_accuracy": (0.0, 1.0),
    "max_mce": (0.0, INF),
    "logme": (-INF, INF),
    "leep": (-INF, 0.0),
    "nce": (-INF, 0.0),
    "hscore": (0.0, INF),
    "regularized_hscore": (0.0, INF),
    "transrate": (-INF, INF),
    "gbc": (-INF, 0.0),
    "nleep": (-INF, 0.0),
    "sfda": (-INF, INF),
    "lfc": (-1.0, 1.0),
    "layer_accuracy": (0.0, 1.0),
}


@dataclass(frozen=True)
class Threshold:
    """A threshold value and a human-readable account of where it came from."""

    value: float
    source: str

    def __float__(self) -> float:
        return self.value


def _specificity(pattern: str) -> tuple[int, int]:
    is_literal = not any(ch in pattern for ch in "*?[")
    literal_chars = sum(1 for ch in pattern if ch not in "*?[]")
    return (1 if is_literal else 0, literal_chars)


class ThresholdTable:
    """Validated thresholds from a TOML table plus optional providers (hooks)."""

    def __init__(self, table: Mapping[str, Any] | None = None, *, origin: str = "pyproject.toml",
                 section: str = "tool.pytest_transfer.thresholds") -> None:
        self.origin = origin
        self.section = section
        self.entries: dict[tuple[str, str], dict[str, float]] = {}
        self.providers: list[Callable[[str, str, str], Any]] = []
        self.merge(table or {}, origin=origin, section=section)

    def merge(self, table: Mapping[str, Any], *, origin: str, section: str) -> None:
        for model, per_dataset in table.items():
            where = f'{origin} [{section}."{model}"]'
            if not isinstance(per_dataset, Mapping):
                raise pytest.UsageError(
                    f'{where}: expected a table of datasets, e.g. [{section}."{model}"."digits"]'
                )
            for dataset, metrics in per_dataset.items():
                where = f'{origin} [{section}."{model}"."{dataset}"]'
                if not isinstance(metrics, Mapping):
                    raise pytest.UsageError(f"{where}: expected a table of metric = number")
                for key, value in metrics.items():
                    self.entries.setdefault((model, dataset), {})[key] = self._validated(key, value, where)

    @staticmethod
    def _validated(key: str, value: Any, where: str) -> float:
        if key not in KNOWN_KEYS:
            raise pytest.UsageError(
                f"{where}: unknown threshold key {key!r}; valid keys: {', '.join(sorted(KNOWN_KEYS))}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise pytest.UsageError(f"{where}: {key} = {value!r} is not a number")
        lo, hi = KNOWN_KEYS[key]
        if not (lo <= float(value) <= hi) or math.isnan(float(value)):
            raise pytest.UsageError(f"{where}: {key} = {value} is outside the metric's range [{lo}, {hi}]")
        return float(value)

    @classmethod
    def from_file(cls, path: str | Path) -> ThresholdTable:
        p = Path(path)
        if not p.is_file():
            raise pytest.UsageError(f"thresholds file {p} does not exist; fix --transfer-thresholds")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise pytest.UsageError(f"{p}: not valid TOML ({exc})") from None
        table = data.get("tool", {}).get("pytest_transfer", {}).get("thresholds", data.get("thresholds", data))
        return cls(table, origin=str(p), section="thresholds")

    def lookup(self, model: str, dataset: str, key: str) -> Threshold | None:
        """The best-matching threshold for ``key``, or ``None``."""
        for provider in self.providers:
            got = provider(model, dataset, key)
            if got is not None:
                if isinstance(got, Threshold):
                    return got
                return Threshold(self._validated(key, got, "pytest_transfer_threshold hook"),
                                 "pytest_transfer_threshold hook")
        best: tuple[tuple[int, int, int, int], str, str] | None = None
        for (mp, dp), metrics in self.entries.items():
            if key not in metrics:
                continue
            if not (fnmatch.fnmatchcase(model, mp) and fnmatch.fnmatchcase(dataset, dp)):
                continue
            rank = (*_specificity(mp), *_specificity(dp))
            if best is None or rank > best[0]:
                best = (rank, mp, dp)
        if best is None:
            return None
        _, mp, dp = best
        return Threshold(self.entries[(mp, dp)][key], f'{self.origin} [{self.section}."{mp}"."{dp}"] {key}')

    def require(self, model: str, dataset: str, keys: tuple[str, ...] | str, *, argument: str) -> Threshold:
        """The first key found for the pair, or an ``AssertionError``-free ``LookupError`` saying where to set it."""
        keys = (keys,) if isinstance(keys, str) else keys
        for key in keys:
            found = self.lookup(model, dataset, key)
            if found is not None:
                return found
        raise LookupError(
            f"no threshold for {keys[0]!r} on model {model!r} × dataset {dataset!r}: pass {argument}=... or set "
            f'{keys[0]} = ... under [{self.section}."{model}"."{dataset}"] (either name may be "*") in {self.origin}'
        )


def explicit(value: float, argument: str) -> Threshold:
    return Threshold(float(value), f"argument {argument}=")
