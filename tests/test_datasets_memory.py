"""Peak memory of evaluating a folder of 1024-px JPEGs is bounded by the chunk, not by the folder's size."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from torch import nn
    from pytest_transfer import evaluate, load_dataset, load_model
    from pytest_transfer.models import Preprocess

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    model = load_model(net, name="tiny", preprocess=Preprocess(size=32))
    ds = load_dataset("imagefolder:" + sys.argv[1])
    ev = evaluate(model, ds, split="all", cache=False)
    assert ev.logits.shape == (len(ds), 2)
    # VmHWM: this process's own peak (ru_maxrss would start from the parent's size, kept across exec)
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
    print(len(ds), int(hwm.split()[1]))
''')


def _make_folder(root, n_per_class):
    """Two classes of 1024×1024 JPEGs: a few distinct photographs-like images, copied (decoding is the cost)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1024, 0:1024] / 1024.0
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        originals = []
        for k in range(3):
            base = np.stack([np.sin(6 * xx + k), np.cos(5 * yy - k), xx * yy], axis=-1) * 0.4 + 0.5
            img = np.clip(base * 255 + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
            path = root / c / f"orig{k}.jpg"
            Image.fromarray(img).save(path, quality=85)
            originals.append(path)
        for i in range(n_per_class - len(originals)):
            shutil.copyfile(originals[i % len(originals)], root / c / f"{i:05d}.jpg")


def _peak_rss_kib(folder):
    # malloc tuning off: with it, freed chunks stay in glibc's heap and its fragmentation moves the peak by
    # about +-100 MiB from run to run (measured: 2,028 to 2,127 MiB for either folder), which would hide
    # what the data path itself holds; without it the peak is repeatable to about 1 MiB
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTEST_TRANSFER_NUM_WORKERS": "0",
           "PYTEST_TRANSFER_MALLOC_TUNING": "off"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(folder)], capture_output=True, text=True, env=env,
                         check=True, cwd=folder.parent)
    n, rss = out.stdout.split()
    return int(n), int(rss)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak RSS from /proc (Linux)")
def test_peak_rss_does_not_grow_with_the_folder(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    _make_folder(small, 64)  # 2 chunks
    _make_folder(large, 384)  # 12 chunks
    n_small, rss_small = _peak_rss_kib(small)
    n_large, rss_large = _peak_rss_kib(large)
    assert (n_small, n_large) == (128, 768)
    growth_mib = (rss_large - rss_small) / 1024
    # 640 more decoded 1024-px images are 1.9 GB as uint8: held, they would show here in full
    assert growth_mib < 60, f"peak RSS {rss_small / 1024:.0f} MiB for 128 images, {rss_large / 1024:.0f} for 768"
