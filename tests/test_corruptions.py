"""ImageNet-C corruptions: contract, determinism, severity ordering and the published formulas."""

from __future__ import annotations

import colorsys
import io
import itertools
import multiprocessing
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_transfer.robustness import (
    CORRUPTION_GROUPS,
    CORRUPTIONS,
    DETERMINISTIC_CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    _ops,
    _poisson,
    corrupt,
    corrupt_many,
    corruptions,
    resolve_corruptions,
)
from pytest_transfer.robustness.corruptions_weather import frost_texture
from tests._helpers import square_photos as _photos

ALL = CORRUPTIONS + EXTRA_CORRUPTIONS
RANDOM = tuple(n for n in ALL if n not in DETERMINISTIC_CORRUPTIONS)

# The published order of Hendrycks & Dietterich (2019), Figure 1, written out independently.
PUBLISHED_ORDER = (
    "gaussian_noise shot_noise impulse_noise defocus_blur glass_blur motion_blur zoom_blur "
    "snow frost fog brightness contrast elastic_transform pixelate jpeg_compression"
).split()


def _tensor(u8: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(u8).permute(0, 3, 1, 2).to(dtype) / 255.0


@pytest.fixture(scope="module")
def photos32() -> torch.Tensor:
    return _tensor(_photos(32))


@pytest.fixture(scope="module")
def sweep224() -> tuple[torch.Tensor, dict[tuple[str, int], torch.Tensor]]:
    """All 19 corruptions × 5 severities at 224 px on the two photographs."""
    x = _tensor(_photos(224))
    return x, {(name, sev): out for name, sev, out in corrupt_many(x, ALL, [1, 2, 3, 4, 5], seed=0)}


# ---------------------------------------------------------------- names


def test_corruption_names_follow_the_published_order_and_groups():
    assert list(CORRUPTIONS) == PUBLISHED_ORDER
    assert EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert list(CORRUPTION_GROUPS) == ["noise", "blur", "weather", "digital"]
    assert [n for g in CORRUPTION_GROUPS.values() for n in g] == PUBLISHED_ORDER


def test_resolve_corruptions_expands_names_groups_and_lists():
    assert resolve_corruptions("fog") == ("fog",)
    assert resolve_corruptions("noise") == ("gaussian_noise", "shot_noise", "impulse_noise")
    assert resolve_corruptions("all") == CORRUPTIONS
    assert resolve_corruptions("extra") == EXTRA_CORRUPTIONS
    assert resolve_corruptions(["fog", "weather", "Fog"]) == ("fog", "snow", "frost", "brightness")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("fogg", "unknown corruption or group 'fogg'.*valid names: gaussian_noise"),
        ([], "empty"),
        (["fog", 3], "expected names as strings"),
        (5, "expected a name, a group or a list"),
    ],
)
def test_resolve_corruptions_rejects_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        resolve_corruptions(spec)


# ---------------------------------------------------------------- contract


@pytest.mark.parametrize("name", ALL)
def test_output_shape_dtype_and_range_at_8_32_and_224(name, photos32, sweep224):
    small = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    grey = photos32.mean(dim=1, keepdim=True)
    wide = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(2))
    for x in (small, photos32, grey, wide):
        for sev in (1, 2, 3, 4, 5):
            y = corrupt(x, name, sev)
            assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
            assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
            assert torch.isfinite(y).all()
    x224, outs = sweep224
    for sev in (1, 2, 3, 4, 5):
        y = outs[(name, sev)]
        assert y.shape == x224.shape and y.dtype == x224.dtype
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert not torch.equal(y, x224), f"{name} severity {sev} left 224-px images unchanged"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtype_is_preserved(dtype, photos32):
    x = photos32.to(dtype)
    for name in ("gaussian_noise", "zoom_blur", "fog", "jpeg_compression"):
        y = corrupt(x, name, 3)
        assert y.dtype == dtype and float(y.min()) >= 0 and float(y.max()) <= 1


