"""The perturbations a pass can apply: Gaussian noise and the ImageNet-C style corruptions.

Each factory returns an :class:`pytest_transfer.engine.Perturbation` (the engine's interface: a key, a
function of a [0, 1] chunk on the model's device and a chunk seed, and a seed); the engine applies it per
fixed chunk (:data:`pytest_transfer.engine.CHUNK`) and never needs to know which kind it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..engine.chunks import Perturbation

if TYPE_CHECKING:  # pragma: no cover
    import torch


def gaussian_noise(sigma: float, *, seed: int = 0) -> Perturbation:
    """Additive Gaussian noise of standard deviation ``sigma`` on [0, 1] images, clipped to [0, 1]."""
    sigma = float(sigma)
    if not 0.0 <= sigma <= 1.0:
        raise ValueError(f"sigma: expected a noise level in [0, 1] (pixel units), got {sigma}")

    def add_noise(images: torch.Tensor, chunk_seed: int) -> torch.Tensor:
        import torch

        g = torch.Generator(device=images.device).manual_seed(chunk_seed)
        noise = torch.randn(images.shape, generator=g, device=images.device, dtype=images.dtype)
        return (images + sigma * noise).clamp_(0.0, 1.0)

    return Perturbation(f"gaussian_noise(sigma={sigma!r})", add_noise, seed)


def corruption(name: str, severity: int, *, seed: int = 0, table: str = "auto") -> Perturbation:
    """An ImageNet-C style corruption (:func:`pytest_transfer.robustness.corrupt`), with the published
    ``table`` (``auto``, ``imagenet-c``, ``tiny-imagenet-c``, ``cifar10-c``; see ``corrupt``)."""

    def apply(images: torch.Tensor, chunk_seed: int) -> torch.Tensor:
        from .corruptions import corrupt

        return corrupt(images, name, severity, seed=chunk_seed, table=table)

    return Perturbation(f"corruption({name},{int(severity)},{table})", apply, seed)


__all__ = ["corruption", "gaussian_noise"]
