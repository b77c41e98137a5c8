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

from ..fingerprints import file_digest, forget_file_digests
from .decode import Layout, layout_for_modes, model_mode, pil_to_tensor, repeat_grey, resize_crop
from .source import ImageSource

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
FINGERPRINT_MODES = ("content", "stat")

# (path, size, mtime_ns) → what was learnt; a changed file has another key
_HEADERS: dict[tuple[str, int, int], tuple[str, tuple[int, int]]] = {}
_VERIFIED: set[tuple[str, int, int]] = set()


def clear_file_memo() -> None:
    """Forget the headers and content hashes read so far (as a new session would)."""
    _HEADERS.clear()
    forget_file_digests()
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
    order: ``10`` < ``2`` < ``B`` < ``a``); samples in the order of torchvision's
    ``make_dataset`` (sorted walk, links followed). Unlike torchvision,
    hidden files and folders are skipped at every level (``.ipynb_checkpoints``,
    ``._x.png``, ``.DS_Store``), so they are neither classes nor images, and
    links are checked (:func:`walk_class`): a folder link back into its own
    path (``loop -> .``, ``up -> ..``) or into another class's folder is
    refused naming the link, and a file reached twice (two links to it) is
    one sample.
    A class folder without images is an error naming it unless
    ``allow_empty=True`` (then the class keeps its index and has no samples).
    """
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not is_hidden(e.name))
    if not classes:
        raise ValueError(f"imagefolder:{root}: expected one sub-folder per class (root/<class>/<image>), found none")
    base = os.path.abspath(root)
    class_reals = {os.path.realpath(os.path.join(base, c)): c for c in classes}
    samples: list[tuple[str, int]] = []
    owner: dict[str, tuple[str, int]] = {}  # real path of a file -> (the path it was first listed under, class)
    for index, c in enumerate(classes):
        for path in walk_class(os.path.join(str(root), c), class_reals, root):
            real = os.path.realpath(path)
            if real in owner:
                first, first_class = owner[real]
                if first_class != index:
                    raise ValueError(f"imagefolder:{root}: {path} and {first} are the same file (links) in two "
                                     "classes; a file has one label: remove one of the links")
                continue  # reached twice inside its class (two links to one file): counted once
            owner[real] = (path, index)
            if path.lower().endswith(IMAGE_SUFFIXES):
                samples.append((path, index))
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


def _link_problem(link: str, target: str, here: str, own: str, class_reals: dict[str, str]) -> str | None:
    """Why following the folder link ``link`` (to ``target``, found in ``here``) is refused, or ``None``."""
    if here == target or here.startswith(target + os.sep):
        return "points back to a folder that contains it (a loop that lists the same images again and again)"
    for real, other in class_reals.items():
        if real != own and (target == real or target.startswith(real + os.sep)):
            return f"points into the folder of class {other!r}, whose images would be listed under this class too"
        if target != own and own.startswith(target + os.sep):
            return "points to a folder above this class's folder (other classes' images under this label)"
    return None


def walk_class(folder: str, class_reals: dict[str, str], root: Any) -> list[str]:
    """The non-hidden files under one class folder, in torchvision's order (``sorted(os.walk(folder,
    followlinks=True))``, then sorted names), following folder links but refusing, by the link's name, one
    that loops or leads into another class (see :func:`find_image_folder`)."""
    own = os.path.realpath(folder)
    found: list[tuple[str, list[str]]] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = os.path.realpath(dirpath)
        kept = []
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if is_hidden(d):
                continue
            if os.path.islink(full):
                problem = _link_problem(full, os.path.realpath(full), here, own, class_reals)
                if problem:
                    raise ValueError(f"imagefolder:{root}: the link {full} -> {os.readlink(full)} {problem}; "
                                     "remove the link, or replace it with a copy of the images it should add")
            kept.append(d)
        dirnames[:] = kept
        found.append((dirpath, sorted(f for f in filenames if not is_hidden(f))))
    return [os.path.join(d, f) for d, files in sorted(found) for f in files]


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
                 root: str | None = None, fingerprint: str = "content", resize: int | None = None) -> None:
        if fingerprint not in FINGERPRINT_MODES:
            raise ValueError(f"fingerprint: expected one of {', '.join(FINGERPRINT_MODES)}, got {fingerprint!r}")
        self.paths = list(paths)
        self.layout = layout
        self.size_hw = image_size
        self.root = root
        self.fingerprint_mode = fingerprint
        self.resize = resize  # a size the user asked for: applied before a model's geometry too

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

    def load_at(self, i: int, geometry: Any, channels: int | None) -> torch.Tensor:
        """File ``i`` as its model's library reads it: decoded, ``convert("RGB")`` (``"L"`` for a one-channel
        model; 16/32-bit images as float, see :mod:`.decode`), resized to ``size`` if the folder was loaded
        with one, then ``geometry`` (the library's own resize and crop) on the PIL image: C×H×W at the
        model's input size, uint8 (float32 in [0, 1] for 16/32-bit files)."""
        from PIL import Image

        path = self.paths[i]
        try:
            with Image.open(path) as im:
                img = model_mode(im, channels or self.layout.channels)
        except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
            raise UnreadableImage(
                f"cannot read image {path} ({exc}); fix or remove the file, or load the folder with "
                "skip_unreadable=True to leave out the files that cannot be decoded"
            ) from None
        if self.resize is not None:
            img = resize_crop(img, self.resize)
        return repeat_grey(geometry.image(img), channels)

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
        check_aspect(p, wh)
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
#: the longest side may be at most this many times the shorter: a resize of the shorter side to a model's
#: input would otherwise make a 1×20,000 strip 224×4,480,000 (4 GB)
MAX_ASPECT_RATIO = 100


def check_aspect(path: str, wh: tuple[int, int]) -> None:
    """Refuse, naming the file, an image whose sides differ more than :data:`MAX_ASPECT_RATIO` times."""
    w, h = wh
    if min(w, h) < 1 or max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise ValueError(f"image {path} is {w}×{h} pixels, an aspect ratio over {MAX_ASPECT_RATIO}:1; resizing its "
                         "shorter side to a model's input would take gigabytes. Crop it or remove it from the folder")


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


__all__ = ["DEFAULT_SIZE", "FINGERPRINT_MODES", "IMAGE_SUFFIXES", "MAX_ASPECT_RATIO", "FileSource", "UnreadableImage",
           "check_aspect", "clear_file_memo", "describe_skipped", "file_digest", "files_fingerprint",
           "find_image_folder", "read_header", "relative_ids", "scan_files", "walk_class"]
