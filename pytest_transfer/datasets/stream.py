"""Streaming a dataset's images chunk by chunk: in memory by slicing, from a source through a ``DataLoader``.

A chunk holds exactly ``chunk`` images (the last one fewer), in the order of
the indices, whatever the number of loader workers: what is computed from a
chunk (a perturbation's random draws, seeded per chunk) is the same streamed
or in memory, with 0 or N workers. Each worker decodes sub-batches of a
quarter chunk, so at most ``workers × prefetch × chunk / 4`` decoded images
wait in shared memory besides the chunk being assembled: peak memory is
bounded by the chunk, not by the dataset. With a model's geometry, each
worker brings every image to the model's input size before handing it over,
so the bound is in model-size images, whatever the files' resolution (a
worker holds one decoded file at a time).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from .core import TargetDataset
    from .source import ImageSource

MAX_AUTO_WORKERS = 8
PREFETCH = 2
SUB_BATCHES = 4  # loader batches per chunk


def default_num_workers(environ: Any = None) -> int:
    """Loader workers for ``num_workers="auto"``: the CPUs this process may use, shared among pytest-xdist
    workers, less one for the process itself, at most ``MAX_AUTO_WORKERS`` (0 on a single CPU)."""
    environ = os.environ if environ is None else environ
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cpus = os.cpu_count() or 1
    share = max(1, int(environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    return max(0, min(MAX_AUTO_WORKERS, cpus // share - 1))


def resolve_num_workers(value: Any) -> int:
    """The number of loader workers for a ``num_workers`` setting (``"auto"`` or an integer >= 0)."""
    from ..settings import parse_num_workers

    n = parse_num_workers(value if value is not None else "auto")
    return default_num_workers() if n == "auto" else int(n)


class _Items:
    """The images of ``indices`` of a source, as a map-style dataset for ``DataLoader``."""

    def __init__(self, source: ImageSource, indices: np.ndarray, geometry: Any = None,
                 channels: int | None = None) -> None:
        self.source = source
        self.indices = indices
        self.geometry = geometry
        self.channels = channels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> torch.Tensor | ValueError:
        try:
            return self.source.load_checked(int(self.indices[k]), self.geometry, self.channels)
        except ValueError as exc:  # a file that cannot be read: returned, raised in the main process
            return exc


def _stack(items: list[torch.Tensor | ValueError]) -> torch.Tensor | ValueError:
    import torch

    failed = next((item for item in items if isinstance(item, ValueError)), None)
    if failed is not None:
        return failed
    if len({t.dtype for t in items}) > 1:  # 8-bit and 16-bit files in one batch: all as float [0, 1]
        from .core import to_unit_float

        items = [to_unit_float(t) for t in items]
    if len({tuple(t.shape) for t in items}) > 1:
        shapes = sorted({"×".join(map(str, t.shape)) for t in items})
        return ValueError(f"images of different sizes in one batch ({', '.join(shapes[:4])}): the model's "
                          "preprocess does not bring every image to one input size (a resize without a crop?); "
                          "give it a crop, or load the folder with size=N")
    return torch.stack(items)


def iter_raw_chunks(dataset: TargetDataset, indices: np.ndarray, *, chunk: int, num_workers: int = 0,
                    geometry: Any = None, channels: int | None = None) -> Iterator[torch.Tensor]:
    """The stored images of ``indices`` (N×C×H×W, uint8 or float32) in chunks of ``chunk``, on the CPU.

    In memory: slices of the image tensor. Streamed: decoded by ``num_workers``
    ``DataLoader`` worker processes (0: in this process); fewer when the
    indices fill fewer loader batches. With a model's ``geometry``
    (:mod:`pytest_transfer.models.geometry`) a streamed image goes through it
    in the worker (``source.load_at``), so a chunk holds images at the
    model's input size (``channels``: the model's), whatever the files' sizes.
    """
    import torch

    if chunk < 1:
        raise ValueError(f"chunk: expected an integer >= 1, got {chunk}")
    if dataset.source is None:
        for start in range(0, len(indices), chunk):
            yield dataset.raw_batch(indices[start:start + chunk])
        return
    sub = max(1, -(-chunk // SUB_BATCHES))
    while chunk % sub:
        sub -= 1
    batches = -(-len(indices) // sub)
    workers = min(int(num_workers), max(0, batches - 1))
    loader = torch.utils.data.DataLoader(
        _Items(dataset.source, indices, geometry, channels), batch_size=sub, shuffle=False, num_workers=workers,
        collate_fn=_stack, prefetch_factor=PREFETCH if workers else None,
    )
    buf, filled, done = None, 0, 0
    for part in loader:
        if isinstance(part, ValueError):
            # the source's own message (naming the file and the fix), not a DataLoader worker traceback
            raise part
        if buf is None:  # each chunk is filled in place: no second copy of its images
            buf = torch.empty((min(chunk, len(indices) - done), *part.shape[1:]), dtype=part.dtype)
        elif buf.dtype != part.dtype:  # 8-bit and 16-bit files in one chunk: all as float [0, 1]
            from .core import to_unit_float

            buf, part = to_unit_float(buf), to_unit_float(part)
        buf[filled:filled + len(part)] = part
        filled += len(part)
        del part
        if filled == len(buf):
            out, buf, filled, done = buf, None, 0, done + filled
            yield out  # nothing but the chunk stays referenced while it is used
            del out


__all__ = ["default_num_workers", "iter_raw_chunks", "resolve_num_workers"]
