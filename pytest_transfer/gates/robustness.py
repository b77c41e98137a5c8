"""Robustness gates: accuracy drop under ImageNet-C corruptions, mCE, and accuracy under L∞ attacks.

* :func:`assert_robust_under_corruption`: one corruption at one severity is
  the noise gate's mechanism (:func:`pytest_transfer.assertions.drop_gate`:
  clean minus corrupted accuracy on the same samples, Newcombe's paired
  interval). A group (``noise``, ``blur``, ``weather``, ``digital``),
  ``"all"``, a list, or several severities gate the **mean drop over the
  selected corruption × severity cells**, ``clean accuracy − mean cell
  accuracy``; its interval is :func:`~pytest_transfer.metrics.stats.bounded_mean_interval`
  of the per-sample ``correct_clean(i) − mean over cells of correct_cell(i)``
  in [−1, 1] (the mean of these differences is exactly the mean drop;
  weighting samples keeps every cell paired with the clean result and the
  cells' correlation, which a mean of per-cell intervals would ignore; the
  pseudo-sample at the bound keeps it honest when no sample dropped, where
  a percentile bootstrap gave [0, 0]). All cells
  come from one :func:`~pytest_transfer.robustness.sweep.corruption_sweep`
  (one data load, one pass). Threshold key ``corruption_max_drop``.
* :func:`assert_mce_below`: the mCE of Hendrycks & Dietterich (ICLR 2019)
  against a reference measured in the same run (a model) or supplied errors
  (default: AlexNet's published ImageNet-C errors, meaningful for
  ImageNet-scale models only). Threshold key ``max_mce``.
* :func:`assert_robust_under_attack`: accuracy under FGSM or PGD (L∞, eps in
  [0, 1] pixel units, applied before preprocess) of the model's own head
  (``direct``) or of the backbone with its clean-fitted linear probe as the
  head (``linear_probe``). Wilson interval; threshold key ``attack_min_accuracy``.

Every gate records ``details["curves"]`` (``{corruption: {"x": severities,
"y": accuracies}}``), ``details["robustness"]`` (the HTML report's
accuracy-vs-severity plot data) and ``details["clean_accuracy"]`` when it
swept corruptions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..api import resolve_pair, session
from ..assertions import drop_gate
from ..cache import cached_result
from ..context import Context, Measurement
from ..declarations import ATTACK, CORRUPTION, MCE
from ..engine.passes import pool_features
from ..fingerprints import code_identity
from ..methods import get_method
from ..metrics.stats import bayesian_bootstrap_interval, bounded_mean_interval
from ..models import leaves_models_as_found
from ..models.call import module_dtype, tap_tensor, to_module_dtype
from ..robustness import fgsm, pgd
from ..robustness.mce import ALEXNET_ERRORS, CLEAN
from ..robustness.perturbations import corruption as corruption_perturbation
from ..robustness.sweep import (
    SweepResult,
    corruption_error,
    corruption_sweep,
    reference_errors,
    resolve_severities,
)
from .core import open_gate

if TYPE_CHECKING:  # pragma: no cover
    from ..datasets import TargetDataset
    from ..methods import TransferMethod
    from ..models import TransferModel

ATTACKS = ("pgd", "fgsm")
ATTACK_METHODS = ("linear_probe", "direct")
ALEXNET_SOURCE = "AlexNet's published ImageNet-C errors (Hendrycks & Dietterich, ICLR 2019)"


def _sweep_details(res: SweepResult) -> dict[str, Any]:
    return {"corruptions": list(res.corruptions), "severities": list(res.severities),
            "clean_accuracy": res.clean_accuracy, "table": res.to_dict()["accuracy"],
            "curves": res.curves(), "robustness": res.plot_data(), "seed": res.seed}


def _describe(corruption: Any, levels: tuple[int, ...], names: tuple[str, ...]) -> str:
    spec = corruption if isinstance(corruption, str) else ", ".join(names)
    sev = f"severity {levels[0]}" if len(levels) == 1 else f"severities {', '.join(map(str, levels))}"
    what = spec if len(names) == 1 else f"{spec} ({len(names)} corruptions)"
    return f"{what}, {sev}"


# --- corruption gate ---------------------------------------------------------------

def _worst_cells(res: Any) -> str:
    """"the worst cell is fog at severity 5 (accuracy 0.41)", naming every cell tied for worst (up to 3)."""
    accuracy = {cell: float(np.mean(res.correct[cell])) for cell in res.cells}
    low = min(accuracy.values())
    tied = [cell for cell in res.cells if accuracy[cell] == low]
    named = ", ".join(f"{name} at severity {level}" for name, level in tied[:3])
    if len(tied) > 3:
        named += f" and {len(tied) - 3} more"
    return (f"the worst cell is {named}" if len(tied) == 1 else f"{len(tied)} cells tie for worst: {named}") + \
        f" (accuracy {low:.4f})"


def _split_hint(cells: list[tuple[str, int]]) -> str:
    """How to find the failing part of a gate over several cells: by group, by corruption or by severity."""
    from ..robustness import CORRUPTION_GROUPS

    names = {name for name, _ in cells}
    group_of = {name: group for group, members in CORRUPTION_GROUPS.items() for name in members}
    if len({group_of.get(name, name) for name in names}) > 1:
        return "gate each group separately to see which one fails"
    if len(names) > 1:
        return "gate each corruption separately to see which one fails"
    return "gate each severity separately to see where the drop begins"


def assert_robust_under_corruption(model: Any, dataset: Any, corruption: str | Iterable[str],
                                   severity: int | str | Iterable[int], *, max_drop: float | None = None,
                                   relative: bool = False, method: str = "linear_probe", split: str = "test",
                                   seed: int | None = None, confidence: str | None = None,
                                   k: int = 20, corruption_table: str | None = None) -> Measurement:
    """Gate on the accuracy drop under ImageNet-C corruptions applied to the [0, 1] images before preprocess.

    ``corruption`` is one corruption (``"fog"``), a group (``"noise"``,
    ``"blur"``, ``"weather"``, ``"digital"``), ``"extra"``, ``"all"`` (the 15
    of ImageNet-C) or a list; ``severity`` is a level 1–5, a list of levels or
    ``"all"``. One cell: ``drop = clean − corrupted accuracy`` with Newcombe's
    paired interval, as :func:`~pytest_transfer.assertions.assert_robust_under_noise`.
    Several cells: the mean drop over the cells, ``clean − mean cell
    accuracy``, with a paired interval over samples that stays honest when no
    sample dropped (see the module docstring). ``relative=True`` divides by the clean accuracy. The
    threshold is ``max_drop`` or the config key ``corruption_max_drop``.
    Probe methods train on clean features and score corrupted ones.
    ``corruption_table`` picks the published parameters (``auto`` by image
    size, ``imagenet-c``, ``tiny-imagenet-c``, ``cifar10-c``); default
    ``--transfer-corruption-table``.

    >>> assert_robust_under_corruption(model, "digits", "fog", 3, max_drop=0.1)  # doctest: +SKIP
    >>> assert_robust_under_corruption(model, "digits", "all", "all", max_drop=0.2)  # doctest: +SKIP
    """
    __tracebackhide__ = True
    from ..robustness import resolve_corruptions

    transfer = get_method(method, k=k)
    names = resolve_corruptions(corruption)
    levels = resolve_severities(severity, "severity")
    g = open_gate(model, dataset, threshold=max_drop, argument="max_drop", keys=(CORRUPTION.key,),
                  confidence=confidence)
    ctx, model, dataset = g.ctx, g.model, g.dataset
    seed = int(ctx.settings.seed if seed is None else seed)
    res = corruption_sweep(model, dataset, names, levels, method=transfer, split=split, seed=seed, context=ctx,
                           corruption_table=corruption_table)
    what = _describe(corruption, levels, names)
    details = _sweep_details(res)
    worst = min(res.cells, key=lambda cell: float(np.mean(res.correct[cell])))  # the first of any tied
    worst_acc = float(np.mean(res.correct[worst]))
    hint = "train with corruption augmentation (AugMix, noise)"
    if len(res.cells) > 1:
        hint = f"{_worst_cells(res)}; {hint}, or {_split_hint(res.cells)}"
    if len(res.cells) == 1:
        name, level = res.cells[0]
        return drop_gate(
            g, perturbation=corruption_perturbation(name, level, seed=seed, table=res.table), method=transfer,
            split=split, relative=relative, gate=CORRUPTION.name,
            label=f"{CORRUPTION.label} {name} (severity {level})",
            details={"corruption": name, "severity": level, **details}, hint=hint,
        )

    clean = res.clean_correct.astype(np.float64)
    cells = res.cell_matrix().astype(np.float64).mean(axis=1)  # per sample: mean correctness over the cells
    acc_clean, acc_cells = float(clean.mean()), float(cells.mean())
    if relative and acc_clean == 0:
        raise ValueError(f"relative drop is undefined: clean accuracy of {model.name!r} on {dataset.name!r} is 0")

    value = (acc_clean - acc_cells) / (acc_clean if relative else 1.0)
    # per sample: clean correctness − mean correctness over the cells, in [−1, 1]
    interval = bounded_mean_interval(clean - cells, bounds=(-1.0, 1.0), confidence=ctx.settings.confidence_level,
                                     seed=ctx.settings.seed)
    if relative:
        interval = (interval[0] / acc_clean, interval[1] / acc_clean)
    info = {"method": method, "split": split, "n": res.n, "clean_accuracy": acc_clean,
            "perturbed_accuracy": acc_cells, "relative": relative, "aggregate": "mean drop over cells",
            "interval_method": "Bayesian bootstrap with a pseudo-sample at the bound (Clopper-Pearson for 0/1)",
            "worst_cell": [worst[0], worst[1]],
            "worst_accuracy": worst_acc, **details}
    return g.finish(
        gate=CORRUPTION.name, metric=CORRUPTION.key,
        label=f"Mean accuracy drop under corruptions {what}", value=value, interval=interval,
        higher_is_better=CORRUPTION.higher_is_better, details=info,
        hint=f"clean accuracy {acc_clean:.4f}, mean corrupted {acc_cells:.4f}; {hint}",
    )


# --- mCE gate ------------------------------------------------------------------------

def _errors_of(matrix: np.ndarray, names: tuple[str, ...], levels: tuple[int, ...],
               weights: np.ndarray | None = None) -> dict[str, Any]:
    """Errors ``{corruption: (e_s...), "clean": e}`` from an ``n × (1 + cells)`` correctness matrix (rows weighted
    by ``weights`` when given)."""
    err = 1.0 - (matrix.mean(axis=0) if weights is None else np.clip(weights @ matrix / weights.sum(), 0.0, 1.0))
    out: dict[str, Any] = {CLEAN: float(err[0])}
    for i, name in enumerate(names):
        out[name] = tuple(float(e) for e in err[1 + i * len(levels): 1 + (i + 1) * len(levels)])
    return out


def _reference(reference: Any, model: TransferModel, dataset: TargetDataset, *, names: tuple[str, ...],
               levels: tuple[int, ...], method: TransferMethod, split: str, seed: int, ctx: Context,
               table: str | None = None) -> tuple[SweepResult | Mapping[str, Any], str]:
    if reference is None or (isinstance(reference, str) and reference.lower() == "alexnet"):
        return ALEXNET_ERRORS, ALEXNET_SOURCE
    if isinstance(reference, SweepResult):
        return reference, f"measured: {reference.model}"
    if isinstance(reference, Mapping):
        return reference, "supplied errors"
    ref_model, _ = resolve_pair(reference, dataset, ctx)
    if ref_model.fingerprint() == model.fingerprint():
        raise ValueError(f"reference: is the model under test ({model.name!r}) itself; pass another model, "
                         "a mapping of errors, or None for AlexNet's published errors")
    res = corruption_sweep(ref_model, dataset, names, levels, method=method, split=split, seed=seed, context=ctx,
                           corruption_table=table)
    return res, f"measured: {ref_model.name}"


def assert_mce_below(model: Any, dataset: Any, max_mce: float | None = None, *, reference: Any = None,
                     corruptions: str | Iterable[str] = "all", severities: int | str | Iterable[int] = "all",
                     relative: bool = False, method: str = "linear_probe", split: str = "test",
                     seed: int | None = None, confidence: str | None = None, k: int = 20,
                     C: float = 1.0, corruption_table: str | None = None) -> Measurement:
    """Gate on the mean Corruption Error (Hendrycks & Dietterich, ICLR 2019): it must not exceed ``max_mce``.

    ``CE_c = Σ_s E_{s,c} / Σ_s E^ref_{s,c}`` over the swept severities, mCE
    = mean over corruptions; 1.0 means "as robust as the reference", lower is
    better. ``relative=True`` gates the relative mCE (degradation beyond the
    clean error).

    ``reference``: ``None`` or ``"alexnet"`` uses :data:`ALEXNET_ERRORS`, the
    published AlexNet ImageNet-C errors: an allowed default for ImageNet-scale
    models on ImageNet-like data, not for a probe on small images; a model
    (``TransferModel``, ``nn.Module`` or spec) is measured in the same run
    with the same method, corruptions, severities and seed; a mapping
    supplies errors per corruption (per severity or a mean, plus ``"clean"``
    for the relative mCE); a :class:`~pytest_transfer.robustness.sweep.SweepResult`
    is used as measured. The threshold is ``max_mce`` or the config key
    ``max_mce``. With a confidence mode the interval is a seeded Bayesian
    bootstrap over test samples with one pseudo-sample at each limit (the
    model's and a measured reference's errors weighted together;
    :func:`~pytest_transfer.metrics.stats.bayesian_bootstrap_interval`):
    honest when the model makes no error, where a percentile bootstrap
    gave [0, 0].

    >>> assert_mce_below(model, "digits", 0.9, reference="torchvision:resnet18:none")  # doctest: +SKIP
    """
    __tracebackhide__ = True
    from ..robustness import resolve_corruptions

    transfer = get_method(method, k=k, C=C)
    names = resolve_corruptions(corruptions)
    levels = resolve_severities(severities)
    g = open_gate(model, dataset, threshold=max_mce, argument="max_mce",
                  keys=(MCE.keys[1].name if relative else MCE.key,), confidence=confidence)  # max_relative_mce, max_mce
    ctx, model, dataset = g.ctx, g.model, g.dataset
    seed = int(ctx.settings.seed if seed is None else seed)
    res = corruption_sweep(model, dataset, names, levels, method=transfer, split=split, seed=seed, context=ctx,
                           corruption_table=corruption_table)
    ref, source = _reference(reference, model, dataset, names=names, levels=levels, method=transfer, split=split,
                             seed=seed, ctx=ctx, table=res.table)
    result = res.mce(ref, relative=relative)
    interval = None
    if g.wants_interval:
        mine = np.column_stack([res.clean_correct, res.cell_matrix()]).astype(np.float64)
        fixed = None if isinstance(ref, SweepResult) else reference_errors(ref, names, levels)

        def statistic(w: np.ndarray, m: np.ndarray, r: np.ndarray | None = None) -> float:
            other = fixed if r is None else _errors_of(r, names, levels, w)
            return float(corruption_error(_errors_of(m, names, levels, w), other, relative=relative))

        arrays = [mine]
        if isinstance(ref, SweepResult):
            if ref.n != res.n:
                raise ValueError("reference: the reference sweep has other samples; sweep it on the same split")
            arrays.append(np.column_stack([ref.clean_correct, ref.cell_matrix()]).astype(np.float64))
        # pseudo-samples: the best and the worst row for the model (the reverse for a measured reference)
        best, worst = np.ones(mine.shape[1]), np.zeros(mine.shape[1])
        if relative:  # the degradation beyond the clean error: clean right and every cell wrong is the worst,
            best[0], worst[0] = 0.0, 1.0  # clean wrong and every cell right the best
        interval = bayesian_bootstrap_interval(statistic, *arrays, pseudo=((best, worst)[: len(arrays)],
                                                                            (worst, best)[: len(arrays)]),
                                               confidence=ctx.settings.confidence_level, seed=ctx.settings.seed)
    details = {"method": method, "split": split, "n": res.n, "relative": relative, "reference": source,
               "per_corruption": result.per_corruption, **_sweep_details(res)}
    if isinstance(ref, SweepResult):
        details["reference_clean_accuracy"] = ref.clean_accuracy
        details["reference_table"] = ref.to_dict()["accuracy"]
    worst = max(result.per_corruption, key=result.per_corruption.__getitem__)
    return g.finish(
        gate=MCE.name, metric="relative_mce" if relative else "mce", label=result.name,
        value=float(result), interval=interval, higher_is_better=MCE.higher_is_better, details=details,
        hint=f"reference: {source}; the worst corruption is {worst} (CE {result.per_corruption[worst]:.4f}); "
             "train with corruption augmentation, or compare against a reference measured on this data",
    )


# --- attack gate ---------------------------------------------------------------------

class _StopForward(Exception):
    """Raised by the feature hook: the layers after the feature node are not needed."""


class ProbeHeadModel(nn.Module):
    """``images in [0, 1] → preprocess → backbone up to its feature node → head``: an attackable classifier.

    The features are read by a hook on the model's feature node and pooled
    as the engine pools them (spatial mean of a 4-d activation), so a linear
    probe's :meth:`~pytest_transfer.metrics.probes.LinearProbe.torch_head` sees what
    it was fitted on; the layers after the node are skipped. Gradients flow
    to the images.
    """

    input_dtype = torch.float32  # takes [0, 1] float32 images; the backbone is fed its own dtype in features()

    def __init__(self, model: TransferModel, head: nn.Module) -> None:
        super().__init__()
        self.backbone = model.module
        self.backbone_dtype = module_dtype(model.module)
        self.head = head
        self.inputs = model.inputs  # channels made the module's, then preprocess
        self.node, self.want_input = model.resolve_node(model.feature_node)
        self.label = f"feature node {model.feature_node!r} of {model.name!r}"
        self.eval()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        box: list[torch.Tensor] = []

        def grab(t: Any) -> None:
            box.append(pool_features(tap_tensor(t)).float())
            raise _StopForward

        sub = self.backbone.get_submodule(self.node)
        if self.want_input:
            handle = sub.register_forward_pre_hook(lambda _m, args: grab(args[0]))
        else:
            handle = sub.register_forward_hook(lambda _m, _args, out: grab(out))
        try:
            self.backbone(to_module_dtype(self.inputs(images), self.backbone_dtype))
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not box:
            raise ValueError(f"{self.label} was not reached by the forward pass")
        return box[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _batch_seed(seed: int, batch: int) -> int:
    digest = hashlib.blake2b(f"attack|{seed}|{batch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def _check_attack(attack: str, method: str) -> None:
    if attack not in ATTACKS:
        raise ValueError(f"attack: expected one of {', '.join(ATTACKS)}, got {attack!r}")
    if method not in ATTACK_METHODS:
        raise ValueError(f"method: attacks need a differentiable head: expected one of "
                         f"{', '.join(ATTACK_METHODS)}, got {method!r} (k-NN has no gradient)")


@leaves_models_as_found
def attack_accuracy(model: Any, dataset: Any, *, attack: str = "pgd", eps: float, steps: int = 10,
                    step_size: float | None = None, method: str = "linear_probe", split: str = "test",
                    seed: int | None = None, batch_size: int | None = None, C: float = 1.0,
                    context: Context | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, correct)`` of the model on ``split`` under an L∞ attack, batched on the session's device.

    ``direct`` attacks the model's own head; ``linear_probe`` attacks
    :class:`ProbeHeadModel` with the probe fitted on clean train features,
    and classifies the adversarial features with that probe exactly as
    :func:`~pytest_transfer.methods.predict` does. PGD runs over fixed
    chunks of 64 images (``engine.CHUNK``), each with a random start seeded
    from ``seed`` (``--transfer-seed``) and the chunk's position, so the
    result does not depend on ``batch_size``; FGSM (deterministic) uses
    ``batch_size`` (``--transfer-batch-size``). The result is cached
    (:func:`~pytest_transfer.cache.cached_result`, kind ``attack``), keyed by
    the model's and the data's fingerprints and every parameter above except
    ``batch_size``.

    >>> y, ok = attack_accuracy(model, "digits", attack="fgsm", eps=2 / 255)  # doctest: +SKIP
    """
    ctx = session(context)
    _check_attack(attack, method)
    model, dataset = resolve_pair(model, dataset, ctx)
    seed = int(ctx.settings.seed if seed is None else seed)
    size = int(batch_size or ctx.settings.batch_size)
    if size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    indices = dataset.indices(split)
    y_true = dataset.labels[indices]
    correct = cached_result(
        "attack", _attack_key(model, dataset, attack=attack, eps=eps, steps=steps, step_size=step_size,
                              method=method, split=split, seed=seed, C=C, ctx=ctx),
        lambda: _attack_correct(model, dataset, indices, attack=attack, eps=eps, steps=steps, step_size=step_size,
                                method=method, seed=seed, size=size, C=C, ctx=ctx),
        encode=lambda c: {"correct": c}, decode=lambda a: a["correct"].astype(bool, copy=False), context=ctx,
        libraries=("torch",))
    return y_true, correct


