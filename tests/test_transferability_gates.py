"""Transferability gates, rankings, estimator agreement and the drop in performance under dataset shift."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from pytest_transfer import (
    assert_ranks_above,
    assert_transfer_accuracy_above,
    assert_transferability_above,
    drop_in_performance,
    estimator_agreement,
    load_dataset,
    load_model,
    rank_models,
)
from pytest_transfer.context import Context, current_context, set_current_context
from pytest_transfer.metrics import knn_accuracy, leep, logme, nce
from pytest_transfer.metrics.stats import half_sample_interval, newcombe_independent_interval
from pytest_transfer.metrics.transferability import TRANSFERABILITY_METRICS
from pytest_transfer.settings import resolve
from pytest_transfer.thresholds import KNOWN_KEYS
from tests._helpers import make_blobs_images, tiny_net


def blind_net(seed: int = 0) -> nn.Module:
    """Global average pooling right after one conv: the position of the class's square is mostly lost."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.fixture
def good(fresh_context):
    return load_model(tiny_net(), name="good")


@pytest.fixture
def blind(fresh_context):
    return load_model(blind_net(), name="blind")


def penultimate(net: nn.Sequential, ds, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Features at the input of the last Linear, by slicing the Sequential (not through the engine)."""
    idx = ds.indices(split)
    with torch.no_grad():
        f = net[:-1](ds.batch(idx))
    return f.double().numpy(), ds.labels[idx]


def sklearn_standardised(x: np.ndarray) -> np.ndarray:
    return StandardScaler().fit_transform(x)


# --------------------------------------------------------------------------- thresholds' bounds


def test_known_threshold_keys_have_the_metrics_declared_bounds():
    for name, fn in TRANSFERABILITY_METRICS.items():
        lo, hi = fn.bounds if fn.bounds is not None else (-math.inf, math.inf)
        assert KNOWN_KEYS[name] == (lo, hi), name
    assert KNOWN_KEYS["layer_accuracy"] == (0.0, 1.0)


# --------------------------------------------------------------------------- assert_transferability_above


def test_logme_gate_standardises_the_train_features(good, squares):
    x, y = penultimate(good.module, squares, "train")
    expected = logme(sklearn_standardised(x), y)
    result = assert_transferability_above(good, squares, expected - 0.01)
    assert result.value == pytest.approx(expected, rel=1e-6)
    assert result.metric == "logme" and result.details["split"] == "train" and result.details["standardize"]
    assert result.details["n"] == len(y) and result.passed
    raw = assert_transferability_above(good, squares, -100.0, standardize=False)
    assert raw.value == pytest.approx(logme(x, y), rel=1e-6)


def test_logme_gate_fails_with_value_threshold_and_names(good, squares):
    with pytest.raises(AssertionError) as info:
        assert_transferability_above(good, squares, 5.0)
    msg = str(info.value)
    assert "Transferability (LogME) of model 'good' on dataset 'squares' is" in msg
    assert "below the minimum 5\n" in msg and "threshold from: argument threshold=" in msg and "next:" in msg


def test_leep_and_nce_use_the_models_own_source_probabilities(fresh_context, squares):
    net = tiny_net(n_classes=5, seed=3)  # a 5-class source head on a 3-class target
    model = load_model(net, name="src5")
    idx = squares.indices("train")
    with torch.no_grad():
        logits = net(squares.batch(idx)).double()
    probs = torch.softmax(logits, dim=1).numpy()
    y = squares.labels[idx]
    assert assert_transferability_above(model, squares, -10.0, metric="leep").value == pytest.approx(leep(probs, y))
    got = assert_transferability_above(model, squares, -10.0, metric="nce")
    assert got.value == pytest.approx(nce(probs.argmax(axis=1), y))
    assert got.details["inputs"] == "preds" and got.details["standardize"] is False


def test_estimator_gate_after_a_probe_gate_costs_no_forward_pass(good, squares, fresh_context):
    assert_transfer_accuracy_above(good, squares, 0.0)
    passes = fresh_context.forward_passes
    for metric in ("logme", "leep", "nce", "hscore"):  # a threshold every one of them clears, inside its range
        assert_transferability_above(good, squares, -100.0 if metric != "hscore" else 0.0, metric=metric)
    assert rank_models([good], squares)[0].rank == 1
    assert fresh_context.forward_passes == passes == 2


def test_threshold_comes_from_config_under_the_metric_name(tmp_path, good, blind, squares):
    pp = tmp_path / "pyproject.toml"
    pp.write_text('[tool.pytest_transfer.thresholds."good"."squares"]\nlogme = -0.6\n'
                  '[tool.pytest_transfer.thresholds."*"."squares"]\nlogme = 0.5\nnce = -2.0\n')
    ctx = Context(resolve({"no_cache": True, "device": "cpu"}, rootdir=tmp_path, pyproject=pp, environ={}))
    previous = set_current_context(ctx)
    try:
        assert assert_transferability_above(good, squares).threshold == -0.6
        with pytest.raises(AssertionError, match=r'thresholds."\*"."squares"\] logme'):
            assert_transferability_above(blind, squares)
        assert assert_transferability_above(blind, squares, metric="nce").threshold == -2.0
        with pytest.raises(LookupError, match=r"no threshold for 'hscore'.*set hscore = \.\.\."):
            assert_transferability_above(good, squares, metric="hscore")
    finally:
        set_current_context(previous)


def test_unknown_metric_lists_the_valid_ones(good, squares):
    with pytest.raises(ValueError, match=r"metric: unknown transferability metric 'logmee'; valid: .*logme"):
        assert_transferability_above(good, squares, 0.0, metric="logmee")


def test_strict_confidence_uses_a_half_sample_interval_around_the_value(good, squares):
    point = assert_transferability_above(good, squares, -100.0)
    lenient = assert_transferability_above(good, squares, point.value, confidence="lenient", n_resamples=40)
    lo, hi = lenient.interval
    assert lo < point.value < hi and hi - point.value == pytest.approx(point.value - lo)
    with pytest.raises(AssertionError, match=r"confidence=strict"):
        assert_transferability_above(good, squares, point.value, confidence="strict", n_resamples=40)
    with pytest.raises(ValueError, match=r"undefined on a half-sample .*k=20 .*confidence='none'"):
        assert_transferability_above(good, squares, 0.0, metric="knn_accuracy", confidence="lenient", n_resamples=20)
    knn = assert_transferability_above(good, squares, 0.0, metric="knn_accuracy", confidence="lenient",
                                       n_resamples=20, metric_kwargs={"k": 5})
    assert 0.0 <= knn.interval[0] <= knn.value <= knn.interval[1] <= 1.0  # clipped to the metric's bounds


def test_half_sample_standard_error_of_a_mean_is_the_textbook_one():
    rng = np.random.default_rng(3)
    x = rng.exponential(size=2000)
    y = np.arange(2000) % 4
    lo, hi = half_sample_interval(lambda v, _: v.mean(), x.mean(), x, labels=y, n_resamples=400, seed=1)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert (hi - lo) / 2 == pytest.approx(1.959964 * se, rel=0.1)
    with pytest.raises(ValueError, match="n_resamples: need at least 2"):
        half_sample_interval(lambda v, _: v.mean(), 0.0, x, labels=y, n_resamples=1)


# --------------------------------------------------------------------------- rankings


def test_rank_models_orders_by_the_estimator_and_reports_knn(good, blind, squares):
    rows = rank_models([blind, good], squares, metric="logme")
    assert [r.model for r in rows] == ["good", "blind"] and [r.rank for r in rows] == [1, 2]
    for r, net in zip(rows, [good.module, blind.module], strict=True):
        x, y = penultimate(net, squares, "train")
        assert r.score == pytest.approx(logme(sklearn_standardised(x), y), rel=1e-6)
        assert r.knn_accuracy == pytest.approx(knn_accuracy(sklearn_standardised(x), y))
        assert r.metric == "logme"


def test_rank_models_on_small_classes_caps_the_side_knn_column(good, blind, fresh_context):
    """12 train images per class: the k-NN column beside the score uses k = 10 (the smallest class less two),
    equal to scikit-learn's leave-one-out vote with that k; asking for the k-NN metric with k = 20 is refused."""
    from sklearn.neighbors import KNeighborsClassifier

    x, y = make_blobs_images(n_per_class=16, n_classes=3, size=10)
    small = load_dataset((x, y), name="small")
    rows = rank_models([good, blind], small, metric="logme")
    for r in rows:
        feats, labels = penultimate(good.module if r.model == "good" else blind.module, small, "train")
        z = sklearn_standardised(feats)
        smallest = np.bincount(labels).min()
        knn = KNeighborsClassifier(n_neighbors=smallest - 2, metric="cosine", algorithm="brute").fit(z, labels)
        assert r.knn_accuracy == pytest.approx(np.mean(knn.predict(None) == labels))
    with pytest.raises(ValueError, match="k=20 neighbours but class"):
        rank_models([good, blind], small, metric="knn_accuracy", k=20)


def test_rank_models_by_measured_probe_accuracy_matches_sklearn(good, blind, squares):
    rows = rank_models([good, blind], squares, metric="linear_probe_accuracy")
    for r in rows:
        net = good.module if r.model == "good" else blind.module
        xtr, ytr = penultimate(net, squares, "train")
        xte, yte = penultimate(net, squares, "test")
        scaler = StandardScaler().fit(xtr)
        clf = LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(xtr), ytr)
        assert r.score == pytest.approx(np.mean(clf.predict(scaler.transform(xte)) == yte), abs=1.01 / len(yte))
    assert rows[0].model == "good"


