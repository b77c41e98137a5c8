"""torchvision models through pytest-transfer give torchvision's own numbers.

Random weights are saved under torchvision's expected file names in a
temporary ``TORCH_HOME``; every model is compared with torchvision's own
pipeline, ``get_model(arch, weights=W)`` fed by ``W.transforms()`` one image
at a time, on real non-square photos (scikit-learn's sample images). The
reference transform gets the same float [0, 1] images (torchvision resizes a
PIL or uint8 image in 8 bits, which rounds; float images are what the
engine feeds).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_transfer import evaluate, load_dataset, load_model
from pytest_transfer.models import hub_checkpoint_dir
from pytest_transfer.models.torchvision import HASH_IN_NAME, weights_file

# the smallest variant of each family, with its default weights
ARCHS = ["resnet18", "squeezenet1_1", "googlenet", "inception_v3", "mobilenet_v3_small", "efficientnet_b0",
         "convnext_tiny", "vit_b_16", "swin_t", "regnet_x_400mf", "densenet121", "shufflenet_v2_x0_5"]


def _use_torch_home(mp: pytest.MonkeyPatch, folder) -> None:
    mp.setenv("TORCH_HOME", str(folder))
    mp.setattr(torch.hub, "_hub_dir", None)  # torch.hub.get_dir() then follows $TORCH_HOME


def _save_random_weights(arch: str) -> None:
    """Random weights of ``arch`` where torchvision expects its DEFAULT weights (a different seed per arch);
    saved once, by the first test that needs them (each xdist worker has its own folder)."""
    from torchvision.models import get_model, get_model_weights

    w = get_model_weights(arch).DEFAULT
    path = weights_file(w)
    if path.is_file():
        return
    torch.manual_seed(len(arch))
    quick = {"init_weights": False} if arch in ("googlenet", "inception_v3") else {}  # torch's default init
    module = get_model(arch, weights=None, num_classes=len(w.meta["categories"]), **quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), path)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A torch hub cache (``TORCH_HOME``) for this module; ``_save_random_weights`` fills it on demand."""
    folder = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as mp:
        _use_torch_home(mp, folder)
        yield folder


@pytest.fixture(scope="module")
def photos():
    """Two real 427x640 photos (and their mirror images) as float [0, 1] N×3×H×W, labels 0, 1, 0, 1."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    import numpy as np

    images = torch.from_numpy(np.stack(sklearn_datasets.load_sample_images().images)).permute(0, 3, 1, 2) / 255
    images = torch.cat([images, images.flip(-1)])
    return images, torch.tensor([0, 1, 0, 1])


def _reference_logits(arch: str, images: torch.Tensor) -> torch.Tensor:
    """torchvision's own pipeline: ``get_model(arch, weights=W)`` on ``W.transforms()`` of each image."""
    from torchvision.models import get_model, get_model_weights

    w = get_model_weights(arch).DEFAULT
    model = get_model(arch, weights=w).eval()
    transform = w.transforms()
    with torch.inference_mode():
        return torch.cat([model(transform(img).unsqueeze(0)) for img in images])


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_equal_torchvisions_pipeline_and_features_exist(fresh_context, hub, photos, arch):
    images, labels = photos
    _save_random_weights(arch)
    model = load_model(f"torchvision:{arch}", check_hash=False)  # random weights cannot carry the real hash
    assert model.num_classes == 1000 and model.categories[0] == "tench"
    ds = load_dataset((images.numpy(), labels.numpy()), name="photos", test_fraction=0.5)
    ev = evaluate(model, ds, split="test")  # through the engine: batched, channels-last for conv nets
    reference = _reference_logits(arch, images[ds.indices("test")])
    torch.testing.assert_close(torch.from_numpy(ev.logits), reference, rtol=1e-4,
                               atol=1e-4 * float(reference.abs().max()))
    assert ev.features.ndim == 2 and ev.features.shape[0] == 2 and ev.features.shape[1] >= 64
    assert torch.isfinite(torch.from_numpy(ev.features)).all() and ev.features.std() > 0


def test_builders_weight_settings_apply(fresh_context, hub):
    """GoogLeNet with ImageNet weights normalises its input itself (transform_input=True), as torchvision does."""
    _save_random_weights("googlenet")
    assert load_model("torchvision:googlenet", check_hash=False).module.transform_input is True
    assert load_model("torchvision:googlenet:none").module.transform_input is False


def test_squeezenet_features_are_the_pooled_input_of_its_conv_head(fresh_context, hub):
    model = load_model("torchvision:squeezenet1_1:none", image_size=64)
    assert model.resolve_node("penultimate") == ("classifier.1", True)
    assert model.num_classes == 1000


