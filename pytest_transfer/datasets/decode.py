"""One image (a PIL image, a tensor or an array) → a C×H×W tensor in a dataset's common layout.

The rules, in one place (files of an image folder and items of a torch
``Dataset`` go through the same code, in the main process or a loader worker):

* **Bit depth.** 8-bit images are kept as uint8 (read as value / 255 later,
  as in-memory uint8 arrays are). 16-bit integer images (PIL modes ``I;16``,
  ``I;16B``, ``I;16L``, ``I;16N``) are divided by 65 535, the range they are
  stored in, as ``torchvision.transforms.v2.functional.to_dtype(...,
  scale=True)`` does for uint16. 32-bit integer images (mode ``I``) whose
  values lie in 0..65 535 are 16-bit data as Pillow hands it over and are
  divided by 65 535 too; other ``I`` images and 32-bit float images (mode
  ``F``) with values outside [0, 1] are rescaled from their own minimum and
  maximum to [0, 1] (a constant image becomes 0). ``F`` images already in
  [0, 1] are kept. A dataset holding any such image is float32 throughout.
* **Channels.** A dataset is 1-channel when every image is greyscale (modes
  ``1``, ``L``, ``I;16*``, ``I``, ``F``); otherwise every image becomes RGB:
  greyscale by repetition, palette (``P``, ``PA``), ``LA``, ``RGBA``,
  ``CMYK``, ``YCbCr`` and the rest by Pillow's ``convert("RGB")``. **Alpha is
  dropped**, not composited: the colour stored under a transparent pixel is
  what the model sees, exactly as torchvision's ``ImageFolder`` loader
  (``pil_loader``: ``img.convert("RGB")``) shows it to a model trained with it.
* **Size.** ``size=None`` keeps each image as stored (the dataset checks they
  all share one size); ``size=S`` resizes the shorter side to ``S`` and crops
  the centre ``S``×``S``, with torchvision's ``resize`` and ``center_crop``
  (bilinear, antialiased), as ``Resize(S)`` + ``CenterCrop(S)`` would.

:func:`adapt_channels` turns a batch's channels into what a model takes
(3→1 by ITU-R 601-2 luma, 1→3 by repetition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

GREY_MODES = frozenset({"1", "L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})
HIGH_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16B", "I;16L", "I;16N"})
UINT16_MAX = 65535.0


def check_image_size(size: Any) -> None:
    """Refuse a ``size`` that is not ``None`` or a positive whole number of pixels."""
    import numbers

    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"size: expected a positive whole number of pixels (the side of the square the images "
                         f"are resized and cropped to) or None to keep them as stored, got {size!r}")


@dataclass(frozen=True)
class Layout:
    """The common form of a dataset's images: ``channels`` (1 or 3), ``dtype`` (``"uint8"`` or
    ``"float32"``) and ``size`` (``None``: as stored; ``S``: shorter side to S, centre S×S crop)."""

    channels: int = 3
    dtype: str = "uint8"
    size: int | None = None

    def __post_init__(self) -> None:
        check_image_size(self.size)

    def describe(self) -> str:
        return f"{self.channels}ch/{self.dtype}/{self.size or 'native'}"


def layout_for_modes(modes: set[str], *, size: int | None = None, channels: int | None = None) -> Layout:
    """The layout of a dataset whose images have the PIL ``modes`` given (see the module's rules)."""
    if channels is None:
        channels = 1 if modes and modes <= GREY_MODES else 3
    if channels not in (1, 3):
        raise ValueError(f"channels: expected 1 or 3, got {channels}")
    dtype = "float32" if modes & HIGH_DEPTH_MODES else "uint8"
    return Layout(channels=channels, dtype=dtype, size=size)


def high_depth_to_unit(arr: np.ndarray, mode: str) -> np.ndarray:
    """A 16/32-bit greyscale image (H×W) as float32 in [0, 1], by the module's rules."""
    import numpy as np

    a = arr.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError("image contains NaN or Inf values")
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi <= UINT16_MAX):
        return a / np.float32(UINT16_MAX)
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        return a
    if hi <= lo:
        return np.zeros_like(a)
    return (a - np.float32(lo)) / np.float32(hi - lo)


def resize_crop(img: Any, size: int) -> Any:
    """torchvision's ``resize`` (shorter side) + ``center_crop`` on a PIL image or a tensor."""
    from torchvision.transforms import functional as TF

    img = TF.resize(img, size, antialias=True)
    return TF.center_crop(img, [size, size])


