"""Image folders are fed as each model's library feeds a file, whatever the files' sizes, modes and formats.

The reference is the library's own file pipeline, computed here image by
image: ``PIL.Image.open(f).convert("RGB")`` → the library's eval transform
(torchvision ``W.transforms()``; timm ``create_transform(**resolve_data_config
({}, model=m))``; the Hugging Face image processor saved with the model;
torchvision ``Resize`` + ``CenterCrop`` + ``ToTensor`` + ``Normalize`` for a
``checkpoint:`` model's ``Preprocess``) → the model. Folders are built from
real photographs (scikit-learn's sample images) cropped to many sizes, saved
as JPEG and PNG, in colour, greyscale and palette modes. Random weights are
laid out where each library looks, as in ``tests/test_models_*.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_transfer import evaluate, load_dataset, load_model
from tests._helpers import fill_hf_cache, sample_photos

TIMM_NAME = "test_efficientnet.r160_in1k"  # crop 0.95, bicubic, 160 px
# (top, left, height, width) crops of the two 427×640 photos: square, tall, wide, tiny, whole
CROPS = [(0, 0, 90, 120), (10, 200, 150, 90), (50, 30, 200, 333), (100, 100, 256, 256), (0, 100, 427, 512),
         (200, 300, 113, 97), (0, 0, 427, 640), (30, 400, 300, 160)]
# file kind of each crop, in turn: (suffix, PIL mode)
KINDS = [(".jpg", "RGB"), (".png", "RGB"), (".png", "L"), (".jpg", "L"), (".png", "P"), (".jpeg", "RGB")]


def _write_folder(root, *, mixed: bool) -> None:
    from PIL import Image

    photos = sample_photos()
    for n, (top, left, h, w) in enumerate(CROPS * 2):
        photo = photos[n % 2] if n < len(CROPS) else photos[n % 2][:, ::-1]
        img = Image.fromarray(np.ascontiguousarray(photo[top:top + h, left:left + w]))
        suffix, mode = KINDS[n % len(KINDS)] if mixed else (".jpg", "RGB")
        if not mixed:
            img = img.resize((200, 150), Image.BILINEAR)
        folder = root / ("cat" if n % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        img.convert(mode).save(folder / f"img{n:02d}{suffix}", quality=90)


@pytest.fixture(scope="module", params=["mixed", "one-size"])
def folder(request, tmp_path_factory):
    """A two-class folder of 16 files: ``mixed`` (8 sizes from 90 to 640 px, JPEG and PNG, RGB, L and P) or
    ``one-size`` (all 200×150 RGB JPEGs)."""
    root = tmp_path_factory.mktemp(f"photos-{request.param}")
    _write_folder(root, mixed=request.param == "mixed")
    return root


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """Random SqueezeNet 1.1 weights where torchvision looks for its DEFAULT weights."""
    from torchvision.models import get_model, get_model_weights

    folder = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(folder))
        mp.setattr(torch.hub, "_hub_dir", None)
        from pytest_transfer.models.torchvision import weights_file

        w = get_model_weights("squeezenet1_1").DEFAULT
        torch.manual_seed(1)
        path = weights_file(w)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(get_model("squeezenet1_1", weights=None).state_dict(), path)
        yield w


def _torchvision(torch_home, tmp_path, monkeypatch):
    from torchvision.models import get_model

    model = load_model("torchvision:squeezenet1_1", check_hash=False)
    return model, get_model("squeezenet1_1", weights=torch_home).eval(), torch_home.transforms()


def _timm(torch_home, tmp_path, monkeypatch):
    timm = pytest.importorskip("timm", reason="needs the [timm] extra")
    from huggingface_hub import constants
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(timm.create_model(TIMM_NAME, pretrained=False).state_dict(), str(tmp_path / "model.safetensors"))
    fill_hf_cache(tmp_path / "hub", f"timm/{TIMM_NAME}", {"model.safetensors": tmp_path / "model.safetensors"})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    reference = timm.create_model(TIMM_NAME, pretrained=True, cache_dir=str(tmp_path / "hub")).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=reference))
    return load_model(f"timm:{TIMM_NAME}"), reference, transform


def _hf(torch_home, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers", reason="needs the [hf] extra")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).eval().save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6],
                                   image_std=[0.2, 0.25, 0.3]).save_pretrained(tmp_path)
    return _hf_parts(transformers.ViTForImageClassification, tmp_path)


def _hf_efficientnet(torch_home, tmp_path, monkeypatch):
    """A tiny ConvNeXt fed by EfficientNet's image processor: rescale with ``rescale_offset`` (×1/255 − 1),
    normalise, then ``include_top`` (a second division by ``image_std``)."""
    return _tiny_convnext(tmp_path, "EfficientNetImageProcessor", size={"height": 36, "width": 36},
                          crop_size={"height": 32, "width": 32}, rescale_offset=True)


def _tiny_convnext(folder, processor_class: str, **options):
    """A tiny random ConvNeXt saved in ``folder`` with ``processor_class(**options)``: the ``hf:`` model, the
    reference logits function and the processor's own transform of a PIL image."""
    transformers = pytest.importorskip("transformers", reason="needs the [hf] extra")
    torch.manual_seed(0)
    transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
        hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3)).eval().save_pretrained(folder)
    getattr(transformers, processor_class)(**options).save_pretrained(folder)
    return _hf_parts(transformers.ConvNextForImageClassification, folder)


