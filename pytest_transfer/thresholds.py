"""Thresholds per model × dataset × metric, with ``"*"`` (and other glob) wildcards.

Layout, in ``pyproject.toml`` or in a file named by ``--transfer-thresholds``::

    [tool.pytest_transfer.thresholds."torchvision:resnet18"."digits"]
    transfer_accuracy = 0.9
    [tool.pytest_transfer.thresholds."*"."digits"]
    noise_max_drop = 0.1

Precedence, highest first:

1. an explicit argument to the gate (``threshold=``, ``max_drop=``, ...);
2. the ``pytest_transfer_threshold`` hook (first non-``None`` result wins; a
   hook returns ``None`` to defer to the file). The hook is code a team chose
   to install, so it outranks the static table; it can defer per key;
3. the table's most specific match. Patterns are compared model first, then
   dataset: an exact model name beats a pattern, then (for equal model
   patterns) an exact dataset name beats a pattern, and between two patterns
   the one with more literal characters wins (``"resnet*"`` beats ``"*"``).
   So ``"m"."*"`` beats ``"*"."d"``, and ``"m"."d"`` beats both;
4. nothing: the gate raises an error saying where to set one.

Entries from the ``--transfer-thresholds`` file are merged over the
pyproject table: the same model pattern × dataset pattern × key in both is
taken from the file. Each threshold remembers the file and key it came from,
and every error names them.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from .declarations import known_keys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

INF = math.inf
#: metric key -> (low, high) of valid thresholds, built from the gates' declarations (pytest_transfer.declarations,
#: with every transferability estimator's key; standard library only: validating a config never imports numpy)
KNOWN_KEYS: dict[str, tuple[float, float]] = known_keys()


#: valid ranges of gate arguments that have no config key of their own (a shift gate's max_drop: a difference
#: of two accuracies, negative to require an improvement)
ARGUMENT_RANGES: dict[str, tuple[float, float]] = {"max_drop": (-1.0, 1.0), "min_accuracy": (0.0, 1.0),
                                                   "threshold": (-INF, INF), "margin": (-INF, INF)}


def check_threshold_value(value: Any, *, key: str | None, argument: str) -> float:
    """``value`` as a float inside the valid range of ``key`` (or of ``argument`` when there is no key).

    Every threshold goes through this rule, from a gate's argument and from a
    config file: not a number, NaN, infinite (``logme = -inf`` is a gate that
    cannot fail, whatever the key's range), or outside the range (:data:`KNOWN_KEYS`,
    :data:`ARGUMENT_RANGES`) is a ``ValueError`` naming the argument, the value and
    the fix. A value in (1, 100] for a key whose range is [0, 1] is read as a
    percentage: ``max_drop=5`` would make a gate that can never fail.

    >>> check_threshold_value(0.85, key="transfer_accuracy", argument="threshold")
    0.85
    >>> check_threshold_value(85, key="transfer_accuracy", argument="threshold")
    Traceback (most recent call last):
    ...
    ValueError: threshold=85: outside the valid range [0, 1] of transfer_accuracy; 85 looks like a percentage: use 0.85
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{argument}={value!r}: a threshold must be a number")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{argument}=nan: the threshold is NaN, which no value can clear; pass a number")
    if math.isinf(v):
        raise ValueError(f"{argument}={format_threshold(v)}: an infinite threshold makes a gate that "
                         f"{'every' if v < 0 else 'no'} value clears; pass a finite number")
    lo, hi = KNOWN_KEYS.get(key or "", ARGUMENT_RANGES.get(argument, (-INF, INF)))
    if lo <= v <= hi:
        return v
    what = f" of {key}" if key else ""
    raise ValueError(f"{argument}={format_threshold(v)}: outside the valid range [{format_threshold(lo)}, "
                     f"{format_threshold(hi)}]{what}; {_range_fix(v, lo, hi)}")


def _range_fix(v: float, lo: float, hi: float) -> str:
    if hi == 1.0 and lo in (0.0, -1.0) and 2.0 <= v <= 100.0:
        return f"{format_threshold(v)} looks like a percentage: use {format_threshold(round(v / 100.0, 12))}"
    return f"pass a value from {format_threshold(lo)} to {format_threshold(hi)}"


def format_threshold(value: float) -> str:
    """A threshold as configured: the shortest text that reads back as the same float (``0.99999``, ``85``).

    >>> format_threshold(0.99999), format_threshold(85.0), format_threshold(0.1)
    ('0.99999', '85', '0.1')
    """
    v = float(value)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return str(int(v)) if v.is_integer() and abs(v) < 1e16 else repr(v)


