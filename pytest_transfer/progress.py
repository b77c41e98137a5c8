"""Progress lines of a long forward pass: one small unit between the engine and the terminal.

The engine creates one :class:`PassProgress` per pass and calls
:meth:`~PassProgress.advance` after every batch and :meth:`~PassProgress.note`
for an event (an out-of-memory retry). Where the lines go is the ``sink``, a
callable taking one line of text: the plugin's terminal writer inside pytest
(``Context.progress``), nothing outside it. How a line looks is decided here
and only here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

PREFIX = "pytest-transfer"


class PassProgress:
    """Progress of one pass over ``total`` images of ``label`` (e.g. ``"resnet18 on digits"``).

    At most one line per ``every`` seconds (the first after ``every`` seconds);
    a ``sink`` of ``None`` makes every call a no-op.

    >>> lines = []
    >>> p = PassProgress(lines.append, "tiny on blobs", total=120, every=0.0)
    >>> p.advance(50); lines[0].startswith("pytest-transfer: tiny on blobs: 50/120 images (")
    True
    """

    def __init__(self, sink: Callable[[str], None] | None, label: str, total: int, *, every: float = 2.0) -> None:
        self.sink = sink
        self.label = label
        self.total = int(total)
        self.every = float(every)
        self.done = 0
        self.started = self.last = time.monotonic()

    def note(self, text: str) -> None:
        """Report an event of the pass at once (``text`` without the prefix and label)."""
        if self.sink is not None:
            self.sink(f"{PREFIX}: {self.label}: {text}")

    def advance(self, images: int) -> None:
        """Count ``images`` more as done; report the count and rate when ``every`` seconds have passed."""
        self.done += int(images)
        if self.sink is None:
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            rate = self.done / max(now - self.started, 1e-9)
            self.note(f"{self.done}/{self.total} images ({rate:.0f}/s)")
            self.last = now


__all__ = ["PassProgress"]
