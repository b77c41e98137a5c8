"""glibc's ``malloc`` tuned for the duration of a forward pass: freed activation buffers stay in the heap.

A CPU forward pass allocates and frees the same large activation buffers on
every batch. glibc serves an allocation above its mmap threshold (128 KiB,
rising dynamically to at most 32 MiB) with a fresh ``mmap`` and returns it
to the operating system on ``free``; the top of the heap is likewise trimmed
back above ``M_TRIM_THRESHOLD``. Each batch then touches new pages: on
EfficientNet-Lite0 that is about 860,000 minor page faults and seconds of
system time per 3,000 images (issue 14; ``benchmarks/bench_allocator.py``
measures it).

:func:`tuned_malloc` sets, for the duration of a pass (``mallopt(3)``):

* ``M_MMAP_MAX = 0``: no allocation is served by ``mmap``; large buffers come
  from the heap and are reused by the next batch;
* ``M_TRIM_THRESHOLD = 1 GiB``: the heap is not shrunk between batches.

and afterwards **restores** glibc's defaults and calls ``malloc_trim(0)``,
which hands the free heap pages back to the operating system.
``mallopt`` cannot read the current values back, so "restore" means "glibc's
defaults", not "what was there before": ``M_MMAP_MAX = 65536`` and
``M_TRIM_THRESHOLD = 128 KiB`` (mallopt(3)), and ``M_MMAP_THRESHOLD = 32 MiB``.
The last one needs a word: once any of these parameters has been set, glibc
stops adjusting the mmap threshold dynamically for the rest of the process;
its dynamic rule raises the threshold to the size of each freed mmap-ed block,
up to 32 MiB on 64-bit systems, which a process running torch reaches with
its first large batch. 32 MiB is that end state, so code outside the passes
allocates as it would have without pytest-transfer.

Nothing is changed when the C library is not glibc (macOS, Windows, musl),
when the user tuned malloc already (any of ``MALLOC_MMAP_MAX_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or a
``glibc.malloc`` entry in ``GLIBC_TUNABLES`` is set), or with
``--transfer-malloc-tuning=off`` (``malloc_tuning = false`` in
``[tool.pytest_transfer]``). Nested and concurrent passes in one process set
and restore once.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
from collections.abc import Iterator

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
#: what a pass sets: no mmap-ed chunks, no trimming of the heap's top
DURING_PASS = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 1 << 30}
#: glibc's defaults (mallopt(3); the mmap threshold where its dynamic rule ends), set again after the pass
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_THRESHOLD: 32 << 20}
USER_TUNING_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")

_lock = threading.Lock()
_depth = 0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (``gnu_get_libc_version`` exists), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def user_tuned_malloc(environ: dict[str, str] | None = None) -> bool:
    """Whether the environment already tunes glibc's malloc (then :func:`tuned_malloc` leaves it alone)."""
    env = os.environ if environ is None else environ
    return any(k in env for k in USER_TUNING_ENV) or "glibc.malloc" in env.get("GLIBC_TUNABLES", "")


def available() -> bool:
    """Whether :func:`tuned_malloc` can change anything here (glibc, not tuned by the user)."""
    return _glibc() is not None and not user_tuned_malloc()


def _set(values: dict[int, int]) -> None:
    libc = _glibc()
    assert libc is not None
    for param, value in values.items():
        libc.mallopt(param, value)


@contextlib.contextmanager
def tuned_malloc(enabled: bool = True) -> Iterator[bool]:
    """Hold :data:`DURING_PASS` while the body runs, then :data:`GLIBC_DEFAULTS` and ``malloc_trim(0)``;
    yields whether the tuning is in effect (see the module's docstring for when it is not)."""
    global _depth
    if not (enabled and available()):
        yield False
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _set(DURING_PASS)
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _set(GLIBC_DEFAULTS)
                _glibc().malloc_trim(0)  # type: ignore[union-attr]


__all__ = ["DURING_PASS", "GLIBC_DEFAULTS", "available", "tuned_malloc", "user_tuned_malloc"]
