"""Robustness: ImageNet-C corruptions, L∞ attacks and the mCE, as pure functions on tensors.

* :func:`corrupt` / :func:`corrupt_many`: the 15 ImageNet-C corruptions
  (:data:`CORRUPTIONS`) and the 4 extra ones (:data:`EXTRA_CORRUPTIONS`) at
  severities 1–5, batched on any device (Hendrycks & Dietterich, ICLR 2019),
  with the published table for the images' size (:data:`CORRUPTION_TABLES`:
  ImageNet-C 224 px, Tiny-ImageNet-C 64 px, CIFAR-10-C 32 px).
* :func:`fgsm` / :func:`pgd`: L∞ attacks in [0, 1] pixel units, through the
  model's preprocess.
* :func:`mce` / :func:`relative_mce`: corruption errors normalised by a
  reference model, by default AlexNet's published errors (:data:`ALEXNET_ERRORS`).

Importing this package imports torch and torchvision.
"""

from __future__ import annotations

from .adversarial import fgsm, pgd
from .corruptions import (
    CORRUPTION_GROUPS,
    CORRUPTIONS,
    DETERMINISTIC_CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SEVERITIES,
    corrupt,
    corrupt_many,
    resolve_corruptions,
)
from .corruptions_tables import CORRUPTION_TABLES, TABLE_CHOICES, CorruptionTable, auto_table
from .mce import ALEXNET_ERRORS, CorruptionErrorResult, mce, relative_mce

__all__ = [
    "ALEXNET_ERRORS",
    "CORRUPTIONS",
    "CORRUPTION_GROUPS",
    "CORRUPTION_TABLES",
    "DETERMINISTIC_CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "SEVERITIES",
    "TABLE_CHOICES",
    "CorruptionErrorResult",
    "CorruptionTable",
    "auto_table",
    "corrupt",
    "corrupt_many",
    "fgsm",
    "mce",
    "pgd",
    "relative_mce",
    "resolve_corruptions",
]
