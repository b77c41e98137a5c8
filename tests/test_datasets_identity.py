"""What a dataset's rows are: a torch Dataset fingerprinted by its items, one pixel rule for every source, sample ids.

Folders are built from scikit-learn's real photographs (PNG, lossless), and
every number is compared with torchvision's own ``ImageFolder`` + transform
run on the same files.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import pytest
import torch

from tests._helpers import sample_photos, tiny_net

CLASSES = ("china", "flower")


@functools.cache
def _photos():
    return sample_photos()


def photo_folder(root, *, n_per_class: int = 6, size: int = 24):
    """``root/<class>/<k>.png``: crops of one real photo per class, resized to ``size`` px."""
    from PIL import Image

    for cls, photo in zip(CLASSES, _photos(), strict=True):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k in range(n_per_class):
            top, left = (37 * k) % 300, (53 * k) % 500
            crop = Image.fromarray(photo[top:top + 2 * size, left:left + 2 * size])
            crop.resize((size, size), Image.BILINEAR).save(root / cls / f"{k:03d}.png")
    return root


def _reference_logits(net, folder, transform):
    """The model on torchvision's own ImageFolder pipeline: every item, in ImageFolder's order."""
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    ref = ImageFolder(str(folder), transform=T.Compose([transform, T.ToTensor()]))
    with torch.no_grad():
        return net(torch.stack([ref[i][0] for i in range(len(ref))])).numpy()


# --- item 5: a torch Dataset is fingerprinted by what its items are -----------------------------------------

def test_a_flip_in_the_transform_is_a_different_dataset_in_the_session(fresh_context, tmp_path):
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    from pytest_transfer import evaluate, load_dataset

    folder = photo_folder(tmp_path / "photos")
    net = tiny_net(n_classes=2, channels=3).eval()
    plain = load_dataset(ImageFolder(str(folder)))
    flipped = load_dataset(ImageFolder(str(folder), transform=T.RandomHorizontalFlip(p=1.0)))
    assert plain.fingerprint() != flipped.fingerprint()  # the old key: the same files, the same fingerprint
    ev_plain = evaluate(net, plain, split="all")
    ev_flip = evaluate(net, flipped, split="all")
    assert fresh_context.forward_passes == 2  # the flipped one was not served the plain one's logits
    np.testing.assert_allclose(ev_plain.logits, _reference_logits(net, folder, T.Lambda(lambda im: im)),
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(ev_flip.logits, _reference_logits(net, folder, T.RandomHorizontalFlip(p=1.0)),
                               rtol=0, atol=1e-5)
    assert np.abs(ev_flip.logits - ev_plain.logits).max() > 1e-3


def test_same_configuration_same_fingerprint_and_a_changed_one_differs(fresh_context, tmp_path):
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    from pytest_transfer import load_dataset

    folder = photo_folder(tmp_path / "photos", n_per_class=3)

    def fp(transform):
        return load_dataset(ImageFolder(str(folder), transform=transform)).fingerprint()

    def compose(size, mean):
        return T.Compose([T.Resize(size), T.CenterCrop(size), T.Lambda(lambda im: im.point(lambda v: v * mean))])

    base = fp(compose(20, 1))
    assert fp(compose(20, 1)) == base  # a new object with the same parameters and code: the same key
    assert fp(compose(18, 1)) != base  # a parameter
    assert fp(compose(20, 0.5)) != base  # a value captured by a lambda's closure
    ds = ImageFolder(str(folder), transform=compose(20, 1))
    target = load_dataset(ds)
    assert target.fingerprint() == base
    ds.transform = compose(20, 0.25)  # the same object, its transform replaced: seen
    assert target.fingerprint() != base


def test_description_holds_parameters_not_memory_addresses():
    from torchvision import transforms as T

    from pytest_transfer.datasets.describe import describe

    text = describe(T.Compose([T.Resize(256), T.Lambda(lambda x: x), T.Normalize([0.5], [0.25])]))
    assert "size=256" in text and "interpolation=InterpolationMode.BILINEAR" in text
    assert "0.25" in text
    assert "0x" not in text and " at " not in text


def test_items_computed_without_files_are_digested(fresh_context):
    from pytest_transfer import load_dataset

    class Shades(torch.utils.data.Dataset):
        def __init__(self, level):
            self.level = level

        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.full((3, 4, 4), self.level * (i + 1) / 8), i % 2

    assert load_dataset(Shades(0.5)).fingerprint() == load_dataset(Shades(0.5)).fingerprint()
    assert load_dataset(Shades(0.5)).fingerprint() != load_dataset(Shades(0.25)).fingerprint()


def test_a_random_augmentation_is_detected_warned_about_and_never_cached(fresh_context, tmp_path):
    from dataclasses import replace

    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    from pytest_transfer import evaluate, load_dataset
    from pytest_transfer.datasets import NondeterministicDatasetWarning

    fresh_context.settings = replace(fresh_context.settings, no_cache=False, cache_dir=str(tmp_path / "cache"))
    folder = photo_folder(tmp_path / "photos")
    torch.manual_seed(0)  # the draws of the two reads of item 0 are then fixed (and differ)
    ds = load_dataset(ImageFolder(str(folder), transform=T.RandomResizedCrop(24, scale=(0.3, 1.0))))
    with pytest.warns(NondeterministicDatasetWarning) as caught:
        ds.fingerprint()
    message = str(caught[0].message)
    assert "file 'china/000.png' read twice gave different images" in message
    assert "RandomResizedCrop" in message and "deterministic transform" in message and "not cached" in message
    assert not ds.cacheable
    net = tiny_net(n_classes=2, channels=3).eval()
    evaluate(net, ds, split="all")
    evaluate(net, ds, split="all")
    assert fresh_context.forward_passes == 2  # no memo
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npz"))  # nor disk
    steady = load_dataset(ImageFolder(str(folder), transform=T.Resize(24)))
    assert steady.cacheable
    evaluate(net, steady, split="all")
    evaluate(net, steady, split="all")
    assert fresh_context.forward_passes == 3  # a deterministic dataset is still memoised


CROSS_PROCESS_TEST = '''
import os
import numpy as np
import torch
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from pytest_transfer import evaluate, load_dataset
from pytest_transfer.context import current_context


def net():
    from torch import nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


def reference(model, transform):
    ref = ImageFolder("photos", transform=T.Compose([transform, T.ToTensor()]))
    with torch.no_grad():
        return model(torch.stack([ref[i][0] for i in range(len(ref))])).numpy()


def test_order():
    model = net()
    kinds = {"plain": T.Lambda(lambda im: im), "flip": T.RandomHorizontalFlip(p=1.0)}
    for kind in os.environ["ORDER"].split(","):
        ev = evaluate(model, load_dataset(ImageFolder("photos", transform=kinds[kind]), name=kind), split="all")
        np.testing.assert_allclose(ev.logits, reference(model, kinds[kind]), rtol=0, atol=1e-5)
        print(f"RESULT {kind} from_cache={ev.from_cache}")
'''


def test_disk_cache_across_two_processes_keys_the_transform(pytester, monkeypatch):
    photo_folder(pytester.path / "photos")
    pytester.makefile(".toml", pyproject='[tool.pytest.ini_options]\naddopts = "-p no:cacheprovider"\n\n'
                                         '[tool.pytest_transfer]\ndevice = "cpu"\ncache_dir = "shared_cache"\n')
    pytester.makepyfile(test_cross=CROSS_PROCESS_TEST)
    monkeypatch.setenv("ORDER", "plain")
    first = pytester.runpytest_inprocess("-s")  # this process writes the cache; the next one reads it
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["RESULT plain from_cache=False"])
    monkeypatch.setenv("ORDER", "flip,plain")
    second = pytester.runpytest_subprocess("-s")
    second.assert_outcomes(passed=1)  # the flipped logits equal torchvision's flipped pipeline, not the plain ones
    second.stdout.fnmatch_lines(["RESULT flip from_cache=False", "RESULT plain from_cache=True"])


# --- item 6: one range and finiteness rule for every image source --------------------------------------------

class _Items(torch.utils.data.Dataset):
    """Float items made by a function of the index (a user's Dataset that computes its images)."""

    def __init__(self, make, n=12):
        self.make, self.n = make, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.make(i), i % 2


class _Exploding(torch.nn.Module):
    def forward(self, x):
        raise AssertionError("the model saw the images")


@pytest.mark.parametrize(("make", "expected"), [
    (lambda i: torch.full((3, 8, 8), 200.0 if i == 5 else 0.5), r"item 5: .*\[0, 1\], got \[200, 200\].*0\.\.255"),
    (lambda i: torch.full((3, 8, 8), float("nan") if i == 7 else 0.5), r"item 7: 192 NaN and 0 Inf"),
    (lambda i: torch.full((3, 8, 8), float("inf") if i == 3 else 0.5), r"item 3: 0 NaN and 192 Inf"),
    (lambda i: torch.full((3, 8, 8), -1.2 if i == 4 else 0.5), r"item 4: .*remove Normalize"),
])
def test_dataset_items_are_refused_before_any_model_runs(fresh_context, make, expected):
    from pytest_transfer import evaluate, load_dataset

    with pytest.raises(ValueError, match=rf"dataset 'bad': {expected}"):
        evaluate(_Exploding(), load_dataset(_Items(make), name="bad"), split="all")


def test_an_offending_item_met_while_streaming_names_its_file(fresh_context, tmp_path):
    from torchvision.datasets import ImageFolder

    from pytest_transfer import evaluate, load_dataset

    folder = photo_folder(tmp_path / "photos", n_per_class=12)
    inner = ImageFolder(str(folder))

    class Scaled(torch.utils.data.Dataset):  # lists its files; one item (not among the 16 digested) is 0..255
        samples = inner.samples
        root = inner.root

        def __len__(self):
            return len(inner)

        def __getitem__(self, i):
            t = torch.from_numpy(np.asarray(inner[i][0], dtype=np.float32)).permute(2, 0, 1) / 255
            return (t * 255 if i == 4 else t), inner[i][1]

    ds = load_dataset(Scaled(), name="scaled")
    ds.fingerprint()  # the spread items digested are fine
    with pytest.raises(ValueError, match=r"dataset 'scaled': file 'china/004.png': float pixel values must lie "
                                         r"in \[0, 1\].*0\.\.255"):
        evaluate(tiny_net(n_classes=2, channels=3), ds, split="all")


def test_arrays_name_the_first_offending_item(fresh_context):
    from pytest_transfer import load_dataset

    x = np.full((6, 1, 4, 4), 0.5, dtype=np.float32)
    x[4, 0, 1, 1] = np.nan
    x[2, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"dataset 'arr': item 2: float pixel values .*\(2 of 6 images"):
        load_dataset((x, [0, 1] * 3), name="arr")


def test_a_nan_in_a_float_image_file_names_the_file(fresh_context, tmp_path):
    from PIL import Image

    from pytest_transfer import evaluate, load_dataset

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for k in range(2):
            pixels = np.full((6, 6), 0.5, dtype=np.float32)
            if (c, k) == ("b", 1):
                pixels[2, 3] = np.nan
            Image.fromarray(pixels, mode="F").save(tmp_path / c / f"{k}.tif")
    ds = load_dataset(f"imagefolder:{tmp_path}", name="floats")
    with pytest.raises(ValueError, match=r"dataset 'floats': file 'b/1.tif': image contains NaN"):
        evaluate(_Exploding(), ds, split="all")


# --- item 7: every row names its file -----------------------------------------------------------------------

def test_sample_ids_are_the_files_relative_to_the_folder(fresh_context, tmp_path):
    from torchvision.datasets import ImageFolder

    from pytest_transfer import evaluate, load_dataset

    folder = photo_folder(tmp_path / "photos")
    expected = [os.path.relpath(p, folder).replace(os.sep, "/") for p, _ in ImageFolder(str(folder)).samples]
    net = tiny_net(n_classes=2, channels=3)
    for ds in (load_dataset(f"imagefolder:{folder}"), load_dataset(ImageFolder(str(folder)))):
        ev = evaluate(net, ds, split="test")
        assert list(ev.sample_ids) == [expected[i] for i in ev.indices]
        assert ev.sample_ids[0].startswith(("china/", "flower/"))
    subset = torch.utils.data.Subset(ImageFolder(str(folder)), [7, 1, 10, 3])
    assert list(load_dataset(subset).sample_ids()) == [expected[i] for i in (7, 1, 10, 3)]


def test_sample_ids_are_indices_for_arrays_and_the_dataset_index_for_a_subset(fresh_context):
    from pytest_transfer import evaluate, load_dataset

    net = tiny_net(n_classes=2, channels=3)
    x = np.random.default_rng(0).random((20, 3, 6, 6), dtype=np.float32)
    ev = evaluate(net, load_dataset((x, [0, 1] * 10)), split="test")
    assert np.array_equal(ev.sample_ids, ev.indices)
    items = _Items(lambda i: torch.full((3, 6, 6), i / 40), n=40)
    ds = load_dataset(items, max_samples=10)
    ids = ds.sample_ids()
    # each id is the item's index in the Dataset given: its label and pixels are that item's
    assert [items[int(i)][1] for i in ids] == [int(ds.classes[c]) for c in ds.labels]
    assert all(float(ds.batch([k])[0, 0, 0, 0]) == pytest.approx(int(i) / 40) for k, i in enumerate(ids))


REGRESSION_CONFTEST = '''
import os


def make_probe_net():
    import torch
    from torch import nn
    torch.manual_seed(0)
    blind = float(bool(os.environ.get("BLIND")))
    net = nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(27, 27), nn.Linear(27, 2))
    with torch.no_grad():
        net[2].weight.copy_(torch.eye(27) * (1 - blind))  # BLIND=1: the pooled colours are gone
        net[2].bias.zero_()
    return net


def pytest_transfer_register_models(registry):
    registry.register("colours", make_probe_net)
'''

REGRESSION_TEST = '''
import pytest
from pytest_transfer import assert_no_regression


@pytest.mark.transfer(model="colours", dataset="imagefolder:photos")
def test_no_regression(pretrained_model, target_dataset):
    assert_no_regression(pretrained_model, target_dataset)
'''


def test_regression_gate_lists_lost_files_in_the_message_and_the_json_report(pytester, monkeypatch):
    from tests._helpers import pytester_pyproject

    monkeypatch.delenv("BLIND", raising=False)
    photo_folder(pytester.path / "photos", n_per_class=60, size=12)
    pytester.makeconftest(REGRESSION_CONFTEST)
    pytester.makefile(".toml", pyproject=pytester_pyproject())
    pytester.makepyfile(test_gate=REGRESSION_TEST)
    pytester.runpytest("--transfer-update-baselines").assert_outcomes(passed=1)
    monkeypatch.setenv("BLIND", "1")
    result = pytester.runpytest("--transfer-report=report.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*samples lost (files relative to the dataset's folder, first 20): *.png*"])
    doc = json.loads((pytester.path / "report.json").read_text())
    details = doc["measurements"][0]["details"]
    lost = details["lost_samples"]
    assert lost and all(s.split("/")[0] in CLASSES and s.endswith(".png") for s in lost)
    assert all((pytester.path / "photos" / s).is_file() for s in lost + details["gained_samples"])


