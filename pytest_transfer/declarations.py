"""The declaration of every gate: its name, label, direction, threshold keys with their valid ranges, and export.

This table is the one place a gate is declared. Everything that lists gates is
built from it: the threshold keys and their valid ranges
(:data:`pytest_transfer.thresholds.KNOWN_KEYS`, hence config validation), the
keys a suggestion run writes as maxima (:data:`pytest_transfer.suggest.LOWER_IS_BETTER`),
the package's lazy exports (``pytest_transfer.__init__``) and the labels reports
use (:func:`label`). The gate functions read their key, name, label and
direction from their declaration (``NOISE.key``, ``NOISE.name``, ...).
Transferability estimators are declared in :mod:`pytest_transfer.estimators`;
the transferability gate's keys are theirs. Transfer methods are declared here too
(:data:`TRANSFER_METHODS`: a name and the class that implements it): the
transfer-accuracy gate's ``<method>_accuracy`` keys are theirs.

It imports only the standard library (and :mod:`pytest_transfer.estimators`,
which does too): validating a config and ``import pytest_transfer`` never
import numpy or torch.

To add a gate: one :func:`declare_gate` row here, and its function (named by
``export``, in ``module``) that opens the gate with ``keys=(DECL.key,)`` and
finishes it with ``gate=DECL.name``, ``higher_is_better=DECL.higher_is_better``.
The derived tables take the declarations as an argument (default: :data:`GATES`),
so a test can check a new declaration without changing the package's tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .estimators import ESTIMATORS, Estimator

INF = math.inf
UNIT = (0.0, 1.0)


@dataclass(frozen=True)
class ThresholdKey:
    """A config key a gate reads its threshold from: ``bounds`` is the valid range ``(low, high)`` (an infinite
    end: unbounded); ``higher_is_better`` is ``False`` when the threshold is a maximum (a drop, an error)."""

    name: str
    bounds: tuple[float, float]
    higher_is_better: bool


@dataclass(frozen=True)
class GateDeclaration:
    """One gate as declared.

    ``name`` is what its measurements record as ``gate``; ``label`` how messages
    and reports name it (gates add their parameters: ``"Transfer accuracy (knn)"``);
    ``higher_is_better`` its direction (``False``: the value must stay at or below
    the threshold); ``keys`` its config keys, the general one first (a gate may
    look up a more specific one before it, e.g. ``knn_accuracy`` before
    ``transfer_accuracy``); ``export`` the public function, found in
    ``pytest_transfer.<module>``.
    """

    name: str
    label: str
    higher_is_better: bool
    export: str
    module: str
    keys: tuple[ThresholdKey, ...] = ()

    @property
    def key(self) -> str:
        """The gate's general config key (``ValueError`` for a gate whose threshold is an argument only)."""
        if not self.keys:
            raise ValueError(f"gate {self.name!r} has no config key: its threshold is an argument")
        return self.keys[0].name


def declare_gate(name: str, label: str, *, higher_is_better: bool, export: str, module: str,
                 keys: Mapping[str, tuple[float, float]] | None = None) -> GateDeclaration:
    """A :class:`GateDeclaration` whose ``keys`` (name → valid range) share the gate's direction."""
    return GateDeclaration(name, label, higher_is_better, export, module, tuple(
        ThresholdKey(key, bounds, higher_is_better) for key, bounds in (keys or {}).items()))


def estimator_keys(estimators: Iterable[Estimator]) -> tuple[ThresholdKey, ...]:
    """The threshold key of each transferability estimator: its name, range and direction."""
    return tuple(ThresholdKey(e.name, e.bounds, e.higher_is_better) for e in estimators)


@dataclass(frozen=True)
class MethodDeclaration:
    """One transfer method as declared: ``name`` is what gates take as ``method=`` (and record in
    ``details["method"]``, and read the ``<name>_accuracy`` threshold key for); ``cls`` its class, a
    :class:`~pytest_transfer.methods.TransferMethod` found in ``pytest_transfer.<module>`` (imported when
    :func:`~pytest_transfer.methods.get_method` first asks for it)."""

    name: str
    cls: str
    module: str


#: every transfer method, in the order error messages list them: the one place a method's name is written
TRANSFER_METHODS: dict[str, MethodDeclaration] = {m.name: m for m in (
    MethodDeclaration("linear_probe", "LinearProbeMethod", "methods.features"),
    MethodDeclaration("knn", "KNNMethod", "methods.features"),
    MethodDeclaration("direct", "DirectMethod", "methods.direct"),
    MethodDeclaration("finetune", "FinetuneMethod", "methods.finetune"),
)}

TRANSFER_ACCURACY = declare_gate(
    "transfer_accuracy", "Transfer accuracy", higher_is_better=True,
    export="assert_transfer_accuracy_above", module="assertions",
    # the general key, then one per transfer method (TRANSFER_METHODS): "<method>_accuracy" is looked up first
    keys={"transfer_accuracy": UNIT, **{f"{name}_accuracy": UNIT for name in TRANSFER_METHODS}})
F1 = declare_gate("f1", "F1", higher_is_better=True, export="assert_f1_above", module="assertions",
                  keys={"f1": UNIT})
