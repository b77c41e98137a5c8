"""On-disk cache of evaluations and derived results: keyed by fingerprints, written atomically, locked.

Each entry is one ``.npz`` file named by the key's hash, holding its key and a
SHA-256 digest of its arrays (names, dtypes, shapes, bytes), checked on every
read (:func:`content_digest`). An entry that does not decode, holds another
key, fails its digest, or does not have the shapes the request expects (rows =
the split's length, widths = those the session already knows) is reported
(:class:`CacheWarning`), removed and recomputed: never served, and never an
exception that fails later runs. The digest detects damage (a flipped byte, a
truncated copy), not forgery: whoever can write the cache directory can write
any result into it, so it must be as trusted as the code (see the docs,
"ci-and-reports").
Writers take a per-entry lock (``filelock``), so several pytest-xdist workers
or CI jobs sharing one directory compute each entry once.

Forward passes are cached by :mod:`pytest_transfer.engine`; everything
computed from them (probe fits, estimator and k-NN scores, attack results,
fine-tuned heads) goes through :func:`cached_result`, one mechanism for the
session memo and the disk.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

FORMAT = 2  # 2: entries carry a digest of their arrays
DERIVED_FORMAT = 1  # bumped when an encoding of a derived result changes
DERIVED_DIR = "derived"  # derived results live in this subfolder of the cache directory


class CacheWarning(UserWarning):
    """A cache entry was damaged or foreign and has been recomputed."""


def key_digest(key: dict[str, Any]) -> str:
    """A 32-hex-digit SHA-256 of the key's canonical JSON (the entry's file name).

    >>> key_digest({"b": 1, "a": 2}) == key_digest({"a": 2, "b": 1})
    True
    """
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


Shape = Sequence[Any]
"""An expected array shape: ints, ``None`` for one dimension of any size, a final ``...`` for any further ones."""


def content_digest(arrays: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of named numpy arrays: each name, dtype, shape and C-order bytes, in name order.

    >>> import numpy as np
    >>> content_digest({"a": np.zeros(2)}) == content_digest({"a": np.zeros(2)}) != content_digest({"a": np.zeros(3)})
    True
    """
    import numpy as np

    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(memoryview(a).cast("B") if a.size else b"")
    return h.hexdigest()


def read_entry(path: Path, key: dict[str, Any]) -> dict[str, Any]:
    """The arrays of the entry at ``path``, checked: its format, its key (``key``) and its digest.

    Raises whatever decoding raises, or ``ValueError`` naming the failed check.
    """
    import numpy as np

    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:  # our handle: closed when np.load fails
        data = {name: npz[name] for name in npz.files}
    meta = json.loads(bytes(data.pop("__meta__")).decode())
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError("the entry is of another format")
    if meta.get("key") != json.loads(json.dumps(key, default=str)):
        raise ValueError("the entry belongs to another key")
    if meta.get("digest") != content_digest(data):
        raise ValueError("its arrays do not match their digest")
    return data


def check_shapes(data: Mapping[str, Any], expect: Mapping[str, Shape]) -> None:
    """``ValueError`` unless each array named in ``expect`` has that shape (see :data:`Shape`).

    >>> import numpy as np
    >>> check_shapes({"x": np.zeros((4, 3))}, {"x": (4, ...)}), check_shapes({"x": np.zeros((4, 3))}, {"x": (4, None)})
    (None, None)
    """
    for name, shape in expect.items():
        if name not in data:
            continue
        got = tuple(data[name].shape)
        fixed = tuple(shape[:-1]) if len(shape) and shape[-1] is Ellipsis else tuple(shape)
        n = len(fixed)
        if (len(got) < n if len(fixed) < len(shape) else len(got) != n) or any(
                w is not None and g != w for g, w in zip(got[:n], fixed, strict=True)):
            want = "×".join("?" if w is None else "…" if w is Ellipsis else str(w) for w in shape)
            raise ValueError(f"{name} has shape {'×'.join(map(str, got))}, the request expects {want}")