def format_value(value: float, threshold: float | None = None) -> str:
    """A measured value with 4 decimals, or as many more as it takes to sit on the same side of
    ``threshold`` as the value does (0.999985 against a minimum of 0.99999 is not shown as 1.0000).

    >>> format_value(0.912345), format_value(0.999985, 0.99999), format_value(0.99999, 0.99999)
    ('0.9123', '0.999985', '0.99999')
    >>> format_value(0.0, 0.0), format_value(1.0, 1.0), format_value(0.5, 0.5)
    ('0.0000', '1.0000', '0.5000')
    """
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if abs(v) >= 1000:
        return f"{v:.6g}"
    for digits in range(4, 18):
        text = f"{v:.{digits}f}"
        shown = float(text)
        if threshold is None or ((shown < threshold) == (v < threshold) and (shown == threshold) == (v == threshold)):
            return text
    return repr(v)


#: the source of the stand-in threshold a gate without one measures against in a --transfer-suggest-thresholds run
PLACEHOLDER_SOURCE = "none yet (--transfer-suggest-thresholds run: measured, not gated)"


class Provided(NamedTuple):
    """A provider's answer with where it came from (the plugin or ``conftest.py`` whose
    ``pytest_transfer_threshold`` answered), for the threshold's source."""

    value: Any
    origin: str


@dataclass(frozen=True)
class Threshold:
    """A threshold value and a human-readable account of where it came from."""

    value: float
    source: str

    def __float__(self) -> float:
        return self.value


