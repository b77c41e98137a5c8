"""Every example in the package's docstrings runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import pytest_transfer

MODULES = sorted(m.name for m in pkgutil.walk_packages(pytest_transfer.__path__, "pytest_transfer."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"


def test_every_option_is_in_the_configuration_table():
    """Each command-line option, its ini/pyproject key and its environment variable are a row of the table
    in docs/configuration.md (``--transfer-corruption-table`` was missing from it)."""
    from pathlib import Path

    from pytest_transfer.settings import OPTIONS

    page = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = [line for line in page.splitlines() if line.startswith("| `--transfer-")]
    missing = [opt.cli for opt in OPTIONS
               if not any(f"| `{opt.cli}` | `{opt.key}` | `PYTEST_TRANSFER_{opt.key.upper()}` |" in r for r in rows)]
    assert not missing, f"add a row for each to docs/configuration.md: {missing}"
