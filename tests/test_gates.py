"""The accuracy, F1 and noise gates: passing, failing, thresholds from config, messages, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pytest_transfer import (
    assert_f1_above,
    assert_robust_under_noise,
    assert_transfer_accuracy_above,
    load_dataset,
    load_model,
)
from pytest_transfer.context import Context, set_current_context
from pytest_transfer.metrics import f1_score
from pytest_transfer.settings import resolve
from tests._helpers import make_blobs_images, predict, tiny_net


def test_accuracy_gate_passes_and_returns_the_measurement(tiny_model, blobs, fresh_context):
    result = assert_transfer_accuracy_above(tiny_model, blobs, 0.5)
    pr = predict(tiny_model, blobs)
    assert result.value == pytest.approx(np.mean(pr.y_true == pr.y_pred))
    assert result.interval[0] <= result.value <= result.interval[1]
    assert result.passed and result.threshold_source == "argument threshold="
    assert fresh_context.measurements[-1] is result


def test_accuracy_gate_fails_with_value_interval_threshold_and_names(tiny_model, blobs):
    with pytest.raises(AssertionError) as info:
        assert_transfer_accuracy_above(tiny_model, blobs, 0.99999, confidence="strict")
    msg = str(info.value)
    assert "Transfer accuracy (linear_probe) of model 'tiny' on dataset 'blobs'" in msg
    # the threshold as configured (not "1.0000"), the interval's ends with enough digits to sit on their side
    assert "95% interval" in msg and "below the minimum 0.99999 [confidence=strict" in msg
    assert "threshold from: argument threshold=" in msg and "next:" in msg


@pytest.mark.parametrize("method", ["linear_probe", "knn"])
def test_methods_agree_with_a_direct_computation(tiny_model, blobs, method):
    from pytest_transfer import evaluate
    from pytest_transfer.metrics.probes import fit_linear_probe, knn_predict

    train = evaluate(tiny_model, blobs, split="train")
    test = evaluate(tiny_model, blobs, split="test")
    if method == "linear_probe":
        pred = fit_linear_probe(train.features, train.labels).predict(test.features)
    else:
        pred = knn_predict(train.features, train.labels, test.features, k=20)
    result = assert_transfer_accuracy_above(tiny_model, blobs, 0.0, method=method)
    assert result.value == pytest.approx(np.mean(pred == test.labels))


def test_direct_method_uses_the_models_head(fresh_context, blobs):
    net = tiny_net(n_classes=3)
    model = load_model(net, name="head")
    result = assert_transfer_accuracy_above(model, blobs, 0.0, method="direct")
    x = blobs.batch(blobs.indices("test"))
    with torch.no_grad():
        expected = (net(x).argmax(1).numpy() == blobs.labels_of("test")).mean()
    assert result.value == pytest.approx(expected)


def test_direct_method_refuses_a_head_that_does_not_match(fresh_context, blobs):
    model = load_model(tiny_net(n_classes=5))
    with pytest.raises(ValueError, match="has 5 outputs and 'blobs' has 3 classes; use method='linear_probe'"):
        assert_transfer_accuracy_above(model, blobs, 0.5, method="direct")


def test_unknown_method(tiny_model, blobs):
    with pytest.raises(ValueError, match="linear_probe, knn, direct, finetune"):
        assert_transfer_accuracy_above(tiny_model, blobs, 0.5, method="finetune-all")


def test_threshold_comes_from_config_with_wildcards(tmp_path, tiny_model, blobs):
    pp = tmp_path / "pyproject.toml"
    pp.write_text(
        '[tool.pytest_transfer.thresholds."tiny"."*"]\nlinear_probe_accuracy = 1.0\n'
        '[tool.pytest_transfer.thresholds."*"."*"]\ntransfer_accuracy = 0.2\nknn_accuracy = 0.1\n'
    )
    ctx = Context(resolve({"no_cache": True}, rootdir=tmp_path, pyproject=pp, environ={}))
    previous = set_current_context(ctx)
    try:
        with pytest.raises(AssertionError, match=r'pyproject.toml \[tool.pytest_transfer.thresholds."tiny"."\*"\]'):
            assert_transfer_accuracy_above(tiny_model, blobs)
        assert assert_transfer_accuracy_above(tiny_model, blobs, method="knn").threshold == 0.1
        other = load_model(tiny_net(seed=1), name="other")
        assert assert_transfer_accuracy_above(other, blobs).threshold == 0.2
    finally:
        set_current_context(previous)


def test_missing_threshold_says_where_to_set_it(tiny_model, blobs):
    with pytest.raises(LookupError, match=r'pass threshold=\.\.\. or set linear_probe_accuracy = \.\.\. under '
                                          r'\[tool.pytest_transfer.thresholds."tiny"."blobs"\]'):
        assert_transfer_accuracy_above(tiny_model, blobs)


def test_f1_gate_equals_sklearn_and_fails_above_it(tiny_model, blobs):
    from sklearn.metrics import f1_score as sk_f1

    pr = predict(tiny_model, blobs)
    for average in ("macro", "micro", "weighted"):
        r = assert_f1_above(tiny_model, blobs, 0.0, average=average)
        assert r.value == pytest.approx(sk_f1(pr.y_true, pr.y_pred, average=average))
    value = f1_score(pr.y_true, pr.y_pred)
    with pytest.raises(AssertionError, match=r"F1 \(macro, linear_probe\)"):
        assert_f1_above(tiny_model, blobs, value + 1e-6)
    with pytest.raises(ValueError, match="macro, micro or weighted"):
        assert_f1_above(tiny_model, blobs, 0.5, average="samples")


def test_noise_gate_drop_is_clean_minus_noisy_on_the_same_samples(tiny_model, blobs):
    from pytest_transfer.robustness.perturbations import gaussian_noise

    result = assert_robust_under_noise(tiny_model, blobs, sigma=0.3, max_drop=1.0)
    clean = predict(tiny_model, blobs)
    noisy = predict(tiny_model, blobs, perturbation=gaussian_noise(0.3, seed=0))
    assert result.value == pytest.approx(clean.correct.mean() - noisy.correct.mean())
    assert result.details["clean_accuracy"] == pytest.approx(clean.correct.mean())
    assert result.comparison == "<="


def test_noise_gate_fails_when_the_drop_is_too_large(fresh_context):
    x, y = make_blobs_images(n_per_class=60, seed=1)
    ds = load_dataset((x, y), name="blobs")
    model = load_model(tiny_net(), name="tiny")
    with pytest.raises(AssertionError, match=r"Accuracy drop under Gaussian noise \(sigma=0.8\).*above the maximum"):
        assert_robust_under_noise(model, ds, sigma=0.8, max_drop=0.0)


def test_noise_gate_relative_and_zero_noise(tiny_model, blobs):
    zero = assert_robust_under_noise(tiny_model, blobs, sigma=0.0, max_drop=0.0)
    assert zero.value == 0.0
    rel = assert_robust_under_noise(tiny_model, blobs, sigma=0.3, max_drop=1.0, relative=True)
    assert rel.value == pytest.approx((rel.details["clean_accuracy"] - rel.details["perturbed_accuracy"])
                                      / rel.details["clean_accuracy"])
    with pytest.raises(ValueError, match="sigma"):
        assert_robust_under_noise(tiny_model, blobs, sigma=-0.1, max_drop=0.1)


def test_noise_is_seeded_and_independent_of_batch_size(fresh_context, blobs):
    from pytest_transfer import evaluate
    from pytest_transfer.robustness.perturbations import gaussian_noise

    model = load_model(tiny_net(), name="tiny")
    a = evaluate(model, blobs, perturbation=gaussian_noise(0.2, seed=0), batch_size=7)
    fresh_context.evaluations.clear()
    b = evaluate(model, blobs, perturbation=gaussian_noise(0.2, seed=0), batch_size=64)
    fresh_context.evaluations.clear()
    c = evaluate(model, blobs, perturbation=gaussian_noise(0.2, seed=1), batch_size=64)
    assert np.allclose(a.logits, b.logits, atol=1e-5)
    assert not np.allclose(a.logits, c.logits)


def test_nan_outputs_are_reported_with_the_model_name(fresh_context, blobs):
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 3)

        def forward(self, x):
            return self.fc(x.flatten(1)) * float("nan")

    model = load_model(Broken(), name="broken")
    with pytest.raises(ValueError, match="'broken' produced NaN/Inf outputs"):
        assert_transfer_accuracy_above(model, blobs, 0.5)


def test_several_gates_on_one_pair_cost_one_pass_per_split(tiny_model, blobs, fresh_context):
    assert_transfer_accuracy_above(tiny_model, blobs, 0.0)
    assert_transfer_accuracy_above(tiny_model, blobs, 0.0, method="knn")
    assert_f1_above(tiny_model, blobs, 0.0)
    assert_transfer_accuracy_above(tiny_model, blobs, 0.0, method="direct")
    assert fresh_context.forward_passes == 2  # train features for the probes, test outputs for everything
    assert_robust_under_noise(tiny_model, blobs, sigma=0.1, max_drop=1.0)
    assert_robust_under_noise(tiny_model, blobs, sigma=0.1, max_drop=1.0, method="knn")
    assert fresh_context.forward_passes == 3  # plus one noisy pass, shared by both noise gates


def test_a_model_that_does_not_fit_the_images_gets_an_actionable_error(fresh_context, blobs):
    model = load_model(nn.Sequential(nn.Flatten(), nn.Linear(100, 3)), name="wrong-size")
    with pytest.raises(ValueError, match=r"'wrong-size' failed on images of 'blobs'.*Check the model's preprocess"):
        assert_transfer_accuracy_above(model, blobs, 0.5)
