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
