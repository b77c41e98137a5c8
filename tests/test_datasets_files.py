"""Image folders as users have them: class order, hidden files, bit depths, modes, empty and broken files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_transfer import load_dataset
from pytest_transfer.datasets import UnreadableImage, adapt_channels


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(path)
    return path


def _rgb(seed, h=6, w=5):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _read(path, mode=None):
    with Image.open(path) as im:
        return np.asarray(im if mode is None else im.convert(mode))


def _mode(path):
    with Image.open(path) as im:
        return im.mode


def _all(ds):
    return ds.batch(ds.indices("all"))


def test_classes_and_samples_are_torchvision_imagefolders(fresh_context, tmp_path):
    from torchvision.datasets import ImageFolder

    for k, cls in enumerate(["a", "B", "2", "10", "_x", "Zeta"]):
        for i in range(2):
            _save(tmp_path / cls / f"img{i}.png", _rgb(10 * k + i))
        _save(tmp_path / cls / "deeper" / "z.png", _rgb(100 + k))
    ref = ImageFolder(str(tmp_path))
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.classes == ref.classes == ["10", "2", "B", "Zeta", "_x", "a"]
    assert ds.source.paths == [p for p, _ in ref.samples]
    assert ds.labels.tolist() == [c for _, c in ref.samples]
    assert torch.equal(_all(ds)[4], torch.from_numpy(np.array(ref[4][0])).permute(2, 0, 1).float() / 255)


def test_hidden_folders_and_appledouble_files_are_skipped(fresh_context, tmp_path):
    for cls in ("cat", "dog"):
        for i in range(2):
            _save(tmp_path / cls / f"{i}.png", _rgb(i))
    _save(tmp_path / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png", _rgb(0))  # a duplicate of cat/0.png
    (tmp_path / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    _save(tmp_path / ".trash" / "x.png", _rgb(9))  # a hidden folder at the top is not a class
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.classes == ["cat", "dog"] and len(ds) == 4
    assert all("/." not in p for p in ds.source.paths)


def test_class_order_decides_the_labels_a_trained_model_sees(fresh_context, tmp_path):
    # '10' sorts before '2': a model trained with ImageFolder has class '10' at index 0
    for cls in ("2", "10"):
        _save(tmp_path / cls / "x.png", _rgb(int(cls)))
        _save(tmp_path / cls / "y.png", _rgb(int(cls) + 1))
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.classes == ["10", "2"] and ds.labels.tolist() == [0, 0, 1, 1]


def test_sixteen_bit_png_is_rescaled_from_its_range_not_clipped(fresh_context, tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(2):
            _save(tmp_path / cls / f"{i}.png", rng.integers(0, 4096, (8, 9), dtype=np.uint16))  # 12-bit camera data
    ds = load_dataset(f"imagefolder:{tmp_path}")
    x = _all(ds)
    ref = _read(ds.source.paths[1]).astype(np.float64) / 65535.0
    assert _mode(ds.source.paths[1]) == "I;16" and ds.channels == 1 and x.dtype == torch.float32
    assert np.allclose(x[1, 0].numpy(), ref, atol=1e-7)
    assert float((x >= 1.0).float().mean()) == 0.0  # the old loader made 99.7 % of these pixels white


def test_32_bit_integer_and_float_images(fresh_context, tmp_path):
    ints = np.arange(72, dtype=np.int32).reshape(8, 9) * 1000 - 5000  # negative values: min-max
    floats = np.linspace(-2.0, 6.0, 72, dtype=np.float32).reshape(8, 9)
    unit = np.linspace(0.1, 0.9, 72, dtype=np.float32).reshape(8, 9)
    small = (np.arange(72, dtype=np.int32) * 900).reshape(8, 9)  # 0..63 900: 16-bit data held as mode I
    for name, arr in (("a/i.tif", ints), ("a/f.tif", floats), ("b/u.tif", unit), ("b/s.tif", small)):
        _save(tmp_path / name, arr)
    ds = load_dataset(f"imagefolder:{tmp_path}")
    got = {p.rsplit("/", 1)[-1]: img[0].numpy() for p, img in zip(ds.source.paths, _all(ds), strict=True)}
    assert np.allclose(got["i.tif"], (ints - ints.min()) / (ints.max() - ints.min()), atol=1e-6)
    assert np.allclose(got["f.tif"], (floats + 2.0) / 8.0, atol=1e-6)
    assert np.allclose(got["u.tif"], unit)
    assert np.allclose(got["s.tif"], small / 65535.0, atol=1e-7)


def test_greyscale_folder_stays_one_channel_and_feeds_a_one_channel_model(fresh_context, tmp_path):
    from pytest_transfer import evaluate, load_model
    from tests._helpers import tiny_net

    for cls in ("a", "b"):
        for i in range(3):
            _save(tmp_path / cls / f"{i}.png", _rgb(i + (cls == "b") * 7)[..., 0])
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.channels == 1 and _all(ds).shape == (6, 1, 6, 5)
    model = load_model(tiny_net(n_classes=2, channels=1), name="grey-net")
    assert model.in_channels == 1
    ev = evaluate(model, ds, split="all", cache=False)
    with torch.inference_mode():
        ref = model.module(_all(ds))
    assert np.allclose(ev.logits, ref.numpy(), atol=1e-6)


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "CMYK", "1"])
def test_other_modes_become_rgb_as_pillow_converts_them(fresh_context, tmp_path, mode):
    src = _rgb(3, 7, 7)
    if mode in ("RGBA", "LA"):
        src_img = Image.fromarray(np.dstack([src, np.linspace(0, 255, 49).reshape(7, 7).astype(np.uint8)]))
        img = src_img if mode == "RGBA" else src_img.convert("LA")
    else:
        img = Image.fromarray(src).convert(mode)
    suffix = "tif" if mode == "CMYK" else "png"
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        img.save(tmp_path / cls / f"x.{suffix}")
        Image.fromarray(_rgb(5, 7, 7)).save(tmp_path / cls / "y.png")
    assert _mode(tmp_path / "a" / f"x.{suffix}") == mode
    ds = load_dataset(f"imagefolder:{tmp_path}")
    expected = _read(tmp_path / "a" / f"x.{suffix}", "RGB").astype(np.float32) / 255
    assert ds.channels == 3
    assert np.array_equal(_all(ds)[0].permute(1, 2, 0).numpy(), expected)  # alpha dropped, as ImageFolder does


def test_mixed_grey_and_rgb_items_of_a_torch_dataset_become_rgb(fresh_context):
    class Mixed(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            img = Image.fromarray(_rgb(i, 6, 6))
            return (img.convert("L") if i % 3 == 0 else img), i % 2

    ds = load_dataset(Mixed(), name="mixed")
    x = _all(ds)
    assert ds.channels == 3 and x.shape == (8, 3, 6, 6)
    grey = np.asarray(Mixed()[0][0], dtype=np.float32) / 255
    assert all(np.array_equal(x[0, c].numpy(), grey) for c in range(3))


def test_empty_class_folder_is_an_error_naming_it_unless_allowed(fresh_context, tmp_path):
    for cls in ("a", "c"):
        for i in range(2):
            _save(tmp_path / cls / f"{i}.png", _rgb(i))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder\(s\) 'b' hold no images.*allow_empty=True"):
        load_dataset(f"imagefolder:{tmp_path}")
    ds = load_dataset(f"imagefolder:{tmp_path}", allow_empty=True)
    assert ds.classes == ["a", "b", "c"] and ds.labels.tolist() == [0, 0, 2, 2]  # 'c' keeps index 2


def test_truncated_file_is_an_error_naming_it_unless_skipped(fresh_context, tmp_path):
    for cls in ("a", "b"):
        for i in range(3):
            _save(tmp_path / cls / f"{i}.jpg", _rgb(i, 64, 64))
    bad = tmp_path / "b" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) * 3 // 4])
    (tmp_path / "a" / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(UnreadableImage, match=r"junk\.png.*skip_unreadable=True"):
        load_dataset(f"imagefolder:{tmp_path}")
    (tmp_path / "a" / "junk.png").unlink()
    ds = load_dataset(f"imagefolder:{tmp_path}")  # the header of a truncated JPEG reads fine
    with pytest.raises(UnreadableImage, match=r"b/1\.jpg.*skip_unreadable=True"):
        ds.batch(ds.indices("all"))
    (tmp_path / "a" / "junk.png").write_bytes(b"not a png at all")
    with pytest.warns(UserWarning, match=r"2 unreadable file\(s\) skipped") as caught:
        ok = load_dataset(f"imagefolder:{tmp_path}", skip_unreadable=True)
    assert caught[0].filename == __file__  # the warning points at the user's line, not into the package
    assert len(ok) == 5 and sorted(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in ok.skipped) == [
        "a/junk.png", "b/1.jpg"]
    assert _all(ok).shape == (5, 3, 64, 64)


def test_relative_folder_is_resolved_against_the_rootdir(fresh_context, tmp_path, monkeypatch):
    for cls in ("a", "b"):
        _save(tmp_path / "data" / "x" / cls / "0.png", _rgb(0))
        _save(tmp_path / "data" / "x" / cls / "1.png", _rgb(1))
    elsewhere = tmp_path / "tests" / "sub"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert len(load_dataset("imagefolder:data/x")) == 4
    with pytest.raises(FileNotFoundError, match=f"no such directory .*resolved against the rootdir {tmp_path}"):
        load_dataset("imagefolder:data/missing")


def test_fingerprint_reads_bytes_without_decoding_and_sees_an_edit(fresh_context, tmp_path, monkeypatch):
    import pytest_transfer.datasets.decode as decode

    for cls in ("a", "b"):
        for i in range(2):
            _save(tmp_path / "one" / cls / f"{i}.png", _rgb(i + 3 * (cls == "b")))
    import shutil

    shutil.copytree(tmp_path / "one", tmp_path / "two")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image to fingerprint a folder")

    monkeypatch.setattr(decode, "pil_to_tensor", no_decoding)
    one, two = load_dataset(f"imagefolder:{tmp_path / 'one'}"), load_dataset(f"imagefolder:{tmp_path / 'two'}")
    assert one.fingerprint() == two.fingerprint()  # same files, same relative paths: a copied checkout hits the cache
    _save(tmp_path / "two" / "b" / "1.png", _rgb(99))
    assert load_dataset(f"imagefolder:{tmp_path / 'two'}").fingerprint() != one.fingerprint()
    stat = load_dataset(f"imagefolder:{tmp_path / 'one'}", fingerprint="stat")
    assert stat.fingerprint() != one.fingerprint()
    with pytest.raises(ValueError, match="fingerprint: expected one of content, stat"):
        load_dataset(f"imagefolder:{tmp_path / 'one'}", fingerprint="none")


def test_channel_adaptation_matches_pillow_luma_and_repetition():
    rgb = _rgb(4, 5, 5)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    luma = adapt_channels(x, 1)
    ref = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255  # ITU-R 601-2, Pillow's convert("L")
    assert luma.shape == (1, 1, 5, 5) and np.allclose(luma[0, 0].numpy(), ref, atol=2e-4)
    grey = x[:, :1]
    assert torch.equal(adapt_channels(grey, 3), grey.repeat(1, 3, 1, 1))
    assert adapt_channels(x, 3) is x and adapt_channels(x, None) is x


def test_warning_free_on_a_clean_folder(fresh_context, tmp_path):
    for cls in ("a", "b"):
        _save(tmp_path / cls / "0.png", _rgb(0))
        _save(tmp_path / cls / "1.png", _rgb(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dataset(f"imagefolder:{tmp_path}", skip_unreadable=True).skipped == []


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_file_met_while_streaming_is_one_clear_error(fresh_context, tmp_path, workers):
    """Decoded in a DataLoader worker or in this process, the error is the file's own message (no worker
    traceback wrapped around it)."""
    from pytest_transfer.datasets.stream import iter_raw_chunks

    for cls in ("a", "b"):
        for i in range(4):
            _save(tmp_path / cls / f"{i}.jpg", _rgb(i, 64, 64))
    bad = tmp_path / "b" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) * 3 // 4])
    ds = load_dataset(f"imagefolder:{tmp_path}")
    with pytest.raises(UnreadableImage) as info:
        list(iter_raw_chunks(ds, ds.indices("all"), chunk=4, num_workers=workers))
    message = str(info.value)
    assert message.startswith("cannot read image ") and "b/1.jpg" in message and "skip_unreadable=True" in message
    assert "Traceback" not in message and "DataLoader worker" not in message


def test_folder_options_are_checked_before_any_file_is_read(fresh_context, tmp_path):
    for cls in ("a", "b"):
        for i in range(2):
            _save(tmp_path / cls / f"{i}.png", _rgb(i, 6, 9))
    for size in (0, -5, 3.5, "abc", True):
        with pytest.raises(ValueError, match=r"size: expected a positive whole number of pixels .* got"):
            load_dataset(f"imagefolder:{tmp_path}", size=size)
    assert load_dataset(f"imagefolder:{tmp_path}", size=4).image_size == (4, 4)
    with pytest.raises(ValueError, match=r"unknown option 'sizee'; did you mean 'size'\? Valid options: allow_empty"):
        load_dataset(f"imagefolder:{tmp_path}", sizee=4)
    with pytest.raises(ValueError, match=r"dataset 'digits': unknown option 'size'. Valid options: canvas, name"):
        load_dataset("digits", size=4)
    with pytest.raises(NotADirectoryError, match=r"0\.png is a file; give the folder that holds one sub-folder "
                                                 r"per class \(for a file in a class folder: imagefolder:"):
        load_dataset(f"imagefolder:{tmp_path / 'a' / '0.png'}")