def _hf_parts(model_class, folder):
    """A model and processor saved in ``folder``: the ``hf:`` model, the reference logits function (the
    library's class called on pixel values) and the processor's own transform of a PIL image."""
    import transformers

    reference = model_class.from_pretrained(folder).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder)

    def transform(img):
        return processor(images=img, return_tensors="pt")["pixel_values"][0]

    return load_model(f"hf:{folder}"), lambda x: reference(pixel_values=x).logits, transform


def _checkpoint(torch_home, tmp_path, monkeypatch):
    from torchvision import transforms as T
    from torchvision.models import resnet18

    torch.manual_seed(0)
    net = resnet18(num_classes=5).eval()
    torch.save(net.state_dict(), tmp_path / "fine-tuned.pt")
    model = load_model(f"checkpoint:{tmp_path / 'fine-tuned.pt'}", arch="resnet18", image_size=64)
    transform = T.Compose([T.Resize(64), T.CenterCrop(64), T.ToTensor(),
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    return model, net, transform


LIBRARIES = {"torchvision": _torchvision, "timm": _timm, "transformers": _hf,
             "transformers-efficientnet": _hf_efficientnet, "checkpoint": _checkpoint}


@pytest.mark.parametrize("library", LIBRARIES)
def test_folder_logits_equal_the_librarys_file_pipeline(fresh_context, folder, torch_home, tmp_path, monkeypatch,
                                                          library):
    from PIL import Image

    model, reference, transform = LIBRARIES[library](torch_home, tmp_path, monkeypatch)
    ds = load_dataset(f"imagefolder:{folder}")
    ev = evaluate(model, ds, split="all")
    files = [ds.source.paths[i] for i in ev.indices]
    with torch.inference_mode():
        expected = torch.cat([reference(transform(Image.open(f).convert("RGB"))[None]) for f in files])
    got = torch.from_numpy(ev.logits)
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= 1e-4 * scale + 1e-5, (library, float((got - expected).abs().max()))


@pytest.mark.parametrize("library", ["checkpoint", "transformers"])
def test_a_torch_dataset_of_pil_images_is_fed_as_files_are(fresh_context, folder, torch_home, tmp_path, monkeypatch,
                                                            library):
    """``torchvision.datasets.ImageFolder(root)`` (PIL items, no transform) gives the library's numbers too."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    model, reference, transform = LIBRARIES[library](torch_home, tmp_path, monkeypatch)
    data = ImageFolder(str(folder))
    ev = evaluate(model, load_dataset(data, name="ImageFolder"), split="all")
    with torch.inference_mode():
        expected = torch.cat([reference(transform(Image.open(data.samples[i][0]).convert("RGB"))[None])
                              for i in ev.indices])
    scale = float(expected.abs().max())
    assert float((torch.from_numpy(ev.logits) - expected).abs().max()) <= 1e-4 * scale + 1e-5


def test_ntk_on_a_folder_sees_each_file_as_the_library_feeds_it(fresh_context, folder, torch_home, tmp_path,
                                                                 monkeypatch):
    """The NTK Gram of a ``checkpoint:`` model on a folder equals the Gram of the same network on the images the
    library's own file pipeline makes (Resize + CenterCrop + ToTensor + Normalize per file, in this test)."""
    import copy

    from PIL import Image

    from pytest_transfer.gates.similarity import ntk_gram

    model, net, transform = _checkpoint(torch_home, tmp_path, monkeypatch)
    ds = load_dataset(f"imagefolder:{folder}")
    idx = ds.indices("test")[:6]
    x = torch.stack([transform(Image.open(ds.source.paths[i]).convert("RGB")) for i in idx])
    reference = load_model(copy.deepcopy(net), preprocess=lambda t: t, name="reference")
    got = ntk_gram(model, ds, n_samples=6, split="test", layers=1)
    want = ntk_gram(reference, x, n_samples=6, layers=1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * float(np.abs(want).max()))


def test_timm_border_crop_pads_16_bit_files_and_float_batches_with_the_mean_colour(fresh_context, tmp_path):
    """timm's ``crop_mode='border'`` (``ResizeKeepRatio`` + ``CenterCropOrPad`` filled with the mean colour in
    8-bit units) on a 16-bit PNG and on an in-memory array, whose pixels are floats in [0, 1]: padded with that
    colour / 255, channel by channel. The images are 177×100 and 100×177, so the resize is the identity and
    the reference is exact: the library's pipeline on the 8-bit image the 16-bit file holds ×257
    (``v × 257 / 65 535 = v / 255``)."""
    timm = pytest.importorskip("timm", reason="needs the [timm] extra")
    from PIL import Image

    model = load_model("timm:test_vit.r160_in1k", pretrained=False,
                       pretrained_cfg_overlay={"crop_mode": "border", "crop_pct": 0.9})  # 177 → 160, padded
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model.module))
    photos = sample_photos()
    grey = [np.asarray(Image.fromarray(photos[0][:100, :177]).convert("L")),
            np.asarray(Image.fromarray(photos[1][:177, 200:300]).convert("L"))]
    for n, v in enumerate(grey):
        (tmp_path / f"c{n}").mkdir()
        Image.fromarray(v.astype(np.uint16) * 257).save(tmp_path / f"c{n}" / "deep.png")
    colour = np.stack([photos[0][:100, :177], photos[1][:100, 300:477]])
    cases = [(f"imagefolder:{tmp_path}", [Image.fromarray(v).convert("RGB") for v in grey]),
             ((colour.transpose(0, 3, 1, 2), np.array([0, 1])), [Image.fromarray(a) for a in colour])]
    for data, images in cases:
        ev = evaluate(model, load_dataset(data, name="border"), split="all")
        with torch.inference_mode():
            expected = torch.cat([model.module(transform(images[i])[None]) for i in ev.indices])
        scale = float(expected.abs().max())
        assert float((torch.from_numpy(ev.logits) - expected).abs().max()) <= 1e-4 * scale + 1e-5


