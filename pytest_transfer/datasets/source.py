"""What a streamed ``TargetDataset`` reads its images from: an :class:`ImageSource`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from .decode import Layout


class ImageSource:
    """Images decoded one at a time, in a fixed layout (see :mod:`pytest_transfer.datasets.decode`).

    A subclass sets ``layout`` and ``size_hw`` (the common H, W) and defines
    ``__len__``, ``load(i)`` (a C×H×W uint8 or float32 tensor, in the
    layout), ``content_fingerprint()`` and ``describe()``; it may define
    ``sample_ids`` (what names a row: file paths; by default the index). It
    must be picklable: ``DataLoader`` workers call ``load_checked``.
    ``name`` is the dataset's name (set by ``TargetDataset`` when empty), used in messages.
    """

    layout: Layout
    size_hw: tuple[int, int]
    name: str = ""

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, i: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def content_fingerprint(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def revision(self) -> str:
        """A cheap text that changes when what the source computes may have changed (its content fingerprint is
        then asked again; until then ``TargetDataset.fingerprint`` remembers it). Here: always the same."""
        return ""

    def sample_ids(self, indices: Any) -> np.ndarray:
        """What names each of ``indices`` in reports: here the index itself (int64); file sources give paths."""
        import numpy as np

        return np.asarray(indices, dtype=np.int64).copy()

    def load_checked(self, i: int, geometry: Any = None, channels: int | None = None) -> torch.Tensor:
        """``load(i)`` (or, with a model's ``geometry``, :meth:`load_at`) held to the one pixel rule
        (:func:`~pytest_transfer.datasets.pixels.check_pixels`); a ``ValueError`` from decoding names the dataset
        and the item. Every streamed image goes through here."""
        from .files import UnreadableImage
        from .pixels import RESAMPLING_SLACK, PixelRangeError, check_pixels, item_label

        try:
            t = self.load(i) if geometry is None else self.load_at(i, geometry, channels)
        except (UnreadableImage, PixelRangeError):
            raise  # already names the dataset, the item and the fix
        except ValueError as exc:
            raise ValueError(f"dataset {self.name!r}: {item_label(self.sample_id(i))}: {exc}") from None
        # after a model's geometry the library's resampling may overshoot [0, 1] a little (an item at exactly 1.0
        # comes out of an antialiased resize at 1.0000002); the item itself is checked exactly before it
        check_pixels(t, dataset=self.name, ids=lambda _: self.sample_id(i),  # the id is looked up only on failure
                     slack=0.0 if geometry is None else RESAMPLING_SLACK)
        return t

    def sample_id(self, i: int) -> Any:
        """The sample id of image ``i`` as a Python ``str`` or ``int``."""
        sid = self.sample_ids([i])[0]
        return sid.item() if hasattr(sid, "item") else sid

    def load_at(self, i: int, geometry: Any, channels: int | None) -> torch.Tensor:
        """Image ``i`` at a model's input size: through ``geometry`` (a
        :class:`~pytest_transfer.models.geometry.Geometry`). By default its batched stage on the stored image
        (float32 [0, 1]); image files override this with the per-image PIL path."""
        from .core import to_unit_float

        item = self.load_checked(i)  # the pixel rule, exactly, on the item as the source gives it
        return geometry.batch(to_unit_float(item)[None])[0].float()

    def stack(self, indices: object) -> torch.Tensor:
        """The images of ``indices`` stacked N×C×H×W, in the source's dtype."""
        import torch

        items = [self.load_checked(int(i)) for i in indices]  # type: ignore[attr-defined]
        if not items:
            c, (h, w) = self.layout.channels, self.size_hw
            return torch.empty((0, c, h, w), dtype=torch.uint8 if self.layout.dtype == "uint8" else torch.float32)
        return torch.stack(items)


__all__ = ["ImageSource"]
