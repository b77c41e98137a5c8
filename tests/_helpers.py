"""Small data and small nets for the tests (import with `from tests._helpers import ...`)."""

from __future__ import annotations


def make_blobs_images(n_per_class: int = 40, n_classes: int = 3, size: int = 8, seed: int = 0):
    """Images in [0, 1] whose class is a bright square at a class-specific place, plus noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(n_classes):
        for _ in range(n_per_class):
            img = rng.random((1, size, size), dtype=np.float32) * 0.3
            r = (c * 3) % (size - 2)
            img[0, r:r + 3, r:r + 3] += 0.6
            images.append(np.clip(img, 0, 1))
            labels.append(c)
    return np.stack(images), np.array(labels)


def tiny_net(n_classes: int = 3, channels: int = 1, seed: int = 0):
    """A small conv net with a linear head (penultimate = 8 pooled channels)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, n_classes),
    )


def predict(model, dataset, **options):
    """The gates' predictions (:func:`pytest_transfer.methods.predict`) of a model and dataset given as a gate takes
    them (objects or specs), in the test's current session."""
    from pytest_transfer.api import resolve_pair, session
    from pytest_transfer.methods import predict as method_predict

    ctx = session()
    model, dataset = resolve_pair(model, dataset, ctx)
    return method_predict(model, dataset, context=ctx, **options)


def probe_package_copy(root, code: str) -> dict:
    """Run ``code`` in a fresh interpreter that imports the copy of the package under ``root`` (to which a test
    added a declaration); the last line it prints, read as JSON."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], cwd=root, env={"PYTHONPATH": str(root), "PATH": ""},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def fill_hf_cache(cache, repo_id: str, files: dict, *, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    """Lay files out as huggingface_hub caches a model repository: ``models--<org>--<name>/blobs/<sha256>``,
    ``snapshots/<commit>/<file>`` linking to the blob, and ``refs/main`` holding the commit."""
    import hashlib
    import os
    from pathlib import Path

    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, source in files.items():
        data = Path(source).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return repo


def sample_photos():
    """scikit-learn's two real 427x640 photos as uint8 H×W×3 arrays."""
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def square_photos(size: int):
    """:func:`sample_photos` centre-cropped and BOX-resized to size×size, uint8 N×H×W×3."""
    import numpy as np
    from PIL import Image

    out = []
    for photo in sample_photos():
        img = Image.fromarray(photo)
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        out.append(np.asarray(img.crop((left, top, left + side, top + side)).resize((size, size), Image.BOX)))
    return np.stack(out)


#: a pytester project's conftest: models "tiny" and "tiny-b" (seeds 0 and 1) and datasets "blobs" and
#: "blobs-2" (90 8×8 images, 3 classes), registered through the plugin's hooks
BLOBS_CONFTEST = '''
import numpy as np


def make_net(n_classes=3, seed=0):
    import torch
    from torch import nn
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, n_classes))


def make_blobs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((90, 1, 8, 8), dtype=np.float32) * 0.3
    y = np.repeat(np.arange(3), 30)
    for i, c in enumerate(y):
        x[i, 0, c * 2:c * 2 + 3, c * 2:c * 2 + 3] += 0.6
    return np.clip(x, 0, 1), y


def pytest_transfer_register_models(registry):
    registry.register("tiny", make_net)
    registry.register("tiny-b", lambda: make_net(seed=1))


def pytest_transfer_register_datasets(registry):
    registry.register("blobs", make_blobs)
    registry.register("blobs-2", lambda: make_blobs(seed=2))
'''


#: a pytester project's conftest: model "tiny" (a small conv net; $TINY_SEED picks its weights, $ZERO_FIRST_LAYER
#: zeroes its first layer) and dataset "blobs" (240 noisy 8×8 images, 3 classes: accuracies well below 1)
NOISY_CONFTEST = '''
import os

import numpy as np


def make_net():
    import torch
    from torch import nn
    torch.manual_seed(int(os.environ.get("TINY_SEED", "0")))
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
    if os.environ.get("ZERO_FIRST_LAYER"):  # the model degraded on purpose: one layer zeroed
        with torch.no_grad():
            net[0].weight.zero_()
            net[0].bias.zero_()
    return net


def make_blobs():
    rng = np.random.default_rng(0)
    x = rng.random((240, 1, 8, 8), dtype=np.float32) * 0.6
    y = np.repeat(np.arange(3), 80)
    for i, c in enumerate(y):
        x[i, 0, c * 2:c * 2 + 3, c * 2:c * 2 + 3] += 0.12
    return np.clip(x, 0, 1), y


def pytest_transfer_register_models(registry):
    registry.register("tiny", make_net)


def pytest_transfer_register_datasets(registry):
    registry.register("blobs", make_blobs)
'''


def pytester_pyproject(settings: str = "", tables: str = "") -> str:
    """A pytester project's ``pyproject.toml``: pytest without its cache provider, pytest-transfer on the
    CPU without the disk cache plus ``settings`` (lines of ``[tool.pytest_transfer]``), then ``tables``."""
    return (
        # no hypothesis plugin: its end-of-session hook costs seconds in every in-process run
        '[tool.pytest.ini_options]\n'
        'addopts = "-p no:cacheprovider -p no:unraisableexception -p no:hypothesispytest"\n\n'
        f'[tool.pytest_transfer]\ndevice = "cpu"\nno_cache = true\n{settings}\n{tables}'
    )


def module_level_imports(module) -> set[str]:
    """Top-level package names a module imports at module level (read with ``ast``, nothing is imported)."""
    import ast
    import inspect

    names: set[str] = set()
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names
