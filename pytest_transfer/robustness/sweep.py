"""Corruption sweeps: accuracy for every corruption × severity from one pass over the data.

:func:`corruption_sweep` loads each fixed chunk of the split **once**, makes
every requested variant of it on the device (the clean images and each
corruption × severity, with the same per-chunk seeds as
:func:`pytest_transfer.robustness.perturbations.corruption`), and feeds the stream of variants
through **one** batched forward pass (the engine's
:func:`~pytest_transfer.engine.evaluate_many`: batches mix variants,
out-of-memory halving and autocast work as for any pass). The outputs are
split back per variant and stored exactly where
:func:`~pytest_transfer.engine.evaluate` would store them: the session memo
(``context.evaluations``) and the disk cache, under the same keys as
``evaluate(model, dataset, perturbation=corruption(name, severity, seed=seed))``.
So a later gate on one cell, or a second run, costs no pass. Cells already in
the memo or on disk are not recomputed.

Predictions then go through the transfer method (:mod:`pytest_transfer.methods`),
fitted once, so a sweep's numbers are the gates' numbers: probes are fitted on
clean train features and scored on corrupted test features; a fine-tuned model
is tuned first and swept itself.

>>> res = corruption_sweep("efficientnet-lite0", "digits", "noise", [1, 5])  # doctest: +SKIP
>>> res.accuracy["gaussian_noise"][5], res.clean_accuracy  # doctest: +SKIP
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..context import Context
from ..engine.chunks import Perturbation, VariantMaker
from ..engine.memo import evaluate_many
from ..methods import TransferMethod, get_method
from .corruptions import DETERMINISTIC_CORRUPTIONS, SEVERITIES, corrupt_many, resolve_corruptions
from .corruptions_tables import check_table
from .mce import ALEXNET_ERRORS, CLEAN, CorruptionErrorResult, mce, relative_mce
from .perturbations import corruption

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..datasets import TargetDataset
    from ..models import TransferModel

#: the row of :meth:`SweepResult.to_rows` that holds the clean accuracy (severity 0)
CLEAN_ROW = CLEAN


def resolve_severities(severities: int | str | Iterable[int], argname: str = "severities") -> tuple[int, ...]:
    """``"all"`` → ``(1, 2, 3, 4, 5)``; one level → a 1-tuple; a list → its levels (duplicates dropped).

    >>> resolve_severities("all"), resolve_severities(3), resolve_severities([5, 1, 5])
    ((1, 2, 3, 4, 5), (3,), (5, 1))
    """
    if isinstance(severities, str):
        if severities.strip().lower() == "all":
            return SEVERITIES
        raise ValueError(f"{argname}: expected 'all', a level 1–5 or a list of levels, got {severities!r}")
    items: list[Any]
    if isinstance(severities, Iterable):
        items = list(severities)
        if not items:
            raise ValueError(f"{argname}: the list is empty; pass e.g. [1, 3, 5] or 'all'")
    else:
        items = [severities]
    out: list[int] = []
    for s in items:
        try:
            level = operator.index(s) if not isinstance(s, bool) else None
        except TypeError:
            level = None
        if level not in SEVERITIES:
            raise ValueError(f"{argname}: ImageNet-C's levels are 1, 2, 3, 4 and 5 (or 'all'), got {s!r}")
        if level not in out:
            out.append(level)
    return tuple(out)


# --- the variants of a chunk ----------------------------------------------------

def corruption_variants(cells: Mapping[Perturbation, tuple[str, int]], table: str = "auto") -> VariantMaker:
    """A :data:`~pytest_transfer.engine.VariantMaker` that makes the seed-free corruptions of ``cells``
    (``{corruption(name, s): (name, s)}``) with several severities together by :func:`corrupt_many`
    (equal to one call per severity: the seed does not matter), with the corruption ``table`` the cells were
    made with; every other perturbation is applied as usual.
    """

    def make(x: torch.Tensor, chunk: int, perturbations: Sequence[Perturbation | None]) -> Iterator[torch.Tensor]:
        groups: dict[str, list[tuple[int, int]]] = {}  # seed-free corruption -> [(position, severity)]
        for i, p in enumerate(perturbations):
            cell = cells.get(p) if p is not None else None
            if cell is not None and cell[0] in DETERMINISTIC_CORRUPTIONS:
                groups.setdefault(cell[0], []).append((i, cell[1]))
        made: dict[int, torch.Tensor] = {}  # one group's severities, made when its first one is due
        for i, p in enumerate(perturbations):
            cell = cells.get(p) if p is not None else None
            if cell is None or cell[0] not in groups:
                yield x if p is None else p.apply(x, chunk)
                continue
            if i not in made:
                members = groups[cell[0]]
                sweep = corrupt_many(x, cell[0], [s for _, s in members], table=table)
                made.update((j, t) for (j, _), (_, _, t) in zip(members, sweep, strict=True))
            yield made.pop(i)

    return make


# --- the sweep -----------------------------------------------------------------

@dataclass
class SweepResult:
    """Accuracy of one model on one split for every corruption × severity, with per-sample correctness.

    ``accuracy[corruption][severity]`` is the accuracy of a cell;
    ``correct[(corruption, severity)]`` and ``clean_correct`` are the boolean
    per-sample results on the same samples (in the split's order), for paired
    intervals and McNemar tests.
    """

    model: str
    dataset: str
    method: str
    split: str
    seed: int
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    y_true: np.ndarray
    clean_correct: np.ndarray
    correct: dict[tuple[str, int], np.ndarray] = field(repr=False)
    table: str = "auto"  # the corruption table the sweep asked for (see corrupt)

    @property
    def n(self) -> int:
        return len(self.y_true)

    @property
    def clean_accuracy(self) -> float:
        return float(np.mean(self.clean_correct))

    @property
    def accuracy(self) -> dict[str, dict[int, float]]:
        """``{corruption: {severity: accuracy}}``."""
        return {c: {s: float(np.mean(self.correct[(c, s)])) for s in self.severities} for c in self.corruptions}

    @property
    def cells(self) -> list[tuple[str, int]]:
        return [(c, s) for c in self.corruptions for s in self.severities]

    @property
    def mean_accuracy(self) -> float:
        """Mean accuracy over all cells (every cell has the same samples)."""
        return float(np.mean([np.mean(self.correct[cell]) for cell in self.cells]))

    def cell_matrix(self) -> np.ndarray:
        """Per-sample correctness as an ``n × cells`` boolean matrix, columns in :attr:`cells` order."""
        return np.stack([self.correct[cell] for cell in self.cells], axis=1)

    def errors(self) -> dict[str, Any]:
        """Top-1 errors ``{corruption: (e_s, ...), "clean": e}`` in the form :func:`mce` reads."""
        out: dict[str, Any] = {c: tuple(1.0 - a for a in row.values()) for c, row in self.accuracy.items()}
        out[CLEAN] = 1.0 - self.clean_accuracy
        return out

    def mce(self, reference: SweepResult | Mapping[str, Any] = ALEXNET_ERRORS, *,
            relative: bool = False) -> CorruptionErrorResult:
        """(Relative) mCE of this sweep against a measured reference sweep or published errors.

        ``reference`` is another :class:`SweepResult` (a reference model
        measured on the same data, corruptions and severities) or a mapping of
        errors such as :data:`ALEXNET_ERRORS` (the published AlexNet ImageNet-C
        errors of Hendrycks & Dietterich 2019, meaningful for ImageNet-scale
        models on ImageNet-like data). A mapping's 5-level rows are cut to this
        sweep's severities.
        """
        return corruption_error(self.errors(), reference_errors(reference, self.corruptions, self.severities),
                                relative=relative)

    def curves(self) -> dict[str, dict[str, list[float]]]:
        """``{corruption: {"x": severities, "y": accuracies}}``: accuracy vs severity, ready to plot."""
        return {c: {"x": [float(s) for s in self.severities], "y": list(row.values())}
                for c, row in self.accuracy.items()}

    def plot_data(self) -> list[dict[str, Any]]:
        """The HTML report's ``robustness`` entries: one line per corruption, the clean accuracy at severity 0."""
        return [{"corruption": c, "severity": list(self.severities), "accuracy": list(row.values()),
                 "clean_accuracy": self.clean_accuracy} for c, row in self.accuracy.items()]

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per cell (and a ``clean`` row at severity 0): model, dataset, method, split, corruption,
        severity, accuracy, error, n."""
        common = {"model": self.model, "dataset": self.dataset, "method": self.method, "split": self.split}
        rows = [{**common, "corruption": CLEAN_ROW, "severity": 0, "accuracy": self.clean_accuracy,
                 "error": 1.0 - self.clean_accuracy, "n": self.n}]
        for c, row in self.accuracy.items():
            for s, a in row.items():
                rows.append({**common, "corruption": c, "severity": s, "accuracy": a, "error": 1.0 - a, "n": self.n})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: names, ``clean_accuracy``, ``mean_accuracy`` and ``accuracy[corruption][severity]``
        (severities as strings, as JSON keys must be)."""
        return {
            "model": self.model, "dataset": self.dataset, "method": self.method, "split": self.split,
            "seed": self.seed, "n": self.n, "corruptions": list(self.corruptions), "corruption_table": self.table,
            "severities": list(self.severities), "clean_accuracy": self.clean_accuracy,
            "mean_accuracy": self.mean_accuracy,
            "accuracy": {c: {str(s): a for s, a in row.items()} for c, row in self.accuracy.items()},
        }


def reference_errors(reference: SweepResult | Mapping[str, Any], corruptions: Sequence[str],
                     severities: Sequence[int]) -> dict[str, Any]:
    """Reference errors for ``corruptions`` at ``severities``, from a measured sweep or a mapping of errors.

    A sweep must cover the same corruptions at the same severities. A
    mapping's rows of one error per level 1–5 are cut to ``severities``;
    rows of the sweep's length, and scalar means, are used as given.

    >>> reference_errors({"fog": [0.1, 0.2, 0.3, 0.4, 0.5], "clean": 0.05}, ["fog"], [1, 5])
    {'fog': (0.1, 0.5), 'clean': 0.05}
    """
    if isinstance(reference, SweepResult):
        lacking = [c for c in corruptions if c not in reference.corruptions]
        if lacking or tuple(severities) != tuple(reference.severities):
            raise ValueError(
                f"reference: the reference sweep of {reference.model!r} covers {list(reference.corruptions)} at "
                f"severities {list(reference.severities)}, but {lacking or list(corruptions)} at "
                f"{list(severities)} are needed; sweep both models with the same corruptions and severities"
            )
        errs = reference.errors()
        return {**{c: errs[c] for c in corruptions}, CLEAN: errs[CLEAN]}
    if not isinstance(reference, Mapping):
        raise ValueError(f"reference: expected a SweepResult or a mapping of errors, got {type(reference).__name__}")
    out: dict[str, Any] = {}
    for c in corruptions:
        if c not in reference:
            known = sorted(k for k in reference if k != CLEAN)
            raise ValueError(f"reference: has no errors for {c!r} (it has {known}); measure a reference model "
                             "on these corruptions, or restrict the corruptions to these")
        row = reference[c]
        values = np.atleast_1d(np.asarray(row, dtype=np.float64))
        if values.size == len(SEVERITIES) and len(severities) != len(SEVERITIES):
            row = tuple(float(values[s - 1]) for s in severities)
        out[c] = row
    if CLEAN in reference:
        out[CLEAN] = reference[CLEAN]
    return out


def corruption_error(errors: Mapping[str, Any], reference: Mapping[str, Any], *,
                     relative: bool = False) -> CorruptionErrorResult:
    """:func:`mce` or :func:`relative_mce` of ``errors`` against ``reference`` (both may carry ``"clean"``)."""
    return relative_mce(errors, reference) if relative else mce(errors, reference)


def corruption_sweep(model: TransferModel, dataset: TargetDataset, corruptions: str | Iterable[str] = "all",
                     severities: int | str | Iterable[int] = "all", *, context: Context,
                     method: str | TransferMethod = "linear_probe",
                     split: str = "test", seed: int | None = None, k: int | None = None, C: float | None = None,
                     batch_size: int | None = None, cache: bool = True,
                     corruption_table: str | None = None) -> SweepResult:
    """Accuracy of ``model`` on ``split`` of ``dataset`` under every corruption × severity, from one data pass,
    in the session ``context`` (:func:`pytest_transfer.corruption_sweep` takes spec strings too).

    ``corruptions`` is anything :func:`resolve_corruptions` reads (a name, a
    group ``noise`` / ``blur`` / ``weather`` / ``digital``, ``extra``,
    ``"all"`` = the 15 of ImageNet-C, or a list); ``severities`` is
    ``"all"``, one level or a list of levels. ``seed`` defaults to
    ``--transfer-seed``; cell ``(name, s)`` is exactly
    ``evaluate(..., perturbation=corruption(name, s, seed=seed))``
    (same per-chunk draws, so the results do not depend on the batch size).
    ``method`` is ``linear_probe`` (the probe is fitted once on clean train
    features), ``knn``, ``direct`` or ``finetune`` (the tuned model is swept), or a
    :class:`~pytest_transfer.methods.TransferMethod` from
    :func:`~pytest_transfer.methods.get_method`, used as it is (``k`` and ``C``, 20 and 1.0 for a
    name, are then its own: giving them too is a ``ValueError``). ``corruption_table`` is the published
    parameter table (``auto``: by image size; ``imagenet-c``,
    ``tiny-imagenet-c``, ``cifar10-c``), by default ``--transfer-corruption-table``.

    >>> res = corruption_sweep(model, data, ["fog", "contrast"], [1, 3, 5], context=ctx)  # doctest: +SKIP
    >>> res.to_rows()[:2]  # doctest: +SKIP
    """
    ctx = context
    if isinstance(method, TransferMethod) and (k is not None or C is not None):
        raise ValueError(f"k=/C=: method is the object {method!r}, which carries its own; give them to "
                         "get_method(), or pass the method's name")
    transfer = method if isinstance(method, TransferMethod) else \
        get_method(method, k=20 if k is None else k, C=1.0 if C is None else C)
    names = resolve_corruptions(corruptions)
    levels = resolve_severities(severities)
    seed = int(ctx.settings.seed if seed is None else seed)
    table = check_table(ctx.settings.corruption_table if corruption_table is None else corruption_table,
                        "corruption_table")
    cells = {corruption(c, s, seed=seed, table=table): (c, s) for c in names for s in levels}
    # fitted on the clean train split first: a head that cannot predict these classes fails before any work,
    # and the sweep's one pass is over the model the predictions read (for finetune, the tuned one)
    fitted = transfer.fit(model, dataset, context=ctx)
    evaluate_many(fitted.model, dataset, [None, *cells], split=split, batch_size=batch_size, context=ctx,
                  cache=cache, make=corruption_variants(cells, table))

    def correct(p: Perturbation | None) -> tuple[np.ndarray, np.ndarray]:
        pr = fitted.predict(dataset, split=split, perturbation=p, context=ctx)
        return pr.y_true, np.asarray(pr.correct, dtype=bool)

    y_true, clean = correct(None)
    return SweepResult(model=model.name, dataset=dataset.name, method=transfer.name, split=split, seed=seed,
                       corruptions=names, severities=levels, y_true=y_true, clean_correct=clean,
                       correct={cell: correct(p)[1] for p, cell in cells.items()}, table=table)


__all__ = [
    "SweepResult", "corruption_error", "corruption_sweep", "corruption_variants", "evaluate_many", "reference_errors",
    "resolve_severities",
]
