"""The published corruption tables: chosen by image size, overridable, and none of their corruptions vanishes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_transfer.robustness import (
    CORRUPTION_TABLES,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    TABLE_CHOICES,
    auto_table,
    corrupt,
    corrupt_many,
)
from tests._helpers import square_photos

# the published quirk: the elastic transform's severities are not ordered by strength in any table
# (severity 1 is a pure affine warp in the small tables; ImageNet-C's "244 should have been 224")
ORDERED = tuple(n for n in CORRUPTIONS + EXTRA_CORRUPTIONS if n != "elastic_transform")


def _photos(size: int) -> torch.Tensor:
    return torch.from_numpy(square_photos(size)).permute(0, 3, 1, 2).float() / 255


def _change(x: torch.Tensor, out: torch.Tensor) -> float:
    return float((out - x).abs().mean())


@pytest.mark.parametrize(("table", "size"), [("cifar10-c", 32), ("tiny-imagenet-c", 64), ("imagenet-c", 224),
                                             ("auto", 32), ("auto", 40), ("auto", 96)])
def test_every_corruption_changes_the_image_at_severity_1_and_at_least_as_much_at_5(table, size):
    x = _photos(size)
    for name in ORDERED:
        first, last = (_change(x, corrupt(x, name, s, seed=1, table=table)) for s in (1, 5))
        assert first > 1e-3, (name, first)
        assert last >= first, (name, first, last)


def test_imagenet_c_parameters_vanish_on_32_px_images_which_is_why_auto_picks_cifar10_c():
    x = _photos(32)
    # ImageNet-C's sigma of 1 px at 224 px is 0.14 px at 32 px: the image comes back unchanged
    assert _change(x, corrupt(x, "gaussian_blur", 1, table="imagenet-c")) < 1e-6
    assert _change(x, corrupt(x, "gaussian_blur", 1)) > 5e-3  # CIFAR-10-C's sigma 0.4 px, written for 32 px
    assert torch.equal(corrupt(x, "gaussian_blur", 1), corrupt(x, "gaussian_blur", 1, table="cifar10-c"))


@pytest.mark.parametrize(("h", "w", "expected"), [(8, 8, "cifar10-c"), (32, 32, "cifar10-c"), (45, 300, "cifar10-c"),
                                                  (46, 46, "tiny-imagenet-c"), (64, 64, "tiny-imagenet-c"),
                                                  (119, 119, "tiny-imagenet-c"), (120, 120, "imagenet-c"),
                                                  (224, 224, "imagenet-c"), (512, 384, "imagenet-c")])
def test_auto_picks_the_table_written_for_the_nearest_size_on_a_log_scale(h, w, expected):
    assert auto_table(h, w).name == expected
    sizes = {t.name: t.size for t in CORRUPTION_TABLES.values()}
    side = min(h, w)
    assert expected == min(sizes, key=lambda t: abs(np.log(side / sizes[t])))  # the documented rule, recomputed
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    assert torch.equal(corrupt(x, "contrast", 3), corrupt(x, "contrast", 3, table=expected))


def test_pixel_parameters_scale_with_the_tables_own_size():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = _photos(48).double()  # Tiny-ImageNet-C's severity-5 sigma of 1.5 px at 64 px is 1.125 px at 48 px
    expected = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 1.125, 1.125), mode="nearest", truncate=4.0)
    np.testing.assert_allclose(corrupt(x, "gaussian_blur", 5, table="tiny-imagenet-c").numpy(),
                               np.clip(expected, 0, 1), atol=1e-10)


def test_an_unknown_table_is_refused_listing_the_choices():
    x = torch.rand(1, 3, 8, 8)
    for call in (lambda: corrupt(x, "fog", 1, table="cifar"), lambda: corrupt_many(x, "fog", 1, table=3)):
        with pytest.raises(ValueError, match=r"table: unknown corruption table .*auto, imagenet-c, "
                                             r"tiny-imagenet-c, cifar10-c"):
            call()


def test_the_setting_lists_the_same_tables_and_refuses_others(tmp_path):
    from pytest_transfer.settings import CORRUPTION_TABLE_CHOICES, resolve

    assert CORRUPTION_TABLE_CHOICES == TABLE_CHOICES
    assert resolve({"corruption_table": "CIFAR10-C"}, rootdir=tmp_path, pyproject=None,
                   environ={}).corruption_table == "cifar10-c"
    assert resolve({}, rootdir=tmp_path, pyproject=None, environ={}).corruption_table == "auto"
    with pytest.raises(pytest.UsageError, match=r"corruption.table.*auto, imagenet-c, tiny-imagenet-c, cifar10-c"):
        resolve({"corruption_table": "imagenet"}, rootdir=tmp_path, pyproject=None, environ={})


def test_the_sweep_and_the_gate_use_the_setting_or_the_argument(fresh_context):
    import dataclasses

    from pytest_transfer import assert_robust_under_corruption, corruption_sweep, load_dataset, load_model
    from tests._helpers import make_blobs_images, tiny_net

    x, y = make_blobs_images(n_per_class=30, seed=2, size=12)  # k = 20 needs more than 20 train images per class
    data, model = load_dataset((x, y), name="blobs"), load_model(tiny_net(), name="tiny")
    auto = corruption_sweep(model, data, "gaussian_blur", [1, 5], method="knn")
    forced = corruption_sweep(model, data, "gaussian_blur", [1, 5], method="knn", corruption_table="imagenet-c")
    assert (auto.table, forced.table) == ("auto", "imagenet-c")
    assert forced.to_dict()["corruption_table"] == "imagenet-c"
    fresh_context.settings = dataclasses.replace(fresh_context.settings, corruption_table="imagenet-c")
    from_setting = corruption_sweep(model, data, "gaussian_blur", [1, 5], method="knn")
    assert from_setting.table == "imagenet-c"
    assert all(np.array_equal(from_setting.correct[c], forced.correct[c]) for c in forced.cells)
    m = assert_robust_under_corruption(model, data, "gaussian_blur", 1, max_drop=1.0, method="knn",
                                       corruption_table="cifar10-c")
    assert m.passed
    with pytest.raises(ValueError, match="corruption_table: unknown corruption table"):
        corruption_sweep(model, data, "fog", 1, corruption_table="cifar-10")