def test_rank_models_refuses_empty_and_duplicate_names(good, squares):
    with pytest.raises(ValueError, match="models: got an empty list"):
        rank_models([], squares)
    twin = load_model(tiny_net(seed=5), name="good")
    with pytest.raises(ValueError, match=r"several candidates are named \['good'\]"):
        rank_models([good, twin], squares)
    with pytest.raises(ValueError, match="metric: unknown"):
        rank_models([good], squares, metric="accuracy")


def test_ranks_above_passes_for_the_better_model_and_keeps_the_ranking(good, blind, squares, fresh_context):
    result = assert_ranks_above(good, blind, squares)  # default: measured probe accuracy on the test split
    rows = rank_models([good, blind], squares, metric="linear_probe_accuracy")
    assert result.value == pytest.approx(rows[0].score - rows[1].score)
    assert result.value > 0 and result.threshold == 0.0 and result.threshold_source == "argument margin="
    assert result.details["ranking"] == [r.to_dict() for r in rows]
    assert result.details["reference"] == "blind" and fresh_context.measurements[-1] is result


def test_ranks_above_fails_when_the_candidate_is_worse(good, blind, squares):
    with pytest.raises(AssertionError) as info:
        assert_ranks_above(blind, good, squares)
    msg = str(info.value)
    assert "linear probe accuracy lead over reference 'good' of model 'blind' on dataset 'squares'" in msg
    assert "below the minimum 0\n" in msg and "threshold from: argument margin=" in msg
    lead = assert_ranks_above(good, blind, squares).value
    with pytest.raises(AssertionError, match="below the minimum"):  # a margin larger than the lead
        assert_ranks_above(good, blind, squares, margin=lead + 0.01)
    assert_ranks_above(blind, good, squares, margin=-lead - 0.01)  # a tolerance larger than the loss
    with pytest.raises(AssertionError, match="LogME lead over reference 'good'"):  # an estimator by name
        assert_ranks_above(blind, good, squares, metric="logme")


