"""The one path of every evaluation: :func:`evaluate` / :func:`evaluate_many` read the session memo, then the
disk cache (:meth:`pytest_transfer.cache.DiskCache.get_or_compute_many`, which alone decides what is a
warning), and run :func:`pytest_transfer.engine.passes.run_pass` for what is missing; :class:`Evaluation`
holds one pass's outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..context import Context
from ..models import TransferModel, restored
from . import passes
from .chunks import Perturbation, VariantMaker, iter_variants, split_variants, variants_label
from .keys import cache_key, memo_base
from .passes import pass_autocast, precision_label

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ..datasets import TargetDataset


class Evaluation:
    """Outputs of one pass: labels, logits, probabilities, predictions, features and layer taps.

    Arrays are numpy; ``logits`` and features are float32 as computed,
    ``probs`` is float64 softmax of the logits. ``indices`` are the rows'
    positions in the dataset; ``sample_ids`` name them (per row: the file path
    relative to the folder for folder datasets, e.g. ``cat/001.jpg``, else the
    index; see :meth:`TargetDataset.sample_ids <pytest_transfer.datasets.TargetDataset.sample_ids>`).
    """

    def __init__(self, *, model: str, dataset: str, split: str, perturbation: str | None,
                 indices: np.ndarray, labels: np.ndarray, logits: np.ndarray,
                 taps: dict[str, np.ndarray], feature_node: str, from_cache: bool = False,
                 sample_ids: np.ndarray | None = None) -> None:
        self.model = model
        self.dataset = dataset
        self.split = split
        self.perturbation = perturbation
        self.indices = indices
        self.sample_ids = indices if sample_ids is None else sample_ids
        self.labels = labels
        self.logits = logits
        self.taps = taps
        self.feature_node = feature_node
        self.from_cache = from_cache
        self._probs: np.ndarray | None = None

    @property
    def features(self) -> np.ndarray:
        """Features at the model's feature node (the penultimate layer by default)."""
        if self.feature_node not in self.taps:
            raise ValueError(f"model {self.model!r}: no features at {self.feature_node!r} (no classification head, "
                             "a final nn.Linear or 1x1 nn.Conv2d, to read them before); pass "
                             "feature_node='<submodule name>' (see [n for n, _ in model.module.named_modules()])")
        return self.taps[self.feature_node]

    @property
    def probs(self) -> np.ndarray:
        if self._probs is None:
            import numpy as np

            z = self.logits.astype(np.float64)
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            self._probs = e / e.sum(axis=1, keepdims=True)
        return self._probs

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"Evaluation(model={self.model!r}, dataset={self.dataset!r}, split={self.split!r}, "
                f"perturbation={self.perturbation!r}, n={len(self)}, taps={sorted(self.taps)})")


# --- the session memo and the disk cache: one path for every evaluation ----------

def _memo_find(ctx: Context, base: tuple[Any, ...], wanted: set[str]) -> tuple[Evaluation | None, list[str]]:
    """The memoised evaluation of ``base`` that has every tap of ``wanted``, or ``(None, nodes)``: the nodes a
    new pass must read (``wanted`` and the taps of the memo's entries for ``base``, which it replaces)."""
    union = set(wanted)
    for (b, have), ev in list(ctx.evaluations.items()):
        if b != base:
            continue
        if wanted <= set(have):
            return ev, []  # the feature node is part of the model's fingerprint, so it is ev.feature_node
        union |= set(have)  # one new pass reads every tap asked for so far
        del ctx.evaluations[(b, have)]
    return None, sorted(union)


