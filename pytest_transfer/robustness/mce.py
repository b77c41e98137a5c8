"""Corruption Error (CE), mCE and relative mCE (Hendrycks & Dietterich, ICLR 2019).

For a model f and a reference model (AlexNet in the paper), with ``E_{s,c}``
the top-1 error under corruption ``c`` at severity ``s`` and ``E_clean`` the
clean error:

* ``CE_c = Σ_s E^f_{s,c} / Σ_s E^ref_{s,c}``; ``mCE`` is the mean of ``CE_c``
  over the corruptions.
* relative ``CE_c = Σ_s (E^f_{s,c} − E^f_clean) / Σ_s (E^ref_{s,c} − E^ref_clean)``;
  relative mCE is their mean. It measures the degradation beyond the clean
  error; it can be negative.

Values are fractions (the reference scores 1.0); the paper prints them × 100.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from ..metrics._checks import declare

#: the key under which an errors mapping may carry the clean (uncorrupted) error
CLEAN = "clean"

#: Top-1 errors of torchvision's AlexNet (the reference network of the ImageNet-C paper) on ImageNet-C,
#: per corruption, severities 1–5, and its clean ImageNet validation error.
#: Source: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
#: Perturbations", ICLR 2019, the AlexNet errors released with the benchmark; their per-corruption means
#: (0.886428 for gaussian_noise, ...) are the ``ALEXNET_ERR`` table of the AugMix reference code
#: (Hendrycks et al., ICLR 2020, google-research/augmix ``imagenet.py``) used to normalise the mCE of the
#: paper's Table 1; the per-severity split is the one timm ships as ``imagenetc_alexnet_error_rates_list``.
#: The clean error is torchvision's published AlexNet top-1 error (100 − 56.522 %), 43.5 % in the paper.
#: Use it for ImageNet-scale models evaluated with these corruptions; for other data measure a reference.
ALEXNET_ERRORS: Mapping[str, float | tuple[float, ...]] = MappingProxyType(
    {
        "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
        "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
        "impulse_noise": (0.78374, 0.89808, 0.9487, 0.9872, 0.99548),
        "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
        "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
        "motion_blur": (0.5843, 0.70048, 0.82108, 0.8975, 0.92638),
        "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
        "snow": (0.71726, 0.88392, 0.86468, 0.9187, 0.94952),
        "frost": (0.6139, 0.79734, 0.8879, 0.89942, 0.9343),
        "fog": (0.67474, 0.7605, 0.84378, 0.8726, 0.945),
        "brightness": (0.4514, 0.48502, 0.54048, 0.62166, 0.7244),
        "contrast": (0.64548, 0.7615, 0.88874, 0.9776, 0.9927),
        "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
        "pixelate": (0.52218, 0.5462, 0.73728, 0.87092, 0.91262),
        "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
        CLEAN: 0.43478,
    }
)


@dataclass(frozen=True)
class CorruptionErrorResult:
    """Per-corruption (relative) Corruption Errors and their mean; ``float(result)`` is the mean."""

    per_corruption: dict[str, float]
    mean: float
    relative: bool = False
    clean_error: float | None = field(default=None)
    reference_clean_error: float | None = field(default=None)

    def __float__(self) -> float:
        return self.mean

    @property
    def name(self) -> str:
        return "relative mCE" if self.relative else "mCE"


def _errors(value: object, where: str) -> np.ndarray:
    """A 1-d float64 array of error rates in [0, 1] (a scalar is one mean error)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()  # type: ignore[union-attr]
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected an error rate or a sequence of them, got {value!r}") from None
    if a.ndim > 1:
        raise ValueError(f"{where}: expected a scalar or a 1-d sequence of per-severity errors, got shape {a.shape}")
    a = a.reshape(-1)
    if a.size == 0:
        raise ValueError(f"{where}: is empty; give one error per severity (or their mean)")
    if not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a > 1):
        raise ValueError(
            f"{where}: error rates must be finite fractions in [0, 1], got {a.tolist()}; "
            "pass errors as fractions (0.25), not percentages (25)"
        )
    return a


