"""The published parameter tables of the common corruptions, one per benchmark and image size.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", ICLR 2019, wrote three sets of parameters, each
for its images' size (github.com/hendrycks/robustness, ``ImageNet-C/``):

* ``imagenet-c``, 224 px: ``imagenet_c/imagenet_c/corruptions.py``;
* ``tiny-imagenet-c``, 64 px: ``create_c/make_tinyimagenet_c.py``;
* ``cifar10-c``, 32 px: ``create_c/make_cifar_c.py``.

ImageNet-C's pixel parameters shrunk to 32 px vanish (a Gaussian blur of sigma
1 × 32/224 = 0.14 px changes nothing), so small images use the table written
for their size. Within a table, parameters in pixels (blur sigmas and radii,
glass-blur displacement, motion length, elastic alpha / sigma / affine, snow
flake zoom and streak, spatter blur) are scaled by ``min(H, W) / size``; the
others (noise levels, contrast, brightness, JPEG quality, pixelate factor,
zoom factors, blends) are used as published. Each table keeps its published
quirks: the elastic transform's severities are not ordered by strength in any
of the three (severity 1 is a pure affine warp in the small tables, and
ImageNet-C's "244 should have been 224").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CorruptionTable:
    """One benchmark's parameters: ``params[corruption][severity - 1]``, written for ``size``-px images."""

    name: str
    size: int
    params: dict[str, tuple[Any, ...]]


def _zooms(*counts: int, step: float = 0.01) -> tuple[tuple[float, ...], ...]:
    # what the published np.arange(1, stop, step) calls produce, float artefacts included
    return tuple(tuple(round(1 + step * i, 2) for i in range(k)) for k in counts)


def _elastic(size: int, rows: tuple[tuple[float, float, float], ...]) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(size * v for v in row) for row in rows)


IMAGENET_C = CorruptionTable("imagenet-c", 224, {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60.0, 25.0, 12.0, 5.0, 3.0),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "defocus_blur": ((3.0, 0.1), (4.0, 0.5), (6.0, 0.5), (8.0, 0.5), (10.0, 0.5)),  # (radius px, alias sigma px)
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),  # (sigma px, delta px, iterations)
    "motion_blur": ((10.0, 3.0), (15.0, 5.0), (15.0, 8.0), (15.0, 12.0), (20.0, 15.0)),  # (radius px, sigma px)
    "zoom_blur": (_zooms(12, 16) + _zooms(11, 13, step=0.02) + _zooms(11, step=0.03)),
    "gaussian_blur": (1.0, 2.0, 3.0, 4.0, 6.0),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "saturate": ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2)),
    # (alpha px, sigma px, affine px); "244 should have been 224" says the original, used as published
    "elastic_transform": _elastic(244, ((2.0, 0.7, 0.1), (2.0, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02),
                                        (0.12, 0.01, 0.02))),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (25, 18, 15, 10, 7),
    # (loc, scale, zoom, threshold, streak radius px, streak sigma px, blend)
    "snow": ((0.1, 0.3, 3.0, 0.5, 10.0, 4.0, 0.8), (0.2, 0.3, 2.0, 0.5, 12.0, 4.0, 0.7),
             (0.55, 0.3, 4.0, 0.9, 12.0, 8.0, 0.7), (0.55, 0.3, 4.5, 0.85, 12.0, 8.0, 0.65),
             (0.55, 0.3, 2.5, 0.85, 12.0, 12.0, 0.55)),
    "frost": ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),  # (image weight, frost weight)
    "fog": ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),  # (strength, wibble decay)
    # (loc, scale, blur sigma px, threshold, water intensity or mud blur sigma px, mud?)
    "spatter": ((0.65, 0.3, 4.0, 0.69, 0.6, 0), (0.65, 0.3, 3.0, 0.68, 0.6, 0), (0.65, 0.3, 2.0, 0.68, 0.5, 0),
                (0.65, 0.3, 1.0, 0.65, 1.5, 1), (0.67, 0.4, 1.0, 0.65, 1.5, 1)),
})

