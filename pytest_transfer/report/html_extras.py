"""pytest-html extras: each transfer test's row carries its measurements (a table) and its plots.

Registered by the plugin only when pytest-html is installed and ``--html``
is used; nothing here (nor pytest-html) is imported otherwise. The extras
are attached to the call-phase report with pytest-html's documented API
(``report.extras`` with ``pytest_html.extras.html`` / ``.png``,
https://pytest-html.readthedocs.io/en/latest/user_guide.html#extra-content),
so they also travel from pytest-xdist workers to the controller.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import pytest

TABLE_CLASS = "pytest-transfer-measurements"


def extras_for(rows: Sequence[Mapping[str, Any]], *, plots: bool = True) -> list[dict[str, Any]]:
    """pytest-html extras for report rows: one HTML table, then one PNG per plot (when matplotlib is there)."""
    from pytest_html import extras

    from ..text import utf8_tree
    from .html import figure_images, measurement_table

    rows = utf8_tree(list(rows))  # pytest-html writes UTF-8: a name that is not UTF-8 is shown escaped
    table = measurement_table(rows).replace("<table>", f'<table class="{TABLE_CLASS}">', 1)
    out = [extras.html(f"<div><b>pytest-transfer measurements</b>{table}</div>")]
    if plots:
        out += [extras.png(image, name=caption) for caption, image in figure_images(rows)]
    return out


class HtmlExtras:
    """A pytest plugin object: adds the extras of the measurements ``measured(item)`` returns."""

    def __init__(self, measured: Callable[[pytest.Item], Sequence[Mapping[str, Any]]]) -> None:
        self.measured = measured

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Generator[None, Any, Any]:
        report = yield
        if report.when == "call":
            rows = self.measured(item)
            if rows:
                from .json import entry

                report.extras = [*getattr(report, "extras", []), *extras_for([entry(r) for r in rows])]
        return report
