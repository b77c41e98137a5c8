"""A model's preprocess in two stages: geometry per image, photometry per batch.

The **geometric stage** (:class:`Geometry`) brings one decoded image to the
model's input size with the library's own calls on the PIL image, as the
library's file pipeline does (``PIL.Image.open(f).convert("RGB")`` → its eval
transform): torchvision ``W.transforms()``'s ``Resize`` + ``CenterCrop``,
timm's eval ``Compose`` up to its to-tensor step, a Hugging Face image
processor with ``do_rescale=False, do_normalize=False``, and for a plain
:class:`~pytest_transfer.models.Preprocess` torchvision's ``Resize(size)`` +
``CenterCrop(size)``. It returns a uint8 C×H×W tensor (an image of 16/32-bit
depth: float32 in [0, 1]) and runs in the ``DataLoader`` workers, so it must
be picklable. :meth:`Geometry.batch` is the same stage on a batch of float
[0, 1] tensors (in-memory arrays keep the batched path they always had).

The **photometric stage** (to float, rescale, normalise) runs on the chunk,
on the model's device, after any perturbation: perturbations therefore act on
the [0, 1] image at the model's input size, as ImageNet-C and RobustBench
apply them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

TO_TENSOR_STEPS = ("ToTensor", "MaybeToTensor", "PILToTensor", "MaybePILToTensor", "ToImage", "ToDtype",
                   "ConvertImageDtype")


def pil_as_tensor(img: Any) -> torch.Tensor:
    """A PIL image as a C×H×W tensor: uint8 for 8-bit modes, float32 for ``F`` (kept as its values)."""
    import numpy as np
    import torch
    from torchvision.transforms.functional import pil_to_tensor

    if img.mode == "F":
        return torch.from_numpy(np.array(img, dtype=np.float32))[None]
    return pil_to_tensor(img)


class Geometry:
    """The geometric stage of a preprocess (see the module). Subclasses define :meth:`pil` (PIL → PIL or
    tensor at the input size), :meth:`batch` and :meth:`describe`."""

    def pil(self, img: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def batch(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def image(self, img: Any) -> torch.Tensor:
        """One PIL image (mode ``L``, ``RGB`` or ``F``) at the model's input size, C×H×W."""
        out = self.pil(img)
        return out if hasattr(out, "dtype") else pil_as_tensor(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class StepsGeometry(Geometry):
    """Library transform steps that take a PIL image or a batch of tensors alike (torchvision's ``Resize``,
    ``CenterCrop``; timm's ``ResizeKeepRatio``, ...), applied in order."""

    def __init__(self, steps: Sequence[Callable[[Any], Any]], *, source: str) -> None:
        self.steps = list(steps)
        self.source = source

    def pil(self, img: Any) -> Any:
        if img.mode == "F" and self._fills():  # a 16/32-bit image, in [0, 1]: the fill scaled to it
            return self._per_channel(img, channels=1)
        for step in self.steps:
            img = step(img)
        return img

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        if images.is_floating_point() and self._fills():
            return self._per_channel(images, channels=images.shape[-3])
        for step in self.steps:
            images = step(images)
        return images

    def _fills(self) -> list[Any]:
        """The ``fill`` of each step (``None`` where it pads with nothing): timm's ``CenterCropOrPad`` of
        ``crop_mode='border'`` pads with the mean colour, in 8-bit units, one value per channel."""
        fills = [getattr(s, "fill", None) for s in self.steps]
        return fills if any(f not in (None, 0) for f in fills) else []

    def _per_channel(self, images: Any, *, channels: int) -> torch.Tensor:
        """Float [0, 1] ``images`` (a mode ``F`` PIL image, or N×C×H×W) through the steps one channel at a time,
        each padded with its channel's fill / 255, as an 8-bit image is padded with the fill itself; a
        one-channel image meets a colour fill as ``convert("RGB")`` would make it, repeated. C×H×W
        (N×C×H×W) float32."""
        import copy

        import torch
        from PIL import Image

        is_pil = isinstance(images, Image.Image)
        fills = self._fills()
        colours = max([len(f) for f in fills if isinstance(f, (tuple, list))], default=channels)
        out = []
        for c in range(max(channels, colours)):
            k = min(c, channels - 1)
            img = images if is_pil else images[..., k:k + 1, :, :]
            for step, fill in zip(self.steps, fills, strict=True):
                if fill is not None:
                    step = copy.copy(step)
                    step.fill = float(fill[min(c, len(fill) - 1)] if isinstance(fill, (tuple, list)) else fill) / 255
                img = step(img)
            out.append(pil_as_tensor(img).float() if is_pil else img)
        return torch.cat(out, dim=-3)

    def describe(self) -> str:
        return f"{self.source}: " + " → ".join(repr(s).replace("\n", "") for s in self.steps)


class Steps:
    """Transform steps applied in order to a batch (the photometric part of a library's ``Compose``)."""

    def __init__(self, steps: Sequence[Callable[[Any], Any]]) -> None:
        self.steps = list(steps)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            images = step(images)
        return images

    def __repr__(self) -> str:
        return "Steps(" + ", ".join(repr(s).replace("\n", "") for s in self.steps) + ")"


def split_compose(compose: Any, *, source: str) -> tuple[StepsGeometry, Steps] | None:
    """``(geometry, photometric)`` of a torchvision-style ``Compose`` (timm's eval transform): the steps before
    its first to-tensor step, and those after it (``None`` when there is no such step)."""
    steps = list(getattr(compose, "transforms", []) or [])
    names = [type(s).__name__ for s in steps]
    first = next((k for k, n in enumerate(names) if n in TO_TENSOR_STEPS), None)
    if first is None:
        return None
    after = [s for s, n in zip(steps[first:], names[first:], strict=True) if n not in TO_TENSOR_STEPS]
    return StepsGeometry(steps[:first], source=source), Steps(after)


class ProcessorGeometry(Geometry):
    """A Hugging Face image processor's own resize and crop, its per-pixel steps off; a 16/32-bit image (mode
    ``F``, in [0, 1]) is handed to it as a float RGB tensor."""

    def __init__(self, processor: Any, *, source: str) -> None:
        self.processor = processor
        self.source = source

    def _call(self, images: Any) -> torch.Tensor:
        off = {k: False for k in PROCESSOR_PHOTOMETRIC_STEPS if hasattr(self.processor, k)}
        return self.processor(images=images, **off, return_tensors="pt")["pixel_values"]

    def pil(self, img: Any) -> torch.Tensor:
        import torch

        if img.mode == "F":  # a 16/32-bit image in [0, 1]: as an RGB tensor, so that neither the processor's
            # convert("RGB") (which would saturate it to 0 and 1) nor its channel flips see one float band
            rgb = pil_as_tensor(img).expand(3, -1, -1).contiguous()
            return self._call(rgb)[0].float()
        out = self._call(img)[0]
        if out.dtype != torch.uint8:
            rounded = out.round()
            if torch.equal(rounded, out) and float(out.min()) >= 0 and float(out.max()) <= 255:
                return rounded.to(torch.uint8)
            return out.float().div_(255.0)  # a processor whose geometry is not 8-bit: kept in [0, 1]
        return out

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        return self._call(images).to(images.device).float()

    def describe(self) -> str:
        p = self.processor
        keep = {k: getattr(p, k, None) for k in ("size", "crop_size", "do_resize", "do_center_crop", "resample",
                                                 "do_pad", "size_divisor")}
        return f"{self.source}: {type(p).__name__}({', '.join(f'{k}={v!r}' for k, v in keep.items() if v is not None)})"


#: a Hugging Face image processor's per-pixel steps, switched off for its geometric stage: the rescale, the
#: normalisation, and EfficientNet's ``include_top`` (a second division by ``image_std``)
PROCESSOR_PHOTOMETRIC_STEPS = ("do_rescale", "do_normalize", "include_top")


def _floats(values: Any, default: float) -> tuple[float, ...]:
    if values is None:
        return (default,)
    return tuple(float(v) for v in (values if isinstance(values, (tuple, list)) else [values]))


class ProcessorPhotometric:
    """A Hugging Face image processor's per-pixel steps, on float [0, 1] images (value / 255), in its order:
    the rescale (``value × 255 × rescale_factor``, minus 1 with EfficientNet's ``rescale_offset``), the
    normalisation (``(x - image_mean) / image_std``), and EfficientNet's ``include_top`` (``x / image_std``)."""

    def __init__(self, processor: Any) -> None:
        rescale = getattr(processor, "do_rescale", True)
        self.scale = 255.0 * float(processor.rescale_factor) if rescale else 255.0
        self.offset = -1.0 if rescale and getattr(processor, "rescale_offset", False) else 0.0
        normalise = getattr(processor, "do_normalize", False)
        self.mean = _floats(processor.image_mean, 0.0) if normalise else None
        self.std = _floats(processor.image_std, 1.0) if normalise else None
        top = getattr(processor, "include_top", False)
        self.top_std = _floats(processor.image_std, 1.0) if top else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images * self.scale if self.scale != 1.0 else images
        if self.offset:
            x = x + self.offset
        if self.mean is not None and self.std is not None:
            x = (x - x.new_tensor(self.mean).view(1, -1, 1, 1)) / x.new_tensor(self.std).view(1, -1, 1, 1)
        if self.top_std is not None:
            x = x / x.new_tensor(self.top_std).view(1, -1, 1, 1)
        return x

    def __repr__(self) -> str:
        return (f"ProcessorPhotometric(scale={self.scale}, offset={self.offset}, mean={self.mean}, std={self.std}, "
                f"top_std={self.top_std})")


class SquareGeometry(Geometry):
    """:class:`~pytest_transfer.models.Preprocess`'s geometry: the shorter side to ``size``, the centre
    ``size``×``size`` crop; per image by torchvision's ``Resize(size)`` + ``CenterCrop(size)`` on the PIL
    image (bilinear; Pillow antialiases), per batch by ``batch`` (the tensor path)."""

    def __init__(self, size: int, batch: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.size = int(size)
        self._batch = batch

    def pil(self, img: Any) -> Any:
        from torchvision.transforms import functional as TF

        img = TF.resize(img, self.size, interpolation=TF.InterpolationMode.BILINEAR)
        return TF.center_crop(img, [self.size, self.size])

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        return self._batch(images)

    def describe(self) -> str:
        return f"Resize({self.size}, bilinear) → CenterCrop({self.size})"


__all__ = ["PROCESSOR_PHOTOMETRIC_STEPS", "TO_TENSOR_STEPS", "Geometry",
           "ProcessorGeometry", "ProcessorPhotometric", "SquareGeometry", "Steps",
           "StepsGeometry", "pil_as_tensor", "split_compose"]