@dataclass
class _Request:
    """One model × dataset × split evaluated under several perturbations in one session."""

    ctx: Context
    model: TransferModel
    dataset: TargetDataset
    split: str
    batch_size: int
    cache: bool
    make: VariantMaker | None
    device: Any = None
    mode: str = "auto"
    precision: str = "float32"
    indices: Any = None
    workers: int = 0

    def __post_init__(self) -> None:
        from ..datasets.stream import resolve_num_workers

        self.device = self.ctx.device
        self.workers = resolve_num_workers(getattr(self.ctx.settings, "num_workers", "auto"))
        self.mode = getattr(self.ctx.settings, "autocast", "auto")
        self.precision = precision_label(*pass_autocast(self.model.module, self.mode, self.device))

    def split_indices(self) -> np.ndarray:
        if self.indices is None:
            self.indices = self.dataset.indices(self.split)
            if len(self.indices) == 0:
                raise ValueError(f"dataset {self.dataset.name!r}: the {self.split!r} split is empty; use more "
                                 "samples or another test_fraction")
        return self.indices

    def compute(self, chosen: Sequence[Perturbation | None], nodes: list[str]) -> list[dict[str, np.ndarray]]:
        """One forward pass for all of ``chosen``: their arrays, in order."""
        indices = self.split_indices()
        self.ctx.forward_passes += 1
        common = {"nodes": nodes, "batch_size": self.batch_size, "device": self.device,
                  "progress": self.ctx.progress, "autocast": self.mode, "split": self.split,
                  "num_workers": self.workers,
                  "malloc_tuning": getattr(self.ctx.settings, "malloc_tuning", True)}
        with restored(self.model):  # the user's module keeps its mode, device and memory format
            if len(chosen) == 1 and self.make is None:
                return [passes.run_pass(self.model, self.dataset, indices, perturbation=chosen[0], **common)]
            arrays = passes.run_pass(self.model, self.dataset, indices, perturbation=None, **common,
                              chunks=lambda: iter_variants(self.dataset, indices, self.device, chosen, self.make,
                                                           num_workers=self.workers, model=self.model),
                              total=len(indices) * len(chosen), variant=variants_label(chosen))
        return split_variants(arrays, len(indices), len(chosen))

    def arrays(self, chosen: Sequence[Perturbation | None], nodes: list[str]) -> list[tuple[dict[str, Any], bool]]:
        """``(arrays, from disk?)`` of each of ``chosen``: read from the disk cache, the rest in one pass."""
        # a dataset whose items change between reads is never cached (TargetDataset.cacheable)
        cache_dir = self.ctx.settings.cache_path() if self.cache and self.dataset.cacheable else None
        if cache_dir is None:
            return [(a, False) for a in self.compute(chosen, nodes)]
        from ..cache import DiskCache

        self.split_indices()
        keys = [cache_key(self.model, self.dataset, self.split, p, nodes, precision=self.precision,
                          device=self.device) for p in chosen]
        found = DiskCache(cache_dir).get_or_compute_many(
            keys, lambda missing: self.compute([chosen[i] for i in missing], nodes),
            required=["logits", *(f"tap:{n}" for n in nodes)], expect=self.expected_shapes(nodes))
        self.ctx.cache_hits += sum(hit for _, hit in found)
        return found

    def expected_shapes(self, nodes: list[str]) -> dict[str, tuple[Any, ...]]:
        """What a cached entry of this request must hold: one row per sample of the split, and the widths of
        the logits and taps that the session already measured for this model (``...``: not known yet)."""
        rows = len(self.split_indices())
        widths: dict[str, tuple[int, ...]] = {}
        mine = self.model.fingerprint()
        for (base, _), ev in list(self.ctx.evaluations.items()):
            if base[0] == mine:
                widths.setdefault("logits", tuple(ev.logits.shape[1:]))
                for n, tap in ev.taps.items():
                    widths.setdefault(f"tap:{n}", tuple(tap.shape[1:]))
        out: dict[str, tuple[Any, ...]] = {}
        for name in ["logits", *(f"tap:{n}" for n in nodes)]:
            out[name] = (rows, *widths[name]) if name in widths else (rows, ...)
        return out

    def evaluation(self, p: Perturbation | None, nodes: list[str], arrays: dict[str, Any],
                   hit: bool) -> Evaluation:
        indices = self.split_indices()
        return Evaluation(
            model=self.model.name, dataset=self.dataset.name, split=self.split,
            perturbation=p.key if p else None, indices=indices, labels=self.dataset.labels[indices],
            logits=arrays["logits"], taps={n: arrays[f"tap:{n}"] for n in nodes},
            feature_node=self.model.feature_node, from_cache=hit, sample_ids=self.dataset.sample_ids(indices),
        )