def test_a_module_without_a_head_is_read_for_its_output_as_features(fresh_context):
    from torch import nn

    from pytest_transfer import assert_transfer_accuracy_above

    net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())  # 3 "classes"
    images = torch.rand(40, 3, 8, 8)
    labels = images.mean(dim=(2, 3)).argmax(1)
    ds = load_dataset((images.numpy(), labels.numpy()), name="rgb")
    model = load_model(net, name="headless")
    assert model.num_classes is None and not model.has_head and model.resolve_node("penultimate") == ("", False)
    ev = evaluate(model, ds)
    assert ev.logits.shape == (len(ds.indices("test")), 3)
    with torch.inference_mode():
        expected = net(ds.batch(ev.indices))
    np.testing.assert_allclose(ev.features, expected.numpy(), rtol=1e-5, atol=1e-6)  # the output is the features
    with pytest.raises(ValueError, match=r"'headless' has no classification head.*num_classes="):
        assert_transfer_accuracy_above(model, ds, 0.0, method="direct")
    model = load_model(net, name="headless", num_classes=3)
    assert_transfer_accuracy_above(model, ds, 0.0, method="direct")  # a direct gate runs
    assert_transfer_accuracy_above(model, ds, 0.0)  # the linear probe reads the output


def test_a_model_whose_output_is_not_n_by_classes_is_refused(fresh_context):
    from torch import nn

    model = load_model(nn.Sequential(nn.Conv2d(3, 4, 1)), name="dense")
    ds = load_dataset((torch.rand(8, 3, 6, 6).numpy(), torch.arange(8).remainder(2).numpy()), name="rgb")
    with pytest.raises(ValueError, match=r"'dense' returns outputs of shape \(\d+, 4, 6, 6\).*N×classes"):
        evaluate(model, ds)


def test_hash_prefix_in_the_file_name_is_checked(fresh_context, hub):
    from torchvision.models import ResNet18_Weights

    _save_random_weights("resnet18")
    path = weights_file(ResNet18_Weights.DEFAULT)
    assert HASH_IN_NAME.search(path.name).group(1) == "f37072fd"
    with pytest.raises(ValueError) as info:
        load_model("torchvision:resnet18")
    msg = str(info.value)
    assert str(path) in msg and "'f37072fd'" in msg and "check_hash=False" in msg and "model_kwargs" in msg


def test_a_file_whose_hash_matches_its_name_passes_the_check(tmp_path):
    """The passing side of torch.hub's rule: a file named with its own sha256 prefix."""
    import hashlib

    from pytest_transfer.models.torchvision import verify_hash

    data = b"weights"
    good = tmp_path / f"net-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    good.write_bytes(data)
    verify_hash(good, "torchvision:net")  # no error
    (tmp_path / "net-00000000.pth").write_bytes(data)
    with pytest.raises(ValueError, match="'00000000'"):
        verify_hash(tmp_path / "net-00000000.pth", "torchvision:net")
    (tmp_path / "net.pth").write_bytes(data)
    verify_hash(tmp_path / "net.pth", "torchvision:net")  # no hash in the name: nothing to check


def test_missing_weights_name_the_expected_file(fresh_context, tmp_path, monkeypatch):
    _use_torch_home(monkeypatch, tmp_path / "empty")
    with pytest.raises(FileNotFoundError) as info:
        load_model("torchvision:resnet18")
    msg = str(info.value)
    assert "resnet18-f37072fd.pth" in msg and str(hub_checkpoint_dir()) in msg
    assert "never downloads" in msg and "torchvision:resnet18:none" in msg and "TORCH_HOME" in msg


def test_random_weights_are_seeded_by_the_session_seed(fresh_context):
    import dataclasses

    a = load_model("torchvision:resnet18:none")
    b = load_model("torchvision:resnet18:none")
    assert a.fingerprint() == b.fingerprint()
    before = torch.random.get_rng_state()
    fresh_context.settings = dataclasses.replace(fresh_context.settings, seed=1)
    c = load_model("torchvision:resnet18:none")
    assert c.fingerprint() != a.fingerprint()
    assert torch.equal(torch.random.get_rng_state(), before)  # the global generator is left alone


