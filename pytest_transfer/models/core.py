"""``TransferModel``, the plain ``Preprocess`` and how the penultimate feature node is found."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..datasets.decode import adapt_channels
from .call import call_module
from .fingerprint import ModelFingerprint
from .restore import restored

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from .geometry import Geometry

PENULTIMATE = "penultimate"


def close_names(name: str, candidates: Iterable[str], *, n: int = 5) -> list[str]:
    """Up to ``n`` of ``candidates`` spelled like ``name`` (``difflib.get_close_matches``, cutoff 0.6)."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)


def refuse_near_misses(extra: Iterable[str], own: Iterable[str], what: str) -> None:
    """Refuse, before any file is read, a keyword passed on to a library (builder arguments) that is spelled
    almost like one of the loader's own (``check_hsh`` for ``check_hash``): it would otherwise go unnoticed
    until a later error (the weights' hash check telling the user to pass the keyword they meant to pass).
    The cutoff (0.85) keeps real builder arguments such as googlenet's ``init_weights`` apart from ``weights``."""
    own = list(own)
    for key in extra:
        close = difflib.get_close_matches(key, own, n=1, cutoff=0.85)
        if close and key not in own:
            raise ValueError(f"{what}: the keyword {key!r} is not taken by this source; did you mean {close[0]!r}?")


class Preprocess:
    """Resize the shorter side to ``size``, crop the centre ``size``×``size`` and normalise with ``mean`` / ``std``.

    Takes float images in [0, 1], N×C×H×W, on any device, and returns the
    module's input. The channels are made ``channels`` first
    (:func:`~pytest_transfer.datasets.adapt_channels`: 1→3 by repetition,
    3→1 by ITU-R 601 luma). The resize keeps the aspect ratio, as torchvision's
    ``Resize(size)`` + ``CenterCrop(size)`` do on a tensor (bilinear,
    antialiased; the tests compare the two), so a non-square image is
    cropped, not stretched; images already ``size``×``size`` pass unchanged.
    (torchvision is not imported for it: that would add a second to every
    session's start.)
    Models from a library get that library's preprocess instead (see
    :class:`TensorTransform`). Image files are resized per image instead, by
    torchvision's ``Resize(size)`` + ``CenterCrop(size)`` on the PIL image
    (:attr:`geometry`); :meth:`normalise` is the rest.

    >>> import torch
    >>> p = Preprocess(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> p(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 3, 32, 32])
    >>> Preprocess(size=4)(torch.zeros(1, 3, 6, 12)).shape  # shorter side to 4, then the centre 4×4
    torch.Size([1, 3, 4, 4])
    """

    def __init__(self, size: int | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, *, channels: int = 3) -> None:
        if size is not None and int(size) < 1:
            raise ValueError(f"size: expected a positive image size, got {size}")
        self.size = int(size) if size is not None else None
        self.mean = tuple(float(m) for m in mean) if mean is not None else None
        self.std = tuple(float(s) for s in std) if std is not None else None
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std: every value must be positive, got {self.std}")
        self.channels = int(channels)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.resize(adapt_channels(images, self.channels)))

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """The geometric stage on a batch: shorter side to ``size``, centre crop (unchanged when ``size`` is
        ``None`` or the images are already ``size``×``size``)."""
        import torch.nn.functional as F

        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            # torchvision's rules, without importing torchvision (a second of start-up): the shorter side
            # becomes size and the longer int(size · long / short); the crop starts at round((side - size) / 2)
            h, w = x.shape[-2:]
            short, long = min(h, w), max(h, w)
            other = int(self.size * long / short)
            new_h, new_w = (self.size, other) if h <= w else (other, self.size)
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
            top, left = round((new_h - self.size) / 2.0), round((new_w - self.size) / 2.0)
            x = x[..., top:top + self.size, left:left + self.size]
        return x

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """The photometric stage: channels made ``channels``, then ``(x - mean) / std``."""
        x = adapt_channels(x, self.channels)
        if self.mean is not None and self.std is not None:
            mean = x.new_tensor(self.mean).view(1, -1, 1, 1)
            std = x.new_tensor(self.std).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x

    @property
    def geometry(self) -> Geometry | None:
        """The per-image geometric stage (:class:`~pytest_transfer.models.geometry.SquareGeometry`), or
        ``None`` without a ``size`` (images are fed as stored)."""
        from .geometry import SquareGeometry

        return SquareGeometry(self.size, self.resize) if self.size is not None else None

    @property
    def photometric(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.normalise

    def __repr__(self) -> str:
        return f"Preprocess(size={self.size}, mean={self.mean}, std={self.std}, channels={self.channels})"


class TensorTransform:
    """A library's own image transform applied to a batch of float [0, 1] N×C×H×W tensors.

    ``transform`` is the object the library itself feeds its model with and
    must accept batched float tensors: torchvision's ``W.transforms()``
    (resize of the shorter side with the weights' interpolation and
    antialias, centre crop, normalise), timm's eval transform, or a Hugging
    Face image processor call. One-channel images are repeated to three first.
    ``geometry`` and ``photometric`` are the same transform in two stages
    (:mod:`pytest_transfer.models.geometry`): per image at the library's own
    calls, then per batch after any perturbation.
    """

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor], *, source: str,
                 geometry: Geometry | None = None,
                 photometric: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.transform = transform
        self.source = source
        if (geometry is None) != (photometric is None):
            raise ValueError("TensorTransform: pass both geometry and photometric, or neither")
        self.geometry = geometry
        self.photometric = photometric

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.transform(adapt_channels(images, 3))

    def __repr__(self) -> str:
        return f"TensorTransform(source={self.source!r}, transform={self.transform!r})"