def _attack_key(model: TransferModel, dataset: TargetDataset, *, attack: str, eps: Any, steps: Any,
                step_size: Any, method: str, split: str, seed: int, C: float, ctx: Context) -> dict[str, Any]:
    """What an attack's result depends on: the model (weights, preprocess, code), the data and both splits (the
    probe is fitted on train), the attack's parameters, the probe's ``C``, the device type and the code."""
    from ..engine.chunks import CHUNK
    from ..engine.keys import code_fingerprint, geometry_key
    from ..metrics.probes import fit_linear_probe

    pgd_only = attack == "pgd"
    return {"model": model.fingerprint(), "code": code_fingerprint(model), "geometry": geometry_key(model),
            "data": dataset.fingerprint(),
            "split": dataset.split_fingerprint(split), "train": dataset.split_fingerprint("train"),
            "attack": attack, "eps": repr(eps), "steps": repr(steps) if pgd_only else None,
            "step_size": repr(step_size) if pgd_only else None, "seed": seed if pgd_only else None,
            "chunk": CHUNK if pgd_only else None, "method": method,
            "C": repr(C) if method == "linear_probe" else None, "device": ctx.device.type,
            "source": code_identity(fgsm, _attack_correct, fit_linear_probe)}


def _attack_correct(model: TransferModel, dataset: TargetDataset, indices: np.ndarray, *, attack: str, eps: float,
                    steps: int, step_size: float | None, method: str, seed: int, size: int, C: float,
                    ctx: Context) -> np.ndarray:
    """Per-sample correctness (bool, len(indices)) under the attack: what :func:`attack_accuracy` caches."""
    if attack == "pgd":
        from ..engine.chunks import CHUNK

        size = CHUNK  # the unit the random start is seeded by, whatever the batch size
    from ..engine.chunks import model_batch

    device = ctx.device
    model.to(device)
    y_true = dataset.labels[indices]
    at_size = model.at_input_size()  # attacked at the model's input size, before normalisation
    fitted: Any = get_method(method, C=C).fit(model, dataset, context=ctx)
    if method == "direct":
        mapping = fitted.mapping
        target: Any = at_size
        columns = y_true.copy() if mapping is None else np.argsort(mapping)[y_true]
        valid = np.ones(len(y_true), dtype=bool)

        def decide(adv: torch.Tensor) -> np.ndarray:
            pred = at_size(adv).argmax(dim=1).cpu().numpy()
            return pred if mapping is None else mapping[pred]
    else:
        probe = fitted.head.probe  # the linear probe's weights: the head the gradients flow through
        target = ProbeHeadModel(at_size, probe.torch_head().to(device))
        where = np.searchsorted(probe.classes, y_true).clip(0, len(probe.classes) - 1)
        valid = probe.classes[where] == y_true  # a class the probe never saw cannot be predicted
        columns = np.where(valid, where, 0)

        def decide(adv: torch.Tensor) -> np.ndarray:
            feats = target.features(adv).double().cpu().numpy()
            return probe.classes[probe.decision_function(feats).argmax(axis=1)]

    correct = np.zeros(len(indices), dtype=bool)
    for b, start in enumerate(range(0, len(indices), size)):
        part = slice(start, start + size)
        x = model_batch(model, dataset, indices[part], device)
        labels = torch.as_tensor(columns[part], dtype=torch.long, device=device)
        if attack == "fgsm":
            adv = fgsm(target, x, labels, eps=eps)
        else:
            adv = pgd(target, x, labels, eps=eps, steps=steps, step_size=step_size, seed=_batch_seed(seed, b))
        with torch.no_grad():
            correct[part] = (decide(adv) == y_true[part]) & valid[part]
    return correct