def model_mode(img: Any, channels: int) -> Any:
    """A PIL image as a model reads it: ``convert("RGB")`` as torchvision's ``pil_loader`` does (``"L"`` for a
    one-channel model); a 16/32-bit image as a mode ``F`` image in [0, 1] (see the module's rules)."""
    import numpy as np
    from PIL import Image

    if img.mode in HIGH_DEPTH_MODES:
        return Image.fromarray(high_depth_to_unit(np.asarray(img), img.mode))
    return img.convert("L" if channels == 1 else "RGB")


def repeat_grey(t: torch.Tensor, channels: int | None) -> torch.Tensor:
    """A one-channel C×H×W image repeated to three channels when ``channels`` is 3 (else as it is)."""
    return t.expand(3, -1, -1).contiguous() if t.shape[0] == 1 and channels == 3 else t


def pil_to_tensor(img: Any, layout: Layout) -> torch.Tensor:
    """A PIL image as a C×H×W tensor in ``layout`` (uint8, or float32 in [0, 1])."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor as to_tensor

    if img.mode in HIGH_DEPTH_MODES:
        unit = high_depth_to_unit(np.asarray(img), img.mode)
        if layout.size is not None:
            unit = np.array(resize_crop(Image.fromarray(unit), layout.size), dtype=np.float32)
        t = torch.from_numpy(np.ascontiguousarray(unit))[None]
        return t.expand(3, -1, -1).contiguous() if layout.channels == 3 else t
    target = "L" if layout.channels == 1 else "RGB"
    if img.mode != target:
        if target == "L" and img.mode not in GREY_MODES:
            raise ValueError(f"a colour image (mode {img.mode}) in a dataset read as greyscale; pass channels=3")
        img = img.convert(target)
    if layout.size is not None:
        img = resize_crop(img, layout.size)
    t = to_tensor(img)
    return t.float().div_(255.0) if layout.dtype == "float32" else t


def array_to_tensor(item: Any, layout: Layout) -> torch.Tensor:
    """A tensor or array image (C×H×W, H×W×C or H×W; uint8, or float in [0, 1]) in ``layout``."""
    import numpy as np
    import torch

    t = item.detach().cpu() if hasattr(item, "detach") else torch.from_numpy(np.ascontiguousarray(item))
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"expected an image of shape C×H×W or H×W, got {tuple(t.shape)}")
    if t.shape[0] not in (1, 3, 4) and t.shape[-1] in (1, 3, 4):
        t = t.permute(2, 0, 1)
    if t.shape[0] == 4:
        t = t[:3]  # alpha dropped, as for files
    if t.dtype != torch.uint8:
        if not t.dtype.is_floating_point:
            raise ValueError(f"expected uint8 or float images, got dtype {t.dtype}")
        t = t.float()
    if t.shape[0] != layout.channels:
        if layout.channels == 1:
            raise ValueError("a colour image in a dataset read as greyscale; pass channels=3")
        t = t.expand(3, -1, -1)
    if layout.size is not None:
        t = resize_crop(t, layout.size)
    if t.dtype == torch.uint8 and layout.dtype == "float32":
        t = t.float().div_(255.0)
    return t.contiguous()


def image_to_tensor(item: Any, layout: Layout) -> torch.Tensor:
    """A PIL image, tensor or array as a C×H×W tensor in ``layout``."""
    from PIL import Image

    if isinstance(item, Image.Image):
        return pil_to_tensor(item, layout)
    return array_to_tensor(item, layout)


def adapt_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """N×C×H×W float images with their channels made ``channels`` (1 or 3; ``None``/0 = unchanged).

    3→1 is the ITU-R 601-2 luma transform (0.2989 R + 0.587 G + 0.114 B,
    torchvision's ``rgb_to_grayscale``, Pillow's ``convert("L")``); 1→3
    repeats the channel. Any other mismatch is left for the model to report.
    """
    if not channels or images.ndim != 4 or images.shape[1] == channels:
        return images
    if images.shape[1] == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] == 3 and channels == 1:
        from torchvision.transforms.functional import rgb_to_grayscale

        return rgb_to_grayscale(images, num_output_channels=1)
    return images


__all__ = ["GREY_MODES", "HIGH_DEPTH_MODES", "Layout", "adapt_channels", "check_image_size", "high_depth_to_unit",
           "image_to_tensor", "layout_for_modes", "model_mode", "pil_to_tensor", "repeat_grey",
           "resize_crop"]