class AtInputSize:
    """The photometric stage of a model's preprocess, as a preprocess of its own (see
    :meth:`TransferModel.at_input_size`)."""

    def __init__(self, model: TransferModel) -> None:
        self.model = model

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.normalise(images)

    def __repr__(self) -> str:
        return f"AtInputSize({self.model.preprocess!r})"


def find_head(module: nn.Module) -> tuple[str, Any] | None:
    """``(name, layer)`` of the classification head, by the library's notion where there is one; ``None``
    for a headless backbone.

    * a timm model (``get_classifier()``): that layer (whatever its type); ``None`` when it is ``nn.Identity``
      (``num_classes=0``);
    * any other module: its last layer with weights (in registration order), when that is an ``nn.Linear`` or
      a 1×1 ``nn.Conv2d`` (SqueezeNet); otherwise ``None``. A layer inside a block followed by other weighted
      layers (the last MLP of a ViT whose head was replaced by ``nn.Identity``, followed by the final norm)
      is never taken for the head.

    The penultimate features of a model are the (spatially pooled) input of this layer: the pooled features of
    a ResNet, the [CLS] token of a ViT, timm's pre-logits; for a headless backbone they are the model's output
    (see :meth:`TransferModel.resolve_node`).
    """
    from torch import nn

    if callable(getattr(module, "get_classifier", None)):  # timm's own notion of the head
        head = module.get_classifier()
        if not isinstance(head, nn.Module) or isinstance(head, nn.Identity):
            return None
        name = next((n for n, m in module.named_modules() if m is head), None)
        if name is None or not any(True for _ in head.parameters()):
            return None
        return name, head  # whatever its type: timm says it is the classifier
    last_weighted = None
    for name, sub in module.named_modules():
        if any(True for _ in sub.parameters(recurse=False)):
            last_weighted = (name, sub)
    if last_weighted is None:
        return None
    layer = last_weighted[1]
    if isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) == (1, 1)):
        return last_weighted
    return None


def last_linear(module: nn.Module) -> tuple[str, Any] | None:
    """``(name, layer)`` of the last ``nn.Linear`` of ``module`` (what fine-tuning replaces), or ``None``."""
    from torch import nn

    found = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    return found[-1] if found else None


def head_classes(layer: Any) -> int | None:
    """The number of outputs of a head layer found by :func:`find_head` (``None`` when the layer does not say)."""
    found = getattr(layer, "out_features", None) or getattr(layer, "out_channels", None)
    return int(found) if found else None


