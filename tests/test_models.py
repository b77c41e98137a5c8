"""Model sources: torchvision (offline weights), checkpoints, modules, registered names; feature nodes."""

from __future__ import annotations

import dataclasses

import numpy as np
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


def test_preprocess_keeps_the_aspect_ratio_like_torchvision_resize_and_centre_crop():
    from torchvision.transforms import v2

    x = torch.zeros(2, 3, 30, 50)
    x[..., :8] = 1.0  # a bright band on the left: stretched to 16×16 it would fill columns 0-1, cropped it goes
    out = Preprocess(size=16)(x)
    assert out.shape == (2, 3, 16, 16)
    assert float(out[..., :2].max()) < 0.05  # 50 → 26 columns (the band → 4.3), the centre 16 start at column 5
    reference = v2.Compose([v2.Resize(16, antialias=True), v2.CenterCrop(16)])(x)
    assert torch.allclose(out, reference, atol=1e-6)
    for h, w in [(40, 20), (33, 50), (31, 47), (17, 16), (16, 90), (9, 12), (12, 9)]:  # odd crops, up and down
        image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        expected = v2.Compose([v2.Resize(16, antialias=True), v2.CenterCrop(16)])(image)
        assert torch.allclose(Preprocess(size=16)(image), expected, atol=1e-6), (h, w)


def test_preprocess_fingerprint_sees_what_happens_to_non_square_images():
    import torch.nn.functional as F

    from pytest_transfer.models.fingerprint import preprocess_fingerprint

    def stretch(x):  # the same as Preprocess(size=16) on square images, not on others
        return F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)

    square = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(stretch(square), Preprocess(size=16)(square), atol=1e-6)
    assert preprocess_fingerprint(stretch, 3) != preprocess_fingerprint(Preprocess(size=16), 3)


def test_registered_model_names(fresh_context):
    fresh_context.models.register("tiny", lambda **kw: tiny_net(**kw))
    m = load_model("tiny", n_classes=4)
    assert m.name == "tiny" and m.num_classes == 4
    with pytest.raises(ValueError, match=r"registered name \(tiny\)"):
        load_model("tinyy")