TINY_IMAGENET_C = CorruptionTable("tiny-imagenet-c", 64, {
    "gaussian_noise": (0.04, 0.08, 0.12, 0.15, 0.18),
    "shot_noise": (250.0, 100.0, 50.0, 30.0, 15.0),
    "impulse_noise": (0.01, 0.02, 0.05, 0.08, 0.14),
    "speckle_noise": (0.15, 0.2, 0.25, 0.3, 0.35),
    "defocus_blur": ((0.5, 0.6), (1.0, 0.1), (1.5, 0.1), (2.5, 0.01), (3.0, 0.1)),
    "glass_blur": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),
    "motion_blur": ((10.0, 1.0), (10.0, 1.5), (10.0, 2.0), (10.0, 2.5), (12.0, 3.0)),
    "zoom_blur": _zooms(7, 12, 16, 21, 26),
    "gaussian_blur": (0.5, 0.75, 1.0, 1.25, 1.5),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "saturate": ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (30.0, 0.2)),
    "elastic_transform": _elastic(64, ((0.0, 0.0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03),
                                       (0.16, 0.03, 0.02))),
    "pixelate": (0.9, 0.8, 0.7, 0.6, 0.5),
    "jpeg_compression": (65, 58, 50, 40, 25),
    "snow": ((0.1, 0.2, 1.0, 0.6, 8.0, 3.0, 0.8), (0.1, 0.2, 1.0, 0.5, 10.0, 4.0, 0.8),
             (0.15, 0.3, 1.75, 0.55, 10.0, 4.0, 0.7), (0.25, 0.3, 2.25, 0.6, 12.0, 6.0, 0.65),
             (0.3, 0.3, 1.25, 0.65, 14.0, 12.0, 0.6)),
    "frost": ((1.0, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)),
    "fog": ((0.4, 3.0), (0.7, 3.0), (1.0, 2.5), (1.5, 2.0), (2.0, 1.75)),
    "spatter": ((0.62, 0.1, 0.7, 0.7, 0.6, 0), (0.65, 0.1, 0.8, 0.7, 0.6, 0), (0.65, 0.3, 1.0, 0.69, 0.6, 0),
                (0.65, 0.1, 0.7, 0.68, 0.6, 1), (0.65, 0.1, 0.5, 0.67, 0.6, 1)),
})

CIFAR10_C = CorruptionTable("cifar10-c", 32, {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500.0, 250.0, 100.0, 75.0, 50.0),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6.0, 1.0), (6.0, 1.5), (6.0, 2.0), (8.0, 2.0), (9.0, 2.5)),
    "zoom_blur": _zooms(7, 12, 16, 21, 26),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "saturate": ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)),
    "elastic_transform": _elastic(32, ((0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                                       (0.1, 0.03, 0.03))),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "snow": ((0.1, 0.2, 1.0, 0.6, 8.0, 3.0, 0.95), (0.1, 0.2, 1.0, 0.5, 10.0, 4.0, 0.9),
             (0.15, 0.3, 1.75, 0.55, 10.0, 4.0, 0.9), (0.25, 0.3, 2.25, 0.6, 12.0, 6.0, 0.85),
             (0.3, 0.3, 1.25, 0.65, 14.0, 12.0, 0.8)),
    "frost": ((1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "fog": ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)),
    "spatter": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1.0, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
})

#: the published tables by name
CORRUPTION_TABLES: dict[str, CorruptionTable] = {t.name: t for t in (IMAGENET_C, TINY_IMAGENET_C, CIFAR10_C)}

#: the values ``table=`` / ``corruption_table`` / ``--transfer-corruption-table`` accept
TABLE_CHOICES: tuple[str, ...] = ("auto", *CORRUPTION_TABLES)


def auto_table(height: int, width: int) -> CorruptionTable:
    """The table written for the size nearest to ``min(height, width)`` on a log scale.

    So up to 45 px (√(32·64) = 45.3) ``cifar10-c``, up to 119 px (√(64·224) = 119.7)
    ``tiny-imagenet-c``, larger ``imagenet-c``.

    >>> [auto_table(s, s).name for s in (45, 46, 119, 120)]
    ['cifar10-c', 'tiny-imagenet-c', 'tiny-imagenet-c', 'imagenet-c']
    """
    side = max(1, min(int(height), int(width)))
    return min(CORRUPTION_TABLES.values(), key=lambda t: (abs(math.log(side / t.size)), -t.size))


def check_table(table: object, argname: str = "table") -> str:
    """``table`` as one of :data:`TABLE_CHOICES` (case-insensitive), else a ``ValueError`` listing them."""
    key = table.strip().lower() if isinstance(table, str) else table
    if key not in TABLE_CHOICES:
        raise ValueError(f"{argname}: unknown corruption table {table!r}; choose one of {', '.join(TABLE_CHOICES)} "
                         "('auto' picks by image size)")
    return str(key)


def resolve_table(table: str, height: int, width: int) -> CorruptionTable:
    """The table named ``table`` (validated), or :func:`auto_table` for ``"auto"``."""
    key = check_table(table)
    return auto_table(height, width) if key == "auto" else CORRUPTION_TABLES[key]


__all__ = ["CIFAR10_C", "CORRUPTION_TABLES", "IMAGENET_C", "TABLE_CHOICES", "TINY_IMAGENET_C", "CorruptionTable",
           "auto_table", "check_table", "resolve_table"]
