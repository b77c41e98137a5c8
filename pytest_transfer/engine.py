"""Batched inference: one pass per model × dataset × split × perturbation, memoised and cached on disk.

A pass yields labels, logits and penultimate features (and any other
requested layer taps) together. Every gate on the same pair reuses it; a
second pytest run reads it from the disk cache (:mod:`pytest_transfer.cache`).

What the pass does, per device:

* everywhere: the module called by :func:`pytest_transfer.models.call.call_module`
  (fed its own dtype; logits read from a tensor, tuple, dict or ``ModelOutput``;
  a headless backbone's output pooled as its features), ``torch.inference_mode``,
  forward hooks for the taps (pooled on the device), channels-last inputs and weights where the layout rule says
  so (:func:`prefers_channels_last`), the outputs copied to the host per batch
  into arrays allocated once, one NaN/Inf check at the end;
* CPU (glibc): malloc keeps freed activation buffers for the next batch
  instead of unmapping them (:mod:`pytest_transfer.allocator`,
  ``--transfer-malloc-tuning=off`` to turn off);
* CUDA: the raw images are copied from pinned host memory with
  ``non_blocking=True`` (uint8 data travels as uint8 and is scaled on the
  GPU), outputs come back asynchronously and are synchronised once, and the
  module runs under ``torch.autocast(float16)`` (``--transfer-autocast``:
  ``auto`` = on for CUDA, falling back to float32 for a model whose outputs
  overflow; ``on``; ``off``);
* any device: a batch that raises ``torch.OutOfMemoryError`` is halved and
  retried (down to one image); the smaller size is remembered for the module
  and device.

The units, in the order a pass uses them: the chunk source
(:func:`load_chunks`: dataset + indices → float [0, 1] chunks; perturbations
and multi-variant streams are built on it by :func:`iter_chunks` and
:func:`iter_variants`), the batching policy (:class:`BatchPolicy`), the
memory layout (:func:`prepare_module`), the precision policy
(:func:`autocast_dtype`), the taps (forward hooks, :func:`pool_features`),
the host copies, and progress (:class:`pytest_transfer.progress.PassProgress`).
:func:`run_pass` strings them together. :func:`evaluate` and
:func:`evaluate_many` are the one path through the session memo and the disk
cache (:meth:`pytest_transfer.cache.DiskCache.get_or_compute_many`, which alone
decides what is a warning).
"""

from __future__ import annotations

import hashlib
import inspect
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .context import Context, current_context
from .models import PENULTIMATE, TransferModel, restored
from .models.call import call_module, module_dtype, tap_tensor
from .settings import AUTOCAST_MODES

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from .datasets import TargetDataset

ENGINE_VERSION = 3  # 3: the one call convention (module dtype, dict outputs), heads by the library's notion
CHUNK = 64  # perturbations are drawn per fixed chunk of samples, so results do not depend on the batch size
PROGRESS_EVERY = 0.5  # seconds between progress updates of a long pass


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


class Evaluation:
    """Outputs of one pass: labels, logits, probabilities, predictions, features and layer taps.

    Arrays are numpy; ``logits`` and features are float32 as computed,
    ``probs`` is float64 softmax of the logits. ``indices`` are the rows'
    positions in the dataset; ``sample_ids`` name them (per row: the file path
    relative to the folder for folder datasets, e.g. ``cat/001.jpg``, else the
    index; see :meth:`TargetDataset.sample_ids <pytest_transfer.datasets.TargetDataset.sample_ids>`).
    """

    def __init__(self, *, model: str, dataset: str, split: str, perturbation: str | None,
                 indices: np.ndarray, labels: np.ndarray, logits: np.ndarray,
                 taps: dict[str, np.ndarray], feature_node: str, from_cache: bool = False,
                 sample_ids: np.ndarray | None = None) -> None:
        self.model = model
        self.dataset = dataset
        self.split = split
        self.perturbation = perturbation
        self.indices = indices
        self.sample_ids = indices if sample_ids is None else sample_ids
        self.labels = labels
        self.logits = logits
        self.taps = taps
        self.feature_node = feature_node
        self.from_cache = from_cache
        self._probs: np.ndarray | None = None

    @property
    def features(self) -> np.ndarray:
        """Features at the model's feature node (the penultimate layer by default)."""
        if self.feature_node not in self.taps:
            raise ValueError(f"model {self.model!r}: no features at {self.feature_node!r} (no classification head, "
                             "a final nn.Linear or 1x1 nn.Conv2d, to read them before); pass "
                             "feature_node='<submodule name>' (see [n for n, _ in model.module.named_modules()])")
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