class Calibrated(nn.Module):
    """A small classifier whose output depends on state outside its state dict: a plain ``temperature``
    attribute, a non-persistent buffer, a flag, a string mode and a tuple."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 3)
        self.register_buffer("shift", torch.zeros(3), persistent=False)
        self.register_buffer("bias_prior", torch.zeros(3))
        self.temperature = 1.0
        self.flip = False
        self.mode = "plain"
        self.crop = (0, 8)
        self.gain = torch.ones(3)  # a tensor kept as a plain attribute (neither parameter nor buffer)

    def forward(self, x):
        x = x[..., self.crop[0]:self.crop[1], self.crop[0]:self.crop[1]]
        z = self.head(self.features(x.flip(-1) if self.flip else x)) / self.temperature
        z = (z + self.shift + self.bias_prior) * self.gain
        return z.square() if self.mode == "square" else z


def _set_attr(name, value):
    return lambda net: setattr(net, name, value)


def _in_place(get):
    def change(net):
        with torch.no_grad():
            get(net).add_(0.5)
    return change


CHANGES = {
    "parameter in place": _in_place(lambda n: n.head.weight),
    "parameter through .data": lambda n: n.head.bias.data.add_(0.5),
    "persistent buffer": _in_place(lambda n: n.bias_prior),
    "non-persistent buffer": _in_place(lambda n: n.shift),
    "non-persistent buffer through .data": lambda n: n.shift.data.add_(0.5),
    "replaced parameter": lambda n: setattr(n.head, "bias", nn.Parameter(n.head.bias.detach() + 0.5)),
    "number attribute": _set_attr("temperature", 2.0),
    "flag attribute": _set_attr("flip", True),
    "string attribute": _set_attr("mode", "square"),
    "tuple attribute": _set_attr("crop", (1, 7)),
    "tensor attribute in place": _in_place(lambda n: n.gain),
    "replaced tensor attribute": lambda n: setattr(n, "gain", torch.full((3,), 2.0)),
    "attribute of a submodule": lambda n: setattr(n.features[0], "padding", (2, 2)),
}


@pytest.mark.parametrize("kind", CHANGES)
def test_every_kind_of_change_gives_a_new_fingerprint_and_a_new_pass(fresh_context, blobs, kind):
    from pytest_transfer import evaluate

    model = load_model(Calibrated(), name="calibrated", preprocess=Preprocess(size=8, channels=1))
    before = model.fingerprint()
    first = evaluate(model, blobs).logits
    passes = fresh_context.forward_passes
    CHANGES[kind](model.module)
    assert model.fingerprint() != before
    second = evaluate(model, blobs).logits
    assert fresh_context.forward_passes == passes + 1  # not served from the memo
    assert not np.allclose(first, second)


def test_fingerprint_ignores_mode_device_moves_and_layout(fresh_context):
    model = load_model(Calibrated(), preprocess=Preprocess(size=8, channels=1))
    before = model.fingerprint()
    model.module.train()
    assert model.fingerprint() == before  # gates run in eval mode: the mode is not part of the outputs
    model.module.to(memory_format=torch.channels_last)
    assert model.fingerprint() == before  # values, not layout
    twin = load_model(Calibrated(), preprocess=Preprocess(size=8, channels=1))
    assert twin.fingerprint() == before


def test_a_gate_leaves_the_module_as_it_was(fresh_context, blobs):
    from pytest_transfer import assert_robust_under_attack, assert_transfer_accuracy_above

    net = Calibrated().train()
    net.features[0].eval()  # one submodule in another mode than the rest
    weight, shift = net.features[0].weight, net.shift
    ptr = weight.data_ptr()
    model = load_model(net, preprocess=Preprocess(size=8, channels=1))
    assert_transfer_accuracy_above(model, blobs, 0.0)
    assert_robust_under_attack(model, blobs, attack="fgsm", eps=0.01, min_accuracy=0.0)
    assert net.training and net.head.training and not net.features[0].training
    assert net.features[0].weight is weight and weight.data_ptr() == ptr and weight.is_contiguous()
    assert net.shift is shift
    model(torch.rand(2, 1, 8, 8))  # calling the model directly too
    assert net.training and not net.features[0].training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device type (CUDA)")
def test_a_gate_on_another_device_leaves_the_module_where_it_was(fresh_context, blobs):
    from pytest_transfer import evaluate
    from pytest_transfer.context import Context

    on_gpu = Context(dataclasses.replace(fresh_context.settings, device="cuda"))
    net = Calibrated().train()
    model = load_model(net, preprocess=Preprocess(size=8, channels=1))
    ev = evaluate(model, blobs, context=on_gpu)
    assert on_gpu.device.type == "cuda" and on_gpu.forward_passes == 1
    assert net.head.weight.device.type == "cpu" and net.training and net.features[0].weight.is_contiguous()
    with torch.inference_mode():
        reference = net.eval()(Preprocess(size=8, channels=1)(blobs.batch(ev.indices)))
    torch.testing.assert_close(torch.from_numpy(ev.logits), reference, rtol=1e-3, atol=1e-3)


def test_restored_puts_every_tensor_back_after_a_device_move():
    """The device half of restoring without a GPU: the meta device holds no data, so only the very tensors
    restored() kept can bring the values back."""
    from pytest_transfer.models import restored

    net = Calibrated()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weight = net.head.weight
    with restored(net):
        net.to("meta").to(memory_format=torch.channels_last)
        assert net.head.weight.device.type == "meta"
    assert net.head.weight is weight and weight.device.type == "cpu" and net.shift.device.type == "cpu"
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_an_attribute_change_is_not_served_from_the_disk_cache(fresh_context, blobs, tmp_path):
    import dataclasses as dc

    from pytest_transfer import evaluate
    from pytest_transfer.context import Context

    cached = Context(dc.replace(fresh_context.settings, no_cache=False, cache_dir=str(tmp_path / "cache")))
    net = Calibrated()
    first = evaluate(load_model(net, preprocess=Preprocess(size=8, channels=1)), blobs, context=cached)
    again = evaluate(load_model(net, preprocess=Preprocess(size=8, channels=1)), blobs,
                     context=Context(cached.settings))
    assert again.from_cache and np.array_equal(first.logits, again.logits)  # the cache works
    net.temperature = 3.0
    changed = evaluate(load_model(net, preprocess=Preprocess(size=8, channels=1)), blobs,
                       context=Context(cached.settings))
    assert not changed.from_cache and np.allclose(changed.logits * 3.0, first.logits, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fingerprint_does_not_depend_on_the_thread_count(fresh_context, threads):
    """A resizing preprocess rounds differently on 1 and 2 threads; a serial run and an xdist worker
    (fewer threads each) must still share cache entries."""
    before = torch.get_num_threads()
    resize = {"size": 224, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    reference = TransferModel(tiny_net(channels=3), preprocess=Preprocess(**resize)).fingerprint()
    try:
        torch.set_num_threads(threads)
        model = TransferModel(tiny_net(channels=3), preprocess=Preprocess(**resize))
        assert model.fingerprint() == reference
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before


def test_a_one_channel_model_sees_the_luma_of_colour_images_in_every_path(fresh_context):
    """Colour images and a greyscale model: the engine, attacks and fine-tuning all feed ITU-R 601 luma
    (torchvision's rgb_to_grayscale), so no path crashes on a channel mismatch."""
    from torchvision.transforms.functional import rgb_to_grayscale

    from pytest_transfer import assert_robust_under_attack, assert_transfer_accuracy_above, evaluate, load_dataset
    from tests._helpers import make_blobs_images

    grey, y = make_blobs_images()
    colour = np.repeat(grey, 3, axis=1) * np.asarray([1.0, 0.8, 0.6], dtype=np.float32).reshape(1, 3, 1, 1)
    dataset = load_dataset((colour, y), name="colour-blobs")
    model = load_model(tiny_net(channels=1), name="grey", preprocess=Preprocess(size=8, channels=1))
    x = torch.from_numpy(colour[:4])
    assert torch.equal(model.inputs(x), rgb_to_grayscale(x, num_output_channels=1))
    test = dataset.indices("test")
    luma = rgb_to_grayscale(torch.from_numpy(colour[test]), num_output_channels=1)
    with torch.no_grad():
        expected = model.module.eval()(luma).numpy()
    np.testing.assert_allclose(evaluate(model, dataset).logits, expected, rtol=1e-5, atol=1e-6)
    assert_transfer_accuracy_above(model, dataset, 0.0, method="finetune", finetune={"epochs": 1})
    assert_robust_under_attack(model, dataset, attack="fgsm", eps=0.01, min_accuracy=0.0)