def _evaluate_all(req: _Request, perturbations: Sequence[Perturbation | None], taps: Iterable[str]
                  ) -> list[Evaluation]:
    """Evaluations of distinct ``perturbations``: from the memo, else the disk, else one pass per tap set."""
    wanted = {*taps, req.model.feature_node}  # features can always be read (a headless model's are its output)
    for node in wanted:
        req.model.resolve_node(node)  # a bad node name fails here, before any work
    ctx = req.ctx
    with ctx.lock:
        out: list[Evaluation | None] = [None] * len(perturbations)
        bases = [memo_base(req.model, req.dataset, req.split, p, precision=req.precision) for p in perturbations]
        memo = req.dataset.cacheable  # known once fingerprinted: items that change between reads are not memoised
        todo: dict[tuple[str, ...], list[int]] = {}  # the taps of a pass -> the perturbations it serves
        for i, base in enumerate(bases):
            out[i], nodes = _memo_find(ctx, base, wanted) if memo else (None, sorted(wanted))
            if out[i] is None:
                todo.setdefault(tuple(nodes), []).append(i)
        for nodes, members in todo.items():
            found = req.arrays([perturbations[i] for i in members], list(nodes))
            for i, (arrays, hit) in zip(members, found, strict=True):
                out[i] = ev = req.evaluation(perturbations[i], list(nodes), arrays, hit)
                if memo:
                    ctx.evaluations[(bases[i], nodes)] = ev
        return [ev for ev in out if ev is not None]


def check_objects(model: Any, dataset: Any, what: str, door: str) -> None:
    """Below the door functions take objects: a spec string (or anything else) is a ``TypeError`` that names
    the door that resolves it."""
    from ..datasets import TargetDataset

    if not isinstance(model, TransferModel) or not isinstance(dataset, TargetDataset):
        raise TypeError(f"{what} takes a TransferModel and a TargetDataset (got {type(model).__name__} and "
                        f"{type(dataset).__name__}): resolve spec strings with pytest_transfer.load_model / "
                        f"load_dataset, or call {door}, which takes either")


def _request(model: TransferModel, dataset: TargetDataset, *, split: str, batch_size: int | None,
             context: Context, cache: bool, make: VariantMaker | None) -> _Request:
    ctx = context
    check_objects(model, dataset, "engine.evaluate", "pytest_transfer.evaluate")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    size = int(batch_size or ctx.settings.batch_size)
    return _Request(ctx, model, dataset, split, size, cache, make)


# --- the public entry points ----------------------------------------------------

def evaluate(model: TransferModel, dataset: TargetDataset, *, context: Context, split: str = "test",
             perturbation: Perturbation | None = None, taps: Iterable[str] = (), batch_size: int | None = None,
             cache: bool = True) -> Evaluation:
    """:func:`pytest_transfer.evaluate` of loaded objects in the session ``context`` (its memo, its disk cache,
    its device and batch size): one pass, memoised in the session and cached on disk.

    ``taps`` names extra feature nodes read in the same pass. A request
    whose taps were already read reuses that pass; one with new taps runs one
    pass for all the taps read so far. ``cache=False`` (or
    ``--transfer-no-cache``) skips the disk. Spec strings raise ``TypeError``
    (:func:`pytest_transfer.evaluate` resolves them).
    """
    req = _request(model, dataset, split=split, batch_size=batch_size, context=context, cache=cache, make=None)
    return _evaluate_all(req, [perturbation], taps)[0]


def evaluate_many(model: TransferModel, dataset: TargetDataset, perturbations: Sequence[Perturbation | None], *,
                  context: Context, split: str = "test", batch_size: int | None = None, cache: bool = True,
                  make: VariantMaker | None = None) -> list[Evaluation]:
    """``[evaluate(model, dataset, split=split, perturbation=p) for p in perturbations]`` from one data load.

    Each chunk of the split is loaded once and every perturbation of it goes
    through one forward pass (:func:`iter_variants`; ``make`` may make a
    chunk's variants together, see :data:`VariantMaker`); results land in the
    session memo and the disk cache under :func:`evaluate`'s keys (entries
    already there are reused). Only the model's feature node is tapped.

    >>> evs = evaluate_many(model, data, [None, gaussian_noise(0.1)], context=ctx)  # doctest: +SKIP
    """
    distinct: dict[tuple[str, int] | None, Perturbation | None] = {}
    for p in perturbations:
        if p is not None and not isinstance(p, Perturbation):
            raise ValueError(f"perturbations: expected Perturbation objects or None, got {type(p).__name__}; "
                             "build them with pytest_transfer.robustness.perturbations.corruption / gaussian_noise")
        distinct.setdefault((p.key, p.seed) if p is not None else None, p)
    req = _request(model, dataset, split=split, batch_size=batch_size, context=context, cache=cache, make=make)
    evs = dict(zip(distinct, _evaluate_all(req, list(distinct.values()), ()), strict=True))
    return [evs[(p.key, p.seed) if p is not None else None] for p in perturbations]
