"""``timm:<name>``: weights from a Hugging Face cache laid out as huggingface_hub lays it out, numbers as timm's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_transfer import evaluate, load_dataset, load_model
from tests._helpers import fill_hf_cache, sample_photos

timm = pytest.importorskip("timm", reason="needs the [timm] extra")
NAME = "test_efficientnet.r160_in1k"  # a 0.36 M-parameter timm test model: crop 0.95, bicubic, 160 px
REPO = f"timm/{NAME}"


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    """A Hugging Face cache holding random weights for ``NAME`` as ``model.safetensors`` (what timm reads)."""
    from safetensors.torch import save_file

    tmp = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    source = timm.create_model(NAME, pretrained=False)
    with torch.no_grad():  # BatchNorm statistics away from their initial 0 / 1, so every weight matters
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    save_file(source.state_dict(), str(tmp / "model.safetensors"))
    fill_hf_cache(tmp / "hub", REPO, {"model.safetensors": tmp / "model.safetensors"})
    return tmp / "hub", source.state_dict(), tmp / "model.safetensors"


@pytest.fixture
def offline(monkeypatch):
    """The reference side must not reach the network either."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def photos():
    """The two real photos and their mirror images (uint8 H×W×3), labels 0, 1, 0, 1."""
    photos = sample_photos()
    return [np.ascontiguousarray(p) for p in photos + [p[:, ::-1] for p in photos]]


def _as_batch(photos):
    return torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).float() / 255


def test_weights_logits_and_features_equal_timms_own(fresh_context, hf_cache, monkeypatch, offline, photos):
    from PIL import Image

    cache, state, _ = hf_cache
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    model = load_model(f"timm:{NAME}")
    assert model.name == f"timm:{NAME}" and model.num_classes == 1000 and model.categories[0].startswith("tench")
    for k, v in state.items():
        assert torch.equal(model.module.state_dict()[k], v), k
    reference = timm.create_model(NAME, pretrained=True, cache_dir=str(cache)).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=reference), is_training=False)
    images = _as_batch(photos)
    labels = np.array([0, 1, 0, 1])
    ev = evaluate(model, load_dataset((images.numpy(), labels), name="photos", test_fraction=0.5), split="test")
    x = torch.stack([transform(img) for img in images[ev.indices]])  # timm's transform on the same float images
    with torch.inference_mode():
        logits = reference(x)
        pre_logits = reference.forward_head(reference.forward_features(x), pre_logits=True)
        from_pil = reference(torch.stack([transform(Image.fromarray(photos[i])) for i in ev.indices]))
    scale = float(logits.abs().max())
    torch.testing.assert_close(torch.from_numpy(ev.logits), logits, rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(torch.from_numpy(ev.features), pre_logits, rtol=1e-4, atol=1e-4)
    # timm's PIL pipeline resizes in 8 bits: the same numbers up to that rounding
    assert float((from_pil - logits).abs().max()) < 0.05 * scale


def test_missing_weights_name_the_cache_folder(fresh_context, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        load_model(f"timm:{NAME}")
    msg = str(info.value)
    assert str(tmp_path / "home" / "hub" / "models--timm--test_efficientnet.r160_in1k") in msg
    assert "never downloads" in msg and "timm.create_model('test_efficientnet.r160_in1k', pretrained=True)" in msg
    assert "HF_HOME" in msg and "weights=<file>" in msg
    assert "HF_HUB_OFFLINE" not in __import__("os").environ and constants.HF_HUB_OFFLINE is False  # put back


def test_weights_from_a_file(fresh_context, hf_cache, tmp_path):
    _, state, path = hf_cache
    model = load_model(f"timm:{NAME}", weights=str(path))
    assert torch.equal(model.module.conv_stem.weight, state["conv_stem.weight"])
    lightning = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 1}, lightning)
    assert load_model(f"timm:{NAME}", weights=str(lightning)).fingerprint() == model.fingerprint()


def test_a_file_with_a_replaced_head_gives_its_own_number_of_classes(fresh_context, tmp_path):
    """A fine-tuned timm model's state dict (a 3-class head): ``weights=`` reads the class count from the
    file's classifier, as ``checkpoint:`` does; the logits are those of timm's model built with 3 classes and
    loaded with the file (it was a size-mismatch error without ``num_classes=3``)."""
    import timm

    torch.manual_seed(1)
    tuned = timm.create_model("test_efficientnet", pretrained=False, num_classes=3).eval()
    path = tmp_path / "tuned.pth"
    torch.save(tuned.state_dict(), path)
    model = load_model("timm:test_efficientnet", weights=str(path))
    assert model.num_classes == 3
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(model.module(x), tuned(x))
    headless = tmp_path / "headless.pth"
    torch.save({k: v for k, v in tuned.state_dict().items() if not k.startswith("classifier.")}, headless)
    with pytest.raises(ValueError, match="num_classes= if its head was replaced"):
        load_model("timm:test_efficientnet", weights=str(headless))


def test_random_weights_are_seeded_and_unknown_names_suggest_others(fresh_context):
    a = load_model(f"timm:{NAME}", pretrained=False)
    b = load_model(f"timm:{NAME}", pretrained=False)
    assert a.fingerprint() == b.fingerprint()
    with pytest.raises(ValueError, match=r"timm: no model 'test_eficientnet'; did you mean test_efficientnet"):
        load_model("timm:test_eficientnet")
