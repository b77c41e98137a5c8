"""A torch ``Dataset`` source computes its description and its sample ids once, not on every pass, and describes
them again exactly when what they depend on changes; a long container is described by its whole content."""

from __future__ import annotations

import json
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from pytest_transfer import evaluate, load_dataset, load_model
from pytest_transfer.datasets import torchsets
from pytest_transfer.datasets.describe import describe


def _folder(root, n_per_class=40):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for k in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / cls / f"{k:03d}.png")
    return root


class _Counted:
    """Counts calls of ``torchsets.describe_dataset`` and ``torchsets.relative_ids`` (the per-file id work)."""

    def __init__(self):
        self.calls = {"describe_dataset": 0, "relative_ids": 0}

    def __enter__(self):
        self._patches = [mock.patch.object(torchsets, name, self._wrap(name, getattr(torchsets, name)))
                         for name in self.calls]
        for p in self._patches:
            p.start()
        return self.calls

    def __exit__(self, *exc):
        for p in self._patches:
            p.stop()

    def _wrap(self, name, fn):
        def counted(*args, **kwargs):
            self.calls[name] += 1
            return fn(*args, **kwargs)
        return counted


@pytest.fixture
def folder_set(fresh_context, tmp_path):
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(_folder(tmp_path / "photos")), transform=T.Compose([T.RandomHorizontalFlip(0.0),
                                                                          T.ToTensor()]))
    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
    return ds, load_dataset(ds, name="photos"), load_model(net, name="flat")


def test_passes_describe_the_dataset_and_name_its_files_once(folder_set):
    """Measured by calls, 3 passes and a noise pass over 80 files: the code before this change described the
    dataset 11 times and computed a file's relative id 100 times (once per file of each pass that needed
    them); now once each, until something they depend on changes."""
    from pytest_transfer.robustness.perturbations import gaussian_noise

    ds, data, model = folder_set
    with _Counted() as calls:
        first = evaluate(model, data, split="all")
        for _ in range(2):
            evaluate(model, data, split="all")
        evaluate(model, data, split="test", perturbation=gaussian_noise(0.1, seed=1))
        assert calls == {"describe_dataset": 1, "relative_ids": 1}
        assert list(first.sample_ids[:2]) == ["a/000.png", "a/001.png"]

        fingerprint = data.fingerprint()
        ds.transform.transforms[0].p = 1.0  # in place, deep inside the transform: every image is flipped
        assert data.fingerprint() != fingerprint and calls["describe_dataset"] == 2
        flipped = evaluate(model, data, split="all")
        assert not np.allclose(flipped.logits, first.logits)

        ds.samples[0] = (ds.samples[1][0], 0)  # the first item now reads the second file
        assert data.sample_ids([0, 1]).tolist() == ["a/001.png", "a/001.png"] and calls["relative_ids"] == 2

    import pickle

    copy = pickle.loads(pickle.dumps(data.source))  # as a DataLoader worker started by spawn receives it
    assert copy.revision() == data.source.revision() and copy.load_checked(1).shape == (3, 8, 8)


def test_a_random_transform_is_still_found_with_the_description_kept(folder_set):
    """The nondeterminism check and the fingerprint's semantics are as before: a random flip set in place is
    seen on the next fingerprint, warned about and never cached; set back, the dataset is cacheable again."""
    ds, data, _ = folder_set
    assert data.cacheable
    ds.transform.transforms[0].p = 0.5
    with pytest.warns(torchsets.NondeterministicDatasetWarning, match="RandomHorizontalFlip"):
        assert not data.cacheable
    ds.transform.transforms[0].p = 0.0
    assert data.cacheable


def test_the_guard_sees_what_the_description_reads():
    from torchvision import transforms as T

    from pytest_transfer.datasets.describe import graph_guard

    t = T.Compose([T.Resize(8), T.Normalize(np.array([0.5]), np.array([0.25]))])
    ids, refs = graph_guard(t)
    kept = [refs]  # the references keep every id in use while the identities are compared
    assert graph_guard(t)[0] == ids  # nothing changed: equal (no object built anew in the walk)
    changes = [lambda: setattr(t.transforms[0], "size", 9), lambda: t.transforms.append(T.ToTensor()),
               lambda: t.transforms[1].mean.__setitem__(0, 0.4)]  # an array changed in place
    for change in changes:
        change()
        now, refs = graph_guard(t)
        kept.append(refs)
        assert now != ids
        ids = now
    images = [np.zeros((8, 8, 3), np.uint8) for _ in range(300)]  # data held in a long list: by identity
    assert not any(isinstance(x, bytes) for x in graph_guard(images)[0])  # no copy of the images' bytes
    w = torch.ones(3)
    ids, _refs = graph_guard({"w": w})  # the references keep every id in use while compared
    w.mul_(2)  # a tensor changed in place: its version counter
    assert graph_guard({"w": w})[0] != ids


def test_a_change_inside_a_long_dict_changes_the_description_and_the_fingerprint(fresh_context):
    """A dict of more than 256 entries was described by its count alone: a label map of 300 classes edited in
    one entry kept the dataset's fingerprint (and its cached results)."""

    class Relabelled(torch.utils.data.Dataset):
        def __init__(self):
            self.label_of = {f"class_{i:03d}": i % 2 for i in range(300)}
            self.names = [f"class_{i:03d}" for i in range(300)]

        def __len__(self):
            return 40

        def __getitem__(self, i):
            return torch.full((3, 8, 8), (i % 5) / 5), self.label_of[self.names[i]]

    ds = Relabelled()
    before = describe(ds.label_of)
    data = load_dataset(ds, name="relabelled")
    fingerprint = data.fingerprint()
    ds.label_of["class_299"] = 0  # one entry of 300: not among the labels of the 40 items read
    assert data.fingerprint() != fingerprint
    assert describe(ds.label_of) != before and before.startswith("dict[300] ")  # its length and a digest
    names = describe(ds.names)
    ds.names[200] = "class_000"  # one entry of a long list, outside any spread sample
    assert describe(ds.names) != names


SCRIPT = """
import json, sys
from pytest_transfer.datasets.describe import describe
big = {f"k{i}": (i, float(i) / 3, {"s", f"t{i}"}) for i in range(400)}
print(json.dumps([describe(big), describe(list(big)), describe(set(big))]))
"""


def test_a_long_containers_digest_is_the_same_in_every_process():
    """Sets are described in an order that does not depend on string hashing: two processes with other hash
    seeds give the same text."""
    out = [subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60,
                          env={**__import__("os").environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert json.loads(out[0]) == json.loads(out[1])
    assert all(" " in text and "[400]" in text for text in json.loads(out[0]))