def test_single_image_without_batch_dimension_and_empty_batch(photos32):
    single = corrupt(photos32[0], "motion_blur", 2)
    assert single.shape == photos32[0].shape
    assert torch.equal(single, corrupt(photos32[:1], "motion_blur", 2)[0])
    empty = corrupt(photos32[:0], "fog", 1)
    assert empty.shape == (0, 3, 32, 32)


def test_input_is_not_modified(photos32):
    before = photos32.clone()
    for name in ALL:
        corrupt(photos32, name, 5)
    assert torch.equal(photos32, before)


# ---------------------------------------------------------------- randomness


@pytest.mark.parametrize("name", ALL)
def test_deterministic_for_a_seed_and_random_ones_differ_across_seeds(name, photos32):
    a = corrupt(photos32, name, 3, seed=7)
    assert torch.equal(a, corrupt(photos32, name, 3, seed=7))
    b = corrupt(photos32, name, 3, seed=8)
    if name in RANDOM:
        assert not torch.equal(a, b)
    else:
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", [n for n in RANDOM if n != "elastic_transform"])
def test_each_image_of_a_batch_gets_its_own_draw(name, photos32):
    twins = photos32[:1].repeat(2, 1, 1, 1)
    y = corrupt(twins, name, 4)
    assert not torch.equal(y[0], y[1])


def test_result_does_not_depend_on_call_order(photos32):
    first = corrupt(photos32, "snow", 2, seed=3)
    for name in ALL:
        corrupt(photos32, name, 2, seed=3)
    assert torch.equal(first, corrupt(photos32, "snow", 2, seed=3))


def test_frost_texture_is_synthesised_bluish_white_and_seeded():
    rng = _ops.Context(0, torch.device("cpu"), torch.float32).rng
    tex = frost_texture(2, 64, 64, rng("frost", 0))
    assert tex.shape == (2, 3, 64, 64) and float(tex.min()) >= 0 and float(tex.max()) <= 1
    mean = tex.mean(dim=(0, 2, 3))
    assert mean[2] > mean[0] and 0.4 < float(mean.mean()) < 0.8  # photographs: ~0.57 / 0.66 / 0.70 (R/G/B)
    assert not torch.equal(tex, frost_texture(2, 64, 64, rng("frost", 1)))


# ---------------------------------------------------------------- severity

# Severity pairs along which the distance from the clean image must grow. Where every published parameter
# moves towards a stronger corruption, the whole chain 1..5; where the published table is not monotone, the
# chains its parameters do order (and the reason).
FULL = [(1, 2, 3, 4, 5)]
CHAINS = {
    # sigma, max displacement, iterations = (.7,1,2) (.9,2,1) (1,2,3) (1.1,3,2) (1.5,4,2): 2 has one shuffle
    "glass_blur": [(1, 3), (2, 3), (1, 4, 5), (2, 4, 5)],
    # 2 and 3 trade flake density for flake size (AlexNet's error is lower at 3 than at 2)
    "snow": [(1, 2, 4, 5), (1, 3, 4, 5)],
    # image weight .7 -> .65 at the same frost weight .7 between 3 and 4
    "frost": [(1, 2, 3, 5), (1, 2, 4, 5)],
    # 4 has the strength of 3 with a rougher fractal
    "fog": [(1, 2, 3, 5), (1, 4, 5)],
    # 1-2 are large smooth warps (sigma 171 / 20 px), 3-5 local ones (AlexNet's error: .53 .70 .56 .64 .81)
    "elastic_transform": [(1, 2), (3, 5)],
    # 1-2 desaturate (x0.3, x0.1), 3-5 saturate (x2, x5, x20)
    "saturate": [(1, 2), (3, 4, 5)],
    # 1-3 water, 4-5 mud
    "spatter": [(1, 2, 4, 5), (1, 3, 4, 5)],
}


@pytest.mark.parametrize("name", ALL)
def test_distance_from_clean_grows_with_severity(name, sweep224):
    x, outs = sweep224
    rmse = {sev: float((outs[(name, sev)] - x).pow(2).mean().sqrt()) for sev in range(1, 6)}
    for chain in CHAINS.get(name, FULL):
        values = [rmse[s] for s in chain]
        assert all(b > a for a, b in itertools.pairwise(values)), f"{name}: RMSE {rmse} not increasing along {chain}"


