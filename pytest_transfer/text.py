"""Text that user-controlled names flow into: the terminal, GitHub workflow commands, Markdown, display width.

Model, dataset, test and file names are user-controlled: a folder name that is
not UTF-8 reaches Python as surrogate escapes (``data_caf\\udce9``), a name
may hold a newline, and on GitHub Actions a line of output that begins with
``::`` is a workflow command (``::error``, ``::add-mask::``). Every report
writer and every line the plugin prints goes through one of these helpers:

* :func:`printable`: bytes that are not UTF-8 as ``\\xNN`` (what ``repr`` of the
  bytes shows) and control characters as ``\\n``, ``\\t``, ``\\x1b``, ...; nothing
  else changes, so an ordinary name is shown as it is written;
* :func:`workflow_data` / :func:`workflow_property`: GitHub's own escaping of a
  workflow command's message and properties (its toolkit's ``escapeData`` /
  ``escapeProperty``), after :func:`printable`;
* :func:`display_width`, :func:`ljust`, :func:`cut`: columns as a terminal shows them: East Asian wide and
  fullwidth characters (CJK, most emoji) take two columns, combining marks none,
  as pytest pads its own lines (computed here with :mod:`unicodedata`, the
  public way).

Only the standard library is imported.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators (terminals and some log viewers break
# lines at them); surrogates are handled on their own (they are the bytes of a name that is not UTF-8)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_control(match: re.Match[str]) -> str:
    ch = match.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def _escape_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    # U+DC80..U+DCFF is how Python's surrogateescape carries a byte 0x80..0xFF that is not UTF-8
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def printable(text: Any) -> str:
    """``str(text)`` safe to print and to encode as UTF-8: control characters escaped (``\\n``, ``\\x1b``),
    bytes that were not UTF-8 (surrogate escapes) as ``\\xNN``, lone surrogates as ``\\uXXXX``.

    >>> printable("caf\\udce9"), printable("a\\n::error::x"), printable("猫 ok")
    ('caf\\\\xe9', 'a\\\\n::error::x', '猫 ok')
    """
    out = str(text)
    return _SURROGATE.sub(_escape_surrogate, _CONTROL.sub(_escape_control, out))


def utf8(text: Any) -> str:
    """``str(text)`` with its surrogates escaped only (:func:`printable` without touching control characters):
    for formats that carry newlines themselves (an HTML cell, a JSON string) but must be valid UTF-8."""
    return _SURROGATE.sub(_escape_surrogate, str(text))


def utf8_tree(obj: Any) -> Any:
    """A copy of a JSON-like tree (dicts, lists, tuples) with :func:`utf8` applied to every string, keys too:
    what a writer of a format that must be UTF-8 and cannot carry a lone surrogate (HTML, OpenMetrics, a
    figure's labels) renders."""
    if isinstance(obj, str):
        return utf8(obj)
    if isinstance(obj, dict):
        return {utf8_tree(k): utf8_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(utf8_tree(v) for v in obj)
    return obj


def json_surrogates(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with every lone surrogate written as its
    ``\\uXXXX`` escape: valid UTF-8, and ``json.loads`` gives back the same Python string (lossless)."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def workflow_data(text: Any) -> str:
    """The message of a GitHub workflow command: :func:`printable`, then ``%``, CR and LF escaped as the
    toolkit does (``%25``, ``%0D``, ``%0A``), so no part of it can start a line of its own."""
    return printable(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def workflow_property(text: Any) -> str:
    """A property value of a GitHub workflow command (``file=``, ``title=``): :func:`workflow_data`, plus
    ``:`` and ``,`` (``%3A``, ``%2C``)."""
    return workflow_data(text).replace(":", "%3A").replace(",", "%2C")


def markdown_cell(text: Any) -> str:
    """A Markdown table cell: :func:`printable`, then backslashes and pipes escaped, and ``<`` as ``&lt;``
    (a ``<lambda>`` in a name was read as an HTML tag and dropped). Free text that may hold emphasis
    (an exception's ``__init__``) goes in a :func:`markdown_code` span instead."""
    return printable(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def markdown_code(text: Any) -> str:
    """``text`` as a Markdown code span for a table cell, shown exactly as written: :func:`printable`, pipes
    escaped (GitHub's tables need it even inside a span), fenced by more backticks than it holds in a row.

    >>> print(markdown_code("__init__() got `x` in <lambda>"))
    `` __init__() got `x` in <lambda> ``
    """
    out = printable(text).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", out)), default=0) + 1)
    pad = " " if out.startswith("`") or out.endswith("`") or fence != "`" else ""
    return f"{fence}{pad}{out}{pad}{fence}"


def char_width(ch: str) -> int:
    """Columns one code point takes in a terminal: 0 for combining marks and zero-width format characters,
    2 for East Asian wide and fullwidth ones (CJK, most emoji), else 1."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal (:func:`char_width` summed).

    >>> display_width("abc"), display_width("猫猫"), display_width("e\\u0301")
    (3, 4, 1)
    """
    return sum(char_width(ch) for ch in text)


def ljust(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` display columns (``str.ljust`` counts code points)."""
    return text + " " * max(0, width - display_width(text))


def cut(text: str, width: int) -> tuple[str, str]:
    """``text`` split into a head of at most ``width`` display columns (at least one code point, so that
    splitting always progresses) and the rest."""
    used = 0
    for i, ch in enumerate(text):
        used += char_width(ch)
        if used > width and i > 0:
            return text[:i], text[i:]
    return text, ""


def write_error(what: str, path: Any, exc: BaseException) -> str:
    """One line saying that ``what`` (``"the JSON report"``, ``"baseline"``) could not be written to ``path``,
    why (from ``exc``, an ``OSError`` of a directory given as the file, a read-only folder or file system, a full
    disk, a path under a file, or any other exception), and that the previous file was left as it was (every
    writer of the plugin writes atomically: a temporary file replaces the old one only once whole)."""
    import errno

    code = getattr(exc, "errno", None)
    if isinstance(exc, IsADirectoryError) or (code == errno.EISDIR):
        why = "it is a directory; give a file name in it"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        why = "a part of the path is a file, not a folder"
    elif code == errno.EROFS:
        why = "the file system is read-only"
    elif code in (errno.EACCES, errno.EPERM):
        why = "permission denied (a read-only folder?)"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        why = "no space left on the device"
    else:
        why = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
    return printable(f"could not write {what} to {path}: {why} ({type(exc).__name__}); "
                     "any previous file there is left unchanged")
