"""Model sources: torchvision (offline weights), checkpoints, modules, registered names; feature nodes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_transfer import load_model
from pytest_transfer.models import Preprocess, TransferModel
from tests._helpers import tiny_net


def test_torchvision_random_weights(fresh_context):
    m = load_model("torchvision:resnet18:none", image_size=32)
    assert m.num_classes == 1000 and m.categories is None
    assert m.resolve_node("penultimate") == ("fc", True)
    out = m(torch.rand(2, 3, 20, 20))
    assert out.shape == (2, 1000)


def test_unknown_spec_lists_the_forms(fresh_context):
    with pytest.raises(ValueError, match=r"torchvision:<arch>\[:<weights>\], timm:<name>, hf:"):
        load_model("hub:whatever")


def test_module_is_wrapped_with_penultimate_features(fresh_context):
    m = load_model(tiny_net(), name="tiny")
    assert isinstance(m, TransferModel) and m.num_classes == 3 and m.in_channels == 1
    assert m.resolve_node("penultimate") == ("6", True)
    assert m.resolve_node("4") == ("4", False)
    assert m.resolve_node("4:input") == ("4", True)


def test_bad_feature_node_lists_how_to_find_names(fresh_context):
    m = load_model(tiny_net())
    with pytest.raises(ValueError, match=r"not a submodule.*named_modules"):
        m.resolve_node("layer9")
    with pytest.raises(ValueError, match="':input' or ':output'"):
        m.resolve_node("4:middle")


def test_fingerprint_tracks_weights_and_preprocess(fresh_context):
    a = load_model(tiny_net(seed=0))
    b = load_model(tiny_net(seed=0))
    assert a.fingerprint() == b.fingerprint()
    before = a.fingerprint()
    with torch.no_grad():
        a.module[0].weight[0, 0, 0, 0] += 1.0  # in place: the memo must notice
    assert a.fingerprint() != before
    c = load_model(tiny_net(seed=0), preprocess=Preprocess(size=16, channels=1))
    assert c.fingerprint() != b.fingerprint()


def test_preprocess_resizes_normalises_and_repeats_gray():
    p = Preprocess(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    out = p(torch.full((2, 1, 8, 8), 0.75))
    assert out.shape == (2, 3, 16, 16)
    assert torch.allclose(out, torch.ones_like(out))
    with pytest.raises(ValueError, match="std"):
        Preprocess(std=(0.0, 1.0, 1.0))


def test_registered_model_names(fresh_context):
    fresh_context.models.register("tiny", lambda **kw: tiny_net(**kw))
    m = load_model("tiny", n_classes=4)
    assert m.name == "tiny" and m.num_classes == 4
    with pytest.raises(ValueError, match=r"registered name \(tiny\)"):
        load_model("tinyy")