def test_weights_as_torchvision_takes_them_none_or_a_member(fresh_context, hub):
    from torchvision.models import ResNet18_Weights, ResNet50_Weights

    random = load_model("torchvision:resnet18", weights=None, image_size=32)  # as get_model(..., weights=None)
    assert random.name == "torchvision:resnet18:none"
    assert random.fingerprint() == load_model("torchvision:resnet18:none", image_size=32).fingerprint()
    _save_random_weights("resnet18")
    member = load_model("torchvision:resnet18", weights=ResNet18_Weights.IMAGENET1K_V1, check_hash=False)
    named = load_model("torchvision:resnet18:IMAGENET1K_V1", check_hash=False)
    assert member.name == named.name == "torchvision:resnet18:IMAGENET1K_V1"
    assert member.fingerprint() == named.fingerprint() != random.fingerprint()
    with pytest.raises(ValueError, match="belong to another architecture; pass a member of ResNet18_Weights"):
        load_model("torchvision:resnet18", weights=ResNet50_Weights.DEFAULT)
    with pytest.raises(ValueError, match=r"weights: given twice, in the spec \(torchvision:resnet18:none\)"):
        load_model("torchvision:resnet18:none", weights=None)


def test_unknown_arch_suggests_names_spelled_alike(fresh_context):
    with pytest.raises(ValueError, match=r"torchvision has no model 'resnet81'; did you mean resnet18"):
        load_model("torchvision:resnet81")
    with pytest.raises(ValueError, match="unknown weights 'IMAGENET9K'; valid: DEFAULT"):
        load_model("torchvision:resnet18:IMAGENET9K")
    with pytest.raises(ValueError, match="torchvision has no model 'maskrcnn_resnet50_fpn'"):
        load_model("torchvision:maskrcnn_resnet50_fpn")  # a detection model, not a classifier


def test_preprocess_is_the_weights_transforms(fresh_context, hub):
    from torchvision.models import ResNet18_Weights

    _save_random_weights("resnet18")
    model = load_model("torchvision:resnet18", check_hash=False)
    x = torch.rand(3, 3, 50, 70)
    torch.testing.assert_close(model.preprocess(x), ResNet18_Weights.DEFAULT.transforms()(x))
    gray = torch.rand(2, 1, 40, 30)
    assert model.preprocess(gray).shape == (2, 3, 224, 224)
    small = load_model("torchvision:resnet18", check_hash=False, image_size=32)
    assert small.preprocess(x).shape == (3, 3, 32, 32)
    assert small.preprocess.transform.resize_size == [37]  # 256/224 of the crop, as the weights scale it


def test_list_models_lists_torchvisions_classifiers(fresh_context):
    from pytest_transfer import list_models
    from pytest_transfer.models.torchvision import classification_models

    assert len(classification_models()) >= 80
    assert list_models("torchvision:squeezenet*", torchvision=True) == [
        "torchvision:squeezenet1_0", "torchvision:squeezenet1_1"]
    assert not list_models("torchvision:*rcnn*", torchvision=True)


@pytest.mark.parametrize(("arch", "max_step"), [("resnet18", 0.02), ("efficientnet_b0", 0.2)])
def test_preprocess_equals_torchvisions_pil_pipeline_up_to_8_bit_rounding(fresh_context, arch, max_step):
    """torchvision feeding a PIL photo resizes it in 8 bits (bilinear: one 8-bit step, 1/255/0.229 = 0.017
    after normalising; bicubic: PIL also clips the overshoot); the float pipeline differs by no more."""
    from PIL import Image
    from torchvision.models import get_model_weights

    from tests._helpers import sample_photos

    model = load_model(f"torchvision:{arch}:none")  # random weights, the DEFAULT weights' transforms
    transform = get_model_weights(arch).DEFAULT.transforms()
    for photo in sample_photos():
        pil = transform(Image.fromarray(photo))
        ours = model.preprocess(torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float() / 255)[0]
        assert ours.shape == pil.shape
        assert float((ours - pil).abs().max()) < max_step and float((ours - pil).abs().mean()) < 0.01


def test_a_misspelt_keyword_of_the_source_is_refused_before_the_weights_are_read(fresh_context):
    """``check_hsh=False`` (a typo) on re-saved weights said the hash did not match and told the user to pass
    check_hash=False, which they believed they had; a builder argument such as googlenet's ``init_weights``
    still reaches the builder."""
    with pytest.raises(ValueError, match="the keyword 'check_hsh' is not taken by this source; did you mean "
                                         "'check_hash'"):
        load_model("torchvision:resnet18", check_hsh=False)
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=r"'pretraind'.*did you mean 'pretrained'"):
        load_model("timm:test_efficientnet", pretraind=False)
    assert load_model("torchvision:googlenet:none", init_weights=False, aux_logits=False, image_size=32)
