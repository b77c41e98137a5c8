"""``checkpoint:<path>``: a state dict written by a training script, for a torchvision architecture."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .core import Preprocess, TransferModel
from .state import SUFFIXES, load_into, read_weights, unwrap_state_dict
from .torchvision import IMAGENET_MEAN, IMAGENET_STD, check_arch, seeded_build, session_seed


def _classes_from_state(state: dict[str, Any]) -> int | None:
    """The rows of the last 2-d weight (a linear head's output size), if any."""
    two_d = [v for k, v in state.items() if getattr(v, "ndim", 0) == 2 and k.endswith("weight")]
    return int(two_d[-1].shape[0]) if two_d else None


def load_checkpoint(path: str, *, arch: str | None = None, image_size: int | None = None,
                    feature_node: str | None = None, num_classes: int | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    name: str | None = None, **builder_kwargs: Any) -> TransferModel:
    """``checkpoint:<path>``: the weights a training script saved, for the torchvision architecture ``arch``.

    Reads ``.pt`` / ``.pth`` / ``.ckpt`` / ``.bin`` with
    ``torch.load(weights_only=True)`` and ``.safetensors`` with safetensors;
    opens ``state_dict`` / ``model_state_dict`` / ``model`` containers
    (PyTorch Lightning, training loops) and strips a prefix shared by every
    key (``module.``, ``_orig_mod.``, ``model.``, stacked); see
    :mod:`pytest_transfer.models.state`. ``num_classes`` is read from the
    last 2-d weight unless given. ``preprocess`` resizes to a square
    ``image_size`` (default 224) and normalises with ``mean`` / ``std``
    (default ImageNet's); pass ``preprocess=`` to ``load_model`` for your own.
    Raises ``ValueError`` with a few missing and unexpected keys when the
    file does not fit ``arch``.
    """
    from torchvision import models as tvm

    if not arch:
        raise ValueError(f"checkpoint:{path}: say which architecture it is for, e.g. "
                         f'load_model("checkpoint:{path}", arch="resnet18")')
    p = Path(path)
    if p.is_file() and p.suffix not in SUFFIXES:
        raise ValueError(f"checkpoint:{path}: unknown weights file type {p.suffix!r}; expected one of "
                         f"{', '.join(SUFFIXES)}")
    state = unwrap_state_dict(read_weights(p), str(p))
    check_arch(arch, f"checkpoint:{path}: arch=")
    if num_classes is None:
        num_classes = _classes_from_state(state)
    kwargs = {**builder_kwargs, **({"num_classes": num_classes} if num_classes else {})}
    module = seeded_build(session_seed(), lambda: tvm.get_model(arch, weights=None, **kwargs))
    load_into(module, state, str(p), hint="Check arch= and num_classes=, and that the file holds this model's "
                                         "state dict (torch.save(model.state_dict(), path))")
    return TransferModel(
        module,
        name=name or f"checkpoint:{path}",
        preprocess=Preprocess(size=image_size or 224, mean=mean or IMAGENET_MEAN, std=std or IMAGENET_STD),
        feature_node=feature_node,
    )
