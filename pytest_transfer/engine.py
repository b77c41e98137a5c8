"""Batched inference: one pass per model × dataset × split × perturbation, memoised and cached on disk.

A pass yields labels, logits and penultimate features (and any other
requested layer taps) together. Every gate on the same pair reuses it; a
second pytest run reads it from the disk cache.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .context import Context, current_context
from .models import PENULTIMATE, TransferModel

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from .datasets import TargetDataset

ENGINE_VERSION = 1
CHUNK = 64  # perturbations are drawn per fixed chunk of samples, so results do not depend on the batch size


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


def _check_finite(logits: torch.Tensor, model: TransferModel, dataset: str) -> None:
    import torch

    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise ValueError(
            f"model {model.name!r} produced NaN/Inf outputs for {bad} image(s) of {dataset!r}; check the weights "
            "(a diverged or corrupted checkpoint), the preprocess, or fp16 overflow"
        )


def iter_chunks(dataset: TargetDataset, indices: np.ndarray, device: Any,
                perturbation: Perturbation | None) -> Iterable[torch.Tensor]:
    """Float [0, 1] images in fixed chunks of ``CHUNK``, perturbed on ``device``."""
    for c, start in enumerate(range(0, len(indices), CHUNK)):
        x = dataset.batch(indices[start:start + CHUNK]).to(device, non_blocking=True)
        if perturbation is not None:
            x = perturbation.apply(x, c)
        yield x


def iter_batches(chunks: Iterable[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    """Regroup chunks into batches of ``batch_size`` (the last may be smaller)."""
    import torch

    buffer: list[torch.Tensor] = []
    held = 0
    for chunk in chunks:
        buffer.append(chunk)
        held += len(chunk)
        while held >= batch_size:
            cat = torch.cat(buffer) if len(buffer) > 1 else buffer[0]
            yield cat[:batch_size]
            rest = cat[batch_size:]
            buffer, held = ([rest], len(rest)) if len(rest) else ([], 0)
    if held:
        yield torch.cat(buffer) if len(buffer) > 1 else buffer[0]


def run_pass(model: TransferModel, dataset: TargetDataset, indices: np.ndarray, *, nodes: Sequence[str],
             perturbation: Perturbation | None, batch_size: int, device: Any,
             progress: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """The forward pass itself: returns ``logits`` and ``tap:<node>`` arrays (float32, CPU)."""
    import numpy as np
    import torch

    model.to(device)
    model.module.eval()
    conv = any(isinstance(m, torch.nn.Conv2d) for m in model.module.modules())
    if conv:
        model.module.to(memory_format=torch.channels_last)
    logits_out: list[torch.Tensor] = []
    taps_out: dict[str, list[torch.Tensor]] = {n: [] for n in nodes}
    total = (len(indices) + batch_size - 1) // batch_size
    last_report = time.monotonic()
    label = f"{model.name} on {dataset.name}" + (f" [{perturbation.key}]" if perturbation else "")
    with _Taps(model, nodes) as taps, torch.inference_mode():
        for b, x in enumerate(iter_batches(iter_chunks(dataset, indices, device, perturbation), batch_size)):
            inp = model.preprocess(x)
            if conv and inp.ndim == 4:
                inp = inp.contiguous(memory_format=torch.channels_last)
            try:
                out = model.module(inp)
            except RuntimeError as exc:
                if "out of memory" in str(exc).lower():
                    raise
                raise ValueError(
                    f"model {model.name!r} failed on images of {dataset.name!r}: [0, 1] batch {tuple(x.shape)}, "
                    f"after preprocess {tuple(inp.shape)}: {str(exc).splitlines()[0]}. Check the model's preprocess "
                    "(image size, channels) against what the network expects"
                ) from exc
            if isinstance(out, (tuple, list)):
                out = out[0]
            logits_out.append(out.float().cpu())
            for n in nodes:
                if n not in taps.current:
                    raise ValueError(f"feature node {n!r} of {model.name!r} was not reached by the forward pass")
                taps_out[n].append(taps.current.pop(n).float().cpu())
            if progress is not None and time.monotonic() - last_report > 2.0:
                progress(f"pytest-transfer: {label}: batch {b + 1}/{total}")
                last_report = time.monotonic()
    logits = torch.cat(logits_out) if logits_out else torch.zeros(0, model.num_classes or 0)
    _check_finite(logits, model, dataset.name)
    result = {"logits": logits.numpy()}
    for n, parts in taps_out.items():
        arr = torch.cat(parts).numpy() if parts else np.zeros((0, 0), np.float32)
        if not np.isfinite(arr).all():
            raise ValueError(f"model {model.name!r}: features at {n!r} contain NaN/Inf on {dataset.name!r}")
        result[f"tap:{n}"] = arr
    return result


def evaluate(model: Any, dataset: Any, *, split: str = "test", perturbation: Perturbation | None = None,
             taps: Iterable[str] = (), batch_size: int | None = None, context: Context | None = None,
             cache: bool = True) -> Evaluation:
    """Evaluate ``model`` on a split of ``dataset``: one pass, memoised in the session and cached on disk.

    ``model`` and ``dataset`` may be spec strings or objects (see
    :func:`load_model` / :func:`load_dataset`). ``taps`` names extra feature
    nodes read in the same pass.

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
    nodes = sorted({model.feature_node, *taps})
    base = (model.fingerprint(), dataset.fingerprint(), dataset.split_fingerprint(split),
            perturbation.key if perturbation else None, perturbation.seed if perturbation else None)
    with ctx.lock:
        for (b, have), ev in ctx.evaluations.items():
            if b == base and set(nodes) <= set(have):
                ev.feature_node = model.feature_node
                return ev
        indices = dataset.indices(split)
        if len(indices) == 0:
            raise ValueError(f"dataset {dataset.name!r}: the {split!r} split is empty; use more samples or "
                             "another test_fraction")
        device = ctx.device
        bs = batch_size or ctx.settings.batch_size

        def compute() -> dict[str, Any]:
            ctx.forward_passes += 1
            return run_pass(model, dataset, indices, nodes=nodes, perturbation=perturbation, batch_size=bs,
                            device=device, progress=ctx.progress)

        cache_dir = ctx.settings.cache_path() if cache else None
        hit = False
        if cache_dir is not None:
            from .cache import DiskCache

            key = {"engine": ENGINE_VERSION, "model": base[0], "data": base[1], "split": base[2],
                   "perturbation": base[3], "seed": base[4], "taps": nodes}
            arrays, hit = DiskCache(cache_dir).get_or_compute(key, compute)
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


__all__ = ["PENULTIMATE", "Evaluation", "Perturbation", "corruption", "evaluate", "gaussian_noise"]