def test_ranks_above_by_probe_accuracy_with_a_paired_interval(good, blind, squares):
    from pytest_transfer.metrics.stats import paired_difference_interval
    from tests._helpers import predict

    result = assert_ranks_above(good, blind, squares, metric="linear_probe_accuracy", confidence="lenient")
    a, b = predict(good, squares), predict(blind, squares)  # the same test samples, in the same order
    assert result.details["split"] == "test"
    assert result.value == pytest.approx(a.correct.mean() - b.correct.mean())
    assert result.interval == pytest.approx(paired_difference_interval(a.correct, b.correct))


def test_ranks_above_with_a_half_sample_interval_for_estimators(good, blind, squares):
    result = assert_ranks_above(good, blind, squares, metric="hscore", confidence="strict", n_resamples=40)
    lo, hi = result.interval
    assert lo <= result.value <= hi and lo > 0  # a clear lead clears the strict gate


def test_ranks_above_refuses_two_models_with_one_name(good, squares):
    with pytest.raises(ValueError, match="model_b: has the same name as model_a"):
        assert_ranks_above(good, load_model(tiny_net(seed=2), name="good"), squares)


def test_estimator_agreement_is_scipys_weighted_tau(fresh_context, squares, good, blind):
    from scipy.stats import kendalltau, weightedtau

    zoo = [good, blind, load_model(tiny_net(seed=7), name="seed7"), load_model(blind_net(seed=3), name="blind3")]
    agreement = estimator_agreement(zoo, squares, metric="logme")
    names = sorted(agreement.scores)
    s = [agreement.scores[n] for n in names]
    a = [agreement.accuracies[n] for n in names]
    assert agreement.weighted_tau == pytest.approx(weightedtau(s, a).statistic)
    assert agreement.kendall_tau == pytest.approx(kendalltau(s, a).statistic)
    assert agreement.accuracies["good"] == pytest.approx(assert_transfer_accuracy_above(good, squares, 0.0).value)