def test_a_file_name_that_is_not_utf8_keeps_its_path_and_prints_escaped(fresh_context, tmp_path):
    from PIL import Image

    from pytest_transfer import load_dataset
    from pytest_transfer.datasets.pixels import item_label, printable_ids

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for k in range(2):
            name = os.fsdecode(b"\xff-%d.png" % k) if c == "b" else f"{k}.png"
            Image.new("RGB", (4, 4), (40 * k, 90, 200)).save(tmp_path / c / name)
    ids = load_dataset(f"imagefolder:{tmp_path}").sample_ids()
    assert (tmp_path / ids[2]).is_file()  # the id is the path (Python's surrogate escapes kept)
    assert printable_ids(ids)[2:] == ["b/\\xff-0.png", "b/\\xff-1.png"]
    assert item_label(ids[3]) == "file 'b/\\\\xff-1.png'"
    json.dumps(printable_ids(ids), ensure_ascii=False).encode("utf-8")  # any writer can encode what is shown


def test_a_saturated_dataset_item_passes_the_rule_after_the_models_resize(fresh_context, tmp_path):
    """An item of exactly 1.0 (``ToTensor`` of white pixels) comes out of an antialiased resize at 1.0000002:
    the pixel rule holds the item as the dataset returns it, and the model's resize only gets resampling room
    (a new user's valid dataset was refused as "0..255" after the model's own resize)."""
    from pathlib import Path

    from PIL import Image
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    from pytest_transfer import evaluate, load_dataset, load_model

    root = photo_folder(tmp_path / "photos", n_per_class=3, size=47)
    bright = np.random.default_rng(0).choice([230, 255], size=(47, 47, 3), p=[0.3, 0.7]).astype(np.uint8)
    Image.fromarray(bright).save(root / "china" / "zzz.png")  # resized 47 -> 32, it sums to 1.0000001
    data = ImageFolder(str(root), transform=T.ToTensor())
    model = load_model("torchvision:resnet18:none", image_size=28)
    x = data[[Path(f).name for f, _ in data.samples].index("zzz.png")][0]
    assert float(x.max()) == 1.0 and float(model.geometry.batch(x[None]).max()) > 1.0  # the overshoot is real
    ev = evaluate(model, load_dataset(data, name="edges"), split="all")
    assert np.isfinite(ev.logits).all() and len(ev.logits) == len(data)
    scaled = ImageFolder(str(root), transform=T.Compose([T.ToTensor(), T.Lambda(lambda t: t * 255)]))
    with pytest.raises(ValueError, match=r"looks like 0\.\.255") as refused:
        evaluate(model, load_dataset(scaled, name="scaled"), split="all")
    assert str(refused.value).count("dataset 'scaled'") == 1  # named once, not once per layer it passed

