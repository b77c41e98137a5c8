"""``TargetDataset`` and the dataset sources: digits, imagefolder, torchvision, torch ``Dataset``, arrays."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

SPLITS = ("train", "test", "all")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class TargetDataset:
    """Images in [0, 1] with integer labels, deterministic splits and a fingerprint.

    ``images`` is an N×C×H×W tensor, either float in [0, 1] or uint8 (read as
    value / 255). Labels may be any integers; they are remapped to 0..C−1 and
    ``classes`` keeps the names (or the original values). The ``train`` and
    ``test`` splits are stratified and drawn from ``seed`` (or given
    explicitly with ``splits=``).

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
        self.images = _as_image_tensor(images, name)
        raw = _as_label_array(labels, name)
        if len(raw) != len(self.images):
            raise ValueError(
                f"dataset {name!r}: {len(self.images)} images but {len(raw)} labels; they must match one to one"
            )
        values, codes = np.unique(raw, return_inverse=True)
        if len(values) < 2:
            raise ValueError(
                f"dataset {name!r}: has {len(values)} class(es); a transfer test needs at least two classes "
                "(check the label column or the folder layout)"
            )
        self.labels = codes.astype(np.int64)
        if classes is not None:
            classes = list(classes)
            if raw.min() < 0 or raw.max() >= len(classes):
                raise ValueError(
                    f"dataset {name!r}: labels run from {raw.min()} to {raw.max()} but {len(classes)} class names "
                    "were given; pass one name per label value"
                )
            self.classes = [str(classes[v]) for v in values]
        else:
            self.classes = [str(v) for v in values]
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction}")
        self.seed = int(seed)
        self.test_fraction = float(test_fraction)
        self._splits = self._explicit_splits(splits) if splits is not None else None
        self._fingerprint: tuple[Any, str] | None = None

    # --- shape ----------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

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
        return clone

    def labels_of(self, split: str = "test") -> np.ndarray:
        return self.labels[self.indices(split)]

    def batch(self, index: Any) -> torch.Tensor:
        """Float images in [0, 1] for the given indices."""
        import torch

        idx = torch.as_tensor(index, dtype=torch.long)
        x = self.images.index_select(0, idx)
        if x.dtype == torch.uint8:
            return x.float().div_(255.0)
        return x.float() if x.dtype != torch.float32 else x

    # --- identity -------------------------------------------------------
    def fingerprint(self) -> str:
        """Hash of the images, labels and class names (the split is keyed separately)."""
        images = self.images
        guard = (images.data_ptr(), images._version, tuple(images.shape), self.labels.tobytes(),
                 tuple(self.classes))
        if self._fingerprint is not None and self._fingerprint[0] != guard:
            self._fingerprint = None  # images or labels were changed in place
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(str(tuple(self.images.shape)).encode())
            h.update(str(self.images.dtype).encode())
            h.update(self.images.contiguous().numpy().tobytes())
            h.update(self.labels.tobytes())
            h.update("\x00".join(self.classes).encode())
            self._fingerprint = (guard, h.hexdigest())
        return self._fingerprint[1]

    def split_fingerprint(self, split: str) -> str:
        return hashlib.blake2b(self.indices(split).tobytes(), digest_size=8).hexdigest()

    def __repr__(self) -> str:
        return (f"TargetDataset(name={self.name!r}, n={len(self)}, classes={self.num_classes}, "
                f"images={tuple(self.images.shape)})")


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


