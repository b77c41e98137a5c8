"""A griffe extension for the API pages: docstring examples (``>>>`` lines and their output) become fenced
``pycon`` blocks, so Markdown shows them as code instead of reading ``>`` as a quote and ``[a][b]`` as a link;
their ``# doctest:`` directives are dropped, and Sphinx roles (``:func:`x```) become code spans.

The docstrings are written for ``help()`` and doctest (tests/test_docs.py runs them); this changes only what
mkdocstrings renders.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|obj|exc|const):`~?\.?([^`]+)`")
DIRECTIVE = re.compile(r"\s*#\s*doctest:.*$")


def fence_doctests(text: str) -> str:
    """Wrap each run of ``>>>`` lines and their output (up to a blank line) in a ```` ```pycon ```` fence.

    tests/test_docs_pages.py checks it on a docstring with text, an example, its output and more text.
    """
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        block = [DIRECTIVE.sub("", b) if b.startswith(">>>") else b for b in block]
        out += [indent + "```pycon", *(indent + b for b in block), indent + "```"]
    return "\n".join(out)


def plain_roles(text: str) -> str:
    """``:func:`load_model``` → ```load_model```; a leading ``~`` or ``.`` is dropped."""
    return ROLE.sub(lambda m: f"``{m.group(1)}``", text)


class DoctestFences(griffe.Extension):
    """Apply ``fence_doctests`` and ``plain_roles`` to every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(fence_doctests(obj.docstring.value))