@pytest.mark.parametrize("processor_class", ["BitImageProcessor", "MobileViTImageProcessor"])
def test_16_bit_files_reach_processors_that_convert_or_flip_channels(fresh_context, tmp_path, processor_class):
    """A 16-bit PNG (read as value / 65 535) fed to a processor that calls ``convert("RGB")`` (BiT: it would
    saturate the float image to 0 and 1) or flips RGB to BGR (MobileViT: one float band has no channel 2)
    gives the logits of the 8-bit image it was made from (×257, so value / 65 535 = v / 255). The files are at
    the processor's size, so its resize is the identity and the reference exact."""
    from PIL import Image

    model, reference, transform = _tiny_convnext(tmp_path / "model", processor_class, size={"shortest_edge": 32},
                                                 crop_size={"height": 32, "width": 32})
    photos, grey = sample_photos(), []
    for n in range(4):
        grey.append(np.asarray(Image.fromarray(photos[n % 2][40 * n:40 * n + 32, 60:92]).convert("L")))
        (tmp_path / "data" / f"c{n % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(grey[-1].astype(np.uint16) * 257).save(tmp_path / "data" / f"c{n % 2}" / f"{n}.png")
    ds = load_dataset(f"imagefolder:{tmp_path / 'data'}")
    ev = evaluate(model, ds, split="all")
    with torch.inference_mode():
        expected = torch.cat([reference(transform(Image.fromarray(grey[int(ds.source.paths[i][-5])]).convert("RGB"))
                                        [None]) for i in ev.indices])
    scale = float(expected.abs().max())
    assert float((torch.from_numpy(ev.logits) - expected).abs().max()) <= 1e-4 * scale + 1e-5
