"""Layer-wise transfer: several nodes from one forward pass, the per-layer curve, and the layer gate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from pytest_transfer import (
    assert_layer_transfer_above,
    assert_transfer_accuracy_above,
    layerwise_transfer,
    load_dataset,
    load_model,
)
from pytest_transfer.context import Context, set_current_context
from pytest_transfer.metrics import logme
from pytest_transfer.settings import resolve
from tests._helpers import tiny_net

NODES = ["0", "1", "4", "penultimate"]  # conv output (4-d, pooled), ReLU (4-d, pooled), hidden Linear, penultimate


@pytest.fixture
def net():
    return tiny_net()


@pytest.fixture
def model(fresh_context, net):
    return load_model(net, name="tiny")


def node_features(net, ds, node: str, split: str) -> np.ndarray:
    """The node's activations by slicing the Sequential and averaging over space by hand."""
    stop = {"0": 1, "1": 2, "4": 5, "penultimate": 6}[node]
    with torch.no_grad():
        out = net[:stop](ds.batch(ds.indices(split)))
    if out.ndim == 4:
        out = out.mean(dim=(2, 3))
    return out.double().numpy()


def sklearn_probe_accuracy(xtr, ytr, xte, yte) -> float:
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(xtr), ytr)
    return float(np.mean(clf.predict(scaler.transform(xte)) == yte))


def test_k_layers_cost_one_forward_pass_per_split(model, squares, fresh_context):
    result = layerwise_transfer(model, squares, NODES)
    assert fresh_context.forward_passes == 2  # train and test, whatever the number of nodes
    assert result.nodes == NODES and result.dims == [8, 8, 16, 16]
    assert set(result.scores) == {"linear_probe", "logme"}
    layerwise_transfer(model, squares, NODES[:2], metrics=("knn",))
    assert fresh_context.forward_passes == 2  # a subset of taps reuses the same pass


def test_per_layer_scores_match_an_independent_computation(model, net, squares):
    result = layerwise_transfer(model, squares, NODES, metrics=("linear_probe", "logme"))
    ytr, yte = squares.labels_of("train"), squares.labels_of("test")
    for i, node in enumerate(NODES):
        xtr, xte = node_features(net, squares, node, "train"), node_features(net, squares, node, "test")
        assert result.scores["logme"][i] == pytest.approx(logme(StandardScaler().fit_transform(xtr), ytr), rel=1e-5)
        assert result.scores["linear_probe"][i] == pytest.approx(sklearn_probe_accuracy(xtr, ytr, xte, yte),
                                                                 abs=1.01 / len(yte))
        assert result.correct["linear_probe"][i] == round(result.scores["linear_probe"][i] * result.n_test)


def test_penultimate_layer_agrees_with_the_accuracy_gate(model, squares):
    result = layerwise_transfer(model, squares, ["1", "penultimate"], metrics=("linear_probe", "knn"))
    assert result.scores["linear_probe"][1] == assert_transfer_accuracy_above(model, squares, 0.0).value
    assert result.scores["knn"][1] == assert_transfer_accuracy_above(model, squares, 0.0, method="knn").value


def test_curve_and_best_layer(model, squares):
    result = layerwise_transfer(model, squares, NODES)
    curve = result.curve("linear_probe")
    assert curve == {"x": NODES, "y": result.scores["linear_probe"], "label": "linear probe accuracy"}
    node, value = result.best("linear_probe")
    assert value == max(curve["y"]) and node == NODES[curve["y"].index(value)]
    assert result.curve("logme")["label"] == "LogME"
    with pytest.raises(ValueError, match=r"metric: 'knn' was not computed; available: linear_probe, logme"):
        result.best("knn")


def test_layer_gate_on_the_best_layer_passes_and_records_the_curve(model, squares, fresh_context):
    result = assert_layer_transfer_above(model, squares, 0.5, nodes=NODES)
    curve = layerwise_transfer(model, squares, NODES, metrics=("linear_probe",)).curve()
    assert result.value == max(curve["y"]) and result.details["curve"] == curve
    assert result.details["layer"] == curve["x"][curve["y"].index(result.value)]
    assert result.metric == "layer_accuracy" and result.interval[0] <= result.value <= result.interval[1]
    assert fresh_context.measurements[-1] is result


def test_layer_gate_on_a_named_layer_fails_with_the_per_layer_values(model, squares):
    low = layerwise_transfer(model, squares, ["0"], metrics=("linear_probe",)).scores["linear_probe"][0]
    with pytest.raises(AssertionError) as info:
        assert_layer_transfer_above(model, squares, low + 0.01, nodes=["penultimate"], layer="0")
    msg = str(info.value)
    assert "Transfer accuracy (linear_probe) at layer '0' of model 'tiny'" in msg
    assert f"below the minimum {low + 0.01:.4f}" in msg and "per layer: penultimate=" in msg and "0=" in msg


def test_layer_gate_threshold_from_config(tmp_path, model, squares):
    pp = tmp_path / "pyproject.toml"
    pp.write_text('[tool.pytest_transfer.thresholds."tiny"."*"]\nlayer_accuracy = 0.4\n')
    ctx = Context(resolve({"no_cache": True, "device": "cpu"}, rootdir=tmp_path, pyproject=pp, environ={}))
    previous = set_current_context(ctx)
    try:
        result = assert_layer_transfer_above(model, squares, layer="penultimate", method="knn")
        assert result.threshold == 0.4 and "layer_accuracy" in result.threshold_source
    finally:
        set_current_context(previous)


def test_layer_errors_name_the_argument(model, squares):
    with pytest.raises(ValueError, match=r"feature node 'conv9' is not a submodule of 'tiny'"):
        layerwise_transfer(model, squares, ["conv9"])
    with pytest.raises(ValueError, match=r"metrics: 'leep' cannot be measured at a layer"):
        layerwise_transfer(model, squares, ["1"], metrics=("leep",))
    with pytest.raises(ValueError, match="nodes: empty"):
        layerwise_transfer(model, squares, [])
    with pytest.raises(ValueError, match="nodes: name the nodes to compare"):
        assert_layer_transfer_above(model, squares, 0.5)
    with pytest.raises(ValueError, match="method: expected one of linear_probe, knn"):
        assert_layer_transfer_above(model, squares, 0.5, nodes=["1"], method="direct")


def test_real_efficientnet_layers_from_one_pass(fresh_context):
    """EfficientNet-Lite0 (ImageNet weights): block outputs are pooled, and all taps cost one pass per split."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="needs the [examples] extra")
    from pytest_transfer.contrib.efficientnet_lite import efficientnet_lite0
    from pytest_transfer.datasets import load_digits_dataset

    full = load_digits_dataset(shifted=True)
    subset = load_dataset((full.images[:240], full.labels[:240]), name="digits-shifted[:240]")
    model = efficientnet_lite0()
    # about 18 train images per class: k = 10 (k = 20 is refused: every class would be outvoted)
    result = layerwise_transfer(model, subset, ["_blocks.2", "_blocks.5", "_blocks.9"], metrics=("knn", "logme"),
                                k=10)
    assert fresh_context.forward_passes == 2
    assert result.dims == [24, 80, 112]  # channels of the globally pooled block outputs
    assert min(result.scores["knn"]) > 0.3  # ten classes: chance is 0.1