def _pairs(errors: object, reference_errors: object) -> list[tuple[str, np.ndarray, np.ndarray]]:
    for name, m in (("errors", errors), ("reference_errors", reference_errors)):
        if not isinstance(m, Mapping):
            raise ValueError(
                f"{name}: expected a mapping corruption name -> per-severity errors (or their mean), "
                f"got {type(m).__name__}"
            )
    assert isinstance(errors, Mapping) and isinstance(reference_errors, Mapping)
    names = [k for k in errors if k != CLEAN]
    if not names:
        raise ValueError("errors: has no corruption entries; give e.g. {'gaussian_noise': [e1, ..., e5], ...}")
    missing = [k for k in names if k not in reference_errors]
    if missing:
        known = sorted(k for k in reference_errors if k != CLEAN)
        raise ValueError(
            f"errors and reference_errors do not match: {missing} have no reference errors; "
            f"reference_errors has {known}. Measure the reference model on the same corruptions or drop them"
        )
    out = []
    for k in names:
        e = _errors(errors[k], f"errors[{k!r}]")
        r = _errors(reference_errors[k], f"reference_errors[{k!r}]")
        if e.size > 1 and r.size > 1 and e.size != r.size:
            raise ValueError(
                f"errors[{k!r}] has {e.size} severities but reference_errors[{k!r}] has {r.size}; "
                "give both per severity on the same severities, or pass means"
            )
        out.append((k, e, r))
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> float:
    # Σ_s a / Σ_s b, or mean(a) / mean(b) when one side is a single mean (equal for equal lengths)
    if num.size == den.size:
        return float(num.sum() / den.sum())
    return float(num.mean() / den.mean())


@declare(higher_is_better=False, bounds=(0.0, math.inf))
def mce(errors: Mapping[str, object], reference_errors: Mapping[str, object] = ALEXNET_ERRORS) -> CorruptionErrorResult:
    """Mean Corruption Error: ``CE_c = Σ_s E_{s,c} / Σ_s E^ref_{s,c}``, averaged over corruptions.

    ``errors`` and ``reference_errors`` map corruption names to the top-1
    error at each severity (a sequence, usually 5 values) or to the mean over
    severities (a scalar); a ``"clean"`` entry is ignored here. Every
    corruption of ``errors`` must be in ``reference_errors`` (which may hold
    more). The default reference is :data:`ALEXNET_ERRORS`, the published
    ImageNet-C normalisation (Hendrycks & Dietterich, ICLR 2019). Returns a
    :class:`CorruptionErrorResult`; ``float(result)`` is the mCE (1.0 = as
    robust as the reference, lower is better).

    >>> r = mce({"fog": [0.1, 0.2, 0.3, 0.4, 0.5]}, {"fog": [0.3, 0.5, 0.6, 0.8, 0.8]})
    >>> round(float(r), 4), r.per_corruption
    (0.5, {'fog': 0.5})
    """
    pairs = _pairs(errors, reference_errors)
    per: dict[str, float] = {}
    for k, e, r in pairs:
        if r.sum() <= 0:
            raise ValueError(f"reference_errors[{k!r}]: is zero, so the CE ratio is undefined; use another reference")
        per[k] = _ratio(e, r)
    return CorruptionErrorResult(per, float(np.mean(list(per.values()))), relative=False)


def _clean(mapping: Mapping[str, object], explicit: float | None, argname: str, mapname: str) -> float:
    if explicit is not None:
        value = _errors(explicit, argname)
    elif CLEAN in mapping:
        value = _errors(mapping[CLEAN], f"{mapname}[{CLEAN!r}]")
    else:
        raise ValueError(
            f"{argname}: the relative mCE needs the clean error; pass {argname}=... or add a "
            f"{CLEAN!r} entry to {mapname}"
        )
    if value.size != 1:
        raise ValueError(f"{argname}: expected one clean error rate, got {value.tolist()}")
    return float(value[0])


@declare(higher_is_better=False, bounds=(-math.inf, math.inf))
def relative_mce(
    errors: Mapping[str, object],
    reference_errors: Mapping[str, object] = ALEXNET_ERRORS,
    *,
    clean_error: float | None = None,
    reference_clean_error: float | None = None,
) -> CorruptionErrorResult:
    """Relative mCE: ``Σ_s (E_{s,c} − E_clean) / Σ_s (E^ref_{s,c} − E^ref_clean)``, averaged over corruptions.

    The degradation under corruption beyond the clean error, relative to the
    reference's (Hendrycks & Dietterich, ICLR 2019). The clean errors come
    from ``clean_error`` / ``reference_clean_error`` or from a ``"clean"``
    entry of each mapping (:data:`ALEXNET_ERRORS` has one). Lower is better;
    it is negative when corruptions lower the error.

    >>> r = relative_mce({"fog": [0.3, 0.4], "clean": 0.2}, {"fog": [0.6, 0.8], "clean": 0.4})
    >>> round(float(r), 4)
    0.5
    """
    pairs = _pairs(errors, reference_errors)
    clean = _clean(errors, clean_error, "clean_error", "errors")
    ref_clean = _clean(reference_errors, reference_clean_error, "reference_clean_error", "reference_errors")
    per: dict[str, float] = {}
    for k, e, r in pairs:
        den = r - ref_clean
        if den.mean() <= 0:
            raise ValueError(
                f"reference_errors[{k!r}]: the reference's error under this corruption is not above its clean "
                f"error ({ref_clean:.4g}), so the relative CE is undefined; use another reference"
            )
        per[k] = _ratio(e - clean, den)
    return CorruptionErrorResult(
        per, float(np.mean(list(per.values()))), relative=True, clean_error=clean, reference_clean_error=ref_clean
    )
