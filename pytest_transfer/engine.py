"""Batched inference: one pass per model × dataset × split × perturbation, memoised and cached on disk.

A pass yields labels, logits and penultimate features (and any other
requested layer taps) together. Every gate on the same pair reuses it; a
second pytest run reads it from the disk cache (:mod:`pytest_transfer.cache`).

What the pass does, per device:

* everywhere: ``torch.inference_mode``, forward hooks for the taps (pooled on
  the device), channels-last inputs and weights for conv nets, one copy of
  the outputs to the host per batch, one NaN/Inf check at the end;
* CUDA: the raw images are copied from pinned host memory with
  ``non_blocking=True`` (uint8 data travels as uint8 and is scaled on the
  GPU), outputs come back asynchronously and are synchronised once, and the
  module runs under ``torch.autocast(float16)`` (``--transfer-autocast``:
  ``auto`` = on for CUDA, falling back to float32 for a model whose outputs
  overflow; ``on``; ``off``);
* any device: a batch that runs out of memory is halved and retried (down to
  one image); the smaller size is remembered for the module and device.
"""

from __future__ import annotations

import hashlib
import inspect
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .context import Context, current_context
from .models import PENULTIMATE, TransferModel
from .settings import AUTOCAST_MODES

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from .datasets import TargetDataset

ENGINE_VERSION = 2
CHUNK = 64  # perturbations are drawn per fixed chunk of samples, so results do not depend on the batch size
PROGRESS_EVERY = 2.0  # seconds between progress lines of a long pass


@dataclass(frozen=True)
class Perturbation:
    """A seeded change of [0, 1] images applied before preprocess.

    ``fn(images, seed)`` gets a chunk of images on the model's device and a
    chunk seed; it must return images of the same shape in [0, 1].
    """

    key: str
    fn: Callable[[Any, int], Any] = field(compare=False, repr=False)
    seed: int = 0

    def apply(self, images: torch.Tensor, chunk_index: int) -> torch.Tensor:
        digest = hashlib.blake2b(f"{self.key}|{self.seed}|{chunk_index}".encode(), digest_size=8).digest()
        return self.fn(images, int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF)


def gaussian_noise(sigma: float, *, seed: int = 0) -> Perturbation:
    """Additive Gaussian noise of standard deviation ``sigma`` on [0, 1] images, clipped to [0, 1]."""
    sigma = float(sigma)
    if not 0.0 <= sigma <= 1.0:
        raise ValueError(f"sigma: expected a noise level in [0, 1] (pixel units), got {sigma}")

    def add_noise(images: torch.Tensor, chunk_seed: int) -> torch.Tensor:
        import torch

        g = torch.Generator(device=images.device).manual_seed(chunk_seed)
        noise = torch.randn(images.shape, generator=g, device=images.device, dtype=images.dtype)
        return (images + sigma * noise).clamp_(0.0, 1.0)

    return Perturbation(f"gaussian_noise(sigma={sigma!r})", add_noise, seed)


def corruption(name: str, severity: int, *, seed: int = 0) -> Perturbation:
    """An ImageNet-C style corruption from :mod:`pytest_transfer.robustness`."""

    def apply(images: torch.Tensor, chunk_seed: int) -> torch.Tensor:
        from .robustness import corrupt

        return corrupt(images, name, severity, seed=chunk_seed)

    return Perturbation(f"corruption({name},{int(severity)})", apply, seed)


class Evaluation:
    """Outputs of one pass: labels, logits, probabilities, predictions, features and layer taps.

    Arrays are numpy; ``logits`` and features are float32 as computed,
    ``probs`` is float64 softmax of the logits.
    """

    def __init__(self, *, model: str, dataset: str, split: str, perturbation: str | None,
                 indices: np.ndarray, labels: np.ndarray, logits: np.ndarray,
                 taps: dict[str, np.ndarray], feature_node: str, from_cache: bool = False) -> None:
        self.model = model
        self.dataset = dataset
        self.split = split
        self.perturbation = perturbation
        self.indices = indices
        self.labels = labels
        self.logits = logits
        self.taps = taps
        self.feature_node = feature_node
        self.from_cache = from_cache
        self._probs: np.ndarray | None = None

    @property
    def features(self) -> np.ndarray:
        """Features at the model's feature node (the penultimate layer by default)."""
        return self.taps[self.feature_node]

    @property
    def probs(self) -> np.ndarray:
        if self._probs is None:
            import numpy as np

            z = self.logits.astype(np.float64)
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            self._probs = e / e.sum(axis=1, keepdims=True)
        return self._probs

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"Evaluation(model={self.model!r}, dataset={self.dataset!r}, split={self.split!r}, "
                f"perturbation={self.perturbation!r}, n={len(self)}, taps={sorted(self.taps)})")


