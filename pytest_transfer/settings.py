"""One place that resolves settings: CLI > environment > ``[tool.pytest_transfer]`` > defaults.

Every option ``--transfer-foo-bar`` has the key ``foo_bar`` in ``[tool.pytest_transfer]``
and the environment variable ``PYTEST_TRANSFER_FOO_BAR``.
"""

from __future__ import annotations

import difflib
import math
import operator
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIDENCE_MODES = ("none", "strict", "lenient")
AUTOCAST_MODES = ("auto", "on", "off")
#: the corruption tables (pytest_transfer.robustness.TABLE_CHOICES, written here so that settings import no torch)
CORRUPTION_TABLE_CHOICES = ("auto", "imagenet-c", "tiny-imagenet-c", "cifar10-c")
ENV_PREFIX = "PYTEST_TRANSFER_"
SECTION = "[tool.pytest_transfer]"


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false (1/0, yes/no, on/off)")


def _parse_int(value: Any) -> int:
    """An integer, or text of one (``"3"``, from the command line or the environment). Anything else is
    refused rather than truncated: ``int(1.7)`` would quietly run with 1."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, not true/false")
    if not isinstance(value, (str, float)) and hasattr(value, "__index__"):  # int, numpy integers
        return operator.index(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    raise ValueError("expected an integer, e.g. 0 or 64 (a fraction is not truncated)")


def _parse_positive_int(value: Any) -> int:
    out = _parse_int(value)
    if out < 1:
        raise ValueError("expected an integer >= 1")
    return out


def _parse_number(value: Any) -> float:
    """A finite float, or text of one; a bool, a list or NaN is refused (``float()`` would take some)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected a number")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError("expected a finite number")
    return out


def _parse_seed(value: Any) -> int:
    out = _parse_int(value)
    if out < 0:
        raise ValueError("expected an integer >= 0 (numpy refuses negative seeds)")
    return out


def _parse_fraction(value: Any) -> float:
    out = _parse_number(value)
    if not 0.0 < out < 1.0:
        raise ValueError("expected a number strictly between 0 and 1")
    return out


def _text(value: Any) -> str:
    """``value`` if it is text; a list, a table or a number where text belongs is refused (``str()`` of it
    would make a folder named ``['a']``)."""
    if not isinstance(value, str):
        raise ValueError(f"expected text, got a {type(value).__name__}")
    return value


def _parse_confidence(value: Any) -> str:
    text = _text(value).strip().lower()
    if text not in CONFIDENCE_MODES:
        raise ValueError(f"expected one of {', '.join(CONFIDENCE_MODES)}")
    return text


def _parse_level(value: Any) -> float:
    out = _parse_number(value)
    if not 0.5 <= out < 1.0:
        raise ValueError("expected a confidence level in [0.5, 1), e.g. 0.95")
    return out


def _parse_autocast(value: Any) -> str:
    text = _text(value).strip().lower()
    if text not in AUTOCAST_MODES:
        raise ValueError(f"expected one of {', '.join(AUTOCAST_MODES)}")
    return text


def _parse_corruption_table(value: Any) -> str:
    text = _text(value).strip().lower()
    if text not in CORRUPTION_TABLE_CHOICES:
        raise ValueError(f"expected one of {', '.join(CORRUPTION_TABLE_CHOICES)}")
    return text


def _parse_device(value: Any) -> str:
    from .device import validate_device_spec

    return validate_device_spec(_text(value))


