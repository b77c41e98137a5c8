"""The chunk source of every pass: a split's images as float [0, 1] chunks of :data:`CHUNK`, perturbed per chunk.

:func:`load_chunks` reads each chunk once (sliced from memory, or decoded by loader workers, at the model's
input size when its preprocess has a geometric stage); :func:`iter_chunks` applies one
:class:`Perturbation`, :func:`iter_variants` several (undone by :func:`split_variants`); :class:`Regroup`
cuts a stream of chunks into batches of any size. The perturbations themselves are built in
:mod:`pytest_transfer.robustness.perturbations`: the engine only applies them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from ..datasets import TargetDataset
    from ..models import TransferModel

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



# --- regrouping chunks into batches ----------------------------------------------

class Regroup:
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
    regroup = Regroup(chunks)
    while (batch := regroup.take(batch_size)) is not None:
        yield batch


# --- the chunk source ------------------------------------------------------------

def _to_device(raw: torch.Tensor, device: Any) -> torch.Tensor:
    """Stored images (uint8 or float) as float [0, 1] on ``device``; to CUDA through pinned memory, with uint8
    data travelling as uint8 and scaled there (the same division as ``TargetDataset.batch``)."""
    from ..datasets import to_unit_float

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

    from ..datasets.stream import iter_raw_chunks

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



def variants_label(chosen: Sequence[Perturbation | None]) -> str:
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
