"""torch ``Dataset`` objects as streamed sources: labels read without images, items decoded on demand."""

from __future__ import annotations

import hashlib
import re
import uuid
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .decode import GREY_MODES, HIGH_DEPTH_MODES, Layout, image_to_tensor, model_mode, repeat_grey
from .describe import describe, describe_class, graph_guard
from .files import DEFAULT_SIZE, files_fingerprint, relative_ids
from .pixels import item_label
from .source import ImageSource

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

PROBE_ITEMS = 16
DIGEST_ITEMS = 16  # items digested (and read twice) when the files are hashed; every item is digested otherwise
LABEL_ATTRIBUTES = ("targets", "_labels", "labels", "y")
PATH_ATTRIBUTES = ("samples", "imgs", "_image_files")
DATA_ATTRIBUTES = ("root", *PATH_ATTRIBUTES, *LABEL_ATTRIBUTES)


def _int_labels(values: Any, n: int) -> np.ndarray | None:
    import numpy as np

    if values is None:
        return None
    arr = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    if arr.ndim != 1 or len(arr) != n or arr.dtype.kind not in "iu":
        return None
    return arr.astype(np.int64)


def labels_without_images(ds: Any) -> np.ndarray | None:
    """The labels of a torch ``Dataset`` read from its attributes, without decoding an image.

    Looks at ``targets`` (torchvision's MNIST, CIFAR, ``ImageFolder``),
    ``_labels`` (Food101, Flowers102, ...), ``labels``, ``y`` (Caltech101),
    ``samples`` / ``imgs`` (``(path, label)`` pairs) and ``Subset``; ``None``
    when none is there or a ``target_transform`` could change them.
    """
    import numpy as np

    n = len(ds)
    inner, idx = getattr(ds, "dataset", None), getattr(ds, "indices", None)
    if inner is not None and idx is not None and len(idx) == n:  # torch.utils.data.Subset
        base = labels_without_images(inner)
        return None if base is None else base[np.asarray(idx, dtype=np.int64)]
    if getattr(ds, "target_transform", None) is not None:
        return None
    for attr in LABEL_ATTRIBUTES:
        labels = _int_labels(getattr(ds, attr, None), n)
        if labels is not None:
            return labels
    for attr in PATH_ATTRIBUTES[:2]:
        pairs = getattr(ds, attr, None)
        if isinstance(pairs, list) and len(pairs) == n and all(isinstance(p, tuple) for p in pairs[:1]):
            return np.asarray([p[1] for p in pairs], dtype=np.int64)
    return None


def read_labels(ds: Any) -> np.ndarray:
    """Labels from the attributes (:func:`labels_without_images`), else from one pass over the items."""
    import numpy as np

    labels = labels_without_images(ds)
    if labels is not None:
        return labels
    out = []
    for i in range(len(ds)):
        out.append(int(_split_item(ds[i], i)[1]))
    return np.asarray(out, dtype=np.int64)


def file_paths(ds: Any) -> list[str] | None:
    """The image files behind a torch ``Dataset``, one per item, when it lists them (a ``Subset``: its items')."""
    inner, idx = getattr(ds, "dataset", None), getattr(ds, "indices", None)
    if inner is not None and idx is not None and len(idx) == len(ds):
        paths = file_paths(inner)
        return None if paths is None else [paths[int(j)] for j in idx]
    for attr in PATH_ATTRIBUTES:
        entries = getattr(ds, attr, None)
        if isinstance(entries, list) and len(entries) == len(ds) and entries:
            first = entries[0]
            if isinstance(first, tuple):
                return [str(e[0]) for e in entries]
            if isinstance(first, (str, bytes)) or hasattr(first, "__fspath__"):
                return [str(e) for e in entries]
    return None


def dataset_root(ds: Any) -> str | None:
    """The folder a ``Dataset`` reads from (its ``root``; a ``Subset``: its dataset's), or ``None``."""
    inner = getattr(ds, "dataset", None)
    root = getattr(ds, "root", None) if inner is None else dataset_root(inner)
    return str(root) if isinstance(root, str) or hasattr(root, "__fspath__") else None


def _split_item(item: Any, i: int) -> tuple[Any, Any]:
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise ValueError(f"dataset item {i}: expected (image, label), got {type(item).__name__}")
    return item[0], item[1]