# --------------------------------------------------------------------------- drop in performance


@pytest.mark.parametrize(("a", "na", "b", "nb", "expected"), [
    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10
    (56, 70, 48, 80, (0.0524, 0.3339)),
    (9, 10, 3, 10, (0.1705, 0.8090)),
    (6, 7, 2, 7, (0.0582, 0.8062)),
    (5, 56, 0, 29, (-0.0381, 0.1926)),
    (0, 10, 0, 20, (-0.1611, 0.2775)),
    (10, 10, 0, 20, (0.6791, 1.0000)),
])
def test_newcombe_interval_for_independent_proportions_matches_the_paper(a, na, b, nb, expected):
    lo, hi = newcombe_independent_interval(a, na, b, nb)
    assert (round(lo, 4), round(hi, 4)) == expected


def test_newcombe_interval_refuses_impossible_counts():
    with pytest.raises(ValueError, match="successes_b/n_b"):
        newcombe_independent_interval(3, 10, 11, 10)


@pytest.fixture
def shifted_squares(fresh_context):
    """The same three classes, with the squares moved one pixel and fainter (a real shift of the inputs)."""
    x, y = make_blobs_images(n_per_class=30, n_classes=3, size=10, seed=1)
    x = np.roll(x, 1, axis=3) * 0.7
    return load_dataset((x, y), name="squares-shifted")


def test_drop_in_performance_is_reference_minus_shifted_with_newcombes_interval(good, squares, shifted_squares):
    net = good.module
    xtr, ytr = penultimate(net, squares, "train")
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(xtr), ytr)
    xr, yr = penultimate(net, squares, "test")
    xs, ys = penultimate(net, shifted_squares, "test")
    hits_r = int(np.sum(clf.predict(scaler.transform(xr)) == yr))
    hits_s = int(np.sum(clf.predict(scaler.transform(xs)) == ys))
    d = drop_in_performance(good, squares, shifted_squares)
    assert d.reference_accuracy == pytest.approx(hits_r / len(yr), abs=1.01 / len(yr))
    assert d.shifted_accuracy == pytest.approx(hits_s / len(ys), abs=1.01 / len(ys))
    assert d.absolute == pytest.approx(d.reference_accuracy - d.shifted_accuracy)
    assert d.relative == pytest.approx(d.absolute / d.reference_accuracy)
    hits = round(d.reference_accuracy * d.n_reference), round(d.shifted_accuracy * d.n_shifted)
    assert d.interval == pytest.approx(newcombe_independent_interval(hits[0], d.n_reference, hits[1], d.n_shifted))
    assert d.relative_interval == pytest.approx((d.interval[0] / d.reference_accuracy,
                                                 d.interval[1] / d.reference_accuracy))
    assert d.n_reference == len(yr) and d.n_shifted == len(ys) and d.confidence == 0.95


