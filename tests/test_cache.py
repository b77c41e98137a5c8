"""The disk cache: atomic writes, damaged and foreign entries, and one computation per entry across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pytest_transfer.cache import CacheWarning, DiskCache, atomic_write_bytes, atomic_write_text, key_digest


def test_key_digest_is_canonical_and_distinguishes_keys():
    assert key_digest({"a": 1, "b": [1, 2]}) == key_digest({"b": [1, 2], "a": 1})
    assert key_digest({"a": 1}) != key_digest({"a": 2})
    assert len(key_digest({"a": 1})) == 32


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def fail(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # the temporary file was removed


def test_round_trip_and_miss(tmp_path):
    cache = DiskCache(tmp_path)
    key = {"model": "m", "taps": ["a"]}
    assert cache.get(key) is None
    arrays = {"logits": np.arange(6, dtype=np.float32).reshape(2, 3), "tap:a": np.ones((2, 4), np.float32)}
    path = cache.put(key, arrays)
    assert path.name == f"{key_digest(key)}.npz"
    got = cache.get(key)
    assert set(got) == set(arrays)
    for name in arrays:
        np.testing.assert_array_equal(got[name], arrays[name])
        assert got[name].dtype == arrays[name].dtype


def test_get_or_compute_computes_once(tmp_path):
    cache = DiskCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(3)}

    first, hit1 = cache.get_or_compute({"k": 1}, compute)
    second, hit2 = DiskCache(tmp_path).get_or_compute({"k": 1}, compute)
    assert (hit1, hit2, len(calls), cache.computations) == (False, True, 1, 1)
    np.testing.assert_array_equal(first["x"], second["x"])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_entry_warns_is_removed_and_recomputed(tmp_path, damage):
    cache = DiskCache(tmp_path)
    key = {"k": damage}
    path = cache.put(key, {"x": np.arange(100)})
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a zip file", "empty": b""}[damage])
    with pytest.warns(CacheWarning, match=f"cache file {path} is damaged"):
        assert cache.get(key) is None
    assert not path.exists()
    _, hit = cache.get_or_compute(key, lambda: {"x": np.arange(100)})
    assert not hit and cache.get(key) is not None


def test_an_entry_of_another_key_is_not_served(tmp_path):
    cache = DiskCache(tmp_path)
    a, b = {"k": "a"}, {"k": "b"}
    cache.put(a, {"x": np.zeros(2)})
    cache.path_for(b).write_bytes(cache.path_for(a).read_bytes())  # a file under the wrong name
    with pytest.warns(CacheWarning, match="belongs to another key"):
        assert cache.get(b) is None
    assert cache.get(a) is not None


def test_an_entry_without_a_required_array_is_recomputed(tmp_path):
    cache = DiskCache(tmp_path)
    key = {"k": 1}
    cache.put(key, {"logits": np.zeros(2)})
    with pytest.warns(CacheWarning, match="lacks tap:penultimate"):
        assert cache.get(key, required=["logits", "tap:penultimate"]) is None


def test_an_entry_with_another_format_is_not_served(tmp_path, monkeypatch):
    from pytest_transfer import cache as cache_module

    cache = DiskCache(tmp_path)
    cache.put({"k": 1}, {"x": np.zeros(2)})
    monkeypatch.setattr(cache_module, "FORMAT", cache_module.FORMAT + 1)
    with pytest.warns(CacheWarning):
        assert cache.get({"k": 1}) is None


WORKER = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    from pytest_transfer.cache import DiskCache

    directory, log, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    while time.time() < start:  # both processes ask at the same moment
        time.sleep(0.005)

    def compute():
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        time.sleep(0.5)  # long enough for the other process to find the entry locked
        return {"x": np.arange(5) * 2}

    arrays, hit = DiskCache(directory).get_or_compute({"entry": "shared"}, compute)
    print(json.dumps({"hit": hit, "x": arrays["x"].tolist()}))
""")


def test_two_processes_asking_for_one_entry_compute_it_once(tmp_path):
    import time

    log = tmp_path / "computations.log"
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "cache"), str(log), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert len(log.read_text().split()) == 1
    assert sorted(r["hit"] for r in results) == [False, True]
    assert all(r["x"] == [0, 2, 4, 6, 8] for r in results)