# --- precision ---------------------------------------------------------------

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


def precision_label(dtype: Any) -> str:
    """How a pass's precision is named in memo and cache keys: ``float32`` or ``autocast:<dtype>``."""
    return "float32" if dtype is None else f"autocast:{str(dtype).removeprefix('torch.')}"


def _forward(module: Any, inp: torch.Tensor, amp: torch.dtype | None, dtype: torch.dtype,
             where: str = "model") -> torch.Tensor:
    """The logits of ``module`` on ``inp`` fed in the module's ``dtype``, under autocast to ``amp`` (none for
    ``None``): :func:`pytest_transfer.models.call.call_module`, the one call convention."""
    import torch

    if amp is not None:
        with torch.autocast(inp.device.type, dtype=amp):
            return call_module(module, inp, dtype=dtype, where=where)
    return call_module(module, inp, dtype=dtype, where=where)


def _nonfinite(result: dict[str, np.ndarray]) -> list[str]:
    import numpy as np

    return [k for k, v in result.items() if not np.isfinite(v).all()]


def _raise_nonfinite(bad: list[str], result: dict[str, np.ndarray], model: TransferModel,
                     dataset: TargetDataset) -> None:
    import numpy as np

    if "logits" in bad:
        rows = int((~np.isfinite(result["logits"])).any(axis=1).sum())
        raise ValueError(
            f"model {model.name!r} produced NaN/Inf outputs for {rows} image(s) of {dataset.name!r}; check the "
            "weights (a diverged or corrupted checkpoint), the preprocess, or fp16 overflow (--transfer-autocast=off)"
        )
    if bad:
        node = bad[0].removeprefix("tap:")
        raise ValueError(f"model {model.name!r}: features at {node!r} contain NaN/Inf on {dataset.name!r}")


# --- batching: out-of-memory halving -------------------------------------------

def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's out-of-memory error (``torch.OutOfMemoryError``, which
    ``torch.cuda.OutOfMemoryError`` is): decided by the exception's type, never by its message."""
    import torch

    return isinstance(exc, torch.OutOfMemoryError)


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


