"""Rank models by transferability: the ImageNet-pretrained EfficientNet-Lite0 against randomly initialised
networks, and against its own earlier layers, on real handwritten digits.

Why digits-shifted and not plain digits: plain 8×8 digits are nearly linearly separable from the raw pixels,
so a randomly initialised network's standardised features do as well as pretrained ones (measured linear
probe 0.969 random vs 0.953 pretrained; LogME 0.203 vs 0.162). On digits-shifted (the same digits at seeded
random places on a 20×20 canvas) pixels stop working and only features that know about shapes transfer:
pretrained 0.844 vs random 0.231 (LogME -0.049 vs -0.262).

Rankings default to measured transfer: ``rank_models`` to the 5-fold cross-validated linear-probe accuracy on
the train split, ``assert_ranks_above`` to the linear probe's test accuracy of both models with Newcombe's paired
interval. Estimators (LogME, ...) stay available by name for screening many candidates cheaply, computed on the
train split's features standardised with that split's statistics; ``confirm=k`` measures the top k of such a
screen. Thresholds are in this folder's pyproject.toml.
Run: pytest examples
"""

from __future__ import annotations

import pytest

from pytest_transfer import (
    assert_layer_transfer_above,
    assert_ranks_above,
    assert_transferability_above,
    drop_in_performance,
    layerwise_transfer,
    load_dataset,
    load_model,
    rank_models,
)

SHIFTED = "digits-shifted"
# the pretrained model's blocks, shallow to deep (block outputs are globally average-pooled)
NODES = ["_blocks.2", "_blocks.5", "_blocks.8", "_blocks.11", "_blocks.15", "penultimate"]


@pytest.fixture(scope="module")
def zoo():
    """The pretrained model and two randomly initialised networks of the same architecture (seeds 0 and 1)."""
    from pytest_transfer.contrib.efficientnet_lite import efficientnet_lite0

    second_random = load_model(efficientnet_lite0(pretrained=False, seed=1), name="efficientnet-lite0-random-seed1")
    return [load_model("efficientnet-lite0"), load_model("efficientnet-lite0-random"), second_random]


def test_pretrained_ranks_first(zoo):
    rows = rank_models(zoo, SHIFTED)  # measured: 5-fold CV linear-probe accuracy on train, k-NN beside each
    assert rows[0].model == "efficientnet-lite0"
    # the gate: the pretrained model's probe beats each random network's on the same test images by at least
    # 0.3 (measured lead about 0.6). Try: margin=0.7 to see it fail with both accuracies in the message.
    for random_net in zoo[1:]:
        assert_ranks_above(zoo[0], random_net, SHIFTED, margin=0.3)


def test_screen_by_logme_then_measure_the_shortlist(zoo):
    # many candidates: LogME orders them cheaply, the top 2 are then measured (cross-validated probe)
    rows = rank_models(zoo, SHIFTED, metric="logme", confirm=2)
    assert rows[0].model == "efficientnet-lite0" and rows[0].metric == "linear_probe_cv_accuracy"
    assert rows[2].metric == "logme"  # the rest keep the screen's score
    # an estimator as the gate: LogME lead at least 0.1 (measured about 0.21). Try: margin=0.5 to see it fail.
    assert_ranks_above(zoo[0], zoo[1], SHIFTED, metric="logme", margin=0.1)


def test_logme_threshold_from_config(zoo):
    # logme = -0.15 from [tool.pytest_transfer.thresholds."efficientnet-lite0*"."digits-shifted"]
    assert_transferability_above(zoo[0], SHIFTED)
    with pytest.raises(AssertionError, match=r"Transferability \(LogME\) of model 'efficientnet-lite0-random'"):
        assert_transferability_above(zoo[1], SHIFTED)  # random weights: shows as FAIL in the summary


def test_pretrained_ranks_first_on_the_test_split(zoo):
    rows = rank_models(zoo, SHIFTED, metric="linear_probe_accuracy")  # measured: probe on train, test accuracy
    assert rows[0].model == "efficientnet-lite0"
    # Try: SHIFTED -> "digits": on plain digits the random networks tie or win, see the module docstring.
    assert_ranks_above(zoo[0], zoo[2], SHIFTED, margin=0.3, confidence="strict")  # the lower bound clears 0.3


def test_earlier_layers_of_the_pretrained_model(zoo):
    # one forward pass per split for all six nodes; the per-layer curve goes to the report
    layers = layerwise_transfer(zoo[0], SHIFTED, NODES, metrics=("linear_probe", "logme"))
    random_logme = min(r.score for r in rank_models(zoo[1:], SHIFTED, metric="logme"))
    # at every depth the pretrained features beat the random networks' final features
    assert min(layers.scores["logme"]) > random_logme
    # Mid-level blocks transfer better than the final features to small shifted digits (measured best
    # _blocks.5: 0.940 vs 0.844 at the penultimate layer): the gate is on the best layer.
    # Try: layer="penultimate" to gate the final features against layer_accuracy = 0.88 and see it fail.
    result = assert_layer_transfer_above(zoo[0], SHIFTED, nodes=NODES, layer="best")
    assert result.details["layer"] != "penultimate"


def test_drop_from_centred_to_shifted_digits(zoo):
    # A probe fitted on centred digits, scored on shifted ones: same classes, different inputs.
    drop = drop_in_performance(zoo[0], "digits", SHIFTED)
    assert drop.interval[0] > 0.5  # measured 0.816 [0.773, 0.848]: fit the probe on the shifted data instead
    # Try: drop_in_performance(zoo[0], "digits", SHIFTED, max_drop=0.1) to turn it into a failing gate.
    assert load_dataset(SHIFTED).classes == load_dataset("digits").classes
