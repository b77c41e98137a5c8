"""``TransferModel`` and the model sources: torchvision, timm, Hugging Face, checkpoints, modules, registered names.

Submodules: :mod:`.core` (``TransferModel``, ``Preprocess``, the head and
feature node), :mod:`.fingerprint`, :mod:`.restore` (leave a module as it
was), :mod:`.state` (reading and unwrapping weights files), and one per
source: :mod:`.torchvision`, :mod:`.checkpoint`, :mod:`.timm`, :mod:`.hf`.
Importing this package imports no torch.
"""

from __future__ import annotations

from .checkpoint import load_checkpoint
from .core import PENULTIMATE, Preprocess, TensorTransform, TransferModel, find_head, head_classes, last_linear
from .hf import load_hf
from .restore import leaves_models_as_found, restored
from .sources import as_transfer_model, list_models, load_model
from .timm import load_timm
from .torchvision import hub_checkpoint_dir, load_torchvision

__all__ = [
    "PENULTIMATE", "Preprocess", "TensorTransform", "TransferModel", "as_transfer_model",
    "find_head", "head_classes", "hub_checkpoint_dir", "last_linear", "leaves_models_as_found", "list_models",
    "load_checkpoint", "load_hf", "load_model", "load_timm", "load_torchvision", "restored",
]
