"""What identifies a pass: the session memo's key (:func:`memo_base`), the disk cache's key (:func:`cache_key`),
the model's code (:func:`code_fingerprint`) and the geometric stage the images went through (:func:`geometry_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..fingerprints import code_identity

if TYPE_CHECKING:  # pragma: no cover
    from ..datasets import TargetDataset
    from ..models import TransferModel
    from .chunks import Perturbation

ENGINE_VERSION = 3  # 3: the one call convention (module dtype, dict outputs), heads by the library's notion


# --- identity ----------------------------------------------------------------

def code_fingerprint(model: TransferModel) -> str:
    """The identity of the code ``model`` runs (:func:`pytest_transfer.fingerprints.code_identity` of every
    module class in it and of its preprocess's class): an edited ``forward`` changes the outputs without
    changing a weight."""
    return code_identity(*{type(m) for m in model.module.modules()}, type(model.preprocess))


def memo_base(model: TransferModel, dataset: TargetDataset, split: str, perturbation: Perturbation | None, *,
              precision: str) -> tuple[Any, ...]:
    """The session memo's key of a pass without its taps: ``ctx.evaluations[(memo_base(...), tuple(nodes))]``."""
    return (model.fingerprint(), geometry_key(model), dataset.fingerprint(), dataset.split_fingerprint(split),
            perturbation.key if perturbation else None, perturbation.seed if perturbation else None, precision)


def geometry_key(model: TransferModel) -> str:
    """What the chunk source does to the images for ``model`` (its geometric stage's description, or
    ``"as stored"``): the images a pass reads depend on it, so the memo and the disk cache are keyed by it."""
    geometry = model.geometry
    return "as stored" if geometry is None else geometry.describe()


def cache_key(model: TransferModel, dataset: TargetDataset, split: str, perturbation: Perturbation | None,
              nodes: Sequence[str], *, precision: str, device: Any) -> dict[str, Any]:
    """The disk-cache key of a pass: everything that changes its outputs.

    Weights, preprocess and feature node (``model.fingerprint()``), the
    model's code, the geometric stage that brings the images to the model's
    input size (:func:`geometry_key`), the data, the split's indices, the perturbation and its
    seed, the taps, the precision, the device type, and the versions of
    torch and of this engine. The batch size is not part of it: results do
    not depend on it beyond float rounding.
    """
    import torch

    from .. import __version__

    return {
        "engine": ENGINE_VERSION, "pytest_transfer": __version__, "torch": torch.__version__,
        "model": model.fingerprint(), "code": code_fingerprint(model), "geometry": geometry_key(model),
        "data": dataset.fingerprint(), "split": dataset.split_fingerprint(split),
        "perturbation": perturbation.key if perturbation else None,
        "seed": perturbation.seed if perturbation else None,
        "taps": sorted(nodes), "precision": precision, "device": torch.device(device).type,
    }
