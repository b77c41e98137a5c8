"""Folders fed per image at the model's input size: perturbations there, links checked, memory bounded.

Library parity of the logits is in ``tests/parity/test_data_pipeline.py``;
here: where perturbations and attacks act (the [0, 1] image at the model's
input size, before normalisation, checked against torchvision's own
``Resize`` / ``CenterCrop`` / ``ToTensor`` / ``Normalize`` on the same files),
symlinks inside a folder, absurd aspect ratios, and the memory a pass over
large photos takes (in a subprocess).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from pytest_transfer import evaluate, load_dataset, load_model
from pytest_transfer.engine import Perturbation
from tests._helpers import sample_photos

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Two classes of photo crops of six sizes, JPEG and PNG, colour and greyscale."""
    from PIL import Image

    root = tmp_path_factory.mktemp("mixed")
    photos = sample_photos()
    for n, (h, w) in enumerate([(60, 90), (120, 70), (200, 300), (64, 64), (150, 151), (97, 203)] * 2):
        img = Image.fromarray(np.ascontiguousarray(photos[n % 2][n * 7:n * 7 + h, n * 11:n * 11 + w]))
        folder = root / f"c{n % 2}"
        folder.mkdir(exist_ok=True)
        (img.convert("L") if n % 3 == 0 else img).save(folder / f"p{n}.{'png' if n % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """A random two-class ResNet-18 saved as a training script saves it, and the module itself."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    net = resnet18(num_classes=2).eval()
    path = tmp_path_factory.mktemp("weights") / "w.pt"
    torch.save(net.state_dict(), path)
    return path, net


@pytest.fixture
def net32(fresh_context, resnet_file):
    """The ResNet-18 as a ``checkpoint:`` at 32 px, and the same module for the reference."""
    path, net = resnet_file
    return load_model(f"checkpoint:{path}", arch="resnet18", image_size=32), net


def _library_images(files, size=32):
    """torchvision's file pipeline up to the normalisation: float [0, 1] N×3×size×size."""
    from PIL import Image
    from torchvision import transforms as T

    geometry = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor()])
    return torch.stack([geometry(Image.open(f).convert("RGB")) for f in files])


def test_a_perturbation_acts_at_the_models_input_size_before_normalisation(net32, mixed_folder):
    from torchvision.transforms.functional import normalize

    model, net = net32
    seen = []

    def darken(images, _seed):
        seen.append(tuple(images.shape[1:]))
        return images * 0.5

    ds = load_dataset(f"imagefolder:{mixed_folder}")
    ev = evaluate(model, ds, split="all", perturbation=Perturbation("darken", darken))
    assert seen == [(3, 32, 32)]  # the input size, not the files' (nor a common 224)
    x = _library_images([ds.source.paths[i] for i in ev.indices])
    with torch.inference_mode():
        expected = net(normalize(x * 0.5, MEAN, STD))
    scale = float(expected.abs().max())
    assert float((torch.from_numpy(ev.logits) - expected).abs().max()) <= 1e-4 * scale + 1e-5


def test_arrays_are_perturbed_at_the_input_size_too(net32):
    model, _ = net32
    seen = []

    def probe(images, _seed):
        seen.append(tuple(images.shape[1:]))
        return images

    x = np.random.default_rng(0).random((8, 3, 48, 64), dtype=np.float32)
    ds = load_dataset((x, np.arange(8) % 2), name="arrays")
    clean = evaluate(model, ds, split="all")
    same = evaluate(model, ds, split="all", perturbation=Perturbation("identity", probe))
    assert seen == [(3, 32, 32)]
    np.testing.assert_array_equal(same.logits, clean.logits)  # the clean pass sees the same pixels


def test_fgsm_attacks_the_input_size_image(net32, mixed_folder):
    """The direct FGSM gate's per-sample results equal FGSM computed here on the library's own images."""
    import torch.nn.functional as F
    from torchvision.transforms.functional import normalize

    from pytest_transfer.gates.robustness import attack_accuracy

    model, net = net32
    ds = load_dataset(f"imagefolder:{mixed_folder}")
    y_true, correct = attack_accuracy(model, ds, attack="fgsm", eps=4 / 255, method="direct", split="all")
    x = _library_images(ds.source.paths).requires_grad_(True)
    y = torch.as_tensor(ds.labels)
    F.cross_entropy(net(normalize(x, MEAN, STD)), y, reduction="sum").backward()
    adv = (x + 4 / 255 * x.grad.sign()).clamp(0, 1).detach()
    with torch.no_grad():
        expected = net(normalize(adv, MEAN, STD)).argmax(1).numpy() == ds.labels
    np.testing.assert_array_equal(y_true, ds.labels)
    np.testing.assert_array_equal(correct, expected)


