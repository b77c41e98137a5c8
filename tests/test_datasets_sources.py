"""torchvision datasets and torch Datasets: subsets chosen from labels alone; relative paths from a sub-folder."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_transfer import load_dataset


def _idx_file(path, arr, magic):
    """A file in the IDX format torchvision's MNIST family reads (big-endian magic and sizes, then bytes)."""
    with open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic))
        for d in arr.shape:
            fh.write(struct.pack(">I", d))
        fh.write(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())


def write_fashion_mnist(root, n_train=60000, n_test=10000, seed=0):
    """Fashion-MNIST's raw files in torchvision's layout (random pixels, labels cycling over 10 classes)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx_file(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 2051)
        _idx_file(raw / f"{prefix}-labels-idx1-ubyte", (np.arange(n) * 7) % 10, 2049)


def test_fashion_mnist_subset_is_chosen_from_labels_without_touching_items(fresh_context, tmp_path, monkeypatch):
    import torchvision

    write_fashion_mnist(tmp_path)
    ref = torchvision.datasets.FashionMNIST(str(tmp_path), train=True)

    def no_items(self, index):
        raise AssertionError("an item was materialised")

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "__getitem__", no_items)
    ds = load_dataset(f"torchvision:FashionMNIST:{tmp_path}", max_samples=3000)
    train, test = ds.indices("train"), ds.indices("test")
    assert len(train) == 3000 and len(test) == 3000 and len(ds) == 6000
    assert ds.images.shape == (6000, 1, 28, 28) and ds.images.dtype == torch.uint8  # only the subset is held
    assert np.all(np.bincount(ds.labels[train]) == 300)  # stratified
    assert ds.classes[:2] == ["T-shirt/top", "Trouser"]
    # each kept image is the one torchvision holds at that place
    first = ds.images[0, 0]
    assert any(torch.equal(first, ref.data[j]) for j in np.flatnonzero(ref.targets.numpy() == ds.labels[0])[:400])


def test_torchvision_imagefolder_subset_decodes_only_what_it_keeps(fresh_context, tmp_path, monkeypatch):
    from torchvision.datasets import ImageFolder

    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    calls = []
    original = ImageFolder.__getitem__
    monkeypatch.setattr(ImageFolder, "__getitem__", lambda self, i: calls.append(i) or original(self, i))
    ds = load_dataset(f"torchvision:ImageFolder:{tmp_path / 'imgs'}", max_samples=6)
    assert ds.streamed and len(ds) == 6 and np.all(np.bincount(ds.labels) == 2)
    assert len(calls) <= 6  # the channel/size probe, on kept items only; no pass over the 30
    ds.batch(ds.indices("all"))
    assert len(set(calls)) == 6


def test_labels_of_a_subset_and_of_a_dataset_without_label_attributes(fresh_context):
    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return torch.full((1, 3, 3), i / 10), i % 2

    sub = torch.utils.data.Subset(Plain(), [5, 4, 3, 2])
    ds = load_dataset(sub, name="sub")
    assert ds.labels.tolist() == [1, 0, 1, 0] and torch.equal(ds.batch([0])[0], torch.full((1, 3, 3), 0.5))


@pytest.fixture
def folder_project(pytester):
    pytester.makeconftest('''
        def tiny():
            import torch
            from torch import nn
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, 2))

        def pytest_transfer_register_models(registry):
            registry.register("grey-net", tiny)
    ''')
    pytester.makefile(".toml", pyproject='''
        [tool.pytest.ini_options]
        addopts = "-p no:cacheprovider"

        [tool.pytest_transfer]
        device = "cpu"
        no_cache = true
    ''')
    rng = np.random.default_rng(0)
    for c in ("circle", "square"):
        (pytester.path / "data" / "shapes" / c).mkdir(parents=True)
        for i in range(4):
            img = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(img).save(pytester.path / "data" / "shapes" / c / f"{i}.png")
    sub = pytester.path / "tests" / "sub"
    sub.mkdir(parents=True)
    (sub / "test_folder.py").write_text('''
import pytest
from pytest_transfer import evaluate

@pytest.mark.transfer(model="grey-net", dataset="imagefolder:data/shapes")
def test_relative_folder(pretrained_model, target_dataset):
    assert target_dataset.classes == ["circle", "square"] and len(target_dataset) == 8
    assert target_dataset.channels == 1
    assert evaluate(pretrained_model, target_dataset, split="all").logits.shape == (8, 2)
''')
    return pytester


def test_a_project_run_from_a_sub_folder_finds_its_relative_imagefolder(folder_project, monkeypatch):
    monkeypatch.chdir(folder_project.path / "tests" / "sub")
    folder_project.runpytest().assert_outcomes(passed=1)


def test_relative_torchvision_root_is_resolved_against_the_rootdir(fresh_context, tmp_path, monkeypatch):
    write_fashion_mnist(tmp_path / "data", n_train=40, n_test=20)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert len(load_dataset("torchvision:FashionMNIST:data")) == 60
    with pytest.raises(FileNotFoundError, match=f"no such directory .*resolved against the rootdir {tmp_path}"):
        load_dataset("torchvision:FashionMNIST:missing")


def test_imagefolder_and_dataset_subsets_open_only_the_files_they_keep(fresh_context, tmp_path, monkeypatch):
    import pytest_transfer.datasets.files as files

    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    opened = []
    original = files.read_header
    monkeypatch.setattr(files, "read_header", lambda path, **kw: opened.append(path) or original(path, **kw))
    ds = load_dataset(f"imagefolder:{tmp_path}", max_samples=6)
    assert len(ds) == 6 and np.all(np.bincount(ds.labels) == 2) and sorted(opened) == sorted(ds.source.paths)
    assert not np.array_equal(ds.source.paths, load_dataset(f"imagefolder:{tmp_path}", max_samples=6, seed=1)
                              .source.paths)

    calls = []

    class Counting(torch.utils.data.Dataset):
        def __init__(self):
            self.targets = [i % 4 for i in range(40)]

        def __len__(self):
            return 40

        def __getitem__(self, i):
            calls.append(i)
            return torch.zeros(1, 3, 3), self.targets[i]

    sub = load_dataset(Counting(), max_samples=8)
    assert len(sub) == 8 and np.all(np.bincount(sub.labels) == 2) and len(calls) <= 8


@pytest.mark.parametrize("max_samples", [1, 2, 3, 7, 10, 25, 29, 30])
def test_max_samples_keeps_exactly_that_many_in_proportion(max_samples):
    from pytest_transfer.datasets.core import subset_indices

    labels = np.repeat([5, 7, 9], [4, 10, 16])  # 30 items in classes of 4, 10 and 16
    kept = subset_indices(labels, max_samples, seed=3)
    assert len(kept) == max_samples == len(set(kept.tolist())) and np.all(np.diff(kept) > 0)
    per_class = np.array([np.sum(labels[kept] == c) for c in (5, 7, 9)])
    assert np.all(np.abs(per_class - max_samples * np.array([4, 10, 16]) / 30) < 1)  # within one of its share
    assert np.array_equal(kept, subset_indices(labels, max_samples, seed=3))
    with pytest.raises(ValueError, match=r"max_samples: expected a positive integer, got 2\.5"):
        subset_indices(labels, 2.5, seed=0)