def parse_num_workers(value: Any) -> int | str:
    """``auto`` or an integer >= 0 (the ``num_workers`` setting)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool) or not str(value).strip().isdigit():
        raise ValueError(f"expected 'auto' or an integer >= 0, got {value!r}")
    return int(value)


def _parse_path(value: Any) -> str | None:
    """An optional output or input file: text, ``""`` meaning none (so that an environment variable can
    turn off a path set in pyproject.toml)."""
    if value is None or _text(value) == "":
        return None
    return value


def _parse_dir(value: Any) -> str:
    """A folder that is always used (``cache_dir``): non-empty text. An empty one would put the cache's
    files into the rootdir itself; ``no_cache`` is the way to turn the cache off."""
    if _text(value).strip() == "":
        raise ValueError("expected a folder name, e.g. .transfer_cache (to turn the cache off: no_cache = true)")
    return value


@dataclass(frozen=True)
class Option:
    key: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    flag: bool = False  # a CLI switch (store_true)
    metavar: str | None = None

    @property
    def cli(self) -> str:
        return "--transfer-" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()


OPTIONS: tuple[Option, ...] = (
    Option("device", "auto", _parse_device, "device for models: auto, cpu, cuda, cuda:N or mps", metavar="DEVICE"),
    Option("seed", 0, _parse_seed, "seed for splits, noise, corruptions, attacks and bootstraps", metavar="N"),
    Option("cache_dir", ".transfer_cache", _parse_dir,
           "directory of the on-disk evaluation cache (relative to rootdir)", metavar="DIR"),
    Option("no_cache", False, _parse_bool, "do not read or write the on-disk evaluation cache", flag=True),
    Option("report", None, _parse_path, "write every measurement as JSON to PATH (relative to rootdir)",
           metavar="PATH"),
    Option("html", None, _parse_path, "write a self-contained HTML report to PATH", metavar="PATH"),
    Option("update_baselines", False, _parse_bool, "write the measured results as the new baselines", flag=True),
    Option("confidence", "none", _parse_confidence,
           "how gates use confidence intervals: none (point value), strict (the whole interval must clear "
           "the threshold), lenient (fail only when the whole interval misses it)", metavar="MODE"),
    Option("confidence_level", 0.95, _parse_level, "level of the confidence intervals", metavar="LEVEL"),
    Option("batch_size", 64, _parse_positive_int,
           "images per forward pass (halved and retried when a batch runs out of device memory)", metavar="N"),
    Option("autocast", "auto", _parse_autocast,
           "mixed precision of the forward pass: auto (float16 autocast on CUDA, float32 again for a model whose "
           "outputs overflow; float32 elsewhere), on, off", metavar="MODE"),
    Option("num_workers", "auto", parse_num_workers,
           "DataLoader worker processes decoding streamed datasets (image folders, torch Datasets); auto = the "
           "CPUs less one, shared among xdist workers, at most 8", metavar="N"),
    Option("malloc_tuning", True, _parse_bool,
           "on the CPU, keep glibc's malloc from unmapping activation buffers between batches during a forward "
           "pass (restored to glibc's defaults after it): on, off", metavar="on|off"),
    Option("test_fraction", 0.25, _parse_fraction, "fraction of each dataset held out as the test split",
           metavar="F"),
    Option("corruption_table", "auto", _parse_corruption_table,
           "published parameter table of the corruptions: auto (by image size: CIFAR-10-C's up to 45 px, "
           "Tiny-ImageNet-C's up to 119 px, ImageNet-C's above), imagenet-c, tiny-imagenet-c, cifar10-c",
           metavar="TABLE"),
    Option("thresholds", None, _parse_path,
           "a TOML file of thresholds (same layout as [tool.pytest_transfer.thresholds])", metavar="PATH"),
    Option("github_summary", None, _parse_path,
           "append a Markdown job summary to PATH (default: $GITHUB_STEP_SUMMARY when set) and print GitHub "
           "annotations for failing gates", metavar="PATH"),
    Option("openmetrics", None, _parse_path,
           "write every gate's value in the OpenMetrics text format to PATH (GitLab's metrics report)",
           metavar="PATH"),
    Option("suggest_thresholds", None, _parse_path,
           "run the gates and write (or update) a thresholds TOML at PATH, each threshold at the conservative end "
           "of its measured interval, for --transfer-thresholds to read", metavar="PATH"),
    Option("suggest_overwrite", False, _parse_bool,
           "with --transfer-suggest-thresholds: replace thresholds the file already has (kept otherwise)", flag=True),
)
OPTION_BY_KEY = {o.key: o for o in OPTIONS}


@dataclass(frozen=True)
class Settings:
    device: str = "auto"
    seed: int = 0
    cache_dir: str = ".transfer_cache"
    no_cache: bool = False
    report: str | None = None
    html: str | None = None
    update_baselines: bool = False
    confidence: str = "none"
    confidence_level: float = 0.95
    batch_size: int = 64
    autocast: str = "auto"
    num_workers: int | str = "auto"
    malloc_tuning: bool = True
    test_fraction: float = 0.25
    corruption_table: str = "auto"
    thresholds: str | None = None
    github_summary: str | None = None
    openmetrics: str | None = None
    suggest_thresholds: str | None = None
    suggest_overwrite: bool = False
    rootdir: str = "."
    pyproject: str | None = None
    threshold_table: Mapping[str, Any] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)

    def source(self, key: str) -> str:
        return self.sources.get(key, "default")

    def path(self, value: str | os.PathLike[str]) -> Path:
        """``value`` as a path: ``~`` expanded, and a relative one taken from the rootdir.

        The one rule for every path pytest-transfer reads or writes, wherever it
        is written (a spec such as ``checkpoint:``, ``hf:``, ``imagefolder:`` or
        ``torchvision:<Name>:<root>``, a marker's ``model_kwargs``, a setting on
        the command line, in the environment or in ``pyproject.toml``): the
        rootdir is the folder of the ``pyproject.toml`` holding
        ``[tool.pytest_transfer]``, else pytest's rootdir, so ``cd tests && pytest``
        finds the same files as ``pytest`` does.
        """
        p = Path(os.fspath(value)).expanduser()
        return p if p.is_absolute() else Path(self.rootdir) / p

    def cache_path(self) -> Path | None:
        if self.no_cache:
            return None
        return self.path(self.cache_dir)


def find_pyproject(start: str | os.PathLike[str]) -> Path | None:
    here = Path(start).resolve()
    for d in (here, *here.parents):
        cand = d / "pyproject.toml"
        if cand.is_file():
            return cand
    return None


def read_pyproject_section(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise pytest.UsageError(f"{path}: not valid TOML ({exc}); fix the file") from None
    section = data.get("tool", {}).get("pytest_transfer", {})
    if not isinstance(section, dict):
        raise pytest.UsageError(f"{path}: {SECTION} must be a table")
    return section


def _parse(opt: Option, value: Any, where: str) -> Any:
    try:
        return opt.parse(value)
    except (ValueError, TypeError) as exc:
        raise pytest.UsageError(f"{where}: invalid value {value!r} for {opt.key}: {exc}") from None


def _check_keys(file_cfg: Mapping[str, Any], pp: Path | None) -> None:
    """A ``pytest.UsageError`` for keys of ``[tool.pytest_transfer]`` that are not options.

    A threshold key there (``regression_min_effect``, ``f1``, ...) is told where it belongs instead;
    a misspelt option is told the closest option names.
    """
    from .thresholds import KNOWN_KEYS

    unknown = sorted(set(file_cfg) - set(OPTION_BY_KEY))
    if not unknown:
        return
    key = unknown[0]
    if key in KNOWN_KEYS:
        raise pytest.UsageError(
            f"{pp} {SECTION}: {key} is a threshold, set per model and dataset: write it under "
            f'[tool.pytest_transfer.thresholds."<model>"."<dataset>"] (either name may be "*")')
    close = difflib.get_close_matches(key, list(OPTION_BY_KEY), n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise pytest.UsageError(f"{pp} {SECTION}: unknown key(s) {', '.join(unknown)}; {hint}"
                            f"valid keys: {', '.join(sorted(OPTION_BY_KEY))}")


def resolve(
    cli: Mapping[str, Any] | None = None,
    *,
    rootdir: str | os.PathLike[str] = ".",
    pyproject: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting with the precedence CLI > environment > pyproject > default.

    ``cli`` maps option keys to values (``None`` meaning not given).
    """
    cli = cli or {}
    environ = os.environ if environ is None else environ
    pp = Path(pyproject) if pyproject else find_pyproject(rootdir)
    section = read_pyproject_section(pp)
    table = section.get("thresholds", {})
    if isinstance(table, str):  # thresholds = "path/to/thresholds.toml": the option, not a table
        table = {}
    file_cfg = {k: v for k, v in section.items() if not (k == "thresholds" and isinstance(v, dict))}
    _check_keys(file_cfg, pp)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        if cli.get(opt.key) is not None:
            values[opt.key] = _parse(opt, cli[opt.key], opt.cli)
            sources[opt.key] = opt.cli
        elif opt.env in environ:
            values[opt.key] = _parse(opt, environ[opt.env], f"environment variable {opt.env}")
            sources[opt.key] = f"environment variable {opt.env}"
        elif opt.key in file_cfg:
            values[opt.key] = _parse(opt, file_cfg[opt.key], f"{pp} {SECTION}")
            sources[opt.key] = f"{pp.name if pp else 'pyproject.toml'} {SECTION} {opt.key}"
        else:
            values[opt.key] = opt.default
            sources[opt.key] = "default"
    if not isinstance(table, dict):
        raise pytest.UsageError(f"{pp} {SECTION}.thresholds: must be a table or a path to a TOML file")
    base = Path(rootdir if pp is None else pp.parent)
    return Settings(
        **values,
        rootdir=str(base),
        pyproject=str(pp) if pp else None,
        threshold_table=table,
        sources=sources,
    )


def settings_keys() -> list[str]:
    return [f.name for f in fields(Settings)]