NOISE = declare_gate("noise_max_drop", "Accuracy drop under Gaussian noise", higher_is_better=False,
                     export="assert_robust_under_noise", module="assertions", keys={"noise_max_drop": UNIT})
CORRUPTION = declare_gate("corruption_max_drop", "Accuracy drop under corruption", higher_is_better=False,
                          export="assert_robust_under_corruption", module="gates.robustness",
                          keys={"corruption_max_drop": UNIT})
MCE = declare_gate("max_mce", "Mean corruption error", higher_is_better=False, export="assert_mce_below",
                   module="gates.robustness", keys={"max_mce": (0.0, INF), "max_relative_mce": (-INF, INF)})
ATTACK = declare_gate("attack_min_accuracy", "Accuracy under attack", higher_is_better=True,
                      export="assert_robust_under_attack", module="gates.robustness",
                      keys={"attack_min_accuracy": UNIT})
TRANSFERABILITY = GateDeclaration("transferability", "Transferability", True, "assert_transferability_above",
                                  "gates.transferability", estimator_keys(ESTIMATORS.values()))
"""Its keys are the estimators' (each with its own range and direction); ``key`` is the first estimator's."""
RANKS_ABOVE = declare_gate("ranks_above", "Lead over the reference model", higher_is_better=True,
                           export="assert_ranks_above", module="gates.transferability")
SHIFT = declare_gate("shift_max_drop", "Accuracy drop under dataset shift", higher_is_better=False,
                     export="drop_in_performance", module="gates.shift")
LAYER_TRANSFER = declare_gate("layer_transfer", "Transfer accuracy at a layer", higher_is_better=True,
                              export="assert_layer_transfer_above", module="gates.layers",
                              keys={"layer_accuracy": UNIT})
REGRESSION = declare_gate("regression", "Regression against the stored baseline", higher_is_better=False,
                          export="assert_no_regression", module="gates.regression",
                          # the smallest drop that counts as a regression: a maximum of the measured drop
                          keys={"regression_min_effect": UNIT})

GATES: dict[str, GateDeclaration] = {g.name: g for g in (
    TRANSFER_ACCURACY, F1, NOISE, CORRUPTION, MCE, ATTACK, TRANSFERABILITY, RANKS_ABOVE, SHIFT, LAYER_TRANSFER,
    REGRESSION,
)}
"""Every gate by the name its measurements record."""


def _gates(gates: Mapping[str, GateDeclaration] | None) -> Iterable[GateDeclaration]:
    return (GATES if gates is None else gates).values()


def threshold_keys(gates: Mapping[str, GateDeclaration] | None = None) -> dict[str, ThresholdKey]:
    """Every config key of ``gates`` (default :data:`GATES`) by name.

    A key two gates declare (``knn_accuracy``: the k-NN transfer accuracy and
    the leave-one-out estimator) must have one range and one direction: a
    ``ValueError`` names both gates otherwise.
    """
    out: dict[str, ThresholdKey] = {}
    owner: dict[str, str] = {}
    for gate in _gates(gates):
        for key in gate.keys:
            seen = out.setdefault(key.name, key)
            if seen != key:
                raise ValueError(f"threshold key {key.name!r} is declared twice, differently: {seen} by gate "
                                 f"{owner[key.name]!r}, {key} by gate {gate.name!r}; declare it one way")
            owner.setdefault(key.name, gate.name)
    return out


def known_keys(gates: Mapping[str, GateDeclaration] | None = None) -> dict[str, tuple[float, float]]:
    """Config key → valid range ``(low, high)``: what :data:`pytest_transfer.thresholds.KNOWN_KEYS` holds."""
    return {name: key.bounds for name, key in threshold_keys(gates).items()}


def lower_is_better(gates: Mapping[str, GateDeclaration] | None = None) -> frozenset[str]:
    """The config keys whose threshold is a maximum (the gate passes at or below it)."""
    return frozenset(name for name, key in threshold_keys(gates).items() if not key.higher_is_better)


def lazy_exports(gates: Mapping[str, GateDeclaration] | None = None) -> dict[str, str]:
    """Public name → the module (relative to ``pytest_transfer``) that defines it, one per gate."""
    return {gate.export: gate.module for gate in _gates(gates)}


def label(name: str, gates: Mapping[str, GateDeclaration] | None = None) -> str:
    """How reports name a metric or a gate: an estimator's declared label, a gate's, else ``name`` as it is.

    >>> label("logme"), label("noise_max_drop"), label("layer_accuracy")
    ('LogME', 'Accuracy drop under Gaussian noise', 'layer_accuracy')
    """
    if name in ESTIMATORS:
        return ESTIMATORS[name].label
    found = (GATES if gates is None else gates).get(name)
    return found.label if found is not None else name


__all__ = [
    "ATTACK", "CORRUPTION", "F1", "GATES", "LAYER_TRANSFER", "MCE", "NOISE", "RANKS_ABOVE", "REGRESSION", "SHIFT",
    "TRANSFERABILITY", "TRANSFER_ACCURACY", "TRANSFER_METHODS", "GateDeclaration", "MethodDeclaration", "ThresholdKey",
    "declare_gate", "estimator_keys",
    "known_keys", "label", "lazy_exports", "lower_is_better", "threshold_keys",
]
