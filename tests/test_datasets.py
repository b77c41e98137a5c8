"""Dataset sources, splits and fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_transfer import load_dataset
from pytest_transfer.datasets import TargetDataset, stratified_split


def test_digits_are_the_real_sklearn_digits(fresh_context):
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    ref = load_digits()
    assert len(ds) == 1797 and ds.num_classes == 10 and ds.channels == 1 and ds.image_size == (8, 8)
    assert np.array_equal(ds.labels, ref.target)
    assert torch.allclose(ds.batch([5])[0, 0], torch.from_numpy(ref.images[5] / 16.0).float())
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0


def test_shifted_digits_keep_pixels_and_labels(fresh_context):
    plain, shifted = load_dataset("digits"), load_dataset("digits-shifted")
    assert shifted.image_size == (20, 20) and np.array_equal(plain.labels, shifted.labels)
    # each shifted image holds exactly the original 8x8 digit somewhere on the canvas
    assert torch.allclose(shifted.images.sum(dim=(1, 2, 3)), plain.images.sum(dim=(1, 2, 3)), atol=1e-4)


def test_split_is_stratified_deterministic_and_disjoint(fresh_context):
    ds = load_dataset("digits")
    train, test = ds.indices("train"), ds.indices("test")
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(ds)
    frac = np.bincount(ds.labels[test], minlength=10) / np.bincount(ds.labels, minlength=10)
    assert np.all(np.abs(frac - 0.25) < 0.02)
    again = load_dataset("digits")
    assert np.array_equal(again.indices("test"), test)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.indices("test"), test)


def test_every_class_keeps_a_train_and_a_test_sample():
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    split = stratified_split(labels, test_fraction=0.1, seed=0)
    assert set(labels[split["test"]]) == {0, 1, 2} and set(labels[split["train"]]) == {0, 1, 2}


def test_arrays_with_gapped_labels_are_remapped(fresh_context):
    x = np.random.default_rng(0).random((12, 3, 4, 4), dtype=np.float32)
    ds = load_dataset((x, np.array([3, 7, 9] * 4)), name="gaps")
    assert ds.classes == ["3", "7", "9"] and set(ds.labels) == {0, 1, 2}


def test_channels_last_uint8_arrays(fresh_context):
    x = np.random.default_rng(0).integers(0, 256, (6, 5, 5, 3), dtype=np.uint8)
    ds = load_dataset((x, [0, 1] * 3))
    assert ds.images.shape == (6, 3, 5, 5)
    assert torch.allclose(ds.batch([0])[0], torch.from_numpy(x[0]).permute(2, 0, 1).float() / 255)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((4, 1, 4, 4)), [0, 0, 0, 0], "at least two classes"),
        (np.zeros((4, 1, 4, 4)), [0, 1, 0], "4 images but 3 labels"),
        (np.full((4, 1, 4, 4), np.nan), [0, 1, 0, 1], "NaN"),
        (np.full((4, 1, 4, 4), 200.0), [0, 1, 0, 1], "divide by 255"),
        (np.zeros((4, 4)), [0, 1, 0, 1], "N×C×H×W"),
        (np.zeros((4, 1, 4, 4)), [0.5, 1, 0, 1], "integers"),
    ],
)
def test_bad_arrays_are_refused_with_the_fix(fresh_context, images, labels, message):
    with pytest.raises(ValueError, match=message):
        load_dataset((images, np.asarray(labels)))


def test_fingerprint_changes_with_one_pixel_or_one_label():
    x = np.random.default_rng(0).random((8, 1, 4, 4), dtype=np.float32)
    y = np.array([0, 1] * 4)
    base = TargetDataset(x, y).fingerprint()
    assert TargetDataset(x.copy(), y).fingerprint() == base
    x2 = x.copy()
    x2[3, 0, 1, 1] = 0.5 if x2[3, 0, 1, 1] != 0.5 else 0.25
    assert TargetDataset(x2, y).fingerprint() != base
    assert TargetDataset(x, y[::-1].copy()).fingerprint() != base


def test_imagefolder(fresh_context, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.classes == ["cat", "dog"] and ds.streamed and ds.batch(ds.indices("all")).shape == (6, 3, 10, 12)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "dog" / "big.png")
    mixed = load_dataset(f"imagefolder:{tmp_path}", size=16)
    assert mixed.batch(mixed.indices("all")).shape == (7, 3, 16, 16)
    assert load_dataset(f"imagefolder:{tmp_path}").image_size == (224, 224)  # mixed sizes: the documented default


def test_imagefolder_errors(fresh_context, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="one sub-folder per class"):
        load_dataset(f"imagefolder:{tmp_path}")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_torch_dataset_is_streamed(fresh_context):
    from torchvision.datasets import FakeData
    from torchvision.transforms import ToTensor

    fake = FakeData(size=10, image_size=(3, 6, 6), num_classes=2, transform=ToTensor())
    ds = load_dataset(fake, name="fake")
    assert ds.streamed and ds.name == "fake" and len(ds) == 10 and ds.image_size == (6, 6)
    assert torch.equal(ds.batch([3])[0], fake[3][0])


def test_torchvision_dataset_missing_files_never_downloads(fresh_context, tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_dataset(f"torchvision:MNIST:{tmp_path}")
    with pytest.raises(ValueError, match="no dataset 'NotADataset'"):
        load_dataset(f"torchvision:NotADataset:{tmp_path}")


def test_torchvision_dataset_from_local_files_keeps_official_split(fresh_context, tmp_path):
    import torchvision

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def idx(path, arr, magic):
        import struct

        with open(path, "wb") as fh:
            fh.write(struct.pack(">I", magic))
            for d in arr.shape:
                fh.write(struct.pack(">I", d))
            fh.write(arr.astype(np.uint8).tobytes())

    for prefix, n in (("train", 20), ("t10k", 8)):
        idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051)
        idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 2049)
    assert torchvision.datasets.MNIST(str(tmp_path), train=False).data.shape == (8, 28, 28)
    ds = load_dataset(f"torchvision:MNIST:{tmp_path}")
    assert len(ds) == 28 and len(ds.indices("train")) == 20 and len(ds.indices("test")) == 8
    assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (1, 28, 28)


def test_unknown_spec_lists_builtins(fresh_context):
    with pytest.raises(ValueError, match="use digits, imagefolder:<path>, torchvision:<Name>:<root>"):
        load_dataset("cifar")
