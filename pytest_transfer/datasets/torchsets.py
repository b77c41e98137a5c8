"""torch ``Dataset`` objects as streamed sources: labels read without images, items decoded on demand."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .decode import GREY_MODES, HIGH_DEPTH_MODES, Layout, image_to_tensor, model_mode, repeat_grey
from .files import DEFAULT_SIZE, files_fingerprint
from .source import ImageSource

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

PROBE_ITEMS = 16
LABEL_ATTRIBUTES = ("targets", "_labels", "labels", "y")
PATH_ATTRIBUTES = ("samples", "imgs", "_image_files")


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
    """The image files behind a torch ``Dataset``, one per item, when it lists them."""
    for attr in PATH_ATTRIBUTES:
        entries = getattr(ds, attr, None)
        if isinstance(entries, list) and len(entries) == len(ds) and entries:
            first = entries[0]
            if isinstance(first, tuple):
                return [str(e[0]) for e in entries]
            if isinstance(first, (str, bytes)) or hasattr(first, "__fspath__"):
                return [str(e) for e in entries]
    return None


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


def locate(parts: Sequence[tuple[Any, np.ndarray]], k: int) -> tuple[Any, int]:
    """The dataset and item index of global index ``k`` over the concatenated parts."""
    for ds, idx in parts:
        if k < len(idx):
            return ds, int(idx[k])
        k -= len(idx)
    raise IndexError(k)


class DatasetSource(ImageSource):
    """Items of one or more torch ``Dataset`` objects (each with the item indices kept), decoded on demand.

    The fingerprint hashes the files the datasets list (``samples``, ``imgs``,
    ``_image_files``), else the files under ``root`` when given (a torchvision
    dataset's folder), else the decoded items themselves (one pass, once per
    session).
    """

    def __init__(self, parts: Sequence[tuple[Any, np.ndarray]], layout: Layout, image_size: tuple[int, int], *,
                 root: str | None = None, name: str = "dataset") -> None:
        self.parts = list(parts)
        self.layout = layout
        self.size_hw = image_size
        self.root = root
        self.name = name
        self._digest: str | None = None

    def __len__(self) -> int:
        return sum(len(idx) for _, idx in self.parts)

    def load(self, i: int) -> torch.Tensor:
        ds, j = locate(self.parts, i)
        image = _split_item(ds[j], j)[0]
        try:
            t = image_to_tensor(image, self.layout)
        except ValueError as exc:
            raise ValueError(f"{self.name}: item {j}: {exc}") from None
        if tuple(t.shape[1:]) != self.size_hw:
            raise ValueError(f"{self.name}: item {j} is {t.shape[2]}×{t.shape[1]} but the items probed are "
                             f"{self.size_hw[1]}×{self.size_hw[0]}; pass size=N to resize them all")
        return t

    def load_at(self, i: int, geometry: Any, channels: int | None) -> torch.Tensor:
        """Item ``i`` at a model's input size: a PIL item through the model's geometry as a file is
        (:meth:`~pytest_transfer.datasets.files.FileSource.load_at`), any other through its batch stage."""
        from PIL import Image

        ds, j = locate(self.parts, i)
        image = _split_item(ds[j], j)[0]
        if not isinstance(image, Image.Image):
            return super().load_at(i, geometry, channels)
        return repeat_grey(geometry.image(model_mode(image, channels or self.layout.channels)), channels)

    def content_fingerprint(self) -> str:
        if self._digest is None:
            self._digest = self._compute_digest()
        return self._digest

    def _compute_digest(self) -> str:
        import numpy as np

        h = hashlib.blake2b(digest_size=16)
        for ds, idx in self.parts:
            h.update(f"{type(ds).__module__}.{type(ds).__qualname__}|{len(ds)}|".encode())
            h.update(np.asarray(idx, dtype=np.int64).tobytes())
        listed = [file_paths(ds) for ds, _ in self.parts]
        if all(p is not None for p in listed):
            for (_, idx), paths in zip(self.parts, listed, strict=True):
                h.update(files_fingerprint([paths[int(j)] for j in idx]).encode())
        elif self.root is not None:
            h.update(files_fingerprint(_files_under(self.root), root=self.root).encode())
        else:
            for i in range(len(self)):
                h.update(self.load(i).numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> str:
        return f"{len(self)} items of {self.name}"


def _files_under(root: str) -> list[str]:
    import os

    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    return out


__all__ = ["DatasetSource", "file_paths", "labels_without_images", "locate", "probe_layout", "read_labels"]