# ---------------------------------------------------------------- published formulas, computed independently


# written out from github.com/hendrycks/robustness: imagenet_c/corruptions.py, make_tinyimagenet_c.py, make_cifar_c.py
PUBLISHED_CONTRAST = {"imagenet-c": [0.4, 0.3, 0.2, 0.1, 0.05], "tiny-imagenet-c": [0.4, 0.3, 0.2, 0.1, 0.05],
                      "cifar10-c": [0.75, 0.5, 0.4, 0.3, 0.15]}
PUBLISHED_PIXELATE = {"imagenet-c": [0.6, 0.5, 0.4, 0.3, 0.25], "tiny-imagenet-c": [0.9, 0.8, 0.7, 0.6, 0.5],
                      "cifar10-c": [0.95, 0.9, 0.85, 0.75, 0.65]}
PUBLISHED_JPEG = {"imagenet-c": [25, 18, 15, 10, 7], "tiny-imagenet-c": [65, 58, 50, 40, 25],
                  "cifar10-c": [80, 65, 58, 50, 40]}
PUBLISHED_GAUSSIAN_NOISE = {"imagenet-c": [0.08, 0.12, 0.18, 0.26, 0.38],
                            "tiny-imagenet-c": [0.04, 0.08, 0.12, 0.15, 0.18],
                            "cifar10-c": [0.04, 0.06, 0.08, 0.09, 0.10]}
PUBLISHED_GAUSSIAN_BLUR = {"imagenet-c": (224, [1, 2, 3, 4, 6]), "tiny-imagenet-c": (64, [0.5, 0.75, 1, 1.25, 1.5]),
                           "cifar10-c": (32, [0.4, 0.6, 0.7, 0.8, 1])}


@pytest.mark.parametrize("table", sorted(PUBLISHED_CONTRAST))
def test_contrast_matches_the_published_formula(photos32, table):
    x = photos32.double()
    for sev, c in enumerate(PUBLISHED_CONTRAST[table], start=1):
        a = x.numpy()
        means = a.mean(axis=(2, 3), keepdims=True)
        expected = np.clip((a - means) * c + means, 0, 1)
        np.testing.assert_allclose(corrupt(x, "contrast", sev, table=table).numpy(), expected, atol=1e-12)


def _hsv_reference(a: np.ndarray, edit) -> np.ndarray:
    out = np.empty_like(a)
    for n in range(a.shape[0]):
        for i in range(a.shape[2]):
            for j in range(a.shape[3]):
                h, s, v = colorsys.rgb_to_hsv(*a[n, :, i, j])
                out[n, :, i, j] = colorsys.hsv_to_rgb(*edit(h, s, v))
    return np.clip(out, 0, 1)


def test_brightness_matches_hsv_value_shift():
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[0, :, 0, 0] = 0.0  # black: its value rises to grey
    x[0, :, 0, 1] = 0.9  # grey
    for sev, c in enumerate([0.1, 0.2, 0.3, 0.4, 0.5], start=1):
        expected = _hsv_reference(x.numpy(), lambda h, s, v, c=c: (h, s, min(v + c, 1.0)))
        np.testing.assert_allclose(corrupt(x, "brightness", sev, table="imagenet-c").numpy(), expected, atol=1e-12)


