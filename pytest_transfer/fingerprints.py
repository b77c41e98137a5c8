"""What identifies files and code, computed in one place.

* :func:`file_digest`: the hash of a file's bytes, remembered per session by path, size and modification
  time (``st_mtime_ns``), so each file is read once: image folders' content fingerprints, torchvision
  checkpoints' sha256 check and the code identity below all read files through it.
* :func:`code_identity`: a hash of the code behind classes or functions (a model's module classes, an
  estimator, a probe): each one's qualified name and the content of the source file that defines it, so an
  edit to the class, the function or a helper they call in the same file is a new identity. Caches key on
  it because the package's version alone does not change while code is being edited.

Only the standard library is imported.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from typing import Any

HASH_BLOCK = 1 << 20  # files are hashed in 1 MiB blocks
ALGORITHMS = {"blake2b": lambda: hashlib.blake2b(digest_size=16), "sha256": hashlib.sha256}

# (absolute path, size, mtime_ns, algorithm) → hex digest; a changed file has another key
_DIGESTS: dict[tuple[str, int, int, str], str] = {}


def file_digest(path: str | os.PathLike[str], algorithm: str = "blake2b") -> str:
    """The hex digest of a file's bytes (``"blake2b"``: blake2b-128; ``"sha256"``), read in 1 MiB blocks and
    remembered by path, size and mtime. Raises ``OSError`` when the file cannot be read."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm: expected one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, algorithm)
    if key not in _DIGESTS:
        h = ALGORITHMS[algorithm]()
        with open(path, "rb") as fh:
            while block := fh.read(HASH_BLOCK):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def forget_file_digests() -> None:
    """Forget the digests computed so far (as a new session would)."""
    _DIGESTS.clear()


def _source_file(obj: Any) -> str | None:
    try:
        path = inspect.getsourcefile(obj)
    except (TypeError, OSError):  # built in, or defined where no file is (an interactive session)
        return None
    return path if path and os.path.isfile(path) else None


def code_identity(*objects: Any) -> str:
    """blake2b-128 hex of the code behind ``objects`` (classes, functions, or instances: their class): each
    one's ``module.qualname`` and the digest of its source file (:func:`file_digest`; nothing when it has
    none). The order of ``objects`` and repeats do not matter."""
    named = {}
    for obj in objects:
        obj = inspect.unwrap(obj) if callable(obj) and not isinstance(obj, type) else obj
        if not (isinstance(obj, type) or inspect.isfunction(obj) or inspect.ismethod(obj)):
            obj = type(obj)
        named[f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"] = obj
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(named):
        path = _source_file(named[name])
        h.update(f"{name}\n{file_digest(path) if path else ''}\n".encode())
    return h.hexdigest()


__all__ = ["ALGORITHMS", "HASH_BLOCK", "code_identity", "file_digest", "forget_file_digests"]