class BatchPolicy:
    """The batch size of a pass: ``batch_size``, or the size that fitted in an earlier pass of ``module`` on
    ``device``; :meth:`shrink` halves it after an out-of-memory error and remembers the new size."""

    def __init__(self, module: Any, device: Any, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
        self.device = device
        self.limits = _BATCH_LIMITS.setdefault(module, {})
        self.size = min(batch_size, self.limits.get(str(device), batch_size))

    def shrink(self, failed: int) -> int:
        """After a batch of ``failed`` images ran out of memory: the new, halved size (at least 1)."""
        self.size = max(1, failed // 2)
        self.limits[str(self.device)] = self.size
        _release_memory(self.device)
        return self.size


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


# --- memory layout -------------------------------------------------------------

def prefers_channels_last(module: Any, device: Any) -> bool:
    """The layout rule: channels-last for conv nets on CUDA and MPS, and on the CPU only for nets with grouped
    (depthwise) convolutions.

    Measured on the CPU (oneDNN, 2 cores, 64 px, batch 64; issue 14): channels-last makes EfficientNet-Lite0,
    whose depthwise convolutions oneDNN runs much faster in NHWC, 1.38× faster, but makes ResNet-18, all
    dense convolutions, 6–8 % slower. On GPUs NHWC is what tensor-core convolutions want.
    ``benchmarks/bench_engine.py`` prints both layouts of both models beside the engine.
    """
    import torch

    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        return False
    return torch.device(device).type != "cpu" or any(m.groups > 1 for m in convs)


def prepare_module(model: TransferModel, device: Any, channels_last: bool | None) -> tuple[Any, bool]:
    """``model``'s module on ``device`` in eval mode, channels-last when asked (``None``: by
    :func:`prefers_channels_last`); returns ``(module, channels_last)``."""
    import torch

    module = model.to(device).module
    module.eval()
    if channels_last is None:
        channels_last = prefers_channels_last(module, device)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return module, channels_last


def _layout(inp: torch.Tensor, channels_last: bool) -> torch.Tensor:
    import torch

    return inp.contiguous(memory_format=torch.channels_last) if channels_last and inp.ndim == 4 else inp


# --- taps ----------------------------------------------------------------------

def pool_features(t: torch.Tensor) -> torch.Tensor:
    """Activations ``(N, ...)`` → ``(N, D)``: global average over H×W of a 4-d map, over tokens of a 3-d one,
    flattened beyond that; 2-d features as they are."""
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

    def _hook(self, node: str, want_input: bool) -> Callable[..., None]:
        if want_input:
            def pre_hook(_m: Any, args: tuple[Any, ...]) -> None:
                self.current[node] = pool_features(args[0])

            return pre_hook

        def hook(_m: Any, _args: Any, out: Any) -> None:
            self.current[node] = pool_features(tap_tensor(out))

        return hook

    def __enter__(self) -> _Taps:
        modules = dict(self.model.module.named_modules())
        for node in self.nodes:
            name, want_input = self.model.resolve_node(node)
            sub, hook = modules[name], self._hook(node, want_input)
            register = sub.register_forward_pre_hook if want_input else sub.register_forward_hook
            self.handles.append(register(hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()

    def take(self) -> dict[str, torch.Tensor]:
        try:
            return {n: self.current.pop(n) for n in self.nodes}
        except KeyError as exc:
            raise ValueError(f"feature node {exc.args[0]!r} of {self.model.name!r} was not reached by the "
                             "forward pass") from None
        finally:
            self.current.clear()


# --- host copies ---------------------------------------------------------------

class _HostOutputs:
    """Per-batch outputs on the host: on the CPU written into arrays allocated once at the first batch (no list
    of per-batch tensors, no concatenation); from CUDA copied asynchronously and synchronised once in
    :meth:`arrays`."""

    def __init__(self, nodes: Sequence[str], device: Any, total: int) -> None:
        self.device = device
        self.asynchronous = device.type == "cuda"
        self.keys = ["logits", *(f"tap:{n}" for n in nodes)]
        self.total = total
        self.filled = 0
        self.buffers: dict[str, np.ndarray] = {}  # CPU: (total, ...) float32 per key
        self.parts: dict[str, list[torch.Tensor]] = {k: [] for k in self.keys}  # CUDA: per-batch host tensors

    def add(self, logits: torch.Tensor, tapped: dict[str, torch.Tensor]) -> None:
        import numpy as np

        outs = {"logits": logits, **{f"tap:{n}": t for n, t in tapped.items()}}
        n = len(logits)
        for key, t in outs.items():
            if self.asynchronous:  # CUDA → CPU with non_blocking=True lands in pinned memory
                self.parts[key].append(t.float().to("cpu", non_blocking=True))
                continue
            buf = self.buffers.get(key)
            if buf is None or len(buf) < self.filled + n:  # first batch (or more images than announced)
                grown = np.empty((max(self.total, self.filled + n), *t.shape[1:]), np.float32)
                if buf is not None:
                    grown[:self.filled] = buf[:self.filled]
                buf = self.buffers[key] = grown
            buf[self.filled:self.filled + n] = t.detach().float().numpy()
        self.filled += n

    def arrays(self, num_classes: int | None) -> dict[str, np.ndarray]:
        """``logits`` and ``tap:<node>`` as float32 numpy arrays."""
        import numpy as np
        import torch

        if self.asynchronous:
            torch.cuda.synchronize(self.device)
            joined = {k: torch.cat(v).numpy() for k, v in self.parts.items() if v}
        else:
            joined = {k: b[:self.filled] for k, b in self.buffers.items()}
        empty = {"logits": np.zeros((0, num_classes or 0), np.float32)}
        return {k: joined[k] if k in joined else empty.get(k, np.zeros((0, 0), np.float32)) for k in self.keys}


# --- the chunk source ------------------------------------------------------------

def _to_device(raw: torch.Tensor, device: Any) -> torch.Tensor:
    """Stored images (uint8 or float) as float [0, 1] on ``device``; to CUDA through pinned memory, with uint8
    data travelling as uint8 and scaled there (the same division as ``TargetDataset.batch``)."""
    from .datasets import to_unit_float

    if device.type == "cuda" and raw.device.type == "cpu":
        raw = raw.pin_memory()
    return to_unit_float(raw.to(device, non_blocking=device.type == "cuda"))


def load_chunks(dataset: TargetDataset, indices: np.ndarray, device: Any, *, num_workers: int = 0,
                model: TransferModel | None = None) -> Iterator[torch.Tensor]:
    """The chunk source: float [0, 1] images ``(n, C, H, W)`` of ``indices`` on ``device``, in fixed chunks of
    ``CHUNK`` (the last may be shorter). Every pass reads its images here, each chunk once.

    In-memory datasets are sliced; streamed ones (image folders, torch
    ``Dataset`` objects) are decoded by ``num_workers`` ``DataLoader``
    workers (:func:`pytest_transfer.datasets.stream.iter_raw_chunks`), so a
    chunk holds the same images either way and memory is bounded by the chunk.
    With a ``model`` whose preprocess has a geometric stage
    (``model.geometry``), the chunks hold images at the model's input size:
    each file through the library's own resize and crop in the workers,
    in-memory images through the same stage on the batch; what is left for
    the model is :meth:`~pytest_transfer.models.TransferModel.normalise`.
    """
    import torch

    from .datasets.stream import iter_raw_chunks

    device = torch.device(device)
    geometry = model.geometry if model is not None else None
    streamed = geometry if dataset.streamed else None
    channels = (model.in_channels or dataset.channels) if model is not None else None
    for raw in iter_raw_chunks(dataset, indices, chunk=CHUNK, num_workers=num_workers, geometry=streamed,
                               channels=channels):
        x = _to_device(raw, device)
        del raw  # a decoded chunk is freed once converted
        if geometry is not None and streamed is None:
            x = geometry.batch(x)
        yield x
        del x


def model_batch(model: TransferModel, dataset: TargetDataset, indices: Any, device: Any, *,
                num_workers: int = 0) -> torch.Tensor:
    """The float [0, 1] images of ``indices`` at ``model``'s input size, on ``device``, in one tensor (what
    :func:`load_chunks` yields, concatenated). Feed them to ``model.at_input_size()`` (or through
    ``model.normalise``), not to ``model`` itself, whose preprocess would resize them again."""
    import numpy as np
    import torch

    chunks = list(load_chunks(dataset, np.asarray(indices, dtype=np.int64), device, num_workers=num_workers,
                              model=model))
    return torch.cat(chunks) if len(chunks) != 1 else chunks[0]


def iter_chunks(dataset: TargetDataset, indices: np.ndarray, device: Any,
                perturbation: Perturbation | None, *, num_workers: int = 0,
                model: TransferModel | None = None) -> Iterator[torch.Tensor]:
    """Float [0, 1] images in fixed chunks of ``CHUNK`` (at ``model``'s input size, see :func:`load_chunks`),
    perturbed on ``device`` (chunk ``c`` with seed ``c``)."""
    c = 0  # not enumerate(): its reused result tuple would hold the previous chunk while the next one loads
    for x in load_chunks(dataset, indices, device, num_workers=num_workers, model=model):
        out = x if perturbation is None else perturbation.apply(x, c)
        del x
        yield out
        del out
        c += 1


#: makes every variant of one chunk: ``make(images, chunk_index, perturbations)`` yields one tensor per
#: perturbation, in order (``None`` = the clean images)
VariantMaker = Callable[[Any, int, Sequence["Perturbation | None"]], Iterable[Any]]


def apply_each(images: torch.Tensor, chunk: int, perturbations: Sequence[Perturbation | None]
               ) -> Iterator[torch.Tensor]:
    """The default :data:`VariantMaker`: ``perturbation.apply(images, chunk)`` for each (``None``: as they are)."""
    for p in perturbations:
        yield images if p is None else p.apply(images, chunk)


def iter_variants(dataset: TargetDataset, indices: np.ndarray, device: Any,
                  perturbations: Sequence[Perturbation | None], make: VariantMaker | None = None, *,
                  num_workers: int = 0, model: TransferModel | None = None) -> Iterator[torch.Tensor]:
    """Each chunk loaded once, followed by all its variants (chunk-major order); undo with :func:`split_variants`.

    Variant ``v`` of chunk ``c`` equals what :func:`iter_chunks` yields for
    ``perturbations[v]`` at chunk ``c`` (``make`` may make several at once, faster, but not differently).
    """
    make = make or apply_each
    c = 0  # see iter_chunks: no enumerate()
    for x in load_chunks(dataset, indices, device, num_workers=num_workers, model=model):
        yield from make(x, c, perturbations)
        del x
        c += 1



def _variants_label(chosen: Sequence[Perturbation | None]) -> str:
    """What a multi-variant pass shows in progress lines: the variants' names when few, else their count."""
    names = [p.key if p is not None else "clean" for p in chosen]
    return ", ".join(names) if len(names) <= 3 else f"{len(names)} variants"


def split_variants(arrays: dict[str, np.ndarray], n: int, n_variants: int) -> list[dict[str, np.ndarray]]:
    """Undo the chunk-major interleaving of :func:`iter_variants` over ``n`` images: one dict per variant."""
    import numpy as np

    rows: list[list[np.ndarray]] = [[] for _ in range(n_variants)]
    offset = 0
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        for v in range(n_variants):
            rows[v].append(np.arange(offset + v * m, offset + (v + 1) * m))
        offset += n_variants * m
    out = []
    for v in range(n_variants):
        take = np.concatenate(rows[v]) if rows[v] else np.zeros(0, dtype=np.int64)
        out.append({k: np.ascontiguousarray(a[take]) for k, a in arrays.items()})
    return out


# --- the pass ----------------------------------------------------------------

@dataclass
class _Step:
    """What one batch needs besides its images."""

    model: TransferModel
    module: Any
    taps: _Taps
    amp: Any
    channels_last: bool
    dataset: str
    dtype: Any = None  # the module's own floating dtype (models.call.module_dtype)
    headless: bool = False  # no classification head: the output is features (pooled as taps are)


def check_logits(model: TransferModel, out: Any) -> None:
    """Refuse a module whose output is not an N×classes matrix, saying so."""
    if getattr(out, "ndim", None) != 2:
        raise ValueError(f"model {model.name!r} returns outputs of shape {tuple(getattr(out, 'shape', ()))}; a "
                         "classifier must return N×classes logits: wrap the module so that it does")


def _run_batch(step: _Step, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
    """``(logits, taps)`` of one batch, or ``None`` when it ran out of memory and can be halved."""
    shape = None  # the module's input shape, once preprocess has run
    try:
        inp = _layout(step.model.normalise(x), step.channels_last)
        shape = tuple(inp.shape)
        out = _forward(step.module, inp, step.amp, step.dtype, f"model {step.model.name!r}")
        if step.headless and out.ndim > 2:
            out = pool_features(out)
        check_logits(step.model, out)
        del inp
        return out, step.taps.take()
    except Exception as exc:
        step.taps.current.clear()
        if is_out_of_memory(exc):
            if len(x) > 1:
                return None  # the caller retries outside this except block, so the batch's tensors can be freed
            raise
        if isinstance(exc, RuntimeError) and shape is not None:
            raise ValueError(
                f"model {step.model.name!r} failed on images of {step.dataset!r}: [0, 1] batch "
                f"{tuple(x.shape)}, after preprocess {shape} fed as {str(step.dtype).removeprefix('torch.')} (the "
                f"module's dtype): {str(exc).splitlines()[0]}. Check the model's preprocess (image size, channels) "
                "and that the module runs in its dtype on this device"
            ) from exc
        raise


def run_pass(model: TransferModel, dataset: TargetDataset, indices: np.ndarray, *, nodes: Sequence[str],
             perturbation: Perturbation | None, batch_size: int, device: Any,
             progress: Callable[[Any], None] | None = None, autocast: str = "auto",
             channels_last: bool | None = None, chunks: Callable[[], Iterable[torch.Tensor]] | None = None,
             total: int | None = None, split: str | None = None, variant: str | None = None,
             num_workers: int = 0, malloc_tuning: bool = True) -> dict[str, np.ndarray]:
    """The forward pass itself: returns ``logits`` and ``tap:<node>`` arrays (float32, CPU).

    ``batch_size`` is where it starts: a batch that runs out of device memory
    is halved and retried (:class:`BatchPolicy`). ``autocast`` is ``auto``,
    ``on`` or ``off`` (see :func:`autocast_dtype`); ``channels_last`` defaults
    to :func:`prefers_channels_last`. On the CPU, ``malloc_tuning`` keeps
    glibc from unmapping the activation buffers between batches
    (:func:`pytest_transfer.allocator.tuned_malloc`, restored after the pass).
    ``chunks``, a function returning a fresh stream of
    [0, 1] image chunks of ``total`` images, replaces the (perturbed) images of
    ``indices`` (:func:`iter_chunks`): a multi-variant pass feeds
    :func:`iter_variants` through here. ``progress`` receives the pass's
    :class:`~pytest_transfer.progress.PassStatus` updates (``split`` and ``variant`` only label them).
    ``num_workers``: loader workers decoding a streamed dataset (:func:`load_chunks`). The images'
    channels are made the model's (``in_channels``) before its preprocess
    (:func:`pytest_transfer.datasets.adapt_channels`: 3→1 by luma, 1→3 by repetition).
    """
    import torch

    from .allocator import tuned_malloc
    from .progress import PassProgress

    device = torch.device(device)
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    dtype = module_dtype(model.module)
    # a module kept in float16 / bfloat16 / float64 runs in its own precision; autocast is for float32 modules
    amp = autocast_dtype(autocast, device) if dtype == torch.float32 else None
    module, channels_last = prepare_module(model, device, channels_last)
    policy = BatchPolicy(module, device, batch_size)
    meter = PassProgress(progress, model=model.name, dataset=dataset.name, split=split,
                         variant=variant or (perturbation.key if perturbation else None),
                         total=len(indices) if total is None else total, every=PROGRESS_EVERY)
    meter.start()
    stream = _Regroup(chunks() if chunks is not None
                      else iter_chunks(dataset, indices, device, perturbation, num_workers=num_workers, model=model))
    outputs = _HostOutputs(nodes, device, meter.total)
    with _Taps(model, nodes) as taps, torch.inference_mode(), tuned_malloc(malloc_tuning and device.type == "cpu"):
        step = _Step(model, module, taps, amp, channels_last, dataset.name, dtype, not model.has_head)
        while (x := stream.take(policy.size)) is not None:
            got = _run_batch(step, x)
            if got is None:
                stream.push_back(x)
                size = policy.shrink(len(x))
                meter.note(f"out of memory on {device} at batch size {len(x)}; retrying with {size} "
                           f"(set --transfer-batch-size={size} to start there)")
                continue
            outputs.add(*got)
            meter.advance(len(x))
            del got, x  # free this batch before the next is assembled
    meter.finish()
    result = outputs.arrays(model.num_classes)
    bad = _nonfinite(result)
    if bad and amp is not None and autocast == "auto":
        # the model does not allow reduced precision: the whole pass again in float32
        return run_pass(model, dataset, indices, nodes=nodes, perturbation=perturbation, batch_size=policy.size,
                        device=device, progress=progress, autocast="off", channels_last=channels_last,
                        chunks=chunks, total=total, split=split, variant=variant, num_workers=num_workers,
                        malloc_tuning=malloc_tuning)
    _raise_nonfinite(bad, result, model, dataset)
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
    return (model.fingerprint(), geometry_key(model), dataset.fingerprint(), dataset.split_fingerprint(split),
            perturbation.key if perturbation else None, perturbation.seed if perturbation else None, precision)


def geometry_key(model: TransferModel) -> str:
    """What the chunk source does to the images for ``model`` (its geometric stage's description, or
    ``"as stored"``): the images a pass reads depend on it, so the memo and the disk cache are keyed by it."""
    geometry = model.geometry
    return "as stored" if geometry is None else geometry.describe()


def cache_key(model: TransferModel, dataset: TargetDataset, split: str, perturbation: Perturbation | None,
              nodes: Sequence[str], *, precision: str, device: Any) -> dict[str, Any]:
    """The disk-cache key of a pass: everything that changes its outputs.

    Weights, preprocess and feature node (``model.fingerprint()``), the
    model's code, the geometric stage that brings the images to the model's
    input size (:func:`geometry_key`), the data, the split's indices, the perturbation and its
    seed, the taps, the precision, the device type, and the versions of
    torch and of this engine. The batch size is not part of it: results do
    not depend on it beyond float rounding.
    """
    import torch

    from . import __version__

    return {
        "engine": ENGINE_VERSION, "pytest_transfer": __version__, "torch": torch.__version__,
        "model": model.fingerprint(), "code": code_fingerprint(model), "geometry": geometry_key(model),
        "data": dataset.fingerprint(), "split": dataset.split_fingerprint(split),
        "perturbation": perturbation.key if perturbation else None,
        "seed": perturbation.seed if perturbation else None,
        "taps": sorted(nodes), "precision": precision, "device": torch.device(device).type,
    }


# --- the session memo and the disk cache: one path for every evaluation ----------

def _memo_find(ctx: Context, base: tuple[Any, ...], wanted: set[str]) -> tuple[Evaluation | None, list[str]]:
    """The memoised evaluation of ``base`` that has every tap of ``wanted``, or ``(None, nodes)``: the nodes a
    new pass must read (``wanted`` and the taps of the memo's entries for ``base``, which it replaces)."""
    union = set(wanted)
    for (b, have), ev in list(ctx.evaluations.items()):
        if b != base:
            continue
        if wanted <= set(have):
            return ev, []  # the feature node is part of the model's fingerprint, so it is ev.feature_node
        union |= set(have)  # one new pass reads every tap asked for so far
        del ctx.evaluations[(b, have)]
    return None, sorted(union)


@dataclass
class _Request:
    """One model × dataset × split evaluated under several perturbations in one session."""

    ctx: Context
    model: TransferModel
    dataset: TargetDataset
    split: str
    batch_size: int
    cache: bool
    make: VariantMaker | None
    device: Any = None
    mode: str = "auto"
    precision: str = "float32"
    indices: Any = None
    workers: int = 0

    def __post_init__(self) -> None:
        from .datasets.stream import resolve_num_workers

        self.device = self.ctx.device
        self.workers = resolve_num_workers(getattr(self.ctx.settings, "num_workers", "auto"))
        self.mode = getattr(self.ctx.settings, "autocast", "auto")
        self.precision = precision_label(autocast_dtype(self.mode, self.device))

    def split_indices(self) -> np.ndarray:
        if self.indices is None:
            self.indices = self.dataset.indices(self.split)
            if len(self.indices) == 0:
                raise ValueError(f"dataset {self.dataset.name!r}: the {self.split!r} split is empty; use more "
                                 "samples or another test_fraction")
        return self.indices

    def compute(self, chosen: Sequence[Perturbation | None], nodes: list[str]) -> list[dict[str, np.ndarray]]:
        """One forward pass for all of ``chosen``: their arrays, in order."""
        indices = self.split_indices()
        self.ctx.forward_passes += 1
        common = {"nodes": nodes, "batch_size": self.batch_size, "device": self.device,
                  "progress": self.ctx.progress, "autocast": self.mode, "split": self.split,
                  "num_workers": self.workers,
                  "malloc_tuning": getattr(self.ctx.settings, "malloc_tuning", True)}
        with restored(self.model):  # the user's module keeps its mode, device and memory format
            if len(chosen) == 1 and self.make is None:
                return [run_pass(self.model, self.dataset, indices, perturbation=chosen[0], **common)]
            arrays = run_pass(self.model, self.dataset, indices, perturbation=None, **common,
                              chunks=lambda: iter_variants(self.dataset, indices, self.device, chosen, self.make,
                                                           num_workers=self.workers, model=self.model),
                              total=len(indices) * len(chosen), variant=_variants_label(chosen))
        return split_variants(arrays, len(indices), len(chosen))

    def arrays(self, chosen: Sequence[Perturbation | None], nodes: list[str]) -> list[tuple[dict[str, Any], bool]]:
        """``(arrays, from disk?)`` of each of ``chosen``: read from the disk cache, the rest in one pass."""
        # a dataset whose items change between reads is never cached (TargetDataset.cacheable)
        cache_dir = self.ctx.settings.cache_path() if self.cache and self.dataset.cacheable else None
        if cache_dir is None:
            return [(a, False) for a in self.compute(chosen, nodes)]
        from .cache import DiskCache

        self.split_indices()
        keys = [cache_key(self.model, self.dataset, self.split, p, nodes, precision=self.precision,
                          device=self.device) for p in chosen]
        found = DiskCache(cache_dir).get_or_compute_many(
            keys, lambda missing: self.compute([chosen[i] for i in missing], nodes),
            required=["logits", *(f"tap:{n}" for n in nodes)], expect=self.expected_shapes(nodes))
        self.ctx.cache_hits += sum(hit for _, hit in found)
        return found

    def expected_shapes(self, nodes: list[str]) -> dict[str, tuple[Any, ...]]:
        """What a cached entry of this request must hold: one row per sample of the split, and the widths of
        the logits and taps that the session already measured for this model (``...``: not known yet)."""
        rows = len(self.split_indices())
        widths: dict[str, tuple[int, ...]] = {}
        mine = self.model.fingerprint()
        for (base, _), ev in list(self.ctx.evaluations.items()):
            if base[0] == mine:
                widths.setdefault("logits", tuple(ev.logits.shape[1:]))
                for n, tap in ev.taps.items():
                    widths.setdefault(f"tap:{n}", tuple(tap.shape[1:]))
        out: dict[str, tuple[Any, ...]] = {}
        for name in ["logits", *(f"tap:{n}" for n in nodes)]:
            out[name] = (rows, *widths[name]) if name in widths else (rows, ...)
        return out

    def evaluation(self, p: Perturbation | None, nodes: list[str], arrays: dict[str, Any],
                   hit: bool) -> Evaluation:
        indices = self.split_indices()
        return Evaluation(
            model=self.model.name, dataset=self.dataset.name, split=self.split,
            perturbation=p.key if p else None, indices=indices, labels=self.dataset.labels[indices],
            logits=arrays["logits"], taps={n: arrays[f"tap:{n}"] for n in nodes},
            feature_node=self.model.feature_node, from_cache=hit, sample_ids=self.dataset.sample_ids(indices),
        )


def _evaluate_all(req: _Request, perturbations: Sequence[Perturbation | None], taps: Iterable[str]
                  ) -> list[Evaluation]:
    """Evaluations of distinct ``perturbations``: from the memo, else the disk, else one pass per tap set."""
    wanted = {*taps} | ({req.model.feature_node} if req.model.has_features else set())
    for node in wanted:
        req.model.resolve_node(node)  # a bad node name fails here, before any work
    ctx = req.ctx
    with ctx.lock:
        out: list[Evaluation | None] = [None] * len(perturbations)
        bases = [memo_base(req.model, req.dataset, req.split, p, precision=req.precision) for p in perturbations]
        memo = req.dataset.cacheable  # known once fingerprinted: items that change between reads are not memoised
        todo: dict[tuple[str, ...], list[int]] = {}  # the taps of a pass -> the perturbations it serves
        for i, base in enumerate(bases):
            out[i], nodes = _memo_find(ctx, base, wanted) if memo else (None, sorted(wanted))
            if out[i] is None:
                todo.setdefault(tuple(nodes), []).append(i)
        for nodes, members in todo.items():
            found = req.arrays([perturbations[i] for i in members], list(nodes))
            for i, (arrays, hit) in zip(members, found, strict=True):
                out[i] = ev = req.evaluation(perturbations[i], list(nodes), arrays, hit)
                if memo:
                    ctx.evaluations[(bases[i], nodes)] = ev
        return [ev for ev in out if ev is not None]


def _request(model: Any, dataset: Any, *, split: str, batch_size: int | None, context: Context | None,
             cache: bool, make: VariantMaker | None) -> _Request:
    from .datasets import TargetDataset, load_dataset
    from .models import load_model

    ctx = context or current_context()
    if not isinstance(model, TransferModel):
        model = load_model(model)
    if not isinstance(dataset, TargetDataset):
        dataset = load_dataset(dataset)
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    size = int(batch_size or ctx.settings.batch_size)
    return _Request(ctx, model, dataset, split, size, cache, make)


# --- the public entry points ----------------------------------------------------

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
    req = _request(model, dataset, split=split, batch_size=batch_size, context=context, cache=cache, make=None)
    return _evaluate_all(req, [perturbation], taps)[0]


def evaluate_many(model: Any, dataset: Any, perturbations: Sequence[Perturbation | None], *, split: str = "test",
                  batch_size: int | None = None, context: Context | None = None, cache: bool = True,
                  make: VariantMaker | None = None) -> list[Evaluation]:
    """``[evaluate(model, dataset, split=split, perturbation=p) for p in perturbations]`` from one data load.

    Each chunk of the split is loaded once and every perturbation of it goes
    through one forward pass (:func:`iter_variants`; ``make`` may make a
    chunk's variants together, see :data:`VariantMaker`); results land in the
    session memo and the disk cache under :func:`evaluate`'s keys (entries
    already there are reused). Only the model's feature node is tapped.

    >>> evs = evaluate_many(model, "digits", [None, gaussian_noise(0.1), corruption("fog", 3)])  # doctest: +SKIP
    """
    distinct: dict[tuple[str, int] | None, Perturbation | None] = {}
    for p in perturbations:
        if p is not None and not isinstance(p, Perturbation):
            raise ValueError(f"perturbations: expected Perturbation objects or None, got {type(p).__name__}; "
                             "build them with pytest_transfer.robustness.perturbations.corruption / gaussian_noise")
        distinct.setdefault((p.key, p.seed) if p is not None else None, p)
    req = _request(model, dataset, split=split, batch_size=batch_size, context=context, cache=cache, make=make)
    evs = dict(zip(distinct, _evaluate_all(req, list(distinct.values()), ()), strict=True))
    return [evs[(p.key, p.seed) if p is not None else None] for p in perturbations]


__all__ = [
    "AUTOCAST_MODES", "CHUNK", "PENULTIMATE", "BatchPolicy", "Evaluation", "Perturbation", "VariantMaker",
    "apply_each", "autocast_dtype", "batch_limit", "cache_key", "evaluate", "evaluate_many",
    "geometry_key", "is_out_of_memory", "iter_batches", "iter_chunks", "iter_variants",
    "load_chunks", "memo_base", "model_batch", "pool_features", "precision_label", "prepare_module", "run_pass",
    "split_variants",
]
