"""``hf:<folder or repo id>``: a tiny ViT saved with save_pretrained gives the numbers transformers gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_transfer import evaluate, load_dataset, load_model
from tests._helpers import fill_hf_cache, sample_photos

transformers = pytest.importorskip("transformers", reason="needs the [hf] extra")
LABELS = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny random ViT (32 px, patches of 8) and its image processor, saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("tiny-vit")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=3,
                                    id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).eval().save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6],
                                   image_std=[0.2, 0.25, 0.3]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def photos():
    """The two real photos and their mirror images as float [0, 1] N×3×H×W, labels 0, 1, 0, 1."""
    images = torch.from_numpy(np.stack(sample_photos())).permute(0, 3, 1, 2).float() / 255
    return torch.cat([images, images.flip(-1)]), np.array([0, 1, 0, 1])


def test_logits_equal_the_model_on_its_processors_output(fresh_context, saved, photos):
    images, labels = photos
    model = load_model(f"hf:{saved}")
    assert model.num_classes == 3 and model.categories == LABELS
    ev = evaluate(model, load_dataset((images.numpy(), labels), name="photos", test_fraction=0.5), split="test")
    reference = transformers.ViTForImageClassification.from_pretrained(saved).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(saved)
    chosen = images[ev.indices]
    with torch.inference_mode():
        inputs = processor(images=list(chosen), do_rescale=False, return_tensors="pt")
        out = reference(**inputs, output_hidden_states=True)
        as_uint8 = processor(images=list((chosen * 255).round().to(torch.uint8)), return_tensors="pt")
        from_uint8 = reference(**as_uint8).logits
        cls = reference.vit.layernorm(out.hidden_states[-1])[:, 0]  # what ViT's classifier reads: the final [CLS]
    torch.testing.assert_close(torch.from_numpy(ev.logits), out.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(ev.features), cls, rtol=1e-4, atol=1e-5)
    assert float((from_uint8 - out.logits).abs().max()) < 0.05  # 8-bit images: the same up to rounding


def test_a_cached_repo_id_loads_offline(fresh_context, saved, tmp_path, monkeypatch):
    files = {p.name: p for p in saved.iterdir()}
    fill_hf_cache(tmp_path / "hub", "acme/tiny-vit", files)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    by_id = load_model("hf:acme/tiny-vit")
    from_folder = load_model(f"hf:{saved}")
    for k, v in from_folder.module.state_dict().items():
        assert torch.equal(by_id.module.state_dict()[k], v), k
    assert by_id.name == "hf:acme/tiny-vit"


def test_missing_model_names_the_cache_folder(fresh_context, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError) as info:
        load_model("hf:acme/not-here")
    msg = str(info.value)
    assert str(tmp_path / "hub" / "models--acme--not-here") in msg and "never downloads" in msg
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        load_model(f"hf:{tmp_path}")


def test_another_feature_node_and_default_labels(fresh_context, saved, tmp_path):
    model = load_model(f"hf:{saved}", feature_node="model.vit.layernorm")  # all tokens, averaged
    images = torch.rand(8, 3, 20, 24)
    ev = evaluate(model, load_dataset((images.numpy(), np.arange(8) % 2), name="rgb", test_fraction=0.5))
    assert ev.features.shape == (4, 32)
    with pytest.raises(ValueError, match=r"'model.vit.layrnorm' is not a submodule.*Did you mean model.vit.layernorm"):
        load_model(f"hf:{saved}", feature_node="model.vit.layrnorm")
    plain = tmp_path / "plain"
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64, num_labels=2)
    transformers.ViTForImageClassification(config).save_pretrained(plain)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(plain)
    unnamed = load_model(f"hf:{plain}")
    assert unnamed.num_classes == 2 and unnamed.categories is None  # LABEL_0, LABEL_1 are no names


PROCESSORS = {  # (class, options): per-pixel steps beyond "value / 255, then normalise"
    "efficientnet-offset-top": ("EfficientNetImageProcessor", {"size": {"height": 36, "width": 36},
                                                               "crop_size": {"height": 32, "width": 32},
                                                               "do_center_crop": True, "rescale_offset": True}),
    "no-rescale": ("ViTImageProcessor", {"size": {"height": 32, "width": 32}, "do_rescale": False}),
    "rescale-1/127.5": ("ViTImageProcessor", {"size": {"height": 32, "width": 32}, "rescale_factor": 1 / 127.5}),
}


def _save_with(folder, saved, name):
    import shutil

    cls, options = PROCESSORS[name]
    shutil.copytree(saved, folder, dirs_exist_ok=True)
    getattr(transformers, cls)(**options).save_pretrained(folder)
    return folder, options["size"]["height"]


@pytest.mark.parametrize("name", PROCESSORS)
def test_tensors_get_all_of_the_processors_per_pixel_steps(fresh_context, saved, photos, tmp_path, name):
    """``model(images)`` (the whole preprocess on float [0, 1] tensors: fine-tuning, NTK) equals the model on
    the processor's own output for the same images in 8 bits. The images are at the processor's size, so its
    resize is the identity and the reference exact."""
    folder, side = _save_with(tmp_path / name, saved, name)
    reference = transformers.ViTForImageClassification.from_pretrained(folder).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    u8 = (photos[0][:, :, :side, 100:100 + side] * 255).round().to(torch.uint8)
    with torch.inference_mode():
        expected = reference(pixel_values=processor(images=list(u8), return_tensors="pt")["pixel_values"]).logits
        got = load_model(f"hf:{folder}")(u8.float() / 255)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_a_processor_step_the_split_does_not_know_is_refused(fresh_context, saved, tmp_path, monkeypatch):
    """The per-image / per-batch split is checked against the processor itself at load: a per-pixel step it
    missed (here EfficientNet's ``rescale_offset``, dropped on purpose) is a ValueError naming it, not numbers
    that silently differ from the library's."""
    from pytest_transfer.models import geometry, hf

    folder, _ = _save_with(tmp_path / "eff", saved, "efficientnet-offset-top")
    load_model(f"hf:{folder}")  # the real split: accepted

    class NoOffset(geometry.ProcessorPhotometric):
        def __init__(self, processor):
            super().__init__(processor)
            self.offset = 0.0

    monkeypatch.setattr(hf, "ProcessorPhotometric", NoOffset)
    with pytest.raises(ValueError, match=r"EfficientNetImageProcessor does more per pixel .* differs by"):
        load_model(f"hf:{folder}")
