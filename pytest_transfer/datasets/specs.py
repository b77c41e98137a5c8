"""The dataset sources: digits, ``imagefolder:``, ``torchvision:``, torch ``Dataset`` objects, arrays."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import SESSION_PARAMETERS, Registry, SourceRegistry, session_arguments
from .core import TargetDataset, subset_indices
from .decode import check_image_size
from .files import FileSource, describe_skipped, find_image_folder, scan_files
from .torchsets import DatasetSource, probe_layout, read_labels

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ..context import Context
    from ..settings import Settings


#: dataset names every session knows (scikit-learn's digits, and their shifted copy)
BUILTIN_DATASETS = ("digits", "digits-shifted")


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points ``warnings.warn``, called by the caller of this function, at the first
    frame outside pytest-transfer: the user's line, whichever public function it called."""
    import sys

    package = str(Path(__file__).resolve().parent.parent)
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def resolve_data_path(path: str, spec: str, rootdir: str | os.PathLike[str] | None = None) -> Path:
    """``path`` as a folder: a relative one is resolved against ``rootdir`` (a spec passes the session's: the
    folder of the ``pyproject.toml`` holding ``[tool.pytest_transfer]``, else pytest's rootdir, as for
    ``cache_dir``; ``None``: the working directory). A missing folder raises ``FileNotFoundError`` naming
    the base used."""
    p = Path(path).expanduser()
    base = None if p.is_absolute() else Path(os.getcwd() if rootdir is None else rootdir)
    full = p if base is None else base / p
    if full.is_file():
        raise NotADirectoryError(f"{spec}: {full} is a file; give the folder that holds one sub-folder per class "
                                 f"(for a file in a class folder: imagefolder:{full.parent.parent})")
    if not full.is_dir():
        where = "" if base is None else (
            f" (a relative path is resolved against the rootdir {base}, as cache_dir is; give an absolute path or "
            "one relative to it)" if rootdir is not None else f" (without rootdir= a relative path is resolved "
            f"against the working directory {base}; give an absolute path, or rootdir=)")
        raise FileNotFoundError(f"{spec}: no such directory {full}{where}")
    return full


