"""Progress of forward passes as a user sees it: a status line on a terminal that leaves pytest's own line
untouched, start and end lines in a log, and a line per pass on the pytest-xdist controller."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys

import pytest

from tests.test_engine import PROGRESS_PROJECT as CONFTEST  # the same tiny project, a progress update per batch

TESTS = """
from pytest_transfer import evaluate

def test_first():
    evaluate("tiny", "blobs", split="all", batch_size=20)

def test_second():
    evaluate("tiny", "blobs", split="train", batch_size=20)

def test_third():
    pass
"""

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _screen(raw: str) -> list[str]:
    """What a terminal shows after ``raw``: carriage returns, backspaces and overwriting applied."""
    rows, row, col = [[]], 0, 0
    for ch in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw):
        if ch == "\n":
            rows.append([])
            row, col = row + 1, 0
        elif ch == "\r":
            col = 0
        elif ch == "\b":
            col = max(0, col - 1)
        else:
            line = rows[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = ch
            col += 1
    return ["".join(r).rstrip() for r in rows]


def _run_in_terminal(args: list[str], cwd, columns: int = 100) -> str:
    """Run a command with a pseudo-terminal as its standard output; everything it wrote, raw."""
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.Popen(args, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=120)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def project(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_p=TESTS)
    return pytester


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_on_a_terminal_the_status_is_rewritten_in_place_and_pytest_line_is_untouched(project):
    raw = _run_in_terminal([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--color=no",
                            "--transfer-no-cache", "--transfer-device=cpu", "test_p.py"], project.path)
    # the status was shown: every batch rewrote it (120 images in batches of 20, then 90 train images)
    assert re.search(r" tiny on blobs \(all split\): 60/120 images, \d+ images/s, \d+s left\x08", raw)
    assert re.search(r" tiny on blobs \(train split\): 80/90 images, \d+ images/s", raw)
    screen = _screen(raw)
    # ... and erased: the screen shows pytest's line exactly as pytest wrote it, and no progress text
    (line,) = [s for s in screen if s.startswith("test_p.py")]
    assert re.fullmatch(r"test_p\.py \.\.\. +\[100%\]", line) and len(line) == 99
    assert not any("images" in s for s in screen)
    assert not any("pytest-transfer:" in s for s in screen)


def test_in_a_log_a_pass_gives_a_start_and_an_end_line_and_the_file_is_named_once(project):
    result = project.runpytest("-p", "no:cacheprovider", "--transfer-no-cache", "--transfer-device=cpu")
    result.assert_outcomes(passed=3)
    out = result.outlines
    start = out.index("pytest-transfer: tiny on blobs (all split): 120 images ...")
    assert out[start - 1] == "test_p.py "  # pytest's line, then the pass's lines below it
    assert re.fullmatch(r"pytest-transfer: tiny on blobs \(all split\): 120 images in \d+\.\d s \(\d+ images/s\)",
                        out[start + 1])
    assert out[start + 2: start + 4] == [".", "pytest-transfer: tiny on blobs (train split): 90 images ..."]
    assert re.fullmatch(r"\.\. +\[100%\]", out[start + 5])
    assert sum("test_p.py" in line for line in out) == 1  # the test file is not named again


def test_under_xdist_the_controller_prints_a_line_per_pass_as_each_test_finishes(project):
    result = project.runpytest("-p", "no:cacheprovider", "--transfer-no-cache", "--transfer-device=cpu", "-n", "2")
    result.assert_outcomes(passed=3)
    lines = [line for line in result.outlines if line.startswith("pytest-transfer: [")]
    assert len(lines) == 2, result.outlines
    pattern = r"pytest-transfer: \[gw[01]\] tiny on blobs \({} split\): {} images in \d+\.\d s \(\d+ images/s\)"
    assert any(re.fullmatch(pattern.format("all", 120), line) for line in lines)
    assert any(re.fullmatch(pattern.format("train", 90), line) for line in lines)