class TransferModel:
    """An ``nn.Module`` plus what is needed to use it honestly.

    ``preprocess`` maps float [0, 1] images N×C×H×W to the module's input.
    Perturbations are applied before it. ``feature_node`` names where features
    are read: ``"penultimate"`` (the input of the classification head found by
    :func:`find_head`), a submodule name (its output; 4-d outputs are
    global-average-pooled, 3-d token outputs averaged over tokens), or
    ``"<submodule>:input"``. For a headless backbone (no head by
    :func:`find_head`: a timm model made with ``num_classes=0``, a torchvision
    model whose ``fc`` is ``nn.Identity``) the features are the model's output
    and ``method="direct"`` is refused.

    Calling the object runs preprocess and the module in eval mode and returns
    logits; the module's train/eval mode is left as it was.
    """

    def __init__(self, module: nn.Module, *, name: str | None = None,
                 preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 num_classes: int | None = None, categories: Sequence[str] | None = None,
                 feature_node: str | None = None, in_channels: int | None = None) -> None:
        from torch import nn

        if not isinstance(module, nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.name = name or type(module).__name__
        self.in_channels = int(in_channels) if in_channels else _guess_in_channels(module)
        self.preprocess = preprocess if preprocess is not None else Preprocess(channels=self.in_channels or 0)
        self.categories = list(categories) if categories is not None else None
        head = find_head(module)
        if not num_classes:  # 0 is what timm and transformers call a model without a head
            num_classes = None
            if self.categories is not None:
                num_classes = len(self.categories)
            elif head is not None:
                num_classes = head_classes(head[1])
        self.num_classes = num_classes
        self.feature_node = feature_node or PENULTIMATE
        self._fingerprint = ModelFingerprint()

    # --- running -----------------------------------------------------
    @property
    def device(self) -> torch.device:
        import torch

        for p in self.module.parameters():
            return p.device
        for b in self.module.buffers():
            return b.device
        return torch.device("cpu")

    def to(self, device: Any) -> TransferModel:
        self.module.to(device)
        return self

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """The module's input for float [0, 1] N×C×H×W ``images``: their channels made the module's
        (:func:`~pytest_transfer.datasets.adapt_channels`), then ``preprocess``."""
        return self.preprocess(adapt_channels(images, self.in_channels))

    @property
    def geometry(self) -> Geometry | None:
        """The per-image geometric stage of ``preprocess`` (:mod:`pytest_transfer.models.geometry`), or
        ``None`` for a preprocess that runs on batches only (a plain callable): its images are fed as stored."""
        return getattr(self.preprocess, "geometry", None)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """The module's input for float [0, 1] ``images`` already at the model's input size (what
        :attr:`geometry` made): channels made the module's, then the photometric stage of ``preprocess``
        (all of ``preprocess`` when it has no geometry)."""
        x = adapt_channels(images, self.in_channels)
        stage = getattr(self.preprocess, "photometric", None) if self.geometry is not None else None
        if stage is None:
            return self.preprocess(x)
        return stage(adapt_channels(x, 3) if isinstance(self.preprocess, TensorTransform) else x)

    def at_input_size(self) -> TransferModel:
        """A view of this model (same module) that takes images already at its input size: its preprocess is
        :meth:`normalise`. Attacks and fine-tuning on images from the geometric stage use it."""
        if self.geometry is None:
            return self
        view = object.__new__(TransferModel)
        view.__dict__.update(self.__dict__)
        view.preprocess = AtInputSize(self)
        view._fingerprint = ModelFingerprint()
        return view

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N×classes) for float [0, 1] N×C×H×W ``images``: preprocess, then the module in eval mode fed
        its own dtype, its output read by :func:`~pytest_transfer.models.call.as_logits` (a tensor, the first of
        a tuple, the ``logits`` of a dict or ``ModelOutput``). Every submodule's mode is left as it was."""
        with restored(self.module):
            self.module.eval()
            return call_module(self.module, self.inputs(images), where=f"model {self.name!r}")

    @property
    def has_head(self) -> bool:
        """Whether the module ends in a classification head (:func:`find_head`); ``direct`` needs one."""
        return find_head(self.module) is not None

    def resolve_node(self, node: str) -> tuple[str, bool]:
        """``(submodule name, read its input?)`` for a feature node name."""
        if node == PENULTIMATE:
            head = find_head(self.module)
            if head is None:  # a headless backbone: its output is the features
                return "", False
            return head[0], True
        name, _, kind = node.partition(":")
        if kind not in ("", "input", "output"):
            raise ValueError(f"feature node {node!r}: the suffix must be ':input' or ':output'")
        modules = dict(self.module.named_modules())
        if name not in modules:
            close = close_names(name, [n for n in modules if n])
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"feature node {node!r} is not a submodule of {self.name!r}.{hint} "
                "List them with [n for n, _ in model.module.named_modules()]"
            )
        return name, kind == "input"

    # --- identity ----------------------------------------------------
    def fingerprint(self) -> str:
        """A hash of what decides the outputs: weights, buffers, attributes, preprocess and feature node.

        Every parameter and buffer (persistent or not), the plain attributes
        of every submodule (numbers, strings, tuples, flags, tensors kept as
        attributes), the module classes, what the preprocess does to a probe
        batch, and the feature node. A memo makes a repeated call cheap (well
        under a millisecond for a ResNet-18) and still notices in-place
        changes; see :class:`~pytest_transfer.models.fingerprint.ModelFingerprint`.
        Arbitrary Python in ``forward`` is not seen: edited classes are caught
        by the engine's code fingerprint, anything else needs
        ``--transfer-no-cache`` (or ``evaluate(..., cache=False)``).
        """
        return self._fingerprint(self.module, self.preprocess, self.feature_node, self.in_channels or 3)

    def __repr__(self) -> str:
        return f"TransferModel(name={self.name!r}, num_classes={self.num_classes}, feature_node={self.feature_node!r})"


def _guess_in_channels(module: nn.Module) -> int | None:
    """The first convolution's input channels (``None`` when there is no convolution to tell)."""
    from torch import nn

    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            return int(sub.in_channels)
        if isinstance(sub, nn.Linear):
            break
    return None