def _probe(image: Any) -> tuple[int, bool, tuple[int, int]]:
    """(channels, high depth?, (H, W)) of one item's image."""
    from PIL import Image

    if isinstance(image, Image.Image):
        w, h = image.size
        return (1 if image.mode in GREY_MODES else 3), image.mode in HIGH_DEPTH_MODES, (h, w)
    shape = tuple(image.shape)
    if len(shape) == 2:
        return 1, _is_float(image), (shape[0], shape[1])
    c_first = shape[0] in (1, 3, 4) or shape[-1] not in (1, 3, 4)
    c, hw = (shape[0], shape[1:]) if c_first else (shape[-1], shape[:2])
    return (1 if c == 1 else 3), _is_float(image), (int(hw[0]), int(hw[1]))


def _is_float(image: Any) -> bool:
    dtype = getattr(image, "dtype", None)
    return dtype is not None and "float" in str(dtype)


def probe_layout(parts: Sequence[tuple[Any, np.ndarray]], *, size: int | None,
                 channels: int | None) -> tuple[Layout, tuple[int, int]]:
    """Layout and image size of a ``Dataset``'s items, from up to ``PROBE_ITEMS`` of them spread evenly.

    Any colour item among them makes the dataset RGB (mixed greyscale and
    colour items, as in Caltech101, all become RGB); different sizes among
    them choose ``size=224`` (shorter side, centre crop) unless ``size`` is given.
    """
    import numpy as np

    found = []
    total = sum(len(idx) for _, idx in parts)
    for k in np.unique(np.linspace(0, total - 1, min(PROBE_ITEMS, total)).round().astype(np.int64)):
        ds, j = locate(parts, int(k))
        found.append(_probe(_split_item(ds[j], j)[0]))
    chans = channels or (1 if all(c == 1 for c, _, _ in found) else 3)
    if chans not in (1, 3):
        raise ValueError(f"channels: expected 1 or 3, got {chans}")
    sizes = {hw for _, _, hw in found}
    if size is None and len(sizes) > 1:
        size = DEFAULT_SIZE
    layout = Layout(channels=chans, dtype="float32" if any(f for _, f, _ in found) else "uint8", size=size)
    return layout, ((size, size) if size is not None else next(iter(sizes)))


def part_of(parts: Sequence[tuple[Any, np.ndarray]], k: int) -> tuple[int, int]:
    """The part number and item index (in that part's dataset) of global index ``k`` over the concatenated parts."""
    for n, (_, idx) in enumerate(parts):
        if k < len(idx):
            return n, int(idx[k])
        k -= len(idx)
    raise IndexError(k)


def locate(parts: Sequence[tuple[Any, np.ndarray]], k: int) -> tuple[Any, int]:
    """The dataset and item index of global index ``k`` over the concatenated parts."""
    n, j = part_of(parts, k)
    return parts[n][0], j


class NondeterministicDatasetWarning(UserWarning):
    """A dataset's items change from one read to the next (a random transform): its passes are not cached."""


RANDOM_TRANSFORM = re.compile(r"\.(Random\w+|ColorJitter|RandAugment|AutoAugment|TrivialAugmentWide|AugMix|"
                              r"ElasticTransform|GaussianNoise)@")


