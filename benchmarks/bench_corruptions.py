"""Throughput of the full ImageNet-C sweep (15 corruptions × 5 severities) against ``imagecorruptions``.

Both run on the same real photographs (scikit-learn's two sample photos plus
six from ``skimage.data`` when scikit-image is installed), centre-cropped and
resized to 224×224 with Pillow's BOX filter.

* pytest-transfer: ``corrupt_many(batch, "all")`` on a batch of ``--batch``
  images, after one warm-up pass (kernels and resampling matrices are cached
  per size, as in a real sweep over many batches).
* ``imagecorruptions`` (PyPI, the ImageNet-C code ported to any image size):
  ``corrupt(image, corruption_name=..., severity=...)`` image by image on
  ``--ref-images`` of the same images (it has no batching, so its throughput
  per image does not depend on how many are timed).

Throughput is corrupted images per second (one image × corruption × severity
= one image). The ratio is measured in one process on the same CPU. Run::

    .venv/bin/pip install imagecorruptions scikit-image      # benchmark-only extra
    .venv/bin/python benchmarks/bench_corruptions.py
    .venv/bin/python benchmarks/bench_corruptions.py --only pixelate,jpeg_compression --size 32

``--repeats`` and ``--ref-repeats`` keep the best of several runs of each
side (use both for rows that take milliseconds); ``--only`` times some rows;
``--size`` resizes the photos (pytest-transfer then uses the table
``table="auto"`` picks for that size, while ``imagecorruptions`` always uses
ImageNet-C's). Converting the batch once is counted in the total,
in no row. Both sides run under the glibc malloc tuning the engine holds
while a pass applies corruptions (``pytest_transfer.allocator``; ``--malloc-
tuning off`` times glibc's defaults): without it, each severity's fresh
output buffers are page-faulted in again, which makes the short rows
(pixelate, JPEG) swing by 2× between processes.

``imagecorruptions`` 1.1.2 predates setuptools 81, NumPy 2 and scikit-image
0.19; this script supplies the three names it needs (``pkg_resources.
resource_filename``, ``np.float_`` and ``gaussian(multichannel=)``) before
importing it, without changing its code.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import types
import warnings

import numpy as np
import torch
from PIL import Image

from pytest_transfer.allocator import tuned_malloc
from pytest_transfer.robustness import CORRUPTIONS, corrupt_many

SIZE = 224
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def load_photos(count: int, size: int = SIZE) -> np.ndarray:
    """``count`` real RGB photographs as uint8 ``count×size×size×3`` (cycled if fewer exist)."""
    from sklearn.datasets import load_sample_image

    photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    try:
        import skimage.data

        photos += [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]
    except ImportError:
        print("scikit-image not installed: using scikit-learn's two sample photographs only")
    out = []
    for i in range(count):
        img = Image.fromarray(photos[i % len(photos)])
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BOX)
        out.append(np.asarray(img.convert("RGB")))
    return np.stack(out)


def import_imagecorruptions():
    """Import ``imagecorruptions`` with the compatibility names it needs, or return None."""
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None:
        return None
    package_dir = os.path.dirname(spec.origin)
    if importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda _module, rel: os.path.join(package_dir, rel)
        sys.modules["pkg_resources"] = shim
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    import imagecorruptions
    import imagecorruptions.corruptions as ic
    from skimage.filters import gaussian

    def gaussian_compat(image, sigma=1, multichannel=None, **kwargs):
        if multichannel:
            kwargs["channel_axis"] = -1
        return gaussian(image, sigma=sigma, **kwargs)

    ic.gaussian = gaussian_compat
    return imagecorruptions


def time_ours(batch: torch.Tensor, names: tuple[str, ...]) -> tuple[float, dict[str, float]]:
    """One timed sweep: its total seconds and the seconds of each row (converting the batch is in no row)."""
    start = time.perf_counter()
    sweep = corrupt_many(batch, names)
    last = time.perf_counter()
    times: dict[str, float] = {}
    for name, _sev, _out in sweep:
        now = time.perf_counter()
        times[name] = times.get(name, 0.0) + now - last
        last = now
    return time.perf_counter() - start, times


def time_reference(ic, images: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    """Seconds of each row for ``images`` × 5 severities with ``imagecorruptions``."""
    per_name: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            t0 = time.perf_counter()
            for image in images:
                for severity in range(1, 6):
                    ic.corrupt(image, corruption_name=name, severity=severity)
            per_name[name] = time.perf_counter() - t0
    return per_name


def best_of_rounds(batch, ic, images, names, repeats: int, ref_repeats: int):
    """Interleaved rounds (ours, then the reference while it has rounds left); the best time of each row and total.

    Interleaving keeps a slow spell of a shared machine from landing on one side only.
    """
    for _ in corrupt_many(batch[:2], names, 1):  # warm-up: build the cached kernels for this size
        pass
    np.random.seed(0)
    ours_total, ours, ref = float("inf"), {}, {}
    for round_ in range(max(repeats, ref_repeats if ic else 0)):
        if round_ < repeats:
            total, rows = time_ours(batch, names)
            ours_total = min(ours_total, total)
            ours = {n: min(ours.get(n, float("inf")), t) for n, t in rows.items()}
        if ic is not None and round_ < ref_repeats:
            ref = {n: min(ref.get(n, float("inf")), t) for n, t in time_reference(ic, images, names).items()}
    return ours_total, ours, ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="images in the pytest-transfer batch (default 8)")
    parser.add_argument("--ref-images", type=int, default=2, help="images timed with imagecorruptions (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="timed sweeps of pytest-transfer, best row kept")
    parser.add_argument("--ref-repeats", type=int, default=1,
                        help="timed runs of each imagecorruptions row, best kept (default 1: glass blur is slow)")
    parser.add_argument("--malloc-tuning", choices=("on", "off"), default="on",
                        help="time both sides under the engine's glibc malloc tuning, as a pass applies "
                             "corruptions (default on; pytest_transfer.allocator)")
    parser.add_argument("--only", default="all", help="comma-separated corruptions to time (default: all 15)")
    parser.add_argument("--size", type=int, default=SIZE, help=f"image side in pixels (default {SIZE})")
    args = parser.parse_args()
    names = CORRUPTIONS if args.only == "all" else tuple(args.only.split(","))
    unknown = sorted(set(names) - set(CORRUPTIONS))
    if unknown:
        parser.error(f"--only: unknown corruption(s) {unknown}; choose from {', '.join(CORRUPTIONS)}")

    photos = load_photos(max(args.batch, args.ref_images), args.size)
    batch = torch.from_numpy(photos[: args.batch]).permute(0, 3, 1, 2).float().div(255.0)
    per_sweep = len(names) * 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.size}×{args.size} photos; "
          f"{len(names)} × 5 sweep")

    ic = import_imagecorruptions()
    with tuned_malloc(args.malloc_tuning == "on") as tuned:
        ours_total, ours, ref = best_of_rounds(batch, ic, photos[: args.ref_images], names, args.repeats,
                                               args.ref_repeats)
    print(f"glibc malloc tuning of a pass (both sides): {'on' if tuned else 'off'}")
    ours_rate = args.batch * per_sweep / ours_total
    print(f"pytest-transfer : batch {args.batch}, {ours_total:.2f} s per sweep -> {ours_rate:.1f} images/s")
    if ic is None:
        print("imagecorruptions is not installed (pip install imagecorruptions): no ratio measured")
        return
    ref_total = sum(ref.values())
    ref_rate = args.ref_images * per_sweep / ref_total
    print(f"imagecorruptions: {args.ref_images} image(s), {ref_total:.2f} s -> {ref_rate:.1f} images/s")
    print(f"ratio (pytest-transfer / imagecorruptions): {ours_rate / ref_rate:.1f}x")
    # imagecorruptions' glass blur is a pure-Python loop over pixels and dominates its time: say it apart
    rest = [c for c in names if c != "glass_blur"]
    if rest and len(rest) < len(names):
        ours_rest = args.batch * 5 * len(rest) / sum(ours[c] for c in rest)
        ref_rest = args.ref_images * 5 * len(rest) / sum(ref[c] for c in rest)
        print(f"without glass_blur: {ours_rest:.1f} vs {ref_rest:.1f} images/s, ratio {ours_rest / ref_rest:.1f}x")
    print(f"\n{'corruption':18s} {'ours img/s':>11s} {'ref img/s':>10s} {'ratio':>7s}")
    for name in names:
        a = args.batch * 5 / ours[name]
        b = args.ref_images * 5 / ref[name]
        print(f"{name:18s} {a:11.1f} {b:10.1f} {a / b:7.2f}")


if __name__ == "__main__":
    main()
