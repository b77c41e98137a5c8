"""Image files on disk: the ``ImageFolder`` layout, header scans, streamed content hashes, a file source.

Nothing here decodes pixels except :meth:`FileSource.load` (one file, when
the engine asks for it) and the optional verification of
``skip_unreadable=True``. What is learnt about a file (its header, its
content hash) is remembered for the session, keyed by path, size and
modification time, so a changed file is read again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .decode import Layout, layout_for_modes, pil_to_tensor
from .source import ImageSource

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
HASH_BLOCK = 1 << 20
FINGERPRINT_MODES = ("content", "stat")

# (path, size, mtime_ns) → what was learnt; a changed file has another key
_HEADERS: dict[tuple[str, int, int], tuple[str, tuple[int, int]]] = {}
_DIGESTS: dict[tuple[str, int, int], str] = {}
_VERIFIED: set[tuple[str, int, int]] = set()


def clear_file_memo() -> None:
    """Forget the headers and content hashes read so far (as a new session would)."""
    _HEADERS.clear()
    _DIGESTS.clear()
    _VERIFIED.clear()


class UnreadableImage(ValueError):
    """A file that PIL cannot open or decode."""


def is_hidden(name: str) -> bool:
    """Hidden files and folders (``.x``, which includes macOS AppleDouble ``._x`` files)."""
    return name.startswith(".")


def find_image_folder(root: Path, *, allow_empty: bool = False) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes and ``(path, class index)`` samples of an ``ImageFolder`` tree, in torchvision's order.

    Classes are the sorted names of ``root``'s sub-folders, as
    ``torchvision.datasets.folder.find_classes`` sorts them (code-point
    order: ``10`` < ``2`` < ``B`` < ``a``); samples come from torchvision's
    ``make_dataset`` (sorted walk, links followed). Unlike torchvision,
    hidden files and folders are skipped at every level (``.ipynb_checkpoints``,
    ``._x.png``, ``.DS_Store``), so they are neither classes nor images.
    A class folder without images is an error naming it unless
    ``allow_empty=True`` (then the class keeps its index and has no samples).
    """
    from torchvision.datasets.folder import make_dataset

    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not is_hidden(e.name))
    if not classes:
        raise ValueError(f"imagefolder:{root}: expected one sub-folder per class (root/<class>/<image>), found none")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    base = os.path.abspath(root)

    def valid(path: str) -> bool:
        rel = os.path.relpath(os.path.abspath(path), base)
        return path.lower().endswith(IMAGE_SUFFIXES) and not any(is_hidden(p) for p in Path(rel).parts)

    samples = make_dataset(str(root), class_to_idx, is_valid_file=valid, allow_empty=True)
    counts = [0] * len(classes)
    for _, c in samples:
        counts[c] += 1
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if empty and not allow_empty:
        raise ValueError(
            f"imagefolder:{root}: class folder(s) {', '.join(repr(c) for c in empty)} hold no images "
            f"(suffixes {', '.join(IMAGE_SUFFIXES)}); add images, remove the folder, or pass allow_empty=True "
            "to keep the class (and the indices of the classes after it) without samples"
        )
    return classes, samples


def stat_key(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def read_header(path: str, *, verify: bool = False) -> tuple[str, tuple[int, int]]:
    """PIL mode and (width, height) of an image file, from its header only (``verify=True``: and decode it
    once, to find truncated files). Raises :class:`UnreadableImage` naming the file."""
    from PIL import Image

    key = stat_key(path)
    if key in _HEADERS and (not verify or key in _VERIFIED):
        return _HEADERS[key]
    try:
        with Image.open(path) as im:
            header = (im.mode, im.size)
            if verify:
                im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"cannot read image {path} ({exc})") from None
    _HEADERS[key] = header
    if verify:
        _VERIFIED.add(key)
    return header


def file_digest(path: str) -> str:
    """blake2b-128 of a file's bytes, read in 1 MiB blocks, remembered by path, size and mtime."""
    key = stat_key(path)
    if key not in _DIGESTS:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as fh:
            while block := fh.read(HASH_BLOCK):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def files_fingerprint(paths: Sequence[str], *, root: str | None = None, mode: str = "content") -> str:
    """A hash of a list of files: their paths (relative to ``root``) and contents.

    ``mode="content"`` reads every byte once per session (about 1 GB/s from
    a warm disk cache; memoised by path, size and mtime); ``"stat"`` hashes
    sizes and modification times only (no reading; misses an edit that keeps
    both).
    """
    if mode not in FINGERPRINT_MODES:
        raise ValueError(f"fingerprint: expected one of {', '.join(FINGERPRINT_MODES)}, got {mode!r}")
    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        rel = os.path.relpath(p, root) if root else p
        h.update(rel.encode("utf-8", "surrogateescape") + b"\x00")
        if mode == "content":
            h.update(file_digest(p).encode())
        else:
            _, size, mtime = stat_key(p)
            h.update(f"{size}:{mtime}".encode())
    return h.hexdigest()


