"""Progress of a long forward pass: one small unit between the engine and the terminal.

The engine creates one :class:`PassProgress` per pass, calls
:meth:`~PassProgress.start`, then :meth:`~PassProgress.advance` after every
batch (:meth:`~PassProgress.note` for an event such as an out-of-memory
retry) and :meth:`~PassProgress.finish`. Each call hands a
:class:`PassStatus` to the ``sink`` (``advance`` at most once per ``every``
seconds); the sink decides where it goes: inside pytest the plugin's
:class:`pytest_transfer.report.live.LiveProgress` (a rewritten status line on
a terminal, a start and an end line in a log, the controller under
pytest-xdist), nothing outside it. ``str(status)`` is its one-line text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

PREFIX = "pytest-transfer"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass(frozen=True)
class PassStatus:
    """Where one pass stands: ``kind`` is ``start``, ``advance``, ``note`` or ``end``; ``done`` of ``total``
    images after ``seconds``; ``text`` the note's text."""

    kind: str
    model: str
    dataset: str
    split: str | None
    variant: str | None
    done: int
    total: int
    seconds: float
    text: str = ""

    @property
    def rate(self) -> float:
        """Images per second so far (0 before the first batch)."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (``None`` before the first batch)."""
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def describe(self) -> str:
        """``model on dataset (split split, variant)``."""
        inner = ", ".join(x for x in (f"{self.split} split" if self.split else None, self.variant) if x)
        return f"{self.model} on {self.dataset}" + (f" ({inner})" if inner else "")

    def status(self) -> str:
        """The rewritten status line's text: images done / total, images per second, time left."""
        eta = "" if self.eta is None else f", {_duration(self.eta)} left"
        return f"{self.describe()}: {self.done}/{self.total} images, {self.rate:.0f} images/s{eta}"

    def __str__(self) -> str:
        if self.kind == "start":
            return f"{PREFIX}: {self.describe()}: {self.total} images ..."
        if self.kind == "end":
            return (f"{PREFIX}: {self.describe()}: {self.done} images in {self.seconds:.1f} s "
                    f"({self.rate:.0f} images/s)")
        if self.kind == "note":
            return f"{PREFIX}: {self.describe()}: {self.text}"
        return f"{PREFIX}: {self.status()}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PassProgress:
    """Progress of one pass over ``total`` images of ``model`` on ``dataset``.

    A ``sink`` of ``None`` makes every call a no-op.

    >>> seen = []
    >>> p = PassProgress(seen.append, model="tiny", dataset="blobs", split="test", total=120, every=0.0)
    >>> p.start(); p.advance(50); p.finish()
    >>> [s.kind for s in seen], seen[1].done, str(seen[0])
    (['start', 'advance', 'end'], 50, 'pytest-transfer: tiny on blobs (test split): 120 images ...')
    """

    def __init__(self, sink: Callable[[PassStatus], None] | None, *, model: str, dataset: str, total: int,
                 split: str | None = None, variant: str | None = None, every: float = 0.5) -> None:
        self.sink = sink
        self.fields = {"model": model, "dataset": dataset, "split": split, "variant": variant}
        self.total = int(total)
        self.every = float(every)
        self.done = 0
        self.started = self.last = time.monotonic()

    def _emit(self, kind: str, text: str = "") -> None:
        if self.sink is not None:
            self.sink(PassStatus(kind, **self.fields, done=self.done, total=self.total,
                                 seconds=time.monotonic() - self.started, text=text))

    def start(self) -> None:
        """The pass begins (its clock starts now)."""
        self.started = self.last = time.monotonic()
        self._emit("start")

    def note(self, text: str) -> None:
        """Report an event of the pass at once (``text`` without the prefix and label)."""
        self._emit("note", text)

    def advance(self, images: int) -> None:
        """Count ``images`` more as done; report when ``every`` seconds have passed since the last report."""
        self.done += int(images)
        now = time.monotonic()
        if self.sink is not None and now - self.last >= self.every:
            self.last = now
            self._emit("advance")

    def finish(self) -> None:
        """The pass is over."""
        self._emit("end")


__all__ = ["PassProgress", "PassStatus"]
