"""``checkpoint:<path>``: a state dict written by a training script, for a torchvision architecture."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .core import Preprocess, TransferModel, find_head, refuse_near_misses
from .state import SUFFIXES, load_into, read_weights, strip_shared_prefixes, unwrap_state_dict, weights_suffix
from .torchvision import IMAGENET_MEAN, IMAGENET_STD, check_arch, seeded_build


def _classes_from_state(state: dict[str, Any], arch: str, builder_kwargs: dict[str, Any]) -> int | None:
    """The output size of the head stored in ``state``, found by name: the head of ``arch``
    (:func:`~pytest_transfer.models.core.find_head` on the architecture built on the meta device, no memory)
    and its ``.weight`` in the file, after the wrapper prefixes are stripped. Key order plays no part
    (safetensors sorts its keys). ``None`` when the architecture has no head or the file lacks its weight."""
    import torch
    from torchvision import models as tvm

    with torch.device("meta"):
        skeleton = tvm.get_model(arch, weights=None, **builder_kwargs)
    head = find_head(skeleton)
    if head is None:
        return None
    state, _ = strip_shared_prefixes(state, set(skeleton.state_dict()))
    weight = state.get(f"{head[0]}.weight" if head[0] else "weight")
    return int(weight.shape[0]) if getattr(weight, "ndim", 0) >= 2 else None


def load_checkpoint(path: str, *, arch: str | None = None, image_size: int | None = None,
                    feature_node: str | None = None, num_classes: int | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    name: str | None = None, seed: int = 0, **builder_kwargs: Any) -> TransferModel:
    """``checkpoint:<path>``: the weights a training script saved, for the torchvision architecture ``arch``.

    Reads ``.pt`` / ``.pth`` / ``.ckpt`` / ``.bin`` / ``.pth.tar``
    (``model_best.pth.tar``) with ``torch.load(weights_only=True)`` and
    ``.safetensors`` with safetensors;
    opens ``state_dict`` / ``model_state_dict`` / ``model`` containers
    (PyTorch Lightning, training loops) and strips a prefix shared by every
    key (``module.``, ``_orig_mod.``, ``model.``, stacked); see
    :mod:`pytest_transfer.models.state`. ``num_classes`` is read from the
    file's weight of ``arch``'s head, found by name, unless given. ``preprocess`` resizes to a square
    ``image_size`` (default 224) and normalises with ``mean`` / ``std``
    (default ImageNet's); pass ``preprocess=`` to ``load_model`` for your own.
    Raises ``ValueError`` with a few missing and unexpected keys when the
    file does not fit ``arch``. ``seed`` seeds the module's construction
    (the spec passes the session's ``--transfer-seed``).
    """
    from torchvision import models as tvm

    if not arch:
        raise ValueError(f"checkpoint:{path}: say which architecture it is for, e.g. "
                         f'load_model("checkpoint:{path}", arch="resnet18")')
    refuse_near_misses(builder_kwargs, ("arch", "image_size", "feature_node", "num_classes", "mean", "std",
                                        "name", "seed"), f"checkpoint:{path}")
    p = Path(path)
    if p.is_file() and weights_suffix(p) is None:
        raise ValueError(f"checkpoint:{path}: unknown weights file type {''.join(p.suffixes) or p.name!r}; "
                         f"expected one of {', '.join(SUFFIXES)}")
    state = unwrap_state_dict(read_weights(p), str(p))
    check_arch(arch, f"checkpoint:{path}: arch=")
    if num_classes is None:
        num_classes = _classes_from_state(state, arch, builder_kwargs)
    kwargs = {**builder_kwargs, **({"num_classes": num_classes} if num_classes else {})}
    module = seeded_build(int(seed), lambda: tvm.get_model(arch, weights=None, **kwargs))
    load_into(module, state, str(p), hint="Check arch= and num_classes=, and that the file holds this model's "
                                         "state dict (torch.save(model.state_dict(), path))")
    return TransferModel(
        module,
        name=name or f"checkpoint:{path}",
        preprocess=Preprocess(size=image_size or 224, mean=mean or IMAGENET_MEAN, std=std or IMAGENET_STD),
        feature_node=feature_node,
    )
