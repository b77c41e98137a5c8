"""Probe fits, k-NN predictions and estimator scores, computed once and cached (:func:`cache.cached_result`).

Each function here is the cached form of a pure function of arrays
(:func:`~pytest_transfer.probes.fit_linear_probe`,
:func:`~pytest_transfer.probes.knn_predict`, a transferability estimator):
its key holds the content fingerprints of the input arrays
(:func:`~pytest_transfer.cache.array_fingerprint`), every parameter, the
source of the module that computes it and the library versions, so a
changed input, parameter or library is a miss. The gates call these rather
than the bare functions: a warm rerun reads the fits and scores of the
previous run from the disk cache instead of recomputing them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np

from .cache import array_fingerprint, cached_result
from .fingerprints import code_identity

if TYPE_CHECKING:  # pragma: no cover
    from .context import Context
    from .probes import LinearProbe


def _plain(a: np.ndarray) -> Any:
    """A 0-d array read back from an entry as the Python scalar it was written from."""
    return a.item() if a.ndim == 0 else a


def _encode_probe(probe: LinearProbe) -> dict[str, Any]:
    out = {f"standardizer.{f.name}": np.asarray(getattr(probe.standardizer, f.name))
           for f in fields(probe.standardizer)}
    out.update({f.name: np.asarray(getattr(probe, f.name)) for f in fields(probe) if f.name != "standardizer"})
    return out


def _decode_probe(arrays: dict[str, Any]) -> LinearProbe:
    from .probes import LinearProbe, Standardizer

    std = Standardizer(**{f.name: arrays[f"standardizer.{f.name}"] for f in fields(Standardizer)})
    return LinearProbe(standardizer=std, **{f.name: _plain(arrays[f.name]) for f in fields(LinearProbe)
                                            if f.name != "standardizer"})


def linear_probe(features: Any, labels: Any, *, C: float = 1.0, standardize: bool = True,
                 context: Context | None = None) -> LinearProbe:
    """:func:`~pytest_transfer.probes.fit_linear_probe` (N×D ``features``, N ``labels``), cached:
    coefficients, intercepts, the standardiser and the fit's convergence are stored."""
    from .probes import fit_linear_probe

    key = {"features": array_fingerprint(features), "labels": array_fingerprint(labels), "C": float(C),
           "standardize": bool(standardize), "code": code_identity(fit_linear_probe)}
    return cached_result("linear_probe", key,
                         lambda: fit_linear_probe(features, labels, C=C, standardize=standardize),
                         encode=_encode_probe, decode=_decode_probe, context=context, libraries=("torch",))


def knn_predictions(train_features: Any, train_labels: Any, test_features: Any, *, k: int = 20,
                    metric: str = "cosine", context: Context | None = None) -> np.ndarray:
    """:func:`~pytest_transfer.probes.knn_predict` (labels of the M test rows), cached."""
    from .probes import knn_predict

    key = {"train": array_fingerprint(train_features, train_labels), "test": array_fingerprint(test_features),
           "k": int(k), "metric": metric, "code": code_identity(knn_predict)}
    return cached_result("knn", key, lambda: knn_predict(train_features, train_labels, test_features, k=k,
                                                         metric=metric),
                         encode=lambda pred: {"pred": pred}, decode=lambda a: a["pred"], context=context)


def estimate(fn: Callable[..., float], values: Any, labels: Any, kw: dict[str, Any] | None = None, *,
             context: Context | None = None) -> float:
    """``float(fn(values, labels, **kw))`` for a transferability estimator ``fn`` (LogME, leave-one-out
    k-NN accuracy, ...), cached under its name, arguments and the fingerprints of ``values``/``labels``."""
    kw = dict(kw or {})
    key = {"metric": f"{fn.__module__}.{getattr(fn, '__qualname__', repr(fn))}", "kw": repr(sorted(kw.items())),
           "values": array_fingerprint(values), "labels": array_fingerprint(labels),
           "code": code_identity(fn)}
    return cached_result("estimate", key, lambda: float(fn(values, labels, **kw)),
                         encode=lambda v: {"value": np.float64(v)}, decode=lambda a: float(a["value"]),
                         context=context, libraries=("scipy", "sklearn"))


__all__ = ["estimate", "knn_predictions", "linear_probe"]