def assert_robust_under_attack(model: Any, dataset: Any, *, attack: str = "pgd", eps: float,
                               min_accuracy: float | None = None, steps: int = 10, step_size: float | None = None,
                               method: str = "linear_probe", split: str = "test", seed: int | None = None,
                               confidence: str | None = None, batch_size: int | None = None,
                               C: float = 1.0) -> Measurement:
    """Gate on accuracy under an L∞ attack (FGSM or PGD) of radius ``eps`` in [0, 1] pixel units.

    The attack perturbs the [0, 1] images at the model's input size (after
    the geometric stage of its preprocess), before normalisation (as RobustBench),
    through the model's own head (``method="direct"``) or through the
    backbone with its linear probe (fitted on clean train features) as the
    head (``method="linear_probe"``). PGD: ``steps`` steps of ``step_size``
    (default ``2.5·eps/steps``) from a seeded random start (Madry et al.,
    2018); FGSM: one step of ``eps`` (Goodfellow et al., 2015). Accuracy on
    ``split`` must reach ``min_accuracy`` or the config key
    ``attack_min_accuracy``; the interval is Wilson's. ``eps=0`` gives the
    clean accuracy.

    >>> assert_robust_under_attack(model, "digits", attack="pgd", eps=2 / 255, min_accuracy=0.5)  # doctest: +SKIP
    """
    __tracebackhide__ = True
    _check_attack(attack, method)
    g = open_gate(model, dataset, threshold=min_accuracy, argument="min_accuracy", keys=(ATTACK.key,),
                  confidence=confidence)
    ctx, model, dataset = g.ctx, g.model, g.dataset
    seed = int(ctx.settings.seed if seed is None else seed)
    clean = get_method(method, C=C).fit(model, dataset, context=ctx).predict(dataset, split=split, context=ctx)
    _, correct = attack_accuracy(model, dataset, attack=attack, eps=eps, steps=steps, step_size=step_size,
                                 method=method, split=split, seed=seed, batch_size=batch_size, C=C, context=ctx)
    hits, n = int(correct.sum()), len(correct)
    acc_clean = float(np.mean(clean.correct))
    details: dict[str, Any] = {"method": method, "split": split, "n": n, "attack": attack, "eps": float(eps),
                               "clean_accuracy": acc_clean, "correct": hits, "seed": seed}
    if attack == "pgd":
        details.update(steps=steps, step_size=float(2.5 * eps / steps if step_size is None else step_size))
    shown = f"eps={eps:.4g}" + (f" = {eps * 255:.3g}/255" if eps else "")
    return g.finish(
        gate=ATTACK.name, metric=f"{attack}_accuracy",
        label=f"Accuracy under {attack.upper()} attack (L∞ {shown}, {method})", value=hits / n,
        interval=g.accuracy_interval(hits, n), higher_is_better=ATTACK.higher_is_better, details=details,
        hint=f"clean accuracy {acc_clean:.4f}; eps is in [0, 1] pixel units (8/255 ≈ 0.031); adversarial "
             "training or a smaller eps raise it; compare attack='fgsm' (weaker) with 'pgd'",
    )


__all__ = [
    "ATTACKS", "ProbeHeadModel", "assert_mce_below", "assert_robust_under_attack", "assert_robust_under_corruption",
    "attack_accuracy",
]