def _as_image_tensor(images: Any, name: str) -> torch.Tensor:
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
    if not torch.isfinite(x).all():
        raise ValueError(f"dataset {name!r}: images contain NaN or Inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        hint = " (looks like 0..255: divide by 255 or pass uint8)" if hi <= 255 and lo >= 0 else ""
        raise ValueError(f"dataset {name!r}: float images must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]{hint}")
    return x.contiguous()


def _as_label_array(labels: Any, name: str) -> np.ndarray:
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


# --- sources -------------------------------------------------------------

def load_digits_dataset(*, shifted: bool = False, canvas: int = 20, **kwargs: Any) -> TargetDataset:
    """scikit-learn's 1,797 real 8×8 handwritten digits, 10 classes, 1 channel.

    ``shifted=True`` (spec ``digits-shifted``) places each digit at a seeded
    random position on a ``canvas``×``canvas`` black image (seed 0, fixed):
    the same real digits and labels, but no longer separable pixel by pixel,
    so features that do not know about shapes stop working.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("the 'digits' dataset needs scikit-learn: pip install 'pytest-transfer[data]'") from None
    import numpy as np

    d = load_digits()
    images = (d.images.astype(np.float32) / 16.0)[:, None]
    if shifted:
        if canvas < 8:
            raise ValueError(f"canvas: must be at least 8 pixels, got {canvas}")
        rng = np.random.default_rng(0)
        offsets = rng.integers(0, canvas - 8 + 1, size=(len(images), 2))
        placed = np.zeros((len(images), 1, canvas, canvas), np.float32)
        for i, (r, c) in enumerate(offsets):
            placed[i, 0, r:r + 8, c:c + 8] = images[i, 0]
        images = placed
    default = "digits-shifted" if shifted else "digits"
    return TargetDataset(images, d.target, name=kwargs.pop("name", default), classes=[str(i) for i in range(10)],
                         **kwargs)


def _pil_to_uint8(img: Any, size: int | None) -> np.ndarray:
    import numpy as np
    from PIL import Image

    img = img.convert("RGB")
    if size is not None:
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def load_imagefolder(root: str, *, size: int | None = None, **kwargs: Any) -> TargetDataset:
    """``imagefolder:<path>``: one sub-folder per class, as torchvision's ``ImageFolder``.

    Images keep their size when they all share one; otherwise (or when
    ``size`` is given) the shorter side is resized to ``size`` (default 224)
    and the centre cropped square. Stored as uint8 RGB.
    """
    import numpy as np
    from PIL import Image

    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"imagefolder:{root}: no such directory (relative to {Path.cwd()})")
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"imagefolder:{root}: expected one sub-folder per class (root/<class>/<image>), found none")
    files, labels = [], []
    for c, d in enumerate(class_dirs):
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                files.append(f)
                labels.append(c)
    if not files:
        raise ValueError(f"imagefolder:{root}: no images found (suffixes {', '.join(IMAGE_SUFFIXES)})")
    pil = []
    for f in files:
        try:
            with Image.open(f) as im:
                pil.append(im.convert("RGB"))
        except OSError as exc:
            raise ValueError(f"imagefolder:{root}: cannot read image {f} ({exc})") from None
    sizes = {im.size for im in pil}
    if size is None and len(sizes) > 1:
        size = 224
    arrays = np.stack([_pil_to_uint8(im, size) for im in pil])
    return TargetDataset(arrays.transpose(0, 3, 1, 2), labels, name=kwargs.pop("name", f"imagefolder:{root}"),
                         classes=[d.name for d in class_dirs], **kwargs)


def load_torchvision_dataset(dataset_name: str, root: str, *, max_samples: int | None = None,
                             **kwargs: Any) -> TargetDataset:
    """``torchvision:<Name>:<root>``: a torchvision dataset from local files, never downloading.

    When the dataset has an official train/test split, it is kept.
    ``max_samples`` keeps a stratified, seeded subset of each split.
    """
    import numpy as np
    import torchvision.datasets as tvd

    cls = getattr(tvd, dataset_name, None)
    if cls is None or not isinstance(cls, type):
        names = [n for n in dir(tvd) if n[:1].isupper() and n not in ("VisionDataset", "DatasetFolder")]
        raise ValueError(f"torchvision has no dataset {dataset_name!r}; e.g. {', '.join(names[:15])}")
    parts = {}
    for split, attempts in (("train", ({"train": True}, {"split": "train"})),
                            ("test", ({"train": False}, {"split": "test"}))):
        for extra in attempts:
            try:
                parts[split] = cls(root, download=False, **extra)
                break
            except TypeError:
                continue
            except (RuntimeError, FileNotFoundError, OSError) as exc:
                raise FileNotFoundError(
                    f"torchvision:{dataset_name}:{root}: the dataset files are not there ({exc}). pytest-transfer "
                    f"never downloads: fetch them on a machine with network access, e.g. "
                    f"torchvision.datasets.{dataset_name}({root!r}, download=True), and copy {root} here"
                ) from None
    if not parts:
        parts["all"] = cls(root)
    seed = int(kwargs.get("seed", 0))
    images, labels, offsets = [], [], {}
    for split, ds in parts.items():
        x, y = _materialise(ds)
        if max_samples is not None and len(y) > max_samples:
            keep = stratified_split(np.unique(y, return_inverse=True)[1],
                                    test_fraction=max_samples / len(y), seed=seed)["test"]
            x, y = x[keep], y[keep]
        offsets[split] = (sum(len(a) for a in labels), len(y))
        images.append(x)
        labels.append(y)
    all_images = np.concatenate(images)
    all_labels = np.concatenate(labels)
    splits = None
    if "train" in offsets and "test" in offsets:
        splits = {k: np.arange(o, o + n) for k, (o, n) in offsets.items()}
    classes = getattr(next(iter(parts.values())), "classes", None)
    return TargetDataset(all_images, all_labels, name=kwargs.pop("name", f"torchvision:{dataset_name}"),
                         classes=classes if classes and len(classes) > int(all_labels.max()) else None,
                         splits=splits, **kwargs)


def _materialise(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    """Stack a dataset's items as uint8 or float arrays (fast path for ``.data`` / ``.targets``)."""
    import numpy as np

    data, targets = getattr(ds, "data", None), getattr(ds, "targets", getattr(ds, "labels", None))
    if data is not None and targets is not None and not getattr(ds, "transform", None):
        arr = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
        if arr.dtype == np.uint8 and arr.ndim in (3, 4) and len(arr) == len(targets):
            if arr.ndim == 4 and arr.shape[-1] in (1, 3):
                arr = arr.transpose(0, 3, 1, 2)
            return arr, np.asarray(targets, dtype=np.int64)
    return _stack_items(ds)


def _stack_items(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    xs, ys = [], []
    for i in range(len(ds)):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError(f"dataset item {i}: expected (image, label), got {type(item).__name__}")
        img, label = item[0], item[1]
        if hasattr(img, "convert"):  # PIL image
            arr = np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img, dtype=np.uint8)
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        else:
            arr = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
        xs.append(arr)
        ys.append(int(label))
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"dataset items have different image shapes {sorted(shapes)[:3]}...; add a resize "
                         "transform (e.g. torchvision.transforms.Resize((64, 64))) to the dataset")
    dtypes = {x.dtype for x in xs}
    out = np.stack(xs)
    if len(dtypes) == 1 and out.dtype == np.uint8:
        return out, np.asarray(ys)
    return out.astype(np.float32), np.asarray(ys)


