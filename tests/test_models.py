"""Model sources: torchvision (offline weights), checkpoints, modules, registered names; feature nodes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_transfer import load_model
from pytest_transfer.models import Preprocess, TransferModel, hub_checkpoint_dir
from tests._helpers import tiny_net


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # torch.hub.get_dir() then follows $TORCH_HOME
    return tmp_path / "torch"


def test_torchvision_random_weights(fresh_context):
    m = load_model("torchvision:resnet18:none", image_size=32)
    assert m.num_classes == 1000 and m.categories is None
    assert m.resolve_node("penultimate") == ("fc", True)
    out = m(torch.rand(2, 3, 20, 20))
    assert out.shape == (2, 1000)


def test_missing_weights_name_the_expected_file(fresh_context, torch_home):
    with pytest.raises(FileNotFoundError) as info:
        load_model("torchvision:resnet18")
    msg = str(info.value)
    assert "resnet18-f37072fd.pth" in msg and str(hub_checkpoint_dir()) in msg
    assert "never downloads" in msg and "torchvision:resnet18:none" in msg


def test_weights_are_read_from_the_hub_cache(fresh_context, torch_home):
    from torchvision.models import ResNet18_Weights, resnet18

    reference = resnet18(num_classes=1000)
    path = hub_checkpoint_dir() / ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    m = load_model("torchvision:resnet18", image_size=32)
    assert m.name == "torchvision:resnet18"
    assert len(m.categories) == 1000 and m.categories[0] == "tench"
    assert torch.equal(m.module.fc.weight, reference.fc.weight)
    assert m.preprocess.mean == (0.485, 0.456, 0.406) and m.preprocess.size == 32


def test_unknown_arch_and_weights(fresh_context):
    with pytest.raises(ValueError, match="torchvision has no model 'resnet19'"):
        load_model("torchvision:resnet19")
    with pytest.raises(ValueError, match="unknown weights 'IMAGENET9K'; valid: DEFAULT"):
        load_model("torchvision:resnet18:IMAGENET9K")


def test_unknown_spec_lists_the_forms(fresh_context):
    with pytest.raises(ValueError, match=r"torchvision:<arch>\[:<weights>\], checkpoint:<path>"):
        load_model("hub:whatever")


def test_checkpoint_state_dict_with_arch(fresh_context, tmp_path):
    from torchvision.models import resnet18

    src = resnet18(num_classes=5)
    path = tmp_path / "best.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    m = load_model(f"checkpoint:{path}", arch="resnet18", image_size=32)
    assert m.num_classes == 5
    assert torch.equal(m.module.fc.weight, src.fc.weight)


def test_checkpoint_errors(fresh_context, tmp_path):
    from torchvision.models import resnet18

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(f"checkpoint:{tmp_path / 'nope.pt'}", arch="resnet18")
    path = tmp_path / "ok.pt"
    torch.save(resnet18(num_classes=5).state_dict(), path)
    with pytest.raises(ValueError, match='arch="resnet18"'):
        load_model(f"checkpoint:{path}")
    with pytest.raises(ValueError, match="does not match the architecture"):
        load_model(f"checkpoint:{path}", arch="resnet34")
    pickled = tmp_path / "model.pt"
    torch.save(nn.Linear(2, 2), pickled)  # a whole pickled module, not a state dict
    with pytest.raises(ValueError, match="weights_only=True"):
        load_model(f"checkpoint:{pickled}", arch="resnet18")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot be read"):
        load_model(f"checkpoint:{broken}", arch="resnet18")


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


def test_module_without_linear_head_needs_a_feature_node(fresh_context):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="feature_node="):
        load_model(net)
    assert load_model(net, feature_node="1").feature_node == "1"


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
