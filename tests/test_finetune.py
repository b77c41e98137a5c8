"""method="finetune": a new head (and optionally the last blocks) trained on the target's train split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_transfer import assert_robust_under_noise, assert_transfer_accuracy_above, load_model
from tests._helpers import predict, tiny_net


def test_head_finetuning_learns_the_target_and_passes_the_gate(tiny_model, blobs, fresh_context):
    result = assert_transfer_accuracy_above(tiny_model, blobs, 0.5, method="finetune", finetune={"epochs": 30})
    probe = assert_transfer_accuracy_above(tiny_model, blobs, 0.0)
    # a head trained by SGD on the same frozen features lands near the converged linear probe
    assert result.metric == "finetune_accuracy" and abs(result.value - probe.value) <= 0.15
    with pytest.raises(AssertionError, match=r"Transfer accuracy \(finetune\)"):
        assert_transfer_accuracy_above(tiny_model, blobs, 1.0, method="finetune", finetune={"epochs": 30},
                                       confidence="strict")  # the whole interval cannot clear 1


def test_head_finetuning_trains_on_cached_features_and_leaves_the_model_untouched(tiny_model, blobs,
                                                                                  fresh_context):
    before = {k: v.clone() for k, v in tiny_model.module.state_dict().items()}
    predict(tiny_model, blobs, method="finetune")
    # one pass over train (features for the head), one over test with the tuned model
    assert fresh_context.forward_passes == 2
    predict(tiny_model, blobs, method="finetune")
    assert fresh_context.forward_passes == 2  # memoised
    after = tiny_model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_finetuned_head_equals_training_on_standardised_features(tiny_model, blobs, fresh_context):
    """A second formulation: the tuned module's logits equal the head applied to standardised features."""
    from pytest_transfer import evaluate
    from pytest_transfer.methods.finetune import FinetuneConfig, finetuned_model
    from pytest_transfer.metrics.probes import Standardizer

    tuned = finetuned_model(tiny_model, blobs, FinetuneConfig(epochs=3), context=fresh_context, seed=0)
    train = evaluate(tiny_model, blobs, split="train").features.astype(np.float64)
    test = evaluate(tiny_model, blobs, split="test")
    std = Standardizer.fit(train)
    head = tuned.module[-1]
    w, b = head.weight.detach().double().numpy(), head.bias.detach().double().numpy()
    folded = test.features @ w.T + b
    w_std = w * std.scale
    b_std = b + w @ std.mean
    assert np.allclose(folded, std(test.features) @ w_std.T + b_std, atol=1e-4)
    logits = evaluate(tuned, blobs, split="test").logits
    assert np.allclose(logits, folded, atol=1e-4)


def test_last_blocks_are_trained_end_to_end(blobs, fresh_context):
    model = load_model(tiny_net(), name="tiny")
    a = predict(model, blobs, method="finetune", finetune={"epochs": 5, "last_blocks": 1})
    b = predict(model, blobs, method="finetune", finetune={"epochs": 5, "last_blocks": 1})
    assert np.array_equal(a.y_pred, b.y_pred)  # seeded: deterministic
    tuned = next(v for v in fresh_context.derived.values() if hasattr(v, "module"))
    # the block before the head changed, the first convolution did not
    assert not torch.equal(tuned.module[4].weight, model.module[4].weight)
    assert torch.equal(tuned.module[0].weight, model.module[0].weight)


def test_finetune_works_under_noise(tiny_model, blobs):
    result = assert_robust_under_noise(tiny_model, blobs, sigma=0.2, max_drop=1.0, method="finetune")
    assert result.details["method"] == "finetune"


def test_finetune_option_errors(tiny_model, blobs):
    with pytest.raises(ValueError, match=r"unknown option.*epoch.*valid: batch_size, epochs"):
        predict(tiny_model, blobs, method="finetune", finetune={"epoch": 3})
    with pytest.raises(ValueError, match=r"last_blocks=9 but the model has only"):
        predict(tiny_model, blobs, method="finetune", finetune={"last_blocks": 9})
    with pytest.raises(ValueError, match="method='finetune' only"):
        predict(tiny_model, blobs, method="knn", finetune={"epochs": 3})



def _tuned_last_block(model, data, limit, monkeypatch):
    """``(tuned model, images decoded)`` of a fresh session fine-tuning the last block for 3 epochs."""
    from pytest_transfer.context import Context
    from pytest_transfer.engine import chunks
    from pytest_transfer.methods import finetune
    from pytest_transfer.settings import resolve

    decoded = []
    real = chunks.model_batch
    monkeypatch.setattr(chunks, "model_batch", lambda *a, **kw: decoded.append(len(a[2])) or real(*a, **kw))
    monkeypatch.setattr(finetune, "TRAIN_IMAGES_BYTES", limit)
    ctx = Context(resolve({"no_cache": True, "device": "cpu"}, pyproject=None, environ={}))
    cfg = finetune.FinetuneConfig(epochs=3, last_blocks=1)
    return finetune.finetuned_model(model, data, cfg, context=ctx, seed=0), sum(decoded)


def test_last_blocks_decode_the_train_split_once_per_fit_within_the_bound(blobs, monkeypatch):
    model = load_model(tiny_net(), name="tiny")
    n = len(blobs.indices("train"))
    once, decoded_once = _tuned_last_block(model, blobs, 1 << 30, monkeypatch)
    streamed, decoded_streamed = _tuned_last_block(model, blobs, 0, monkeypatch)  # over the bound: every epoch
    # one image tells the size; then the whole split once, or each epoch's batches (3 epochs of n images)
    assert (decoded_once, decoded_streamed) == (1 + n, 1 + 3 * n)
    for (name, a), b in zip(once.module.state_dict().items(), streamed.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # the same weights, bit for bit
    assert not torch.equal(once.module[4].weight, model.module[4].weight)