class DiskCache:
    """``get`` / ``put`` dictionaries of numpy arrays under a JSON-able key.

    >>> import numpy as np, tempfile
    >>> cache = DiskCache(tempfile.mkdtemp())
    >>> arrays, hit = cache.get_or_compute({"k": 1}, lambda: {"x": np.arange(3)})
    >>> hit, cache.get_or_compute({"k": 1}, lambda: {})[1], cache.computations
    (False, True, 1)
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.computations = 0  # entries this process computed (not read)

    def path_for(self, key: dict[str, Any]) -> Path:
        return self.directory / f"{key_digest(key)}.npz"

    @contextlib.contextmanager
    def locked(self, key: dict[str, Any], timeout: float = 3600) -> Iterator[bool]:
        """Hold the entry's lock file (``<entry>.npz.lock``); yields whether the lock is held.

        Where the directory cannot be locked (a read-only or lock-less file
        system), a :class:`CacheWarning` says so and the body runs unlocked:
        atomic writes still keep every entry whole, it may just be computed
        more than once. Waiting longer than ``timeout`` seconds raises
        ``filelock.Timeout``.
        """
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path_for(key)) + ".lock", timeout=timeout)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except Timeout:
            raise
        except OSError as exc:
            warnings.warn(CacheWarning(f"pytest-transfer: cannot lock the cache directory {self.directory} ({exc}); "
                                       "computing without the lock"), stacklevel=3)
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def get(self, key: dict[str, Any], *, required: Iterable[str] = (),
            expect: Mapping[str, Shape] | None = None) -> dict[str, Any] | None:
        """The arrays stored under ``key``, or ``None``.

        An entry that cannot be decoded (whatever the exception: a damaged zip
        directory raises ``NotImplementedError`` or ``RuntimeError`` from
        :mod:`zipfile`), belongs to another key or format, fails its digest,
        lacks a ``required`` array or does not match ``expect`` (``{name:
        shape}``, ``None`` for a dimension not known in advance) is reported
        with a :class:`CacheWarning`, removed, and ``None`` returned.
        """
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            data = read_entry(path, key)
            missing = sorted(set(required) - set(data))
            if missing:
                raise ValueError(f"the entry lacks {', '.join(missing)}")
            check_shapes(data, expect or {})
        except Exception as exc:  # any entry that does not decode and check is recomputed
            warnings.warn(CacheWarning(f"pytest-transfer: cache file {path} is damaged "
                                       f"({type(exc).__name__}: {exc}); "
                                       "removed, recomputing it"), stacklevel=2)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return data

    def put(self, key: dict[str, Any], arrays: dict[str, Any]) -> Path:
        import numpy as np

        arrays = {name: np.asarray(a) for name, a in arrays.items()}
        meta = json.dumps({"format": FORMAT, "key": key, "digest": content_digest(arrays)}, sort_keys=True,
                          default=str).encode()
        buf = io.BytesIO()
        np.savez(buf, __meta__=np.frombuffer(meta, dtype=np.uint8), **arrays)
        path = self.path_for(key)
        atomic_write_bytes(path, buf.getvalue())
        return path

    def put_or_warn(self, key: dict[str, Any], arrays: dict[str, Any]) -> None:
        """:meth:`put`, but a full or read-only disk only warns (:class:`CacheWarning`): it costs the next run a
        pass, not this run its result."""
        try:
            self.put(key, arrays)
        except OSError as exc:
            warnings.warn(CacheWarning(f"pytest-transfer: could not write to the cache directory "
                                       f"{self.directory} ({exc}); the result is used but not cached"),
                          stacklevel=3)

    def get_or_compute(self, key: dict[str, Any], compute: Callable[[], dict[str, Any]], *,
                       required: Iterable[str] = (), expect: Mapping[str, Shape] | None = None
                       ) -> tuple[dict[str, Any], bool]:
        """Return ``(arrays, hit)``; computes under the entry's lock when missing.

        The lock makes each entry computed once across processes that share the
        directory (pytest-xdist workers, CI jobs on a shared volume): a process
        that finds the entry locked waits, then reads what the other one wrote.
        """
        return self.get_or_compute_many([key], lambda _missing: [compute()], required=required,
                                        expect=expect)[0]

    def get_or_compute_many(self, keys: Sequence[dict[str, Any]],
                            compute: Callable[[list[int]], Sequence[dict[str, Any]]], *,
                            required: Iterable[str] = (), expect: Mapping[str, Shape] | None = None
                            ) -> list[tuple[dict[str, Any], bool]]:
        """``(arrays, hit)`` for each of ``keys``; ``compute(missing)`` makes the arrays of the entries at
        positions ``missing`` at once (one call), under all their locks.

        The locks are taken in one global order (by file name), so processes
        asking for overlapping sets cannot deadlock; entries another process
        wrote while this one waited are read, not recomputed. What cannot be
        locked or written is reported with a :class:`CacheWarning` and the
        results are returned all the same. ``expect``: see :meth:`get`.
        """
        required = tuple(required)
        out: list[tuple[dict[str, Any], bool] | None] = [None] * len(keys)

        def read(positions: list[int]) -> list[int]:
            for i in positions:
                found = self.get(keys[i], required=required, expect=expect)
                if found is not None:
                    out[i] = (found, True)
            return [i for i in positions if out[i] is None]

        missing = read(list(range(len(keys))))
        if missing:
            with contextlib.ExitStack() as stack:
                for i in sorted(missing, key=lambda i: self.path_for(keys[i]).name):
                    stack.enter_context(self.locked(keys[i]))
                missing = read(missing)  # another process may have written some while we waited
                if missing:
                    for i, arrays in zip(missing, compute(missing), strict=True):
                        self.computations += 1
                        self.put_or_warn(keys[i], arrays)
                        out[i] = (arrays, False)
        return [r for r in out if r is not None]


# --- derived results ------------------------------------------------------------


def frozen(a: Any) -> bool:
    """Whether numpy array ``a`` cannot change: it and every array it views are read-only."""
    import numpy as np

    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return False
        a = a.base
    return a is None or isinstance(a, bytes)


class IdentityMemo:
    """Results of a function of one frozen numpy array (:func:`frozen`), remembered by the array's identity.

    An entry holds a weak reference to its array, so a collected array's reused ``id`` is never
    mistaken for it; arrays that can still change are not remembered.
    """

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.entries: dict[int, tuple[Any, Any]] = {}

    def get(self, a: Any, compute: Callable[[], Any]) -> Any:
        import weakref

        entry = self.entries.get(id(a))
        if entry is not None and entry[0]() is a and frozen(a):
            return entry[1]
        value = compute()
        if frozen(a):
            if len(self.entries) >= self.size:
                self.entries = {k: e for k, e in self.entries.items() if e[0]() is not None}
                if len(self.entries) >= self.size:
                    self.entries.clear()
            self.entries[id(a)] = (weakref.ref(a), value)
        return value


_FINGERPRINTS = IdentityMemo()


def _one_array_fingerprint(a: Any) -> bytes:
    import numpy as np

    a = np.ascontiguousarray(a)
    h = hashlib.sha256()  # the fastest hashlib digest here (hardware SHA); collisions need not resist attacks
    h.update(f"{a.dtype.str}{a.shape}|".encode())
    h.update(memoryview(a).cast("B") if a.size else b"")
    return h.digest()


def array_fingerprint(*arrays: Any) -> str:
    """A 32-hex-digit SHA-256 of the arrays' dtypes, shapes and bytes (numpy arrays or anything
    ``numpy.asarray`` takes): the identity of what a derived result was computed from.

    A read-only array (such as the standardised features the estimators get) is hashed once and
    remembered by identity (:class:`IdentityMemo`).

    >>> import numpy as np
    >>> array_fingerprint(np.arange(3)) == array_fingerprint(np.arange(3)) != array_fingerprint(np.arange(3.0))
    True
    """
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, np.ndarray):
            h.update(_FINGERPRINTS.get(a, lambda a=a: _one_array_fingerprint(a)))
        else:
            h.update(_one_array_fingerprint(a))
    return h.hexdigest()[:32]


_DISTRIBUTIONS = {"sklearn": "scikit-learn"}


@functools.cache
def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(_DISTRIBUTIONS.get(name, name))
    except metadata.PackageNotFoundError:
        return "not installed"


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """``{name: version}`` of the installed libraries ``names`` (``numpy``, ``torch``, ``scipy``,
    ``sklearn``, read from their distributions' metadata without importing them): part of every
    derived result's key."""
    return {name: _version(name) for name in sorted(set(names))}


def _derived_key(kind: str, key: dict[str, Any], libraries: Iterable[str]) -> dict[str, Any]:
    from . import __version__

    return {"kind": kind, "derived_format": DERIVED_FORMAT, "pytest_transfer": __version__,
            "libraries": library_versions(("numpy", *libraries)), **key}


def cached_result(kind: str, key: dict[str, Any], compute: Callable[[], T], *,
                  encode: Callable[[T], dict[str, Any]], decode: Callable[[dict[str, Any]], T],
                  context: Any, libraries: Iterable[str] = ()) -> T:
    """``compute()``, memoised in the session ``context`` and cached on disk under ``key``.

    ``kind`` names what is computed (``"linear_probe"``, ``"estimate"``,
    ``"attack"``, ...); ``key`` must hold the fingerprints of every input
    (:func:`array_fingerprint`, model and dataset fingerprints) and every
    parameter that changes the result. The versions of this package, of
    numpy and of ``libraries`` (e.g. ``("torch",)``) are added to it.
    ``encode`` turns the result into a dict of numpy arrays (what is written,
    as a :class:`DiskCache` entry); ``decode``
    rebuilds the result from them. Entries live in the ``derived/`` subfolder
    of the cache directory. An entry that ``decode`` cannot read (any
    exception) is damaged:
    it is reported with a :class:`CacheWarning`, removed and recomputed.
    With ``--transfer-no-cache`` only the session memo is used; a cache
    directory that cannot be written to warns and the result is still used.
    The context counts what it computed and what it read per kind
    (``context.derived_computed`` / ``context.derived_read``).
    """
    ctx = context
    full = _derived_key(kind, key, libraries)
    memo = (kind, key_digest(full))
    with ctx.lock:
        if memo in ctx.derived:
            return ctx.derived[memo]
        directory = ctx.settings.cache_path()
        if directory is None:
            value, counter = compute(), ctx.derived_computed
        else:
            value, hit = _through_disk(DiskCache(Path(directory) / DERIVED_DIR), full, compute, encode, decode)
            counter = ctx.derived_read if hit else ctx.derived_computed
        counter[kind] = counter.get(kind, 0) + 1
        ctx.derived[memo] = value
        return value


def _through_disk(disk: DiskCache, key: dict[str, Any], compute: Callable[[], T],
                  encode: Callable[[T], dict[str, Any]], decode: Callable[[dict[str, Any]], T]) -> tuple[T, bool]:
    """``(value, hit)``: the decoded entry, or the computed value (written); an undecodable entry is damaged."""
    box: list[T] = []

    def run() -> dict[str, Any]:
        box.append(compute())
        return encode(box[0])

    for _ in range(2):  # a second damaged entry (written meanwhile by another process) is not read again
        arrays, hit = disk.get_or_compute(key, run)
        if not hit:
            return box[-1], False
        try:
            return decode(arrays), True
        except Exception as exc:  # an entry that does not decode is damaged, whatever the error
            path = disk.path_for(key)
            warnings.warn(CacheWarning(f"pytest-transfer: cache file {path} is damaged ({exc!r}); recomputing it"),
                          stacklevel=3)
            with contextlib.suppress(OSError):
                path.unlink()
    return compute(), False
