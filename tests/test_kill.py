"""Nothing lost under a kill: writers of cache entries and of baselines killed with SIGKILL mid-write.

A writer process rewrites one cache entry and one baseline file in a loop,
each version complete in itself (every array element and metric equals the
version number). The test kills it with SIGKILL at several moments after it
started writing, then reads every file: each must be absent (never written),
or a complete version, never a mixture or a truncated file. Two writers of the
same entry with different contents, running at once, must leave one of the
two whole.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

WRITER = textwrap.dedent('''
    import sys
    import numpy as np
    from pytest_transfer.baselines import Baseline, write_baseline
    from pytest_transfer.cache import DiskCache

    folder, tag, stop = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    cache = DiskCache(folder)
    n = 200_000  # 1.6 MB per entry: a write takes long enough to be interrupted
    print("ready", flush=True)
    import time
    end = time.monotonic() + stop
    version = 0
    while time.monotonic() < end:
        version += 1
        value = tag * 1000 + version
        cache.put({"entry": "shared"}, {"x": np.full(n, value, dtype=np.int64), "y": np.full(7, value)})
        b = Baseline(model="m", dataset="d", method="linear_probe", split="test",
                     metrics={"accuracy": float(value % 2 == 0)},  # a valid baseline: the version is in the rest
                     correct=np.full(n // 8, value % 2 == 0), predictions=np.full(n // 8, value % 250),
                     num_classes=250, dataset_fingerprint=str(value), split_fingerprint=str(value),
                     test="t.py::test")
        write_baseline(folder + "/baseline.json", b)
''')


def _start(folder: Path, tag: int, stop: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(tag), str(stop)],
                            stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _check_whole(folder: Path) -> set[int]:
    """The versions found; fails on any damaged, truncated or mixed file."""
    from pytest_transfer.baselines import load_baseline
    from pytest_transfer.cache import DiskCache

    seen = set()
    with _no_cache_warning():
        entry = DiskCache(folder).get({"entry": "shared"}, required=("x", "y"))
    if entry is not None:
        values = set(np.unique(entry["x"]).tolist()) | set(np.unique(entry["y"]).tolist())
        assert len(values) == 1 and len(entry["x"]) == 200_000, values  # one version, complete
        seen |= values
    if (folder / "baseline.json").exists():
        b = load_baseline(folder / "baseline.json")  # a damaged file raises BaselineError
        value = int(b.dataset_fingerprint)
        assert b.split_fingerprint == str(value) and b.n == 25_000 and b.metrics["accuracy"] == (value % 2 == 0)
        assert set(b.predictions.tolist()) == {value % 250} and set(b.correct.tolist()) == {value % 2 == 0}
        seen.add(value)
    return seen


class _no_cache_warning:
    """A damaged entry is reported by a CacheWarning and removed: here that is a failure."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        from pytest_transfer.cache import CacheWarning

        warnings.simplefilter("error", CacheWarning)
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.05, 0.13, 0.31])
def test_a_writer_killed_at_any_moment_leaves_every_file_old_and_intact_or_new_and_complete(tmp_path, delay):
    proc = _start(tmp_path, 1, stop=5.0)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = _check_whole(tmp_path)
    # a second writer killed on top of what the first left: still whole
    proc = _start(tmp_path, 2, stop=5.0)
    time.sleep(delay / 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    after = _check_whole(tmp_path)
    assert all(v // 1000 in (1, 2) for v in before | after)


def test_two_writers_of_the_same_entry_never_interleave(tmp_path):
    first, second = _start(tmp_path, 1, stop=0.6), _start(tmp_path, 2, stop=0.6)
    samples = []
    while first.poll() is None or second.poll() is None:
        samples.append(_check_whole(tmp_path))  # read while both write: every read sees one whole version
        time.sleep(0.02)
    assert first.returncode == second.returncode == 0
    final = _check_whole(tmp_path)
    assert final and all(v // 1000 in (1, 2) for v in final)
    assert len(samples) > 3
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # finished writers leave no temporary files
