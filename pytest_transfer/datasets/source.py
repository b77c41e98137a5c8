"""What a streamed ``TargetDataset`` reads its images from: an :class:`ImageSource`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .decode import Layout


class ImageSource:
    """Images decoded one at a time, in a fixed layout (see :mod:`pytest_transfer.datasets.decode`).

    A subclass sets ``layout`` and ``size_hw`` (the common H, W) and defines
    ``__len__``, ``load(i)`` (a C×H×W uint8 or float32 tensor, in the
    layout), ``content_fingerprint()`` and ``describe()``. It must be
    picklable: ``DataLoader`` workers call ``load``.
    """

    layout: Layout
    size_hw: tuple[int, int]

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, i: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def content_fingerprint(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_at(self, i: int, geometry: Any, channels: int | None) -> torch.Tensor:
        """Image ``i`` at a model's input size: through ``geometry`` (a
        :class:`~pytest_transfer.models.geometry.Geometry`). By default its batched stage on the stored image
        (float32 [0, 1]); image files override this with the per-image PIL path."""
        from .core import to_unit_float

        return geometry.batch(to_unit_float(self.load(i))[None])[0].float()

    def stack(self, indices: object) -> torch.Tensor:
        """The images of ``indices`` stacked N×C×H×W, in the source's dtype."""
        import torch

        items = [self.load(int(i)) for i in indices]  # type: ignore[attr-defined]
        if not items:
            c, (h, w) = self.layout.channels, self.size_hw
            return torch.empty((0, c, h, w), dtype=torch.uint8 if self.layout.dtype == "uint8" else torch.float32)
        return torch.stack(items)


__all__ = ["ImageSource"]