class FileSource(ImageSource):
    """Images decoded from files on demand (picklable, so loader workers can decode them)."""

    def __init__(self, paths: Sequence[str], layout: Layout, image_size: tuple[int, int], *,
                 root: str | None = None, fingerprint: str = "content") -> None:
        if fingerprint not in FINGERPRINT_MODES:
            raise ValueError(f"fingerprint: expected one of {', '.join(FINGERPRINT_MODES)}, got {fingerprint!r}")
        self.paths = list(paths)
        self.layout = layout
        self.size_hw = image_size
        self.root = root
        self.fingerprint_mode = fingerprint

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> torch.Tensor:
        from PIL import Image

        path = self.paths[i]
        try:
            with Image.open(path) as im:
                t = pil_to_tensor(im, self.layout)
        except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
            raise UnreadableImage(
                f"cannot read image {path} ({exc}); fix or remove the file, or load the folder with "
                "skip_unreadable=True to leave out the files that cannot be decoded"
            ) from None
        if tuple(t.shape[1:]) != self.size_hw:
            raise ValueError(f"image {path} is {t.shape[2]}×{t.shape[1]} but the folder's images are "
                             f"{self.size_hw[1]}×{self.size_hw[0]}; pass size=N to resize them all")
        return t

    def content_fingerprint(self) -> str:
        return files_fingerprint(self.paths, root=self.root, mode=self.fingerprint_mode)

    def sample_ids(self, indices: Any) -> np.ndarray:
        """The files of ``indices``, relative to the folder, with ``/`` separators (``cat/001.jpg``)."""
        return relative_ids([self.paths[int(i)] for i in indices], self.root)

    def describe(self) -> str:
        return f"{len(self.paths)} files under {self.root}"


def scan_files(paths: Sequence[str], *, skip_unreadable: bool, size: int | None, channels: int | None,
               what: str) -> tuple[list[int], Layout, tuple[int, int], list[str]]:
    """Read every header: the indices kept, the common layout and image size, and the files skipped."""
    kept, modes, sizes, skipped = [], set(), set(), []
    for i, p in enumerate(paths):
        try:
            mode, wh = read_header(p, verify=skip_unreadable)
        except UnreadableImage as exc:
            if not skip_unreadable:
                raise UnreadableImage(f"{what}: {exc}; fix or remove the file, or pass skip_unreadable=True "
                                      "to leave out the files that cannot be decoded") from None
            skipped.append(p)
            continue
        kept.append(i)
        modes.add(mode)
        sizes.add(wh)
    if size is None and len(sizes) > 1:
        size = DEFAULT_SIZE
    layout = layout_for_modes(modes, size=size, channels=channels)
    if size is not None:
        hw = (size, size)
    else:
        w, h = next(iter(sizes)) if sizes else (0, 0)
        hw = (h, w)
    return kept, layout, hw, skipped


DEFAULT_SIZE = 224


def relative_ids(paths: Sequence[str], root: str | None) -> np.ndarray:
    """Sample ids of files: each path relative to ``root`` (when under it) with ``/`` separators, as a str array."""
    import numpy as np

    out = []
    for p in paths:
        rel = os.path.relpath(p, root) if root else p
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            rel = p  # not under the root: the path as given
        out.append(Path(rel).as_posix())
    return np.asarray(out, dtype=object)


def describe_skipped(skipped: Sequence[str]) -> str:
    head = ", ".join(str(p) for p in skipped[:3])
    return f"{len(skipped)} unreadable file(s) skipped ({head}{', ...' if len(skipped) > 3 else ''})"


__all__ = ["DEFAULT_SIZE", "FINGERPRINT_MODES", "IMAGE_SUFFIXES", "FileSource", "UnreadableImage", "clear_file_memo",
           "describe_skipped", "file_digest", "files_fingerprint", "find_image_folder", "read_header",
           "relative_ids", "scan_files"]
