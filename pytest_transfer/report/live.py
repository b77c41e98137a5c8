"""Where the progress of a forward pass shows while pytest runs, without breaking pytest's own line.

:class:`LiveProgress` receives :class:`pytest_transfer.progress.PassStatus`
updates (it is the session context's ``progress`` sink) and shows them by
where the run happens:

``terminal`` (serial, standard output is a terminal)
    one status text after pytest's current line (``test_x.py ..``), rewritten
    in place with backspaces and erased when the pass ends, so pytest's line
    and its position are left exactly as they were: model, dataset, split,
    images done / total, images per second, time left. It is cut to the
    room left on the line and skipped when there is none.
``log`` (serial, output is not a terminal: CI logs, files)
    one line when a pass starts and one when it ends.
``worker`` (a pytest-xdist worker, whose output nobody sees)
    the ended passes are kept and handed to the test's report
    (:meth:`take`), so the controller prints one line per pass as each test
    finishes (:func:`controller_line`).

``-q`` turns it off (notes such as an out-of-memory retry still show).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

import pytest

from ..progress import PassStatus
from ..text import cut, display_width, printable


def controller_line(sent: dict[str, Any]) -> str:
    """The line the controller prints for a pass a worker ran (one item of :meth:`LiveProgress.take`)."""
    text = str(PassStatus(**sent["pass"]))
    worker = sent.get("worker")
    return text.replace("pytest-transfer: ", f"pytest-transfer: [{worker}] ", 1) if worker else text


def passes_printer(config: pytest.Config) -> Callable[[list[dict[str, Any]]], None]:
    """On the pytest-xdist controller: one line per pass a worker ran, printed as its test finishes
    (``-q`` prints none)."""
    def show(passes: list[dict[str, Any]]) -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None and config.option.verbose >= 0:
            write_lines(tr, [controller_line(sent) for sent in passes])

    return show


def write_lines(tr: Any, lines: list[str]) -> None:
    """Write whole lines below pytest's current line through its terminal reporter ``tr``.

    pytest's idea of the current test file is left alone: its next result
    continues on the next line instead of naming the file again. Control characters in a line (a model
    name holding a newline) are escaped (:func:`~pytest_transfer.text.printable`).
    """
    tw = tr._tw
    if lines and tw.width_of_current_line:
        tw.line()
    for line in lines:
        tw.line(printable(line))


class LiveProgress:
    """The progress sink of one pytest process (see the module docstring)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.ended: list[dict[str, Any]] = []
        self.shown = 0  # display columns of status text now after pytest's line (terminal mode)
        tr = config.pluginmanager.get_plugin("terminalreporter")
        self.worker = getattr(config, "workerinput", {}).get("workerid")
        if hasattr(config, "workerinput"):
            self.mode = "worker"
        elif tr is not None and tr.isatty():
            self.mode = "terminal"
        else:
            self.mode = "log"
        self.quiet = config.option.verbose < 0

    def __call__(self, status: PassStatus) -> None:
        if self.mode == "worker":
            if status.kind == "end":
                self.ended.append({"worker": self.worker, "pass": status.to_dict()})
            return
        if status.kind == "note":
            self._line(str(status))
        elif self.quiet:
            return
        elif self.mode == "log":
            if status.kind in ("start", "end"):
                self._line(str(status))
        elif status.kind == "end":
            self.clear()
        else:
            self._status(status.status())

    def take(self) -> list[dict[str, Any]]:
        """The passes ended since the last call (worker mode), oldest first:
        ``{"worker": "gw0", "pass": PassStatus.to_dict()}`` each."""
        out, self.ended = self.ended, []
        return out

    def _writer(self) -> Any:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        return None if tr is None else tr

    def _uncaptured(self) -> Any:
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        # the terminal is captured while a test runs: step out of capturing so that the text is seen
        return capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()

    def _line(self, text: str) -> None:
        tr = self._writer()
        if tr is None:
            return
        self.clear()
        with self._uncaptured():
            write_lines(tr, [text])

    def _raw(self, text: str) -> None:
        # straight to the terminal, past pytest's writer, so that its idea of the current line stays right
        tr = self._writer()
        out = getattr(tr._tw, "_file", None) if tr is not None else None
        out = out or sys.__stdout__
        with self._uncaptured():
            out.write(text)
            out.flush()

    def _status(self, text: str) -> None:
        tr = self._writer()
        if tr is None:
            return
        tw = tr._tw
        room = tw.fullwidth - tw.width_of_current_line - 2
        # columns, not code points: a CJK model name takes two per character, and each backspace steps back one
        text = cut(" " + printable(text), room)[0] if room >= 20 else ""
        width = display_width(text)
        pad = max(0, self.shown - width)
        self._raw("\b" * self.shown + text + " " * pad + "\b" * pad)
        self.shown = width

    def clear(self) -> None:
        """Erase the status text (terminal mode); pytest's line is as before."""
        if self.shown:
            self._raw("\b" * self.shown + " " * self.shown + "\b" * self.shown)
            self.shown = 0