def test_a_cache_that_cannot_be_written_warns_and_returns_the_result(tmp_path, monkeypatch):
    from pytest_transfer import cache as cache_module

    def full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module, "atomic_write_bytes", full)
    cache = DiskCache(tmp_path)
    with pytest.warns(CacheWarning, match="could not write .*No space left on device.*not cached"):
        arrays, hit = cache.get_or_compute({"k": 1}, lambda: {"x": np.arange(3)})
    assert not hit and arrays["x"].tolist() == [0, 1, 2]
    assert cache.get({"k": 1}) is None


def test_a_directory_without_locks_warns_and_computes_unlocked(tmp_path, monkeypatch):
    import filelock

    def no_locks(self, *args, **kwargs):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(filelock.FileLock, "acquire", no_locks)
    cache = DiskCache(tmp_path)
    with pytest.warns(CacheWarning, match="cannot lock the cache directory .*No locks available"):
        _, hit = cache.get_or_compute({"k": 1}, lambda: {"x": np.arange(3)})
    assert not hit and cache.get({"k": 1})["x"].tolist() == [0, 1, 2]  # written all the same


def test_waiting_too_long_for_a_lock_is_an_error(tmp_path):
    import filelock

    cache = DiskCache(tmp_path)
    holder = filelock.FileLock(str(cache.path_for({"k": 1})) + ".lock", thread_local=False)
    with holder, pytest.raises(filelock.Timeout), cache.locked({"k": 1}, timeout=0.05):
        pass


def test_read_only_arrays_are_fingerprinted_once_and_others_every_time(monkeypatch):
    import numpy as np

    from pytest_transfer import cache

    hashed = []
    real = cache._one_array_fingerprint
    monkeypatch.setattr(cache, "_one_array_fingerprint", lambda a: hashed.append(a.shape) or real(a))
    frozen = np.arange(12.0).reshape(3, 4).copy()  # owns its data
    frozen.setflags(write=False)
    writable = np.arange(12.0).reshape(3, 4)
    first = cache.array_fingerprint(frozen)
    assert cache.array_fingerprint(frozen) == first == cache.array_fingerprint(writable)
    assert len(hashed) == 2  # the read-only array once, the writable one each time it is asked
    cache.array_fingerprint(writable)
    assert len(hashed) == 3
    view = writable.view()  # read-only itself, but its base can still change: never remembered
    view.setflags(write=False)
    assert not cache.frozen(view) and cache.frozen(frozen)
    cache.array_fingerprint(view)
    cache.array_fingerprint(view)
    assert len(hashed) == 5
    writable[0, 0] = 100.0
    assert cache.array_fingerprint(view) != first  # the change is seen through the view


def test_standardized_features_are_shared_read_only_and_follow_the_content():
    import numpy as np

    from pytest_transfer.gates.transferability import standardized

    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    a, b = standardized(x), standardized(x.copy())
    assert a is b and not a.flags.writeable
    assert np.allclose(a.mean(axis=0), 0, atol=1e-12) and np.allclose(a.std(axis=0), 1)
    x[0, 0] += 1.0
    assert standardized(x) is not a and not np.array_equal(standardized(x), a)


def test_remembered_standardized_features_stay_within_their_memory_budget(monkeypatch):
    import numpy as np

    from pytest_transfer.gates import transferability

    monkeypatch.setattr(transferability, "_STANDARDIZED", {})
    monkeypatch.setattr(transferability, "STANDARDIZED_BYTES", 3 * 40 * 8 * 8)  # three 40×8 float64 sets
    sets = [np.random.default_rng(i).normal(size=(40, 8)) for i in range(5)]
    kept = [transferability.standardized(x) for x in sets]
    assert len(transferability._STANDARDIZED) == 3  # the two oldest went
    assert transferability.standardized(sets[4]) is kept[4] and transferability.standardized(sets[0]) is not kept[0]
    big = np.random.default_rng(9).normal(size=(400, 8))  # larger than the budget: kept alone
    transferability.standardized(big)
    assert len(transferability._STANDARDIZED) == 1