def _table(section: str, *names: str) -> str:
    """``[section."a"."b"]`` as TOML spells it (no leading dot for a file whose models are top-level); a name's
    control characters and bytes that are not UTF-8 escaped (:func:`~pytest_transfer.text.printable`): names
    are the user's and reach the terminal in every message that shows a table."""
    from .text import printable

    quoted = ".".join(f'"{printable(n)}"' for n in names)
    return f"[{section}.{quoted}]" if section and quoted else f"[{section or quoted}]"


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
        # (model pattern, dataset pattern, key) -> (file, section) the value came from
        self.origins: dict[tuple[str, str, str], tuple[str, str]] = {}
        self.providers: list[Callable[[str, str, str], Any]] = []
        self.asked: set[tuple[str, str]] = set()  # the (model, dataset) pairs gates looked up this session
        self.merge(table or {}, origin=origin, section=section)

    def merge(self, table: Mapping[str, Any], *, origin: str, section: str) -> None:
        for model, per_dataset in table.items():
            where = f"{origin} {_table(section, model)}"
            if not isinstance(per_dataset, Mapping):
                raise pytest.UsageError(
                    f"{where}: expected a table of datasets, e.g. {_table(section, model, 'digits')}"
                )
            for dataset, metrics in per_dataset.items():
                where = f"{origin} {_table(section, model, dataset)}"
                if not isinstance(metrics, Mapping):
                    if dataset in KNOWN_KEYS:
                        raise pytest.UsageError(
                            f"{origin} {_table(section, model)} {dataset}: a threshold needs a model and a "
                            f"dataset; write it under {_table(section, model, '*')} to apply it to every dataset"
                        )
                    raise pytest.UsageError(f"{where}: expected a table of metric = number")
                for key, value in metrics.items():
                    self.entries.setdefault((model, dataset), {})[key] = self._validated(key, value, where)
                    self.origins[(model, dataset, key)] = (origin, section)

    def update(self, other: ThresholdTable) -> None:
        """Merge ``other`` over this table (its entries win), keeping where each value came from."""
        for (model, dataset), metrics in other.entries.items():
            for key, value in metrics.items():
                self.entries.setdefault((model, dataset), {})[key] = value
                self.origins[(model, dataset, key)] = other.origins.get(
                    (model, dataset, key), (other.origin, other.section))

    @staticmethod
    def _validated(key: str, value: Any, where: str) -> float:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, list(KNOWN_KEYS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            raise pytest.UsageError(
                f"{where}: unknown threshold key {key!r}{hint} Valid keys: {', '.join(sorted(KNOWN_KEYS))}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise pytest.UsageError(f"{where}: {key} = {value!r} is not a number")
        lo, hi = KNOWN_KEYS[key]
        if not math.isfinite(float(value)):
            raise pytest.UsageError(f"{where}: {key} = {value} is not a finite number; a threshold of "
                                    f"{value} makes a gate that cannot fail or cannot pass; give a number in "
                                    f"[{format_threshold(lo)}, {format_threshold(hi)}]")
        if not (lo <= float(value) <= hi):  # the rule of check_threshold_value
            raise pytest.UsageError(f"{where}: {key} = {value} is outside the metric's range [{lo}, {hi}]; "
                                    f"{_range_fix(float(value), lo, hi)}")
        return float(value)

    @classmethod
    def from_file(cls, path: str | Path, *, display: str | None = None) -> ThresholdTable:
        """Read a TOML file of thresholds: ``[thresholds."<model>"."<dataset>"]`` (or the pyproject layout,
        or ``["<model>"."<dataset>"]`` at the top level). ``display`` is how errors name the file."""
        p = Path(path)
        shown = display or str(p)
        where = shown if str(p) == shown else f"{shown} ({p}: a relative path is taken from the rootdir)"
        if not p.is_file():
            raise pytest.UsageError(f"thresholds file {where} does not exist or is not a file; fix the thresholds "
                                    "setting (--transfer-thresholds)")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise pytest.UsageError(f"{shown}: not valid TOML ({exc})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise pytest.UsageError(f"thresholds file {where} cannot be read: {exc}") from None
        if "tool" in data:
            section = "tool.pytest_transfer.thresholds"
            table = data["tool"].get("pytest_transfer", {}).get("thresholds", {})
        elif "thresholds" in data:
            section, table = "thresholds", data["thresholds"]
        else:
            section, table = "", data
        if not isinstance(table, Mapping):
            raise pytest.UsageError(f"{shown} {_table(section)}: expected a table of models")
        return cls(table, origin=shown, section=section)

    def from_providers(self, model: str, dataset: str, key: str) -> Threshold | None:
        """The first non-``None`` answer of the providers (the ``pytest_transfer_threshold`` hook), validated."""
        for provider in self.providers:
            got = provider(model, dataset, key)
            if got is not None:
                if isinstance(got, Threshold):
                    return got
                got, origin = (got.value, f" in {got.origin}") if isinstance(got, Provided) else (got, "")
                where = f"pytest_transfer_threshold hook{origin} (model {model!r}, dataset {dataset!r})"
                return Threshold(self._validated(key, got, where), f"pytest_transfer_threshold hook {key}{origin}")
        return None

    def from_table(self, model: str, dataset: str, key: str) -> Threshold | None:
        """The most specific table entry matching ``model`` × ``dataset`` for ``key`` (see the module docstring)."""
        self.asked.add((model, dataset))
        best: tuple[tuple[int, int, int, int], str, str] | None = None
        for (mp, dp), metrics in self.entries.items():
            if key not in metrics:
                continue
            if not (fnmatch.fnmatchcase(model, mp) and fnmatch.fnmatchcase(dataset, dp)):
                continue
            rank = (*_specificity(mp), *_specificity(dp))
            if best is None or rank > best[0]:  # on a tie the entry written first wins
                best = (rank, mp, dp)
        if best is None:
            return None
        _, mp, dp = best
        origin, section = self.origins.get((mp, dp, key), (self.origin, self.section))
        return Threshold(self.entries[(mp, dp)][key], f"{origin} {_table(section, mp, dp)} {key}")

    def lookup(self, model: str, dataset: str, key: str) -> Threshold | None:
        """The threshold for ``key``: the hook's answer, else the best table match, else ``None``."""
        return self.from_providers(model, dataset, key) or self.from_table(model, dataset, key)

    def require(self, model: str, dataset: str, keys: tuple[str, ...] | str, *, argument: str) -> Threshold:
        """The threshold for the first of ``keys`` found, or a ``LookupError`` saying where to set one.

        The hook is asked for every key before the table is (hook > table,
        whatever the key); within each, earlier keys win (the gate lists the
        most specific key first, e.g. ``linear_probe_accuracy`` then
        ``transfer_accuracy``).
        """
        keys = (keys,) if isinstance(keys, str) else keys
        for source in (self.from_providers, self.from_table):
            for key in keys:
                found = source(model, dataset, key)
                if found is not None:
                    return found
        raise LookupError(
            f"no threshold for {keys[0]!r} on model {model!r} × dataset {dataset!r}: pass {argument}=... or set "
            f'{keys[0]} = ... under {_table(self.section, model, dataset)} (either name may be "*") in {self.origin}'
            + self.near_misses(model, dataset)
        )

    def near_misses(self, model: str, dataset: str) -> str:
        """``"; did you mean ..."`` naming tables whose patterns are spelt close to ``model`` / ``dataset``
        (a typo in a table name silently disables its gates), or ``""``."""
        def near(name: str, pattern: str) -> bool:
            return difflib.SequenceMatcher(None, name, pattern).ratio() >= 0.8

        close = []
        for mp, dp in self.entries:
            model_match, dataset_match = fnmatch.fnmatchcase(model, mp), fnmatch.fnmatchcase(dataset, dp)
            if model_match and dataset_match:
                continue  # it matches: it only lacks this key
            if (model_match or near(model, mp)) and (dataset_match or near(dataset, dp)):
                # named as its own file writes it ([thresholds."m"."d"] in a --transfer-thresholds file)
                origin, section = next((self.origins[(mp, dp, k)] for k in self.entries[(mp, dp)]
                                        if (mp, dp, k) in self.origins), (self.origin, self.section))
                close.append(f"{_table(section, mp, dp)} in {origin}")
        return f"; a table spelt close to it exists: {', '.join(close)} (check the names)" if close else ""


def explicit(value: float, argument: str) -> Threshold:
    return Threshold(float(value), f"argument {argument}=")