class DatasetSource(ImageSource):
    """Items of one or more torch ``Dataset`` objects (each with the item indices kept), decoded on demand.

    The fingerprint (:meth:`content_fingerprint`) covers what the items are,
    not only where they come from: a stable description of each dataset
    (its class, transform, loader and other attributes, see
    :func:`~pytest_transfer.datasets.describe.describe`), the files the
    datasets list (``samples``, ``imgs``, ``_image_files``) or else the files
    under ``root``, and a digest of decoded items: ``DIGEST_ITEMS`` items
    spread evenly over the dataset when files were hashed, every item
    otherwise (the data comes from nowhere else). Those spread items are read
    twice: when a second read differs (a random augmentation), the source is
    marked not ``deterministic``, a :class:`NondeterministicDatasetWarning`
    names the item and the fix, and the fingerprint takes a random part, so
    no cache entry is ever shared (the engine skips the memo and the disk
    cache for it). The fingerprint is recomputed when the description changes
    (``ds.transform = ...`` on the same object).
    """

    def __init__(self, parts: Sequence[tuple[Any, np.ndarray]], layout: Layout, image_size: tuple[int, int], *,
                 root: str | None = None, name: str = "dataset") -> None:
        self.parts = list(parts)
        self.layout = layout
        self.size_hw = image_size
        self.root = root
        self.name = name
        self._digest: tuple[str, str] | None = None  # (description, fingerprint)
        self.unstable: Any = None  # the sample id of an item that read differently twice
        self._description: tuple[tuple[Any, ...], list[Any], str] | None = None  # (identities, their objects, text)
        self._ids: tuple[Any, np.ndarray] | None = None  # (what the ids were computed from, every item's id)

    def __getstate__(self) -> dict[str, Any]:
        """What a ``DataLoader`` worker started by ``spawn`` receives: without the kept description and ids (the
        guard's references include code objects, which do not pickle; a worker never fingerprints)."""
        return {**self.__dict__, "_description": None, "_ids": None}

    @property
    def deterministic(self) -> bool:
        """False once two reads of one item differed (found while fingerprinting)."""
        return self.unstable is None

    def __len__(self) -> int:
        return sum(len(idx) for _, idx in self.parts)

    def load(self, i: int) -> torch.Tensor:
        ds, j = locate(self.parts, i)
        t = image_to_tensor(_split_item(ds[j], j)[0], self.layout)
        if tuple(t.shape[1:]) != self.size_hw:
            raise ValueError(f"it is {t.shape[2]}×{t.shape[1]} but the items probed are "
                             f"{self.size_hw[1]}×{self.size_hw[0]}; pass size=N to resize them all")
        return t

    def load_at(self, i: int, geometry: Any, channels: int | None) -> torch.Tensor:
        """Item ``i`` at a model's input size: a PIL item through the model's geometry as a file is
        (:meth:`~pytest_transfer.datasets.files.FileSource.load_at`), any other through its batch stage."""
        from PIL import Image

        ds, j = locate(self.parts, i)
        image = _split_item(ds[j], j)[0]  # read once: a second read would decode (and transform) it again
        if not isinstance(image, Image.Image):
            from .core import to_unit_float
            from .pixels import check_pixels

            t = image_to_tensor(image, self.layout)
            check_pixels(t, dataset=self.name, ids=lambda _: self.sample_id(i))  # exactly, before it is resized
            return geometry.batch(to_unit_float(t)[None])[0].float()
        return repeat_grey(geometry.image(model_mode(image, channels or self.layout.channels)), channels)

    def sample_ids(self, indices: Any) -> np.ndarray:
        """The listed file of each item relative to the dataset's root (``ImageFolder``'s ``cat/1.jpg``); else
        the item's index in the ``Dataset`` given (one part) or in this dataset (several parts). Every item's id
        is computed once and kept while the listed files and the roots stay equal (a pass asks for them)."""
        import numpy as np

        listed = [file_paths(ds) for ds, _ in self.parts]
        roots = [self.root or dataset_root(ds) for ds, _ in self.parts]
        key = (listed, roots)
        if self._ids is None or self._ids[0] != key:
            self._ids = (key, self._all_ids(listed, roots))
        return self._ids[1][np.asarray(indices, dtype=np.int64)]

    def _all_ids(self, listed: list[list[str] | None], roots: list[str | None]) -> np.ndarray:
        import numpy as np

        if all(p is not None for p in listed):
            return np.concatenate([relative_ids([paths[int(j)] for j in idx], root)  # type: ignore[index]
                                   for (_, idx), paths, root in zip(self.parts, listed, roots, strict=True)])
        if len(self.parts) == 1:
            return np.asarray(self.parts[0][1], dtype=np.int64).copy()
        return np.arange(len(self), dtype=np.int64)

    def revision(self) -> str:
        """What computes the items (:func:`describe_dataset` of each part), described again only when an object
        it reads was replaced or changed (:func:`~pytest_transfer.datasets.describe.graph_guard`)."""
        guards = [dataset_guard(ds) for ds, _ in self.parts]
        ids, refs = tuple(g[0] for g in guards), [g[1] for g in guards]
        if self._description is None or self._description[0] != ids:
            self._description = (ids, refs, "\n".join(describe_dataset(ds) for ds, _ in self.parts))
        return self._description[2]

    def content_fingerprint(self) -> str:
        description = self.revision()
        if self._digest is None or self._digest[0] != description:
            self._digest = (description, self._compute_digest(description))
        return self._digest[1]

    def _compute_digest(self, description: str) -> str:
        import numpy as np

        self.unstable = None  # what computes the items changed: whether two reads agree is found again below
        h = hashlib.blake2b(description.encode(), digest_size=16)
        for ds, idx in self.parts:
            h.update(f"{type(ds).__module__}.{type(ds).__qualname__}|{len(ds)}|".encode())
            h.update(np.asarray(idx, dtype=np.int64).tobytes())
        listed = [file_paths(ds) for ds, _ in self.parts]
        spread = np.unique(np.linspace(0, len(self) - 1, min(DIGEST_ITEMS, len(self))).round().astype(np.int64))
        if all(p is not None for p in listed):
            for (ds, idx), paths in zip(self.parts, listed, strict=True):
                root = self.root or dataset_root(ds)
                h.update(files_fingerprint([paths[int(j)] for j in idx], root=root).encode())
            positions = spread
        elif self.root is not None:
            h.update(files_fingerprint(_files_under(self.root), root=self.root).encode())
            positions = spread
        else:
            positions = np.arange(len(self))
        h.update(self._items_digest(positions, spread, description).encode())
        return h.hexdigest()

    def _items_digest(self, positions: np.ndarray, twice: np.ndarray, description: str) -> str:
        """A digest of the decoded items at ``positions``; the items at ``twice`` are read a second time and
        compared (on one intra-op thread, so the bytes do not depend on the thread count)."""
        import torch

        h = hashlib.blake2b(digest_size=16)
        first: dict[int, bytes] = {}
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            for k in positions:
                data = self.load_checked(int(k)).numpy().tobytes()
                h.update(data)
                first[int(k)] = hashlib.blake2b(data, digest_size=16).digest()
            for k in twice:
                again = hashlib.blake2b(self.load_checked(int(k)).numpy().tobytes(), digest_size=16).digest()
                if again != first[int(k)]:
                    self._mark_unstable(int(k), description)
                    h.update(uuid.uuid4().bytes)  # never the key of anything stored
                    break
        finally:
            torch.set_num_threads(threads)
        return h.hexdigest()

    def _mark_unstable(self, k: int, description: str) -> None:
        sid = self.sample_ids([k])[0]
        self.unstable = sid.item() if hasattr(sid, "item") else sid
        found = sorted({m.group(1) for m in RANDOM_TRANSFORM.finditer(description)})
        held = f"; its transform holds {', '.join(found)}" if found else ""
        warnings.warn(NondeterministicDatasetWarning(
            f"dataset {self.name!r}: {item_label(self.unstable)} read twice gave different images: its items "
            f"change from one read to the next (a random augmentation left in an evaluation dataset?){held}. Each "
            "pass sees other images, so its results are not cached (neither in this session nor on disk) and "
            "gates that compare passes compare unlike with unlike. Fix: give the evaluation dataset a "
            "deterministic transform (Resize + CenterCrop instead of RandomResizedCrop; no Random*, ColorJitter "
            "or *Augment transforms), or draw any randomness from a generator seeded by the item's index"
        ), stacklevel=2)

    def describe(self) -> str:
        return f"{len(self)} items of {self.name}"