def _two_classes(tmp_path, n=3):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (40 * i, 80 if c == "a" else 160, 0)).save(tmp_path / c / f"{i}.png")
    return tmp_path


@pytest.mark.parametrize("link, target", [("loop", "."), ("up", ".."), ("other", "../b")])
def test_a_folder_link_that_loops_or_leaves_its_class_is_refused_by_name(fresh_context, tmp_path, link, target):
    root = _two_classes(tmp_path)
    os.symlink(target, root / "a" / link)
    with pytest.raises(ValueError, match=re.escape(f"the link {root / 'a' / link} -> {target} ") + ".*remove the link"
                       ) as info:
        load_dataset(f"imagefolder:{root}")
    assert ("(a loop that lists" in str(info.value)) == (link != "other")


def test_a_file_reached_twice_is_one_sample_and_a_file_in_two_classes_is_refused(fresh_context, tmp_path):
    root = _two_classes(tmp_path)
    (root / "a" / "more").mkdir()
    os.symlink(root / "a" / "0.png", root / "a" / "more" / "again.png")
    ds = load_dataset(f"imagefolder:{root}")
    assert len(ds) == 6 and [os.path.basename(p) for p in ds.source.paths] == ["0.png", "1.png", "2.png"] * 2
    os.symlink(root / "a" / "1.png", root / "b" / "stray.png")
    with pytest.raises(ValueError, match=r"same file .* in two classes"):
        load_dataset(f"imagefolder:{root}")


def test_a_folder_link_to_images_elsewhere_is_followed(fresh_context, tmp_path):
    root = _two_classes(tmp_path / "data")
    _two_classes(tmp_path / "extra")
    os.symlink(tmp_path / "extra" / "a", root / "a" / "linked")
    assert len(load_dataset(f"imagefolder:{root}")) == 9


def test_a_strip_is_refused_by_name_before_decoding(fresh_context, tmp_path):
    from PIL import Image

    root = _two_classes(tmp_path)
    Image.new("L", (20_000, 1), 128).save(root / "b" / "strip.png")
    with pytest.raises(ValueError, match=r"strip\.png is 20000×1 pixels, an aspect ratio over 100:1.*Crop it"):
        load_dataset(f"imagefolder:{root}")


MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from PIL import Image
    from pytest_transfer import evaluate, load_dataset, load_model
    from tests._helpers import tiny_net
    from pytest_transfer.models import Preprocess
    root = sys.argv[1]
    model = load_model(tiny_net(channels=3), name="tiny", preprocess=Preprocess(size=32))
    small = load_dataset((np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32), [0, 1] * 2))
    evaluate(model, small, split="all", cache=False)  # warm up everything but the large files
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ds = load_dataset(f"imagefolder:{root}")
    evaluate(model, ds, split="all", cache=False)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
""")


def test_large_photos_cost_model_size_memory(tmp_path):
    """Four 12-MP photos (4000×3000): the pass grows the process by what one decoded file takes (36 MB), not by
    the files at full resolution as float (4 × 144 MB, what it took before)."""
    from PIL import Image

    photo = Image.fromarray(sample_photos()[0]).resize((4000, 3000), Image.BILINEAR)
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
    for i in range(2):
        first = tmp_path / "data" / "a" / f"{i}.jpg"
        photo.transpose(Image.FLIP_LEFT_RIGHT if i else Image.FLIP_TOP_BOTTOM).save(first, quality=85)
        shutil.copyfile(first, tmp_path / "data" / "b" / f"{i}.jpg")
    del photo
    env = dict(os.environ, PYTEST_TRANSFER_NUM_WORKERS="0", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "data")], capture_output=True,
                         text=True, env=env, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr[-2000:]
    grown_mb = float(out.stdout.strip().splitlines()[-1])
    assert grown_mb < 150, grown_mb