def load_digits_dataset(*, shifted: bool = False, canvas: int = 20, **kwargs: Any) -> TargetDataset:
    """scikit-learn's 1,797 real 8×8 handwritten digits, 10 classes, 1 channel, in memory.

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


def load_imagefolder(root: str, *, size: int | None = None, channels: int | None = None,
                     allow_empty: bool = False, skip_unreadable: bool = False, fingerprint: str = "content",
                     max_samples: int | None = None, rootdir: str | os.PathLike[str] | None = None,
                     **kwargs: Any) -> TargetDataset:
    """``imagefolder:<path>``: one sub-folder per class, as torchvision's ``ImageFolder``; streamed.

    Classes and sample order are torchvision's (sorted sub-folder names),
    except that hidden files and folders are skipped at every level (see
    :func:`~pytest_transfer.datasets.files.find_image_folder`). Only the
    file headers are read here; the engine decodes the images chunk by chunk.

    * ``size``: by default (``None``) each file goes to a model as its
      library's file pipeline takes it (its own resize and crop, per image,
      in the loader workers), whatever the sizes in the folder. ``size=S``
      first resizes the shorter side to ``S`` and crops the centre square
      (then the model's own resize and crop follow). Read without a model
      (``dataset.batch``), a folder of mixed sizes is brought to ``size`` or
      224 that way. A file whose sides differ over 100 times is refused by name.
    * ``channels``: 1 or 3; by default 1 when every image is greyscale.
      Bit depth, palette and alpha: :mod:`pytest_transfer.datasets.decode`.
    * ``allow_empty=True`` keeps a class folder without images (an error
      naming it otherwise).
    * ``skip_unreadable=True`` leaves out files that PIL cannot read or that
      are truncated (each file is then decoded once while listing, remembered
      for unchanged files), warns with the count and lists them in
      ``dataset.skipped``; by default such a file is an error naming it.
    * ``fingerprint``: ``"content"`` (default) hashes the bytes of every file
      (read once per session, about 1 GB/s from a warm disk cache);
      ``"stat"`` hashes paths, sizes and modification times only.
    * ``max_samples``: a stratified, seeded subset of exactly that many files
      (each class in proportion, by largest remainders), chosen from the
      folder names before any file is opened.

    A relative ``root`` is resolved against ``rootdir`` (the spec passes the
    session's rootdir, as for ``cache_dir``; ``None``: the working directory).
    """
    check_image_size(size)
    spec = f"imagefolder:{root}"
    base = resolve_data_path(root, spec, rootdir)
    classes, samples = find_image_folder(base, allow_empty=allow_empty)
    if not samples:
        raise ValueError(f"{spec}: no images found under {base}")
    samples = [samples[i] for i in subset_indices([c for _, c in samples], max_samples,
                                                  seed=int(kwargs.get("seed", 0)))]
    paths = [p for p, _ in samples]
    kept, layout, hw, skipped = scan_files(paths, skip_unreadable=skip_unreadable, size=size, channels=channels,
                                           what=spec)
    if skipped:
        warnings.warn(f"{spec}: {describe_skipped(skipped)}", UserWarning, stacklevel=_caller_stacklevel())
    source = FileSource([paths[i] for i in kept], layout, hw, root=str(base), fingerprint=fingerprint, resize=size)
    ds = TargetDataset(source, [samples[i][1] for i in kept], name=kwargs.pop("name", spec), classes=classes,
                       **kwargs)
    ds.skipped = skipped
    return ds


def _uint8_data(ds: Any) -> Any:
    """A torchvision dataset's ``data`` array (MNIST, CIFAR, ...) when it is the images as uint8, else None."""
    data = getattr(ds, "data", None)
    if data is None or getattr(ds, "transform", None) is not None or len(data) != len(ds):
        return None
    if str(getattr(data, "dtype", "")) not in ("uint8", "torch.uint8") or data.ndim not in (3, 4):
        return None
    return data


def _open_splits(cls: type, dataset_name: str, root: str, spec: str) -> dict[str, Any]:
    parts: dict[str, Any] = {}
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
                    f"{spec}: the dataset files are not there ({exc}). pytest-transfer never downloads: fetch "
                    f"them on a machine with network access, e.g. torchvision.datasets.{dataset_name}({root!r}, "
                    f"download=True), and copy {root} here"
                ) from None
    if not parts:
        parts["all"] = cls(root)
    return parts


def load_torchvision_dataset(dataset_name: str, root: str, *, max_samples: int | None = None,
                             size: int | None = None, channels: int | None = None,
                             rootdir: str | os.PathLike[str] | None = None, **kwargs: Any) -> TargetDataset:
    """``torchvision:<Name>:<root>``: a torchvision dataset from local files, never downloading.

    When the dataset has an official train/test split, it is kept.
    ``max_samples`` keeps a stratified, seeded subset of each split, chosen
    from the labels alone (``targets``, ``samples``, ...) before any image is
    decoded. Datasets that hold their images as one uint8 array (MNIST,
    Fashion-MNIST, CIFAR) keep the chosen images in memory; the others are
    streamed item by item. ``size`` / ``channels``: as for ``imagefolder``.
    A relative ``root`` is resolved against ``rootdir`` (as for ``imagefolder``).
    """
    import numpy as np
    import torchvision.datasets as tvd

    check_image_size(size)
    spec = f"torchvision:{dataset_name}:{root}"
    cls = getattr(tvd, dataset_name, None)
    if cls is None or not isinstance(cls, type):
        names = [n for n in dir(tvd) if n[:1].isupper() and n not in ("VisionDataset", "DatasetFolder")]
        raise ValueError(f"torchvision has no dataset {dataset_name!r}; e.g. {', '.join(names[:15])}")
    base = resolve_data_path(root, spec, rootdir)
    opened = _open_splits(cls, dataset_name, str(base), spec)
    seed = int(kwargs.get("seed", 0))
    parts, labels, offsets = [], [], {}
    for split, ds in opened.items():
        y = read_labels(ds)
        keep = subset_indices(y, max_samples, seed=seed)
        offsets[split] = (sum(len(a) for a in labels), len(keep))
        parts.append((ds, keep))
        labels.append(y[keep])
    all_labels = np.concatenate(labels)
    splits = None
    if "train" in offsets and "test" in offsets:
        splits = {k: np.arange(o, o + n) for k, (o, n) in offsets.items()}
    classes = getattr(parts[0][0], "classes", None)
    classes = classes if classes and len(classes) > int(all_labels.max()) else None
    common = {"name": kwargs.pop("name", spec), "classes": classes, "splits": splits, **kwargs}
    arrays = [_uint8_data(ds) for ds, _ in parts]
    if size is None and channels is None and all(a is not None for a in arrays):
        return TargetDataset(_stack_subsets(arrays, [k for _, k in parts]), all_labels, **common)
    layout, hw = probe_layout(parts, size=size, channels=channels)
    return TargetDataset(DatasetSource(parts, layout, hw, root=str(base), name=spec), all_labels, **common)


def _stack_subsets(arrays: Sequence[Any], keeps: Sequence[np.ndarray]) -> np.ndarray:
    """The kept rows of each uint8 array, concatenated N×C×H×W (only those rows are copied)."""
    import numpy as np
    import torch

    out = []
    for data, keep in zip(arrays, keeps, strict=True):
        rows = data[keep] if isinstance(data, np.ndarray) else data[torch.as_tensor(keep)].numpy()
        out.append(rows.transpose(0, 3, 1, 2) if rows.ndim == 4 and rows.shape[-1] in (1, 3) else rows)
    return np.ascontiguousarray(np.concatenate(out))


def dataset_from_torch(obj: Any, *, name: str | None = None, classes: Sequence[Any] | None = None,
                       size: int | None = None, channels: int | None = None, max_samples: int | None = None,
                       **kwargs: Any) -> TargetDataset:
    """A torch ``Dataset`` of ``(image, label)`` items (PIL images, tensors or arrays), streamed.

    Labels are read from its attributes when it has them (``targets``,
    ``samples``, ...), else in one pass over the items. Channels and size are
    probed on a few items spread over it: colour among them makes every item
    RGB (greyscale items repeated); different sizes choose ``size=224``.
    ``max_samples``: a stratified, seeded subset chosen from the labels.
    """
    check_image_size(size)
    label = name or type(obj).__name__
    all_labels = read_labels(obj)
    keep = subset_indices(all_labels, max_samples, seed=int(kwargs.get("seed", 0)))
    labels = all_labels[keep]
    parts = [(obj, keep)]
    layout, hw = probe_layout(parts, size=size, channels=channels)
    names = classes if classes is not None else getattr(obj, "classes", None)
    if names is not None and (not len(all_labels) or len(names) <= int(all_labels.max())):
        names = None
    return TargetDataset(DatasetSource(parts, layout, hw, name=label), labels, name=label, classes=names, **kwargs)


def as_target_dataset(obj: Any, *, name: str | None = None, seed: int = 0, test_fraction: float = 0.25,
                      classes: Sequence[Any] | None = None, **kwargs: Any) -> TargetDataset:
    """Wrap what a factory returned: a ``TargetDataset``, an ``(images, labels)`` pair or a torch ``Dataset``."""
    if isinstance(obj, TargetDataset):
        if name:
            obj.name = name
        return obj
    if isinstance(obj, tuple) and len(obj) == 2:
        return TargetDataset(obj[0], obj[1], name=name or "arrays", seed=seed, test_fraction=test_fraction,
                             classes=classes)
    if hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        return dataset_from_torch(obj, name=name, classes=classes, seed=seed, test_fraction=test_fraction, **kwargs)
    raise TypeError(
        f"cannot make a dataset from {type(obj).__name__}: pass a spec string, a torch Dataset, "
        "or (images, labels) arrays"
    )


def _check_options(loader: Any, options: dict[str, Any], spec: str, *, extra: Sequence[str] = ()) -> None:
    """Refuse keyword arguments that neither ``loader`` nor :class:`TargetDataset` takes, suggesting the
    closest valid name (a typo would otherwise surface as a ``TypeError`` from deep inside). A loader that
    takes ``**kwargs`` of its own is trusted with any name."""
    import difflib
    import inspect

    params = inspect.signature(loader).parameters.values()
    # options are keywords; a positional parameter without a default is the spec's own text (``rest``, a root)
    valid = {p.name for p in params if p.kind is p.KEYWORD_ONLY
             or (p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)}
    valid = (valid - {"shifted", "rootdir", *SESSION_PARAMETERS}) | set(extra)  # the spec says shifted; the
    # session gives the rest
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise ValueError(f"dataset {spec!r}: unknown option {key!r}{hint} "
                             f"Valid options: {', '.join(sorted(valid)) or 'none'}")


_SPLIT_OPTIONS = ("name", "seed", "test_fraction", "splits")


# The built-in loaders name ``settings``: :func:`load_dataset` passes the session's (the rootdir of relative
# paths) to every loader that names it, a plugin's too: an argument, never a global.

def _imagefolder_source(rest: str, *, settings: Settings, **kwargs: Any) -> TargetDataset:
    """``imagefolder:<path>``."""
    _check_options(load_imagefolder, kwargs, f"imagefolder:{rest}", extra=_SPLIT_OPTIONS)
    return load_imagefolder(rest, rootdir=settings.rootdir, **kwargs)


def _torchvision_source(rest: str, *, settings: Settings, **kwargs: Any) -> TargetDataset:
    """``torchvision:<Name>:<root>``."""
    spec = f"torchvision:{rest}"
    ds_name, _, root = rest.partition(":")
    if not root:
        raise ValueError(f"dataset spec {spec!r}: give the root folder, e.g. torchvision:CIFAR10:data/cifar")
    _check_options(load_torchvision_dataset, kwargs, spec, extra=_SPLIT_OPTIONS)
    return load_torchvision_dataset(ds_name, root, rootdir=settings.rootdir, **kwargs)


#: the built-in dataset sources: prefix → (loader, spec form); registered in every session like a plugin's
BUILTIN_DATASET_SOURCES: dict[str, tuple[Any, str]] = {
    "imagefolder": (_imagefolder_source, "imagefolder:<path>"),
    "torchvision": (_torchvision_source, "torchvision:<Name>:<root>"),
}


def new_dataset_sources() -> SourceRegistry:
    """A registry of dataset sources holding the built-in prefixes."""
    sources = SourceRegistry("dataset source", hook="pytest_transfer_register_dataset_sources")
    for prefix, (loader, form) in BUILTIN_DATASET_SOURCES.items():
        sources.register(prefix, loader, form=form, origin="pytest_transfer")
    return sources


def _from_source(loader: Any, rest: str, spec: str, common: dict[str, Any], ctx: Context,
                 kwargs: dict[str, Any]) -> Any:
    """Call a source's loader with the options it takes: the built-ins and loaders naming ``name`` / ``seed`` /
    ``test_fraction`` get the session's values too, and those naming ``settings`` / ``context`` the session
    (:func:`~pytest_transfer.registry.session_arguments`)."""
    import inspect

    try:
        params = inspect.signature(loader).parameters
    except (TypeError, ValueError):  # a builtin or an object without a signature: trusted with any option
        params = {}
    options = session_arguments(loader, kwargs, spec, {"settings": ctx.settings, "context": ctx})  # refuses first
    if params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        _check_options(loader, kwargs, spec)
    own = BUILTIN_DATASET_SOURCES.get(spec.partition(":")[0], (None,))[0] is loader
    passed = {k: v for k, v in common.items() if own or k in params}
    return loader(rest, **passed, **options)


def _split_like_session(obj: Any, ds: TargetDataset, seed: int, test_fraction: float) -> TargetDataset:
    if isinstance(obj, TargetDataset) and (ds.seed, ds.test_fraction) != (seed, test_fraction) \
            and not ds.has_explicit_splits:
        return ds.with_split(seed=seed, test_fraction=test_fraction)
    return ds


def load_dataset(spec: Any, *, context: Context, name: str | None = None, seed: int | None = None,
                 test_fraction: float | None = None, registry: Registry | None = None,
                 **kwargs: Any) -> TargetDataset:
    """Build a ``TargetDataset`` from a spec string, a torch ``Dataset`` or ``(images, labels)``, in the
    session ``context``.

    This is :func:`pytest_transfer.load_dataset` with the session given: its
    dataset registry and sources (plugins' included) and its settings
    (``seed``, ``test_fraction``, the rootdir of relative paths). Specs,
    keywords and errors: see :func:`pytest_transfer.load_dataset`.
    """
    ctx = context
    seed = ctx.settings.seed if seed is None else seed
    test_fraction = ctx.settings.test_fraction if test_fraction is None else test_fraction
    common = {"seed": seed, "test_fraction": test_fraction}
    if not isinstance(spec, str):
        return as_target_dataset(spec, name=name, **common, **kwargs)
    reg = registry if registry is not None else ctx.datasets
    if spec in reg:
        obj = reg.get(spec)(**kwargs)
        return _split_like_session(obj, as_target_dataset(obj, name=name or spec, **common), seed, test_fraction)
    if spec in BUILTIN_DATASETS:
        _check_options(load_digits_dataset, kwargs, spec, extra=_SPLIT_OPTIONS)
        return load_digits_dataset(shifted=spec == "digits-shifted", name=name or spec, **common, **kwargs)
    found = ctx.dataset_sources.split(spec)
    if found is None:
        known = ", ".join(reg.list()) or "none registered"
        raise ValueError(f"unknown dataset spec {spec!r}; use digits, {ctx.dataset_sources.describe()}, "
                         f"or a registered name ({known})")
    loader, rest = found
    obj = _from_source(loader, rest, spec, {"name": name or spec, **common}, ctx, kwargs)
    return _split_like_session(obj, as_target_dataset(obj, name=name or spec, **common), seed, test_fraction)


def list_datasets(include: str | Sequence[str] | None = None, exclude: str | Sequence[str] | None = None, *,
                  context: Context) -> list[str]:
    """:func:`pytest_transfer.list_datasets` in the session ``context``: its registered dataset names plus the
    built-in ``digits`` and ``digits-shifted``."""
    reg = Registry("dataset")
    for n in context.datasets.list():
        reg.register(n, lambda: None)
    for builtin in BUILTIN_DATASETS:
        if builtin not in reg:
            reg.register(builtin, lambda: None)
    return reg.list(include=include, exclude=exclude)