def test_saturate_matches_hsv_saturation_scaling():
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[1, :, 3, 3] = 0.4  # grey: hue 0, turns red-ish when the offset is positive
    x[1, :, 3, 4] = 0.0
    table = [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)]
    for sev, (a, b) in enumerate(table, start=1):
        expected = _hsv_reference(x.numpy(), lambda h, s, v, a=a, b=b: (h, min(max(s * a + b, 0.0), 1.0), v))
        np.testing.assert_allclose(corrupt(x, "saturate", sev, table="imagenet-c").numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("table", sorted(PUBLISHED_PIXELATE))
def test_pixelate_matches_pillow_box_down_then_box_up(table):
    u8 = _photos(50)  # 50 px: the factors give non-integer box widths (30, 25, 20, 15, 12 px at ImageNet-C's)
    x = _tensor(u8, torch.float64)
    for sev, c in enumerate(PUBLISHED_PIXELATE[table], start=1):
        got = corrupt(x, "pixelate", sev, table=table).permute(0, 2, 3, 1).numpy()
        for n in range(len(u8)):
            img = Image.fromarray(u8[n])
            small = img.resize((int(50 * c), int(50 * c)), Image.BOX)
            expected = np.asarray(small.resize((50, 50), Image.BOX)) / 255.0  # ImageNet-C's upsampling
            # Pillow rounds to uint8 after its horizontal and its vertical pass (ties up): within one grey
            # level; upsampling copies pixels exactly
            assert np.abs(got[n] - expected).max() <= 1 / 255 + 1e-9


@pytest.mark.parametrize(("small", "large"), [((30, 25), (50, 41)), ((14, 12), (23, 37))])
def test_pixelate_resampling_matches_pillow_on_float_images(small, large):
    # Pillow's mode "F" (float32) resizes without rounding to uint8: BOX down agrees to float32 precision,
    # NEAREST up copies exactly. 23 from 14 and 37 from 12 are sizes where torch's "nearest-exact" float
    # scale would pick other pixels than Pillow, so they check the index fallback as well.
    from pytest_transfer.robustness._ops import nearest_upsample, pil_box_downsample

    x = torch.rand(2, 3, *large, generator=torch.Generator().manual_seed(5))
    down = pil_box_downsample(x, *small, rows=4)  # several bands per axis
    z = torch.rand(2, 3, *small, generator=torch.Generator().manual_seed(6))
    up = nearest_upsample(z, *large)
    for n, c in itertools.product(range(2), range(3)):
        size_small, size_large = small[::-1], large[::-1]  # Pillow takes (width, height)
        box = np.asarray(Image.fromarray(x[n, c].numpy(), mode="F").resize(size_small, Image.BOX))
        np.testing.assert_allclose(down[n, c].numpy(), box, rtol=0, atol=1e-6)
        near = np.asarray(Image.fromarray(z[n, c].numpy(), mode="F").resize(size_large, Image.NEAREST))
        np.testing.assert_array_equal(up[n, c].numpy(), near)


@pytest.mark.parametrize(("channels", "table"), [(3, "imagenet-c"), (1, "imagenet-c"), (3, "tiny-imagenet-c"),
                                              (3, "cifar10-c")])
def test_jpeg_matches_pillow_at_the_published_qualities(channels, table):
    u8 = _photos(64)
    if channels == 1:
        u8 = np.stack([np.asarray(Image.fromarray(a).convert("L")) for a in u8])[..., None]
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255
    for sev, quality in enumerate(PUBLISHED_JPEG[table], start=1):
        got = corrupt(x, "jpeg_compression", sev, table=table).permute(0, 2, 3, 1).numpy()
        for n in range(len(u8)):
            buf = io.BytesIO()
            Image.fromarray(u8[n].squeeze(-1) if channels == 1 else u8[n]).save(buf, "JPEG", quality=quality)
            expected = np.asarray(Image.open(buf)).reshape(got[n].shape)
            np.testing.assert_array_equal(got[n], expected / np.float32(255))  # Pillow's pixels exactly


@pytest.fixture
def torch_threads():
    """Set torch's thread count inside a test; the count is put back afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_jpeg_gives_the_same_pixels_on_any_number_of_threads(torch_threads):
    # the batch is split across torch's thread count, each part coded on its own thread
    x = _tensor(_photos(48), torch.float32)
    x = torch.cat([x, x.flip(-1), x.flip(-2)])  # more images than threads
    results = []
    for threads in (1, 2, 3):
        torch_threads(threads)
        results.append([out for _, _, out in corrupt_many(x, ["jpeg_compression"])])
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


def test_jpeg_falls_back_to_bytesio_where_memfd_is_refused(monkeypatch, torch_threads):
    # a sandbox may refuse memfd_create: every thread then encodes into a BytesIO, with the same pixels
    torch_threads(2)
    u8 = _photos(32)
    expected = corruptions._jpeg_round_trips(u8, [10, 25], np.dtype(np.float32))

    def refused(*_args, **_kwargs):
        raise PermissionError("memfd_create: operation not permitted")

    monkeypatch.setattr(os, "memfd_create", refused, raising=False)
    monkeypatch.setattr(corruptions, "_jpeg_local", threading.local())  # forget the scratch files made so far
    np.testing.assert_array_equal(corruptions._jpeg_round_trips(u8, [10, 25], np.dtype(np.float32)), expected)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_jpeg_coding_threads_work_in_a_forked_child(torch_threads):
    # DataLoader workers are forked: a child must make its own coding threads and scratch files, not
    # wait on the parent's. The child calls the round trip on numpy arrays only, because a torch op in
    # a child forked after the parent used OpenMP threads can hang (torch's own limitation; DataLoader
    # workers run with one torch thread for that reason).
    torch_threads(2)
    u8 = _photos(32)
    parent = corruptions._jpeg_round_trips(u8, [10, 25], np.dtype(np.float32))
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_jpeg_round_trip_with_threads, (u8,)).get(timeout=60)
    np.testing.assert_array_equal(parent, child)


def _jpeg_round_trip_with_threads(u8: np.ndarray) -> np.ndarray:
    torch.set_num_threads(2)
    return corruptions._jpeg_round_trips(u8, [10, 25], np.dtype(np.float32))


@pytest.mark.parametrize("table", sorted(PUBLISHED_GAUSSIAN_BLUR))
def test_gaussian_blur_at_each_tables_own_size_matches_scipy(table):
    ndimage = pytest.importorskip("scipy.ndimage")
    size, sigmas = PUBLISHED_GAUSSIAN_BLUR[table]
    x = _tensor(_photos(size), torch.float64)
    for sev, sigma in enumerate(sigmas, start=1):
        expected = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
        got = corrupt(x, "gaussian_blur", sev)  # "auto" picks the table written for this size
        np.testing.assert_allclose(got.numpy(), np.clip(expected, 0, 1), atol=1e-10)


def test_gaussian_blur_matches_scipy_with_skimage_defaults():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = _tensor(_photos(224), torch.float64)
    for sev, sigma in enumerate([1, 2, 3, 4, 6], start=1):
        expected = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
        np.testing.assert_allclose(corrupt(x, "gaussian_blur", sev).numpy(), np.clip(expected, 0, 1), atol=1e-10)


def test_gaussian_blur_convolution_path_for_large_images_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(1, 1, _ops.MATMUL_MAX_SIDE + 8, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for mode in ("nearest", "reflect"):
        expected = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 2.5, 2.5), mode=mode, truncate=4.0)
        np.testing.assert_allclose(_ops.gaussian_blur(x, 2.5, mode=mode).numpy(), expected, atol=1e-10)


def test_zoom_blur_matches_the_published_clipped_zoom_average():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = _tensor(_photos(40), torch.float64)
    factors = np.arange(1, 1.31, 0.03)  # severity 5, exactly as published
    a = x.numpy()
    out = np.zeros_like(a)
    for z in factors:
        ch = int(np.ceil(40 / z))
        top = (40 - ch) // 2
        zoomed = ndimage.zoom(a[:, :, top : top + ch, top : top + ch], (1, 1, z, z), order=1)
        trim = (zoomed.shape[2] - 40) // 2
        out += zoomed[:, :, trim : trim + 40, trim : trim + 40]
    expected = np.clip((a + out) / (len(factors) + 1), 0, 1)
    np.testing.assert_allclose(corrupt(x, "zoom_blur", 5, table="imagenet-c").numpy(), expected, atol=1e-9)


def test_motion_blur_kernel_matches_a_direct_shift_and_sum():
    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    angles = torch.tensor([30.0, -100.0])
    radius, sigma = 5, 2.0
    got = _ops.motion_blur(x, radius, sigma, angles).numpy()
    width = 2 * radius + 1
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    k /= k.sum()
    a = x.numpy()
    rows, cols = np.arange(20), np.arange(24)
    for n, angle in enumerate(angles.tolist()):
        expected = np.zeros_like(a[n])
        for i in range(width):
            dy = int(np.ceil(i * np.sin(np.deg2rad(angle)) - 0.5))
            dx = int(np.ceil(i * np.cos(np.deg2rad(angle)) - 0.5))
            r = np.clip(rows + dy, 0, 19)
            c = np.clip(cols + dx, 0, 23)
            expected += k[i] * a[n][:, r][:, :, c]
        np.testing.assert_allclose(got[n], expected, atol=1e-12)


def test_fold_index_matches_numpy_pad_modes():
    a = np.arange(5)
    idx = np.arange(-12, 17)
    for ours, theirs in (("nearest", "edge"), ("reflect", "symmetric"), ("reflect101", "reflect")):
        assert np.array_equal(a[_ops.fold_index(idx, 5, ours)], np.pad(a, (12, 12), mode=theirs))


def test_noise_statistics_match_the_published_distributions():
    grey = torch.full((4, 3, 64, 64), 0.5, dtype=torch.float64)
    for sev, sigma in enumerate([0.08, 0.12], start=1):  # no clipping at these levels
        d = corrupt(grey, "gaussian_noise", sev, table="imagenet-c") - grey
        assert abs(float(d.mean())) < 0.005 and abs(float(d.std()) / sigma - 1) < 0.03
        s = corrupt(grey, "speckle_noise", sev, table="imagenet-c") - grey
        assert abs(float(s.std()) / (0.5 * [0.15, 0.2][sev - 1]) - 1) < 0.03
    for table, sigmas in PUBLISHED_GAUSSIAN_NOISE.items():
        d = corrupt(grey, "gaussian_noise", 2, table=table) - grey
        assert abs(float(d.std()) / sigmas[1] - 1) < 0.03, table
    shot = corrupt(grey, "shot_noise", 1, table="imagenet-c") * 60  # Poisson(0.5 * 60) / 60
    assert abs(float(shot.mean()) - 30) < 0.3 and abs(float(shot.var()) / 30 - 1) < 0.05
    imp = corrupt(grey, "impulse_noise", 5, table="imagenet-c")  # amount 0.27: half to 0, half to 1
    assert abs(float((imp == 0).double().mean()) - 0.135) < 0.01
    assert abs(float((imp == 1).double().mean()) - 0.135) < 0.01


# on the 8-bit grid (drawn from alias tables) and off it (drawn by numpy's sampler); λ ≤ 33: no clipping at 60
@pytest.mark.parametrize("level", [5 / 255, 77 / 255, 140 / 255, 0.02, 0.3, 0.55])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shot_noise_counts_follow_scipys_poisson_pmf_across_chunks(level, dtype):
    # Poisson(level · 60) counts over 4 × 3 × 128 × 128 = 196,608 pixels: three chunks of independently
    # seeded draws; a chi-square test against scipy's pmf (bins with ≥ 5 expected counts, tail pooled)
    stats = pytest.importorskip("scipy.stats")
    grey = torch.full((4, 3, 128, 128), level, dtype=dtype)
    counts = (corrupt(grey, "shot_noise", 1, table="imagenet-c") * 60).round().long().reshape(-1).numpy()
    lam = level * 60
    k = np.arange(counts.max() + 2)
    expected = stats.poisson.pmf(k, lam) * counts.size
    keep = expected >= 5
    observed = np.bincount(counts, minlength=k.size)[: k.size]
    obs = np.append(observed[keep], counts.size - observed[keep].sum())
    exp = np.append(expected[keep], counts.size - expected[keep].sum())
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    assert abs(counts.mean() - lam) < 4 * np.sqrt(lam / counts.size)


@pytest.mark.parametrize("scale", [60.0, 25.0, 12.0, 5.0, 3.0, 500.0, 0.25])
def test_shot_noise_alias_tables_hold_scipys_poisson_pmf_at_every_level(scale):
    # what the tables draw, worked out cell by cell: column j of row k gives its own count with probability
    # threshold / 2^(64 - bits) and its alias otherwise, each column picked with probability 2^-bits
    stats = pytest.importorskip("scipy.stats")
    threshold, counts, bits = _poisson.alias_tables(scale)
    width = 1 << bits
    accept = threshold.astype(np.float64).reshape(256, width) / 2.0 ** (64 - bits)
    own, alias = counts.reshape(256, width, 2)[..., 0], counts.reshape(256, width, 2)[..., 1]
    top = int(counts.max()) + 1
    implied = np.zeros((256, top))
    rows = np.broadcast_to(np.arange(256)[:, None], own.shape)
    np.add.at(implied, (rows, own), accept / width)
    np.add.at(implied, (rows, alias), (1 - accept) / width)
    means = np.arange(256) / 255 * scale
    reference = stats.poisson.pmf(np.arange(top)[None, :], means[:, None])
    assert np.abs(implied - reference).max() < 1e-12
    assert (1 - reference.sum(axis=1)).max() < 1e-12  # the windows leave out no measurable tail


def test_shot_noise_uses_the_alias_tables_only_for_chunks_on_the_8_bit_grid(monkeypatch):
    chunk = _ops.POISSON_CHUNK
    u8 = torch.randint(0, 256, (2, 3, 128, 128), generator=torch.Generator().manual_seed(0))  # 1.5 chunks
    for on_grid in (u8.float() / 255, u8.float() * (1 / 255), u8.double() / 255, torch.from_numpy(u8.numpy() / 255)):
        levels, on = _poisson.grid_levels(on_grid.reshape(-1).numpy(), chunk)
        assert on.tolist() == [True, True] and np.array_equal(levels, u8.reshape(-1).numpy()), on_grid.dtype
    nudged = u8.float() / 255
    nudged.view(-1)[chunk + 7] += 1e-4  # one value off the grid: its chunk goes to numpy's sampler
    assert _poisson.grid_levels(nudged.reshape(-1).numpy(), chunk)[1].tolist() == [True, False]

    tables_drawn = []
    real = _poisson.draw_on_grid
    monkeypatch.setattr(_poisson, "draw_on_grid", lambda *a: tables_drawn.append(1) or real(*a))
    corrupt(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)), "shot_noise", 3)
    assert tables_drawn == []
    corrupt(u8.float() / 255, "shot_noise", 3)
    assert tables_drawn
    tables_drawn.clear()
    monkeypatch.setattr(_poisson, "MAX_TABLE_SCALE", 10.0)  # λ = 12 at severity 3: above it, numpy draws
    corrupt(u8.float() / 255, "shot_noise", 3, table="imagenet-c")
    assert tables_drawn == []


@pytest.mark.parametrize("grid", ["on", "off", "mixed"])
def test_shot_noise_draws_do_not_depend_on_the_thread_count(torch_threads, grid):
    x = _tensor(_photos(64), torch.float32).repeat(8, 1, 1, 1)  # 3 × 64 × 64 × 24 elements: 4.5 chunks
    if grid == "off":
        x = (x * 0.999 + 0.0005).clamp(0, 1)
    elif grid == "mixed":  # the third chunk off the grid, the others on it
        x.view(-1)[2 * _ops.POISSON_CHUNK + 5] = 0.5
    draws = []
    for threads in (1, 2, 3):
        torch_threads(threads)
        draws.append(corrupt(x, "shot_noise", 2))
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])
    assert not torch.equal(draws[0], corrupt(x, "shot_noise", 2, seed=1))


def test_defocus_keeps_flat_images_flat_and_blurs_edges():
    flat = torch.full((1, 3, 40, 40), 0.3, dtype=torch.float64)
    np.testing.assert_allclose(corrupt(flat, "defocus_blur", 5).numpy(), 0.3, atol=1e-12)
    edge = torch.zeros(1, 1, 224, 224, dtype=torch.float64)
    edge[..., 112:] = 1.0
    row = corrupt(edge, "defocus_blur", 5)[0, 0, 100].numpy()
    # radius 10 px and a 5×5 alias blur: nothing reaches 13 px from the edge
    assert row[99] == pytest.approx(0, abs=1e-9) and row[125] == pytest.approx(1, abs=1e-9)
    assert 0 < row[103] < 0.1 and 0.9 < row[121] < 1
    assert 0.3 < row[112] < 0.7


# ---------------------------------------------------------------- corrupt_many


def test_corrupt_many_equals_corrupt_for_every_pair(photos32):
    x = photos32[:, :, :16, :16]
    got = list(corrupt_many(x, ALL, [1, 3, 5], seed=4))
    assert [(n, s) for n, s, _ in got] == [(n, s) for n in ALL for s in (1, 3, 5)]
    for name, sev, out in got:
        assert torch.equal(out, corrupt(x, name, sev, seed=4)), (name, sev)


def test_corrupt_many_shared_zoom_path_equals_single_calls(photos32):
    outs = {s: y for _, s, y in corrupt_many(photos32, "zoom_blur", [5, 1, 2, 3, 4])}
    assert list(outs) == [5, 1, 2, 3, 4]
    for sev, y in outs.items():
        assert torch.allclose(y, corrupt(photos32, "zoom_blur", sev), atol=1e-6)


def test_corrupt_many_accepts_groups_and_single_severity(photos32):
    names = [(n, s) for n, s, _ in corrupt_many(photos32, "noise", 2)]
    assert names == [("gaussian_noise", 2), ("shot_noise", 2), ("impulse_noise", 2)]
    assert [s for _, s, _ in corrupt_many(photos32, "fog", [2, 2, 1])] == [2, 1]


def test_corrupt_many_validates_before_the_first_item(photos32):
    with pytest.raises(ValueError, match="severities"):
        corrupt_many(photos32, "fog", [1, 6])
    with pytest.raises(ValueError, match="severities: the list is empty"):
        corrupt_many(photos32, "fog", [])
    with pytest.raises(ValueError, match="severities: expected an integer or a list"):
        corrupt_many(photos32, "fog", 2.5)
    with pytest.raises(ValueError, match="images: values must lie in"):
        corrupt_many(photos32 * 2, "fog")
    with pytest.raises(ValueError, match="unknown corruption or group"):
        corrupt_many(photos32, "smog")


# ---------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((1, 3, 8, 8)), "images: expected a torch.Tensor"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "images: expected float values.*images.float\\(\\) / 255"),
        (torch.zeros(3, 8), "images: expected N×C×H×W"),
        (torch.zeros(1, 4, 8, 8), "images: expected 1 \\(grey\\) or 3 \\(RGB\\) channels"),
        (torch.zeros(1, 8, 8, 3), "channels-first"),
        (torch.full((1, 3, 8, 8), 2.0), "values must lie in \\[0, 1\\].*preprocess"),
        (torch.full((1, 3, 8, 8), float("nan")), "NaN or Inf"),
        (torch.zeros(1, 3, 0, 8), "height and width must be at least 1"),
    ],
)
def test_corrupt_rejects_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        corrupt(images, "fog", 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "fogg"}, "name: unknown corruption 'fogg'; valid names: gaussian_noise"),
        ({"name": "noise"}, "that is a group"),
        ({"severity": 0}, "severity: must be 1, 2, 3, 4 or 5"),
        ({"severity": 6}, "severity: must be 1, 2, 3, 4 or 5"),
        ({"severity": 2.0}, "severity: expected an integer"),
        ({"severity": True}, "severity: expected an integer"),
        ({"seed": 1.5}, "seed: expected an integer"),
        ({"seed": False}, "seed: expected an integer"),
    ],
)
def test_corrupt_rejects_bad_arguments(kwargs, match):
    args = {"name": "fog", "severity": 1, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        corrupt(torch.zeros(1, 3, 8, 8), args["name"], args["severity"], seed=args["seed"])
