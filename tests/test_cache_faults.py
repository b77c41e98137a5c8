"""Fault injection on real cache entries in temporary folders (no mocked file system): every flipped byte is
either detected (reported, removed, recomputed) or provably harmless (the same arrays are served), and an entry
that decodes but does not fit the request (rows, widths) is recomputed too."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pytest_transfer import evaluate, load_dataset, load_model
from pytest_transfer.cache import CacheWarning, DiskCache, content_digest
from pytest_transfer.context import Context, set_current_context
from pytest_transfer.settings import resolve
from tests._helpers import make_blobs_images, tiny_net


def context_with_cache(tmp_path):
    return Context(resolve({"device": "cpu", "cache_dir": str(tmp_path / "cache")}, rootdir=tmp_path,
                           pyproject=None, environ={}))


@pytest.fixture
def pair(tmp_path):
    ctx = context_with_cache(tmp_path)
    previous = set_current_context(ctx)
    x, y = make_blobs_images(n_per_class=30)
    yield ctx, load_model(tiny_net(), name="tiny"), load_dataset((x, y), name="blobs")
    set_current_context(previous)


def only_entry(ctx):
    entries = sorted((ctx.settings.cache_path()).glob("*.npz"))
    assert len(entries) == 1
    return entries[0]


def entry_key(path):
    with np.load(path) as npz:
        import json

        return json.loads(bytes(npz["__meta__"]).decode())["key"]


def positions(size, rng):
    """Every byte of the first 300 (zip local header, .npy header of the first member), of the last 500 (zip
    central directory, the last member's tail) and 300 random ones in between (array data, inner headers)."""
    edge = set(range(min(300, size))) | set(range(max(0, size - 500), size))
    return sorted(edge | set(rng.choice(np.arange(300, size - 500), size=300, replace=False).tolist()))


def test_every_flipped_byte_is_detected_or_harmless(pair):
    ctx, model, data = pair
    ev = evaluate(model, data, split="train", context=ctx)
    path = only_entry(ctx)
    key = entry_key(path)
    original = path.read_bytes()
    want = {"logits": ev.logits, "tap:penultimate": ev.features}
    expect = {"logits": (len(ev.logits), ev.logits.shape[1]), "tap:penultimate": (len(ev.logits), ...)}
    cache = DiskCache(path.parent)
    detected = harmless = 0
    for pos in positions(len(original), np.random.default_rng(0)):
        for mask in (0x01 << (pos % 8),):  # low, high and middle bits of the bytes
            flipped = bytearray(original)
            flipped[pos] ^= mask
            path.write_bytes(bytes(flipped))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = cache.get(key, required=list(want), expect=expect)  # never raises
            if got is None:
                assert [w.category for w in caught] == [CacheWarning] and not path.exists(), pos
                detected += 1
            else:
                assert not caught and set(got) == set(want), pos
                for name, a in want.items():
                    assert got[name].dtype == a.dtype and np.array_equal(got[name], a), (pos, name)
                harmless += 1
    assert detected > 800 and harmless > 0  # zip fields nothing reads (times, versions) are harmless


def test_a_changed_shape_in_an_entry_header_is_not_served(pair):
    """The issue's case: one character of a .npy header (64 → 44 wide) was served as a 90×44 feature array."""
    ctx, model, data = pair
    ev = evaluate(model, data, split="train", context=ctx)
    path = only_entry(ctx)
    raw = path.read_bytes()
    width = ev.features.shape[1]
    old = f"'shape': ({len(ev.features)}, {width})".encode()
    new = f"'shape': ({len(ev.features)}, {width - 1})".encode()
    assert raw.count(old) == 1 and len(old) == len(new)
    path.write_bytes(raw.replace(old, new))
    fresh = context_with_cache(path.parent.parent)
    with pytest.warns(CacheWarning, match=f"cache file {path} is damaged"):
        again = evaluate(model, data, split="train", context=fresh)
    assert not again.from_cache and np.array_equal(again.features, ev.features)
    assert evaluate(model, data, split="train", context=context_with_cache(path.parent.parent)).from_cache


def test_a_well_formed_entry_with_other_rows_or_widths_is_recomputed(pair):
    ctx, model, data = pair
    ev = evaluate(model, data, split="train", context=ctx)
    test = evaluate(model, data, split="test", context=ctx)
    path = only_entry_of(ctx, test)
    key = entry_key(path)
    cache = DiskCache(path.parent)
    # rows: an entry (with a valid digest) of one sample fewer than the split
    cache.put(key, {"logits": test.logits[:-1], "tap:penultimate": test.features[:-1]})
    again_ctx = context_with_cache(path.parent.parent)
    with pytest.warns(CacheWarning, match=r"logits has shape .* the request expects"):
        again = evaluate(model, data, split="test", context=again_ctx)
    assert np.array_equal(again.logits, test.logits)
    # widths: the train split measured 3 logits in this session, an entry of 2 does not fit
    cache.put(key, {"logits": test.logits[:, :2], "tap:penultimate": test.features})
    second = context_with_cache(path.parent.parent)
    evaluate(model, data, split="train", context=second)
    with pytest.warns(CacheWarning, match=rf"logits has shape {len(test.logits)}×2, the request expects "
                                          rf"{len(test.logits)}×{ev.logits.shape[1]}"):
        assert np.array_equal(evaluate(model, data, split="test", context=second).logits, test.logits)


def only_entry_of(ctx, ev):
    for path in ctx.settings.cache_path().glob("*.npz"):
        with np.load(path) as npz:
            if npz["logits"].shape == ev.logits.shape and np.array_equal(npz["logits"], ev.logits):
                return path
    raise AssertionError("no entry holds these logits")


def test_a_derived_entry_that_fails_its_digest_is_recomputed(tmp_path):
    from pytest_transfer.cache import cached_result

    ctx = context_with_cache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6.0)

    kw = {"encode": lambda v: {"v": v}, "decode": lambda a: a["v"], "context": ctx}
    first = cached_result("demo", {"x": 1}, compute, **kw)
    entry = next((ctx.settings.cache_path() / "derived").glob("*.npz"))
    raw = bytearray(entry.read_bytes())
    at = raw.index(np.arange(6.0).tobytes()) + 3  # inside the data: zip's CRC is not what catches it
    raw[at] ^= 0x10
    entry.write_bytes(bytes(raw))
    with pytest.warns(CacheWarning, match="damaged"):
        again = cached_result("demo", {"x": 1}, compute, **{**kw, "context": context_with_cache(tmp_path)})
    assert np.array_equal(again, first) and len(calls) == 2


def test_the_digest_covers_names_dtypes_shapes_and_bytes():
    a = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    assert content_digest(a) == content_digest({"x": a["x"].copy()})
    for other in ({"y": a["x"]}, {"x": a["x"].astype(np.float64)}, {"x": a["x"].reshape(3, 2)},
                  {"x": a["x"] + 1}, {**a, "z": np.zeros(0)}):
        assert content_digest(other) != content_digest(a)
