"""One range and finiteness rule for the images of every source (arrays, image folders, torch ``Dataset`` items).

An image reaches a model only as uint8 (read as value / 255) or as float
whose every value is finite and lies in [0, 1]. In-memory arrays are checked
whole when the dataset is made; streamed sources check each image as it is
decoded (:meth:`~pytest_transfer.datasets.source.ImageSource.load_checked`),
in the loader worker, before the chunk holding it goes to the model. The
error names the dataset, the first offending item (its sample id: the file
path relative to the folder, or the index), what was seen and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


def printable_id(sample_id: Any) -> str | int:
    """A sample id as messages and reports show it: an index as an ``int``; a path as text that any writer
    can encode (bytes of a non-UTF-8 file name, kept by Python as surrogates, become ``\\xNN`` escapes)."""
    if isinstance(sample_id, str):
        return sample_id.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return int(sample_id)


def printable_ids(sample_ids: Sequence[Any]) -> list[str | int]:
    """:func:`printable_id` of each."""
    return [printable_id(s) for s in sample_ids]


def item_label(sample_id: Any) -> str:
    """How a sample is named in messages: ``file 'cat/1.png'`` for a path, ``item 17`` for an index."""
    shown = printable_id(sample_id)
    return f"file {shown!r}" if isinstance(shown, str) else f"item {shown}"


def _range_hint(lo: float, hi: float) -> str:
    if lo >= 0.0 and hi <= 255.0:
        return (" (looks like 0..255: divide by 255 or give uint8; in a torchvision transform, ToTensor() or "
                "v2.ToDtype(torch.float32, scale=True) scales to [0, 1])")
    if lo < 0.0:
        return (" (looks normalised by a mean and standard deviation: remove Normalize from the dataset's "
                "transform; the model's own preprocess normalises)")
    return ""


def _describe_bad(image: torch.Tensor) -> str:
    import torch

    nan = int(torch.isnan(image).sum())
    inf = int(torch.isinf(image).sum())
    if nan or inf:
        return (f"{nan} NaN and {inf} Inf pixel value(s) of {image.numel()}; images must be finite: "
                "fix the file or the transform that made them (a division by zero, a log of 0)")
    lo, hi = float(image.min()), float(image.max())
    return f"float pixel values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]{_range_hint(lo, hi)}"


#: how far a library's resampling (bilinear with antialias, bicubic, Lanczos) may carry float pixels past
#: [0, 1] when it resizes an image that obeyed the rule: images checked after a model's geometry get this much
#: room (0..255 data and NaN are still caught; the item itself was checked before it was resized)
RESAMPLING_SLACK = 0.25


class PixelRangeError(ValueError):
    """An image outside the pixel rule; its message already names the dataset and the item."""


def check_pixels(images: torch.Tensor, *, dataset: str,
                 ids: Sequence[Any] | Callable[[int], Any] | None = None, slack: float = 0.0) -> None:
    """Refuse images that are neither uint8 nor finite floats in [0, 1] (``[-slack, 1 + slack]``).

    ``images``: N×C×H×W or one C×H×W tensor. ``ids``: the sample id of each
    image, or a function of the position giving it (called only on failure;
    default: the position). Raises ``ValueError`` naming ``dataset``,
    the first offending image by its id, the values seen (NaN / Inf counts,
    or the range, with a hint for 0..255 data and for normalised data) and
    how many images offend. uint8 images always pass; other integer types are
    refused. Costs one min and one max per image (NaN propagates through both).
    """
    import torch

    x = images if images.ndim == 4 else images.unsqueeze(0)
    if x.dtype == torch.uint8:
        return
    if not x.dtype.is_floating_point:
        raise PixelRangeError(f"dataset {dataset!r}: images must be float in [0, 1] or uint8, got dtype {x.dtype}")
    if not len(x) or not x[0].numel():
        return
    flat = x.reshape(len(x), -1)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    bad = ~((lo >= -slack) & (hi <= 1.0 + slack))  # NaN compares false: caught here too
    if not bool(bad.any()):
        return
    where = bad.nonzero().flatten()
    k = int(where[0])
    name = item_label(k if ids is None else ids(k) if callable(ids) else ids[k])
    more = f" ({len(where)} of {len(x)} images are outside the rule)" if len(x) > 1 else ""
    raise PixelRangeError(f"dataset {dataset!r}: {name}: {_describe_bad(x[k])}{more}")


__all__ = ["RESAMPLING_SLACK", "PixelRangeError", "check_pixels", "item_label", "printable_id", "printable_ids"]
