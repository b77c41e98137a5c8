"""``TransferModel`` and the model sources: torchvision, checkpoints, modules and registered names."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

PENULTIMATE = "penultimate"


class Preprocess:
    """Resize to a square ``size`` and normalise with ``mean`` / ``std``.

    Takes float images in [0, 1], N×C×H×W, on any device, and returns the
    module's input. One-channel images are repeated to three when
    ``channels == 3``.

    >>> import torch
    >>> p = Preprocess(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> p(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 3, 32, 32])
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
        import torch.nn.functional as F

        x = images
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            down = x.shape[-1] > self.size or x.shape[-2] > self.size
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=down)
        if self.mean is not None and self.std is not None:
            mean = x.new_tensor(self.mean).view(1, -1, 1, 1)
            std = x.new_tensor(self.std).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x

    def __repr__(self) -> str:
        return f"Preprocess(size={self.size}, mean={self.mean}, std={self.std}, channels={self.channels})"


class TransferModel:
    """An ``nn.Module`` plus what is needed to use it honestly.

    ``preprocess`` maps float [0, 1] images N×C×H×W to the module's input.
    Perturbations are applied before it. ``feature_node`` names where features
    are read: ``"penultimate"`` (the input of the final linear layer, found
    automatically), a submodule name (its output; 4-d outputs are
    global-average-pooled, 3-d token outputs averaged over tokens), or
    ``"<submodule>:input"``.

    Calling the object runs preprocess and the module in eval mode and returns
    logits.
    """

    def __init__(self, module: nn.Module, *, name: str | None = None,
                 preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 num_classes: int | None = None, categories: Sequence[str] | None = None,
                 feature_node: str | None = None, in_channels: int | None = None) -> None:
        from torch import nn

        if not isinstance(module, nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        self.module = module.eval()
        self.name = name or type(module).__name__
        self.in_channels = int(in_channels) if in_channels else _guess_in_channels(module)
        self.preprocess = preprocess if preprocess is not None else Preprocess(channels=self.in_channels or 0)
        self.categories = list(categories) if categories is not None else None
        head = last_linear(module)
        if num_classes is None:
            if self.categories is not None:
                num_classes = len(self.categories)
            elif head is not None:
                num_classes = head[1].out_features
        self.num_classes = num_classes
        self.feature_node = feature_node or PENULTIMATE
        if self.feature_node == PENULTIMATE and head is None:
            raise ValueError(
                f"model {self.name!r}: no final nn.Linear layer found to read penultimate features from; "
                "pass feature_node='<submodule name>' (see list(model.named_modules()))"
            )
        self._fingerprint: tuple[tuple[Any, ...], str] | None = None

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

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        return self.module(self.preprocess(images))

    def resolve_node(self, node: str) -> tuple[str, bool]:
        """``(submodule name, read its input?)`` for a feature node name."""
        if node == PENULTIMATE:
            head = last_linear(self.module)
            if head is None:  # pragma: no cover - checked in __init__
                raise ValueError(f"model {self.name!r} has no final linear layer")
            return head[0], True
        name, _, kind = node.partition(":")
        if kind not in ("", "input", "output"):
            raise ValueError(f"feature node {node!r}: the suffix must be ':input' or ':output'")
        modules = dict(self.module.named_modules())
        if name not in modules:
            close = [n for n in modules if n and (name in n or n in name)][:8]
            hint = f" Close names: {', '.join(close)}." if close else ""
            raise ValueError(
                f"feature node {node!r} is not a submodule of {self.name!r}.{hint} "
                "List them with [n for n, _ in model.module.named_modules()]"
            )
        return name, kind == "input"

    # --- identity ----------------------------------------------------
    def fingerprint(self) -> str:
        """A hash of the weights, buffers, preprocess and feature node.

        In-place changes of a parameter (also through ``.data``), a replaced
        preprocess or feature node are seen by the memo key, so the hash is
        recomputed only when needed.
        """
        state = self.module.state_dict()
        # what the memo follows: tensor versions (in-place updates), a strided sample of every weight
        # (changes made through ``.data`` bypass the versions), the preprocess and the feature node
        memo_key = (tuple((k, v.data_ptr(), v._version, tuple(v.shape)) for k, v in state.items()),
                    _weights_sample(state), id(self.preprocess), repr(self.preprocess), self.feature_node)
        if self._fingerprint is not None and self._fingerprint[0] == memo_key:
            return self._fingerprint[1]
        h = hashlib.blake2b(digest_size=16)
        h.update(type(self.module).__qualname__.encode())
        for k, v in state.items():
            h.update(k.encode())
            h.update(str(v.dtype).encode())
            h.update(str(tuple(v.shape)).encode())
            t = v.detach().to("cpu").contiguous()
            if t.dtype.is_floating_point and t.dtype not in (_torch().float32, _torch().float64):
                t = t.float()
            h.update(t.numpy().tobytes() if t.dtype != _torch().bool else t.to(_torch().uint8).numpy().tobytes())
        h.update(self.feature_node.encode())
        h.update(_preprocess_fingerprint(self.preprocess, self.in_channels or 3).encode())
        digest = h.hexdigest()
        self._fingerprint = (memo_key, digest)
        return digest

    def __repr__(self) -> str:
        return f"TransferModel(name={self.name!r}, num_classes={self.num_classes}, feature_node={self.feature_node!r})"


_SAMPLES_PER_DIM = 8  # weight indices per dimension read by the fingerprint memo


def _weights_sample(state: dict[str, Any]) -> tuple[float, ...]:
    """Sums of a strided (layout-independent) sample of every tensor of a state dict."""
    import torch

    parts = []
    with torch.no_grad():
        for v in state.values():
            if v.numel():
                index = tuple(slice(None, None, max(1, -(-n // _SAMPLES_PER_DIM))) for n in v.shape)
                parts.append(v.detach()[index].double().sum())
    return tuple(torch.stack(parts).tolist()) if parts else ()


def _torch() -> Any:
    import torch

    return torch


def _preprocess_fingerprint(preprocess: Callable[..., Any], channels: int) -> str:
    """Hash what ``preprocess`` does to a fixed probe batch (catches any change of behaviour)."""
    import torch

    g = torch.Generator().manual_seed(1234)
    probe = torch.rand(2, channels, 20, 20, generator=g)
    try:
        with torch.inference_mode():
            out = preprocess(probe)
        data = out.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        return hashlib.blake2b(data + repr(tuple(out.shape)).encode(), digest_size=16).hexdigest()
    except Exception:  # a preprocess that needs other sizes: fall back to its description
        return hashlib.blake2b(repr(preprocess).encode(), digest_size=16).hexdigest()


def last_linear(module: nn.Module) -> tuple[str, Any] | None:
    from torch import nn

    last = None
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            last = (name, sub)
    return last


def _guess_in_channels(module: nn.Module) -> int | None:
    """The first convolution's input channels (``None`` when there is no convolution to tell)."""
    from torch import nn

    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            return int(sub.in_channels)
        if isinstance(sub, nn.Linear):
            break
    return None


# --- sources -------------------------------------------------------------

def hub_checkpoint_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _torchvision_weights(arch: str, weights: str | None) -> Any:
    from torchvision import models as tvm

    if weights is None or weights.lower() in ("none", "random"):
        return None
    try:
        enum = tvm.get_model_weights(arch)
    except (KeyError, ValueError):
        return None
    key = weights if weights != "default" else "DEFAULT"
    try:
        return enum[key] if key != "DEFAULT" else enum.DEFAULT
    except KeyError:
        valid = ", ".join(["DEFAULT", *enum.__members__, "none"])
        raise ValueError(f"torchvision:{arch}: unknown weights {weights!r}; valid: {valid}") from None


def load_torchvision(arch: str, weights: str | None = "DEFAULT", *, image_size: int | None = None,
                     feature_node: str | None = None, **kwargs: Any) -> TransferModel:
    """``torchvision:<arch>[:<weights>]``: the architecture from torchvision's registry, weights offline.

    Weights are read from ``$TORCH_HOME/hub/checkpoints`` and never downloaded.
    ``weights`` is ``DEFAULT``, an enum member name (``IMAGENET1K_V1``) or
    ``none`` for random initialisation. ``image_size`` overrides the resize
    (default: the weights' crop size, 224).
    """
    from torchvision import models as tvm

    available = tvm.list_models()
    if arch not in available:
        close = [a for a in available if arch.lower()[:4] in a][:10]
        raise ValueError(
            f"torchvision has no model {arch!r}; "
            + (f"close: {', '.join(close)}" if close else f"see torchvision.models.list_models() ({len(available)})")
        )
    w = _torchvision_weights(arch, weights)
    if weights not in (None, "none", "random") and w is None:
        raise ValueError(f"torchvision:{arch} has no pretrained weights; use torchvision:{arch}:none")
    builder_kwargs = dict(kwargs)
    if w is not None:
        builder_kwargs.setdefault("num_classes", len(w.meta["categories"]))
    module = tvm.get_model(arch, weights=None, **builder_kwargs)
    mean, std, size, categories = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224, None
    if w is not None:
        filename = os.path.basename(w.url)
        path = hub_checkpoint_dir() / filename
        if not path.is_file():
            raise FileNotFoundError(
                f"weights for torchvision:{arch}:{w.name} are not in the torch hub cache: expected {path}. "
                f"pytest-transfer never downloads. On a machine with network access run "
                f"`python -c \"import torchvision; torchvision.models.get_model('{arch}', weights='{w.name}')\"` "
                f"and copy {filename} into {hub_checkpoint_dir()} (or set TORCH_HOME), or use torchvision:{arch}:none"
            )
        state = _torch_load(path)
        _load_state(module, state, f"{path}")
        t = w.transforms()
        mean, std = tuple(t.mean), tuple(t.std)
        size = int(t.crop_size[0])
        categories = list(w.meta["categories"])
    name_weights = w.name if w is not None else "none"
    return TransferModel(
        module,
        name=f"torchvision:{arch}" + ("" if weights in ("DEFAULT", "default") else f":{name_weights}"),
        preprocess=Preprocess(size=image_size or size, mean=mean, std=std),
        categories=categories,
        feature_node=feature_node,
    )


def _torch_load(path: Path | str) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path}: refused by torch.load(weights_only=True) ({str(exc).splitlines()[0]}); "
            "save a state dict (torch.save(model.state_dict(), path)) rather than a pickled model"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: cannot be read as a torch checkpoint ({exc}); is the file complete?") from None


def _load_state(module: nn.Module, state: Any, where: str) -> None:
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ValueError(f"{where}: expected a state dict, got {type(state).__name__}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{where}: does not match the architecture {type(module).__name__}: "
            f"missing {list(result.missing_keys)[:5]}, unexpected {list(result.unexpected_keys)[:5]}; "
            "check arch= and num_classes"
        )


def load_checkpoint(path: str, *, arch: str | None = None, image_size: int | None = None,
                    feature_node: str | None = None, num_classes: int | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    name: str | None = None) -> TransferModel:
    """``checkpoint:<path>``: a state dict for a torchvision architecture ``arch``.

    The number of classes is read from the state dict's last 2-d weight unless
    given. Loaded with ``torch.load(weights_only=True)``.
    """
    from torchvision import models as tvm

    if not arch:
        raise ValueError(f"checkpoint:{path}: say which architecture it is for, e.g. "
                         f'load_model("checkpoint:{path}", arch="resnet18")')
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist; check the path (relative to the current directory "
                                f"{Path.cwd()})")
    state = _torch_load(p)
    inner = state
    if isinstance(inner, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(inner.get(key), dict):
                inner = inner[key]
                break
    if num_classes is None and isinstance(inner, dict):
        two_d = [v for v in inner.values() if getattr(v, "ndim", 0) == 2]
        if two_d:
            num_classes = int(two_d[-1].shape[0])
    if arch not in tvm.list_models():
        raise ValueError(f"checkpoint:{path}: unknown arch {arch!r}; see torchvision.models.list_models()")
    module = tvm.get_model(arch, weights=None, **({"num_classes": num_classes} if num_classes else {}))
    _load_state(module, state, str(p))
    return TransferModel(
        module,
        name=name or f"checkpoint:{path}",
        preprocess=Preprocess(size=image_size or 224, mean=mean or (0.485, 0.456, 0.406),
                              std=std or (0.229, 0.224, 0.225)),
        feature_node=feature_node,
    )


def as_transfer_model(obj: Any, *, name: str | None = None, preprocess: Callable[..., Any] | None = None,
                      feature_node: str | None = None, **kwargs: Any) -> TransferModel:
    """Wrap what a factory returned: a ``TransferModel`` as is, an ``nn.Module`` wrapped."""
    from torch import nn

    if isinstance(obj, TransferModel):
        if feature_node:
            obj.feature_node = feature_node
            obj.resolve_node(feature_node)
        if name:
            obj.name = name
        return obj
    if isinstance(obj, nn.Module):
        return TransferModel(obj, name=name, preprocess=preprocess, feature_node=feature_node, **kwargs)
    raise TypeError(f"expected a TransferModel or an nn.Module, got {type(obj).__name__}")


def load_model(spec: Any, *, registry: Registry | None = None, name: str | None = None,
               preprocess: Callable[..., Any] | None = None, feature_node: str | None = None,
               **kwargs: Any) -> TransferModel:
    """Build a ``TransferModel`` from a spec string or an ``nn.Module``.

    Specs: ``torchvision:<arch>[:<weights>]``, ``checkpoint:<path>`` (with
    ``arch=``), or a name registered through the
    ``pytest_transfer_register_models`` hook.

    >>> m = load_model("torchvision:resnet18:none", image_size=32)  # doctest: +SKIP
    """
    if not isinstance(spec, str):
        return as_transfer_model(spec, name=name, preprocess=preprocess, feature_node=feature_node, **kwargs)
    reg = registry if registry is not None else default_model_registry()
    if spec in reg:
        obj = reg.get(spec)(**kwargs)
        return as_transfer_model(obj, name=name or spec, preprocess=preprocess, feature_node=feature_node)
    source, _, rest = spec.partition(":")
    if source == "torchvision" and rest:
        arch, _, weights = rest.partition(":")
        model = load_torchvision(arch, weights or "DEFAULT", feature_node=feature_node, **kwargs)
    elif source == "checkpoint" and rest:
        model = load_checkpoint(rest, feature_node=feature_node, **kwargs)
    else:
        known = ", ".join(reg.list()) or "none registered"
        raise ValueError(
            f"unknown model spec {spec!r}; use torchvision:<arch>[:<weights>], checkpoint:<path> (with arch=), "
            f"or a registered name ({known})"
        )
    if preprocess is not None:
        model.preprocess = preprocess
    if name:
        model.name = name
    return model


_DEFAULT_REGISTRY: Registry | None = None


def default_model_registry() -> Registry:
    """The registry used outside pytest (inside, the plugin's registry is active)."""
    global _DEFAULT_REGISTRY
    from .context import current_context

    ctx = current_context(create=False)
    if ctx is not None:
        return ctx.models
    if _DEFAULT_REGISTRY is None:
        _DEFAULT_REGISTRY = Registry("model")
    return _DEFAULT_REGISTRY


def list_models(include: str | Sequence[str] | None = None, exclude: str | Sequence[str] | None = None, *,
                torchvision: bool = False) -> list[str]:
    """Registered model names (and, with ``torchvision=True``, ``torchvision:<arch>`` specs)."""
    names = default_model_registry().list(include=include, exclude=exclude)
    if torchvision:
        from torchvision import models as tvm

        reg = Registry("model")
        for arch in tvm.list_models():
            reg.register(f"torchvision:{arch}", lambda: None)
        names += reg.list(include=include, exclude=exclude)
    return names
