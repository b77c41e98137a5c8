"""The forward pass (:func:`run_pass`) and the policies it strings together, in the order a batch meets them:
the batch size and its halving on out-of-memory errors (:class:`BatchPolicy`), the memory layout
(:func:`prefers_channels_last`, :func:`prepare_module`), the precision (:func:`autocast_dtype`), the taps
(forward hooks pooled on the device, :func:`pool_features`), the host copies, the NaN/Inf check and progress.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..models import TransferModel
from ..models.call import call_module, module_dtype, tap_tensor
from ..settings import AUTOCAST_MODES
from .chunks import Perturbation, Regroup, iter_chunks

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from ..datasets import TargetDataset

PROGRESS_EVERY = 0.5  # seconds between progress updates of a long pass


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


def pass_autocast(module: Any, mode: str, device: Any) -> tuple[torch.dtype | None, torch.dtype]:
    """``(autocast dtype or None, the module's dtype)`` of a pass: a module kept in float16 / bfloat16 /
    float64 runs in its own precision whatever ``mode`` says; autocast (:func:`autocast_dtype`) is for
    float32 modules. The pass (:func:`run_pass`) and its keys (:func:`precision_label`) both ask here."""
    import torch

    dtype = module_dtype(module)
    return (autocast_dtype(mode, device) if dtype == torch.float32 else None), dtype


def precision_label(amp: Any, dtype: Any = None) -> str:
    """How a pass's precision is named in memo and cache keys: ``autocast:<amp>`` under autocast, else the
    module's own dtype (``float32``, ``float16``, ``bfloat16``, ``float64``)."""
    if amp is not None:
        return f"autocast:{str(amp).removeprefix('torch.')}"
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


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

    from ..allocator import tuned_malloc
    from ..progress import PassProgress

    device = torch.device(device)
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    amp, dtype = pass_autocast(model.module, autocast, device)
    module, channels_last = prepare_module(model, device, channels_last)
    policy = BatchPolicy(module, device, batch_size)
    meter = PassProgress(progress, model=model.name, dataset=dataset.name, split=split,
                         variant=variant or (perturbation.key if perturbation else None),
                         total=len(indices) if total is None else total, every=PROGRESS_EVERY)
    meter.start()
    stream = Regroup(chunks() if chunks is not None
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
