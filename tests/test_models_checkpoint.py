"""``checkpoint:<path>``: the files training scripts write load, and the ones that do not fit say why."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_transfer import load_model


@pytest.fixture(scope="module")
def source():
    """A 5-class torchvision ResNet-18 with random weights: what a training script fine-tuned."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(num_classes=5).eval()


def _prefixed(state, prefix):
    return {f"{prefix}{k}": v for k, v in state.items()}


FORMS = {
    "plain": lambda sd: sd,
    "dataparallel": lambda sd: _prefixed(sd, "module."),
    "torch.compile": lambda sd: _prefixed(sd, "_orig_mod."),
    "ddp of compiled": lambda sd: _prefixed(sd, "module._orig_mod."),
    "lightning": lambda sd: {"state_dict": _prefixed(sd, "model."), "epoch": 3, "global_step": 120,
                             "hyper_parameters": {"lr": 0.1}},
    "training loop": lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {"state": {}}, "epoch": 9},
    "model key": lambda sd: {"model": _prefixed(sd, "module."), "best_acc": 0.9},
}


SUFFIX = {"lightning": ".ckpt", "training loop": ".pth"}


@pytest.mark.parametrize("form", FORMS)
def test_checkpoint_forms_load_the_same_weights(fresh_context, tmp_path, source, form):
    path = tmp_path / f"best{SUFFIX.get(form, '.pt')}"
    torch.save(FORMS[form](source.state_dict()), path)
    m = load_model(f"checkpoint:{path}", arch="resnet18", image_size=32)
    assert m.num_classes == 5
    for k, v in source.state_dict().items():
        assert torch.equal(m.module.state_dict()[k], v), k
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(m(x), source(m.preprocess(x)))


def test_safetensors_checkpoint(fresh_context, tmp_path, source):
    from safetensors.torch import save_file

    path = tmp_path / "best.safetensors"
    save_file(_prefixed(source.state_dict(), "_orig_mod."), str(path))
    m = load_model(f"checkpoint:{path}", arch="resnet18")
    assert torch.equal(m.module.fc.weight, source.fc.weight)


def test_key_mismatch_shows_keys_and_the_prefix_seen(fresh_context, tmp_path, source):
    path = tmp_path / "wrapped.pt"
    torch.save({k: v for k, v in source.state_dict().items() if not k.startswith("fc.")} |
               {"head.weight": source.fc.weight, "head.bias": source.fc.bias}, path)
    with pytest.raises(ValueError) as info:
        load_model(f"checkpoint:{path}", arch="resnet18")
    msg = str(info.value)
    assert "2 missing (e.g. ['fc.weight', 'fc.bias'])" in msg and "2 unexpected" in msg and "'head.weight'" in msg
    assert "share the prefix ''" in msg and "after stripping" not in msg and "arch=" in msg


def test_mismatch_after_a_stripped_prefix_says_what_was_stripped(fresh_context, tmp_path, source):
    path = tmp_path / "best.pt"
    torch.save(_prefixed(source.state_dict(), "module."), path)
    with pytest.raises(ValueError, match=r"keys do not match ResNet.*after stripping 'module.'"):
        load_model(f"checkpoint:{path}", arch="resnet34", num_classes=5)
    with pytest.raises(ValueError, match=r"shapes do not match ResNet: size mismatch for fc.weight"):
        load_model(f"checkpoint:{path}", arch="resnet18", num_classes=7)


def test_checkpoint_errors(fresh_context, tmp_path, source):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(f"checkpoint:{tmp_path / 'nope.pt'}", arch="resnet18")
    path = tmp_path / "ok.pt"
    torch.save(source.state_dict(), path)
    with pytest.raises(ValueError, match='arch="resnet18"'):
        load_model(f"checkpoint:{path}")
    with pytest.raises(ValueError, match="no model 'resnet81'; did you mean resnet18"):
        load_model(f"checkpoint:{path}", arch="resnet81")
    pickled = tmp_path / "model.pt"
    torch.save(nn.Linear(2, 2), pickled)  # a whole pickled module, not a state dict
    with pytest.raises(ValueError, match="weights_only=True"):
        load_model(f"checkpoint:{pickled}", arch="resnet18")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot be read"):
        load_model(f"checkpoint:{broken}", arch="resnet18")
    odd = tmp_path / "notes.pt"
    torch.save({"epoch": 3, "notes": "no weights here"}, odd)
    with pytest.raises(ValueError, match=r"expected a state dict.*found a dict with keys \['epoch', 'notes'\]"):
        load_model(f"checkpoint:{odd}", arch="resnet18")


def test_safetensors_head_is_found_by_name_whatever_the_key_order(fresh_context, tmp_path):
    """safetensors sorts its keys: ConvNeXt's body weights (``features.*.block.3.weight``, 2-d) come after its
    head (``classifier.2.weight``); the class count is read from the head, by name, as from a ``.pt``."""
    from safetensors.torch import save_file
    from torchvision.models import get_model

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in get_model("convnext_tiny", weights=None, num_classes=7).state_dict().items()}
    state = {k: torch.full(s, 0.01) for k, s in shapes.items()}  # values do not matter here, shapes do
    assert max(k for k, s in shapes.items() if len(s) == 2) != "classifier.2.weight"  # the order that misled
    save_file(state, str(tmp_path / "convnext.safetensors"))
    model = load_model(f"checkpoint:{tmp_path / 'convnext.safetensors'}", arch="convnext_tiny", image_size=32)
    assert model.num_classes == 7 and torch.equal(model.module.classifier[2].weight, state["classifier.2.weight"])


@pytest.mark.parametrize("name", ["model_best.pth.tar", "checkpoint.pth.tar", "checkpoint-12.pth.tar", "last.tar"])
def test_names_training_scripts_write_load(fresh_context, tmp_path, source, name):
    """The PyTorch ImageNet example and timm's train.py write ``model_best.pth.tar`` (a dict with ``arch``,
    ``state_dict``, ``best_acc1``, an optimizer's state)."""
    torch.save({"epoch": 4, "arch": "resnet18", "state_dict": _prefixed(source.state_dict(), "module."),
                "best_acc1": 0.7, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, tmp_path / name)
    m = load_model(f"checkpoint:{tmp_path / name}", arch="resnet18", image_size=32)
    assert m.num_classes == 5 and torch.equal(m.module.fc.weight, source.fc.weight)
    odd = tmp_path / "weights.h5"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown weights file type '\.h5'.*\.pth\.tar"):
        load_model(f"checkpoint:{odd}", arch="resnet18")