def as_target_dataset(obj: Any, *, name: str | None = None, seed: int = 0, test_fraction: float = 0.25,
                      classes: Sequence[Any] | None = None) -> TargetDataset:
    """Wrap what a factory returned: a ``TargetDataset``, an ``(images, labels)`` pair or a torch ``Dataset``."""
    if isinstance(obj, TargetDataset):
        if name:
            obj.name = name
        return obj
    if isinstance(obj, tuple) and len(obj) == 2:
        return TargetDataset(obj[0], obj[1], name=name or "arrays", seed=seed, test_fraction=test_fraction,
                             classes=classes)
    if hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        x, y = _stack_items(obj)
        cls_names = classes if classes is not None else getattr(obj, "classes", None)
        return TargetDataset(x, y, name=name or type(obj).__name__, seed=seed, test_fraction=test_fraction,
                             classes=cls_names)
    raise TypeError(
        f"cannot make a dataset from {type(obj).__name__}: pass a spec string, a torch Dataset, "
        "or (images, labels) arrays"
    )


def load_dataset(spec: Any, *, name: str | None = None, seed: int | None = None,
                 test_fraction: float | None = None, registry: Registry | None = None,
                 **kwargs: Any) -> TargetDataset:
    """Build a ``TargetDataset`` from a spec string, a torch ``Dataset`` or ``(images, labels)``.

    Specs: ``digits``, ``digits-shifted``, ``imagefolder:<path>``, ``torchvision:<Name>:<root>``,
    or a name registered through ``pytest_transfer_register_datasets``.
    ``seed`` and ``test_fraction`` default to the active settings.

    >>> ds = load_dataset("digits")  # doctest: +SKIP
    """
    from .context import current_context

    ctx = current_context()
    seed = ctx.settings.seed if seed is None else seed
    test_fraction = ctx.settings.test_fraction if test_fraction is None else test_fraction
    common = {"seed": seed, "test_fraction": test_fraction}
    if not isinstance(spec, str):
        return as_target_dataset(spec, name=name, classes=kwargs.pop("classes", None), **common)
    reg = registry if registry is not None else ctx.datasets
    if spec in reg:
        obj = reg.get(spec)(**kwargs)
        ds = as_target_dataset(obj, name=name or spec, **common)
        if isinstance(obj, TargetDataset) and (ds.seed, ds.test_fraction) != (seed, test_fraction) \
                and obj._splits is None:
            ds = ds.with_split(seed=seed, test_fraction=test_fraction)
        return ds
    source, _, rest = spec.partition(":")
    if spec in ("digits", "digits-shifted"):
        return load_digits_dataset(shifted=spec == "digits-shifted", name=name or spec, **common, **kwargs)
    if source == "imagefolder" and rest:
        return load_imagefolder(rest, name=name or spec, **common, **kwargs)
    if source == "torchvision" and rest:
        ds_name, _, root = rest.partition(":")
        if not root:
            raise ValueError(f"dataset spec {spec!r}: give the root folder, e.g. torchvision:CIFAR10:data/cifar")
        return load_torchvision_dataset(ds_name, root, name=name or spec, **common, **kwargs)
    known = ", ".join(reg.list()) or "none registered"
    raise ValueError(
        f"unknown dataset spec {spec!r}; use digits, imagefolder:<path>, torchvision:<Name>:<root>, "
        f"or a registered name ({known})"
    )


def list_datasets(include: str | Sequence[str] | None = None,
                  exclude: str | Sequence[str] | None = None) -> list[str]:
    """Registered dataset names plus the built-in ``digits``."""
    from .context import current_context

    reg = Registry("dataset")
    for n in current_context().datasets.list():
        reg.register(n, lambda: None)
    for builtin in ("digits", "digits-shifted"):
        if builtin not in reg:
            reg.register(builtin, lambda: None)
    return reg.list(include=include, exclude=exclude)
