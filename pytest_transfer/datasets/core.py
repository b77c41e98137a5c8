"""``TargetDataset``: images in [0, 1] (held in memory or streamed from a source), labels, splits, fingerprint."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .pixels import check_pixels
from .source import ImageSource

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

SPLITS = ("train", "test", "all")


class TargetDataset:
    """Images in [0, 1] with integer labels, deterministic splits and a fingerprint.

    ``images`` is either an N×C×H×W tensor or array, float in [0, 1] or
    uint8 (read as value / 255), held in memory; or an
    :class:`~pytest_transfer.datasets.source.ImageSource` (image files, a
    torch ``Dataset``): then nothing is held, :meth:`batch` decodes the
    images asked for and the engine streams them chunk by chunk
    (``streamed`` is true). Labels may be any integers; they are remapped to
    0..C−1 and ``classes`` keeps the names (or the original values). The
    ``train`` and ``test`` splits are stratified and drawn from ``seed`` (or
    given explicitly with ``splits=``). ``skipped`` lists files left out by
    ``skip_unreadable=True``.

    >>> import torch
    >>> ds = TargetDataset(torch.rand(8, 1, 4, 4), [0, 1] * 4, name="toy")
    >>> len(ds.indices("train")), len(ds.indices("test"))
    (6, 2)
    """

    def __init__(self, images: Any, labels: Any, *, name: str = "arrays", classes: Sequence[Any] | None = None,
                 seed: int = 0, test_fraction: float = 0.25,
                 splits: dict[str, Any] | None = None) -> None:
        import numpy as np

        self.name = name
        self.source: ImageSource | None = images if isinstance(images, ImageSource) else None
        if self.source is not None and not self.source.name:
            self.source.name = name  # named in its messages (a pixel out of range, a file that cannot be read)
        self._images = None if self.source is not None else as_image_tensor(images, name)
        self.skipped: list[str] = []
        raw = as_label_array(labels, name)
        if len(raw) != len(self):
            raise ValueError(f"dataset {name!r}: {len(self)} images but {len(raw)} labels; they must match one to one")
        values, codes = np.unique(raw, return_inverse=True)
        if len(values) < 2:
            raise ValueError(
                f"dataset {name!r}: has {len(values)} class(es); a transfer test needs at least two classes "
                "(check the label column or the folder layout)"
            )
        if classes is not None:
            # the labels index the names given: kept as they are, so a class without samples keeps its index
            classes = list(classes)
            if raw.min() < 0 or raw.max() >= len(classes):
                raise ValueError(
                    f"dataset {name!r}: labels run from {raw.min()} to {raw.max()} but {len(classes)} class names "
                    "were given; pass one name per label value"
                )
            self.labels = raw.astype(np.int64)
            self.classes = [str(c) for c in classes]
        else:
            self.labels = codes.astype(np.int64)
            self.classes = [str(v) for v in values]
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction}")
        self.seed = int(seed)
        self.test_fraction = float(test_fraction)
        self._splits = self._explicit_splits(splits) if splits is not None else None
        self.has_explicit_splits = splits is not None
        self._fingerprint: tuple[Any, str] | None = None

    @property
    def streamed(self) -> bool:
        """True when the images are decoded on demand from ``source`` rather than held in memory."""
        return self.source is not None

    @property
    def images(self) -> torch.Tensor:
        """The in-memory N×C×H×W image tensor (uint8 or float32). A streamed dataset has none: read its
        images with :meth:`batch`."""
        if self._images is None:
            raise AttributeError(f"dataset {self.name!r} is streamed from {self.source.describe()}; its images are "
                                 "decoded on demand: read them with dataset.batch(indices)")
        return self._images

    # --- shape ----------------------------------------------------------
    def __len__(self) -> int:
        return len(self.source) if self.source is not None else len(self._images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        """1 (every image greyscale) or 3."""
        return self.source.layout.channels if self.source is not None else int(self._images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every image, in pixels."""
        if self.source is not None:
            return self.source.size_hw
        return int(self._images.shape[2]), int(self._images.shape[3])

    # --- splits ---------------------------------------------------------
    def _explicit_splits(self, splits: dict[str, Any]) -> dict[str, np.ndarray]:
        import numpy as np

        out = {}
        for key in ("train", "test"):
            if key not in splits:
                raise ValueError(f"splits: needs 'train' and 'test' index arrays, missing {key!r}")
            idx = np.asarray(splits[key], dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
                raise ValueError(f"splits[{key!r}]: indices outside 0..{len(self) - 1}")
            out[key] = idx
        return out

    def indices(self, split: str = "test") -> np.ndarray:
        """Sample indices of ``split`` (``train``, ``test`` or ``all``), in a fixed order."""
        import numpy as np

        if split not in SPLITS:
            raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
        if split == "all":
            return np.arange(len(self), dtype=np.int64)
        if self._splits is None:
            self._splits = stratified_split(self.labels, test_fraction=self.test_fraction, seed=self.seed)
        return self._splits[split]

    def with_split(self, *, seed: int | None = None, test_fraction: float | None = None) -> TargetDataset:
        """The same data with another split (shares the image tensor)."""
        clone = object.__new__(TargetDataset)
        clone.__dict__.update(self.__dict__)
        clone.seed = self.seed if seed is None else int(seed)
        clone.test_fraction = self.test_fraction if test_fraction is None else float(test_fraction)
        clone._splits = None if (seed is not None or test_fraction is not None) else self._splits
        clone.has_explicit_splits = clone._splits is not None and self.has_explicit_splits
        return clone

    def labels_of(self, split: str = "test") -> np.ndarray:
        return self.labels[self.indices(split)]

    def raw_batch(self, index: Any) -> torch.Tensor:
        """The stored images of ``index`` (N×C×H×W, uint8 or float32 in [0, 1]), decoded if streamed."""
        import torch

        if self.source is not None:
            return self.source.stack(index)
        return self._images.index_select(0, torch.as_tensor(index, dtype=torch.long))

    def batch(self, index: Any) -> torch.Tensor:
        """Float32 images in [0, 1] for the given indices (N×C×H×W), decoded if streamed."""
        return to_unit_float(self.raw_batch(index))

    # --- identity -------------------------------------------------------
    def fingerprint(self) -> str:
        """Hash of the images, labels and class names (the split is keyed separately).

        In memory: of the image bytes. Streamed: of the source's content
        fingerprint (for files, their paths and bytes read in blocks, never
        decoded; remembered per path, size and mtime) and its layout.
        """
        if self.source is not None:
            guard: tuple[Any, ...] = (id(self.source), self.source.revision(), self.labels.tobytes(),
                                      tuple(self.classes))
        else:
            images = self._images
            guard = (images.data_ptr(), images._version, tuple(images.shape), self.labels.tobytes(),
                     tuple(self.classes))
        if self._fingerprint is not None and self._fingerprint[0] != guard:
            self._fingerprint = None  # images or labels were changed in place
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            if self.source is not None:
                h.update(f"source|{self.source.layout.describe()}|{self.image_size}|".encode())
                h.update(self.source.content_fingerprint().encode())
            else:
                h.update(str(tuple(self._images.shape)).encode())
                h.update(str(self._images.dtype).encode())
                h.update(self._images.contiguous().numpy().tobytes())
            h.update(self.labels.tobytes())
            h.update("\x00".join(self.classes).encode())
            self._fingerprint = (guard, h.hexdigest())
        return self._fingerprint[1]

    @property
    def cacheable(self) -> bool:
        """Whether passes over this dataset may be memoised and cached: false for a source whose items changed
        between two reads (a random augmentation; found while fingerprinting, with a warning)."""
        self.fingerprint()
        return getattr(self.source, "deterministic", True)

    def sample_ids(self, indices: Any = None) -> np.ndarray:
        """What names each sample of ``indices`` (default: all) in reports: the file path relative to the folder
        (``cat/001.jpg``, object array of str) for folders and ``Dataset`` objects that list their files, else
        the index (int64; for a torch ``Dataset``, the item's index in it)."""
        import numpy as np

        idx = np.arange(len(self), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.source is not None:
            return self.source.sample_ids(idx)
        return idx.copy()

    def split_fingerprint(self, split: str) -> str:
        return hashlib.blake2b(self.indices(split).tobytes(), digest_size=8).hexdigest()

    def __repr__(self) -> str:
        where = f"streamed from {self.source.describe()}" if self.source is not None else "in memory"
        return (f"TargetDataset(name={self.name!r}, n={len(self)}, classes={self.num_classes}, "
                f"images={(len(self), self.channels, *self.image_size)}, {where})")


def stratified_split(labels: np.ndarray, *, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Per class, a seeded permutation; ``round(test_fraction * n_c)`` samples go to test (at least one
    when the class has two or more). Indices are returned sorted."""
    import numpy as np

    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        n_test = round(test_fraction * len(members))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        else:
            n_test = 0
        test.append(members[:n_test])
        train.append(members[n_test:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def subset_indices(labels: np.ndarray, max_samples: int | None, *, seed: int) -> np.ndarray:
    """Sorted indices of a stratified, seeded subset of exactly ``max_samples`` items (all of them when
    ``None`` or when there are no more), chosen from the labels alone.

    Each class gets its share ``max_samples · n_c / N``, rounded by largest remainders (Hamilton's
    apportionment: the floors first, then one more for the classes with the largest fractional
    parts, ties to the earlier class), taken from a seeded permutation of its items.
    """
    import numpy as np

    labels = np.asarray(labels)
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer))
                                    or max_samples < 1):
        raise ValueError(f"max_samples: expected a positive integer, got {max_samples!r}")
    if max_samples is None or len(labels) <= max_samples:
        return np.arange(len(labels), dtype=np.int64)
    codes = np.unique(labels, return_inverse=True)[1]
    counts = np.bincount(codes)
    quota = int(max_samples) * counts / len(labels)
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(take - quota, kind="stable")[: int(max_samples) - int(take.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [np.flatnonzero(codes == c)[rng.permutation(n)[: take[c]]] for c, n in enumerate(counts)]
    return np.sort(np.concatenate(chosen))


def as_image_tensor(images: Any, name: str) -> torch.Tensor:
    import numpy as np
    import torch

    if hasattr(images, "detach"):
        x = images.detach().cpu()
    else:
        arr = np.asarray(images)
        if arr.dtype == object:
            raise ValueError(f"dataset {name!r}: images must be one numeric array of equal-sized images")
        x = torch.from_numpy(np.ascontiguousarray(arr))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise ValueError(
            f"dataset {name!r}: images must be N×C×H×W (or N×H×W for grayscale), got shape {tuple(x.shape)}"
        )
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.permute(0, 3, 1, 2)  # channels-last arrays (N×H×W×C) as numpy images usually are
    if x.shape[1] not in (1, 3, 4):
        raise ValueError(f"dataset {name!r}: expected 1 or 3 channels, got shape {tuple(x.shape)}")
    if x.shape[1] == 4:
        x = x[:, :3]
    if x.dtype == torch.uint8:
        return x.contiguous()
    if not x.dtype.is_floating_point:
        raise ValueError(f"dataset {name!r}: images must be float in [0, 1] or uint8, got dtype {x.dtype}")
    x = x.float()
    check_pixels(x, dataset=name)
    return x.contiguous()


def as_label_array(labels: Any, name: str) -> np.ndarray:
    import numpy as np

    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"dataset {name!r}: labels must be a 1-d array of class indices, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"dataset {name!r}: labels must be integers")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"dataset {name!r}: labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)




def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """Stored images as float32 in [0, 1]: uint8 as value / 255 (one rule for memory and streams)."""
    import torch

    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float() if x.dtype != torch.float32 else x