def test_no_shift_means_no_drop(good, squares):
    same = load_dataset((squares.images, squares.labels), name="squares-copy")
    d = drop_in_performance(good, squares, same, method="knn")
    assert d.absolute == 0.0 and d.interval[0] < 0.0 < d.interval[1]


def test_drop_gate_passes_and_fails_on_max_drop(good, squares, shifted_squares, fresh_context):
    d = drop_in_performance(good, squares, shifted_squares)
    assert not fresh_context.measurements  # without max_drop it is a measurement, not a gate
    drop_in_performance(good, squares, shifted_squares, max_drop=d.absolute + 0.01)
    assert fresh_context.measurements[-1].passed and fresh_context.measurements[-1].metric == "shift_max_drop"
    with pytest.raises(AssertionError, match=r"Accuracy drop from 'squares' to 'squares-shifted' \(relative\)"):
        drop_in_performance(good, squares, shifted_squares, max_drop=d.relative - 0.01, relative=True)


def test_drop_with_the_models_own_head(fresh_context, squares, shifted_squares):
    net = tiny_net(seed=4)
    d = drop_in_performance(load_model(net, name="head"), squares, shifted_squares, method="direct")
    with torch.no_grad():
        acc_s = float((net(shifted_squares.batch(shifted_squares.indices("test"))).argmax(1).numpy()
                       == shifted_squares.labels_of("test")).mean())
    assert d.shifted_accuracy == pytest.approx(acc_s)


def test_drop_needs_the_same_label_space(good, squares):
    x, y = make_blobs_images(n_per_class=10, n_classes=2, size=10)
    other = load_dataset((x, y), name="two-classes")
    with pytest.raises(ValueError, match=r"shifted_dataset: 'two-classes' has classes .* same label space"):
        drop_in_performance(good, squares, other)
    with pytest.raises(ValueError, match="method: expected one of"):
        drop_in_performance(good, squares, squares, method="fine-tune")


def test_drop_after_fine_tuning_the_head_on_the_reference(good, squares, shifted_squares):
    from pytest_transfer.methods.finetune import FinetuneConfig, finetuned_model

    options = {"epochs": 2}
    d = drop_in_performance(good, squares, shifted_squares, method="finetune", finetune=options)
    tuned = finetuned_model(good, squares, FinetuneConfig.from_dict(options), context=current_context(),
                            seed=0)
    with torch.no_grad():
        for ds, acc in ((squares, d.reference_accuracy), (shifted_squares, d.shifted_accuracy)):
            pred = tuned(ds.batch(ds.indices("test"))).argmax(1).numpy()
            assert acc == pytest.approx(np.mean(pred == ds.labels_of("test")))


@pytest.mark.parametrize("metric", ["leep", "nce"])
def test_source_head_estimators_refuse_a_headless_backbone(squares, metric):
    """LEEP and NCE read the source head's probabilities / predictions: a headless backbone's output is its
    features, whose softmax would be a number without meaning."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    backbone = load_model(net, name="backbone")
    with pytest.raises(ValueError, match=rf"metric='{metric}' reads the source head's .* has no classification head"):
        assert_transferability_above(backbone, squares, -1e9, metric=metric)
    idx = squares.indices("train")
    with torch.no_grad():
        feats = net(squares.batch(idx)).double().numpy()  # the headless model's output is its features
    assert assert_transferability_above(backbone, squares, -1e9, metric="logme").value == pytest.approx(
        logme(sklearn_standardised(feats), squares.labels[idx]), rel=1e-6)