# --- precision and memory ----------------------------------------------------

def autocast_dtype(mode: str, device: Any) -> torch.dtype | None:
    """The autocast dtype of a pass for ``--transfer-autocast`` ``mode`` on ``device`` (``None``: float32).

    ``auto`` turns autocast on for CUDA only (float16; a model whose outputs
    overflow is rerun in float32); ``on`` forces it (float16 on CUDA and MPS,
    bfloat16 on the CPU); ``off`` never uses it.

    >>> import torch
    >>> autocast_dtype("auto", torch.device("cpu")) is None
    True
    >>> autocast_dtype("on", torch.device("cpu"))
    torch.bfloat16
    """
    import torch

    if mode not in AUTOCAST_MODES:
        raise ValueError(f"autocast: expected one of {', '.join(AUTOCAST_MODES)}, got {mode!r}")
    kind = torch.device(device).type
    if mode == "off" or (mode == "auto" and kind != "cuda"):
        return None
    return torch.bfloat16 if kind == "cpu" else torch.float16


def _precision_label(dtype: Any) -> str:
    return "float32" if dtype is None else f"autocast:{str(dtype).removeprefix('torch.')}"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says a device ran out of memory (CUDA, MPS or the CPU allocator)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _release_memory(device: Any) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.empty_cache()
    elif device.type == "mps":  # pragma: no cover - no MPS here
        torch.mps.empty_cache()


# the largest batch that fitted, per module and device (after an out-of-memory error)
_BATCH_LIMITS: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()


def batch_limit(module: Any, device: Any) -> int | None:
    """The batch size an earlier pass of ``module`` on ``device`` fell back to, if any."""
    return _BATCH_LIMITS.get(module, {}).get(str(device))


# --- the pass ----------------------------------------------------------------

def _pool(t: torch.Tensor) -> torch.Tensor:
    if t.ndim == 4:
        return t.mean(dim=(2, 3))
    if t.ndim == 3:
        return t.mean(dim=1)
    if t.ndim > 2:
        return t.flatten(1)
    return t