def describe_dataset(ds: Any) -> str:
    """What computes a ``Dataset``'s items (:func:`~pytest_transfer.datasets.describe.describe`), without the
    attributes that hold its data (file lists, labels, root: hashed otherwise); a ``Subset`` by its indices and
    the dataset it wraps."""
    import numpy as np

    inner, idx = getattr(ds, "dataset", None), getattr(ds, "indices", None)
    if inner is not None and idx is not None:
        keys = hashlib.blake2b(np.asarray(idx, dtype=np.int64).tobytes(), digest_size=12).hexdigest()
        return f"{describe_class(type(ds))}[{keys}] of {describe_dataset(inner)}"
    return describe(ds, skip=DATA_ATTRIBUTES)


def dataset_guard(ds: Any) -> tuple[tuple[Any, ...], list[Any]]:
    """:func:`~pytest_transfer.datasets.describe.graph_guard` of what :func:`describe_dataset` reads of ``ds``."""
    import numpy as np

    inner, idx = getattr(ds, "dataset", None), getattr(ds, "indices", None)
    if inner is not None and idx is not None:
        ids, refs = dataset_guard(inner)
        return (id(type(ds)), np.asarray(idx, dtype=np.int64).tobytes(), ids), [ds, type(ds), refs]
    return graph_guard(ds, skip=DATA_ATTRIBUTES)


def _files_under(root: str) -> list[str]:
    import os

    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    return out


__all__ = ["DIGEST_ITEMS", "DatasetSource", "NondeterministicDatasetWarning", "dataset_guard", "describe_dataset",
           "file_paths",
           "labels_without_images", "locate", "part_of", "probe_layout", "read_labels"]