class _Taps:
    """Forward hooks that collect pooled activations of several nodes during one pass."""

    def __init__(self, model: TransferModel, nodes: Sequence[str]) -> None:
        self.model = model
        self.nodes = list(nodes)
        self.current: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []

    def __enter__(self) -> _Taps:
        modules = dict(self.model.module.named_modules())
        for node in self.nodes:
            name, want_input = self.model.resolve_node(node)
            sub = modules[name]
            if want_input:
                def pre_hook(_m: Any, args: tuple[Any, ...], node: str = node) -> None:
                    self.current[node] = _pool(args[0])

                self.handles.append(sub.register_forward_pre_hook(pre_hook))
            else:
                def hook(_m: Any, _args: Any, out: Any, node: str = node) -> None:
                    if isinstance(out, (tuple, list)):
                        out = out[0]
                    self.current[node] = _pool(out)

                self.handles.append(sub.register_forward_hook(hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()

    def take(self, model: TransferModel) -> dict[str, torch.Tensor]:
        try:
            return {n: self.current.pop(n) for n in self.nodes}
        except KeyError as exc:
            raise ValueError(f"feature node {exc.args[0]!r} of {model.name!r} was not reached by the forward "
                             "pass") from None
        finally:
            self.current.clear()


def _load_chunk(dataset: TargetDataset, index: np.ndarray, device: Any) -> torch.Tensor:
    """Float [0, 1] images of ``index`` on ``device``; on CUDA through pinned memory, converted there."""
    import torch

    if device.type != "cuda":
        return dataset.batch(index).to(device)
    images = dataset.images
    raw = images.index_select(0, torch.as_tensor(index, dtype=torch.long, device=images.device))
    if raw.device.type == "cpu":
        raw = raw.pin_memory()
    x = raw.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)  # the same division as TargetDataset.batch, done on the GPU
    return x.float() if x.dtype != torch.float32 else x


def iter_chunks(dataset: TargetDataset, indices: np.ndarray, device: Any,
                perturbation: Perturbation | None) -> Iterator[torch.Tensor]:
    """Float [0, 1] images in fixed chunks of ``CHUNK``, perturbed on ``device``."""
    for c, start in enumerate(range(0, len(indices), CHUNK)):
        x = _load_chunk(dataset, indices[start:start + CHUNK], device)
        if perturbation is not None:
            x = perturbation.apply(x, c)
        yield x


class _Regroup:
    """Cut a stream of chunks into batches of any size; a batch can be pushed back (to retry it smaller)."""

    def __init__(self, chunks: Iterable[torch.Tensor]) -> None:
        self.chunks = iter(chunks)
        self.buffer: list[torch.Tensor] = []
        self.held = 0

    def take(self, size: int) -> torch.Tensor | None:
        import torch

        for chunk in self.chunks:
            self.buffer.append(chunk)
            self.held += len(chunk)
            if self.held >= size:
                break
        if not self.held:
            return None
        cat = torch.cat(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
        batch, rest = cat[:size], cat[size:]
        self.buffer, self.held = ([rest], len(rest)) if len(rest) else ([], 0)
        return batch

    def push_back(self, batch: torch.Tensor) -> None:
        self.buffer.insert(0, batch)
        self.held += len(batch)


def iter_batches(chunks: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Regroup chunks into batches of ``batch_size`` (the last may be smaller)."""
    regroup = _Regroup(chunks)
    while (batch := regroup.take(batch_size)) is not None:
        yield batch


def _is_conv_net(module: Any) -> bool:
    import torch

    return any(isinstance(m, torch.nn.Conv2d) for m in module.modules())


def _to_host(t: torch.Tensor, asynchronous: bool) -> torch.Tensor:
    t = t.float()
    if t.device.type == "cpu":
        return t
    # CUDA → CPU with non_blocking=True lands in pinned memory; the pass synchronises once before reading it
    return t.to("cpu", non_blocking=asynchronous)


def run_pass(model: TransferModel, dataset: TargetDataset, indices: np.ndarray, *, nodes: Sequence[str],
             perturbation: Perturbation | None, batch_size: int, device: Any,
             progress: Callable[[str], None] | None = None, autocast: str = "auto",
             channels_last: bool | None = None, chunks: Callable[[], Iterable[torch.Tensor]] | None = None,
             total: int | None = None) -> dict[str, np.ndarray]:
    """The forward pass itself: returns ``logits`` and ``tap:<node>`` arrays (float32, CPU).

    ``batch_size`` is where it starts: a batch that runs out of device memory
    is halved and retried. ``autocast`` is ``auto``, ``on`` or ``off`` (see
    :func:`autocast_dtype`); ``channels_last`` defaults to "for conv nets".
    ``chunks``, a function returning a fresh stream of [0, 1] image chunks of
    ``total`` images, replaces the (perturbed) images of ``indices``: the
    corruption sweep feeds every variant of each loaded chunk through one pass.
    """
    import numpy as np
    import torch

    device = torch.device(device)
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    amp = autocast_dtype(autocast, device)
    module = model.to(device).module
    module.eval()
    if channels_last is None:
        channels_last = _is_conv_net(module)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    asynchronous = device.type == "cuda"
    limits = _BATCH_LIMITS.setdefault(module, {})
    size = min(batch_size, limits.get(str(device), batch_size))
    logits_out: list[torch.Tensor] = []
    taps_out: dict[str, list[torch.Tensor]] = {n: [] for n in nodes}
    label = f"{model.name} on {dataset.name}" + (f" [{perturbation.key}]" if perturbation else "")
    started = last_report = time.monotonic()
    done = 0
    total = len(indices) if total is None else total
    regroup = _Regroup(chunks() if chunks is not None else iter_chunks(dataset, indices, device, perturbation))
    with _Taps(model, nodes) as taps, torch.inference_mode():
        while (x := regroup.take(size)) is not None:
            failed = False
            shape = None  # the module's input shape, once preprocess has run
            try:
                inp = model.preprocess(x)
                if channels_last and inp.ndim == 4:
                    inp = inp.contiguous(memory_format=torch.channels_last)
                shape = tuple(inp.shape)
                if amp is not None:
                    with torch.autocast(device.type, dtype=amp):
                        out = module(inp)
                else:
                    out = module(inp)
                del inp
                if isinstance(out, (tuple, list)):
                    out = out[0]
                tapped = taps.take(model)
            except Exception as exc:  # an out-of-memory error of any device: halve and retry
                taps.current.clear()
                if is_out_of_memory(exc) and len(x) > 1:
                    failed = True
                elif isinstance(exc, RuntimeError) and shape is not None and not is_out_of_memory(exc):
                    raise ValueError(
                        f"model {model.name!r} failed on images of {dataset.name!r}: [0, 1] batch "
                        f"{tuple(x.shape)}, after preprocess {shape}: {str(exc).splitlines()[0]}. Check the "
                        "model's preprocess (image size, channels) against what the network expects"
                    ) from exc
                else:
                    raise
            if failed:  # outside the except block, so the failed batch's tensors can be freed
                regroup.push_back(x)
                size = max(1, len(x) // 2)
                limits[str(device)] = size
                _release_memory(device)
                if progress is not None:
                    progress(f"pytest-transfer: {label}: out of memory on {device} at batch size {len(x)}; "
                             f"retrying with {size} (set --transfer-batch-size={size} to start there)")
                continue
            logits_out.append(_to_host(out, asynchronous))
            for n, t in tapped.items():
                taps_out[n].append(_to_host(t, asynchronous))
            del out, tapped
            done += len(x)
            now = time.monotonic()
            if progress is not None and now - last_report >= PROGRESS_EVERY:
                rate = done / max(now - started, 1e-9)
                progress(f"pytest-transfer: {label}: {done}/{total} images ({rate:.0f}/s)")
                last_report = now
    if asynchronous:
        torch.cuda.synchronize(device)
    logits = torch.cat(logits_out).numpy() if logits_out else np.zeros((0, model.num_classes or 0), np.float32)
    result = {"logits": logits}
    for n, parts in taps_out.items():
        result[f"tap:{n}"] = torch.cat(parts).numpy() if parts else np.zeros((0, 0), np.float32)
    bad = [k for k, v in result.items() if not np.isfinite(v).all()]
    if bad and amp is not None and autocast == "auto":
        # the model does not allow reduced precision: the whole pass again in float32
        return run_pass(model, dataset, indices, nodes=nodes, perturbation=perturbation, batch_size=size,
                        device=device, progress=progress, autocast="off", channels_last=channels_last,
                        chunks=chunks, total=total)
    if "logits" in bad:
        rows = int((~np.isfinite(logits)).any(axis=1).sum())
        raise ValueError(
            f"model {model.name!r} produced NaN/Inf outputs for {rows} image(s) of {dataset.name!r}; check the "
            "weights (a diverged or corrupted checkpoint), the preprocess, or fp16 overflow (--transfer-autocast=off)"
        )
    if bad:
        node = bad[0].removeprefix("tap:")
        raise ValueError(f"model {model.name!r}: features at {node!r} contain NaN/Inf on {dataset.name!r}")
    return result


# --- identity ----------------------------------------------------------------

_CODE: dict[type, str] = {}


def code_fingerprint(model: TransferModel) -> str:
    """A hash of the source of every module class in ``model`` and of its preprocess (an edited
    ``forward`` changes the outputs without changing a weight)."""
    h = hashlib.blake2b(digest_size=16)
    classes = {type(m) for m in model.module.modules()} | {type(model.preprocess)}
    for cls in sorted(classes, key=lambda c: (c.__module__, c.__qualname__)):
        if cls not in _CODE:
            try:
                source = inspect.getsource(cls)
            except (OSError, TypeError):
                source = ""
            _CODE[cls] = f"{cls.__module__}.{cls.__qualname__}\n{source}"
        h.update(_CODE[cls].encode())
    return h.hexdigest()


def memo_base(model: TransferModel, dataset: TargetDataset, split: str, perturbation: Perturbation | None, *,
              precision: str) -> tuple[Any, ...]:
    """The session memo's key of a pass without its taps: ``ctx.evaluations[(memo_base(...), tuple(nodes))]``."""
    return (model.fingerprint(), dataset.fingerprint(), dataset.split_fingerprint(split),
            perturbation.key if perturbation else None, perturbation.seed if perturbation else None, precision)


def cache_key(model: TransferModel, dataset: TargetDataset, split: str, perturbation: Perturbation | None,
              nodes: Sequence[str], *, precision: str, device: Any) -> dict[str, Any]:
    """The disk-cache key of a pass: everything that changes its outputs.

    Weights, preprocess and feature node (``model.fingerprint()``), the
    model's code, the data, the split's indices, the perturbation and its
    seed, the taps, the precision, the device type, and the versions of
    torch and of this engine. The batch size is not part of it: results do
    not depend on it beyond float rounding.
    """
    import torch

    from . import __version__

    return {
        "engine": ENGINE_VERSION, "pytest_transfer": __version__, "torch": torch.__version__,
        "model": model.fingerprint(), "code": code_fingerprint(model),
        "data": dataset.fingerprint(), "split": dataset.split_fingerprint(split),
        "perturbation": perturbation.key if perturbation else None,
        "seed": perturbation.seed if perturbation else None,
        "taps": sorted(nodes), "precision": precision, "device": torch.device(device).type,
    }


# --- the public entry point ---------------------------------------------------

def evaluate(model: Any, dataset: Any, *, split: str = "test", perturbation: Perturbation | None = None,
             taps: Iterable[str] = (), batch_size: int | None = None, context: Context | None = None,
             cache: bool = True) -> Evaluation:
    """Evaluate ``model`` on a split of ``dataset``: one pass, memoised in the session and cached on disk.

    ``model`` and ``dataset`` may be spec strings or objects (see
    :func:`load_model` / :func:`load_dataset`). ``taps`` names extra feature
    nodes read in the same pass. A request whose taps were already read
    reuses that pass; one with new taps runs one pass for all the taps read
    so far. ``cache=False`` (or ``--transfer-no-cache``) skips the disk.

    >>> ev = evaluate("torchvision:resnet18:none", "digits", split="test")  # doctest: +SKIP
    >>> ev.logits.shape, ev.features.shape  # doctest: +SKIP
    """
    from .datasets import TargetDataset, load_dataset
    from .models import load_model

    ctx = context or current_context()
    if not isinstance(model, TransferModel):
        model = load_model(model)
    if not isinstance(dataset, TargetDataset):
        dataset = load_dataset(dataset)
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    wanted = {model.feature_node, *taps}
    for node in wanted:
        model.resolve_node(node)  # a bad node name fails here, before any work
    with ctx.lock:
        device = ctx.device
        mode = getattr(ctx.settings, "autocast", "auto")
        precision = _precision_label(autocast_dtype(mode, device))
        base = memo_base(model, dataset, split, perturbation, precision=precision)
        union = set(wanted)
        for (b, have), ev in list(ctx.evaluations.items()):
            if b != base:
                continue
            if wanted <= set(have):
                return ev  # the feature node is part of the model's fingerprint, so it is ev.feature_node
            union |= set(have)  # one new pass reads every tap asked for so far
            del ctx.evaluations[(b, have)]
        nodes = sorted(union)
        indices = dataset.indices(split)
        if len(indices) == 0:
            raise ValueError(f"dataset {dataset.name!r}: the {split!r} split is empty; use more samples or "
                             "another test_fraction")
        size = int(batch_size or ctx.settings.batch_size)

        def compute() -> dict[str, Any]:
            ctx.forward_passes += 1
            return run_pass(model, dataset, indices, nodes=nodes, perturbation=perturbation, batch_size=size,
                            device=device, progress=ctx.progress, autocast=mode)

        cache_dir = ctx.settings.cache_path() if cache else None
        hit = False
        if cache_dir is not None:
            from .cache import DiskCache

            key = cache_key(model, dataset, split, perturbation, nodes, precision=precision, device=device)
            arrays, hit = DiskCache(cache_dir).get_or_compute(key, compute,
                                                              required=["logits", *(f"tap:{n}" for n in nodes)])
            if hit:
                ctx.cache_hits += 1
        else:
            arrays = compute()
        ev = Evaluation(
            model=model.name, dataset=dataset.name, split=split,
            perturbation=perturbation.key if perturbation else None, indices=indices,
            labels=dataset.labels[indices], logits=arrays["logits"],
            taps={n: arrays[f"tap:{n}"] for n in nodes}, feature_node=model.feature_node, from_cache=hit,
        )
        ctx.evaluations[(base, tuple(nodes))] = ev
        return ev


__all__ = [
    "AUTOCAST_MODES", "PENULTIMATE", "Evaluation", "Perturbation", "autocast_dtype", "cache_key", "corruption",
    "evaluate", "gaussian_noise", "is_out_of_memory", "run_pass",
]
