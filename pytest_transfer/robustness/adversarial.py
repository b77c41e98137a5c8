"""L∞ adversarial attacks on [0, 1] images: FGSM and PGD.

The perturbation lives in pixel space, before the model's preprocess (as in
RobustBench): ``model`` is any callable mapping float images in [0, 1]
(N×C×H×W) to logits (N×K), e.g. a ``TransferModel``, which applies its
``preprocess`` and then its ``nn.Module``. ``eps`` is in [0, 1] pixel units
(8/255 is the usual ImageNet budget).

A bare ``nn.Module`` is called as the engine calls it
(:func:`pytest_transfer.models.call.call_module`: fed its own dtype, a
tuple, dict or ``ModelOutput`` read for its logits). While attacking, the
model's ``nn.Module`` (the model itself, or its ``module`` attribute) is put
in eval mode and its parameters stop requiring gradients; each submodule's
mode and each parameter's flag are restored afterwards. Gradients flow only to the images,
under ``torch.enable_grad()`` and outside inference mode, so the attacks work
when called from inside ``torch.inference_mode()``.

References: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing
Adversarial Examples", ICLR 2015 (FGSM); Madry et al., "Towards Deep Learning
Models Resistant to Adversarial Attacks", ICLR 2018 (PGD with random start,
step 2.5·eps/steps).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.call import call_module
from ..models.restore import restored
from ._ops import check_unit_range

Model = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def _attack_mode(model: Any) -> Iterator[None]:
    """Eval mode and frozen parameters for the duration of an attack; on exit each submodule gets back its own
    mode and each parameter its own ``requires_grad`` (:func:`~pytest_transfer.models.restored`)."""
    module = model if isinstance(model, nn.Module) else getattr(model, "module", None)
    if not isinstance(module, nn.Module):
        yield
        return
    with restored(module):
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        yield


def _logits(model: Model, x: torch.Tensor) -> Any:
    """The model's logits on ``x``: a bare ``nn.Module`` through the one call convention (its own dtype; a
    tuple, dict or ``ModelOutput`` read for its logits); any other callable (a ``TransferModel``) as it is."""
    if isinstance(model, nn.Module):
        return call_module(model, x)
    if getattr(model, "has_head", True) is False:  # a TransferModel of a headless backbone: no logits to attack
        raise ValueError(f"model {getattr(model, 'name', '')!r} has no classification head (a headless backbone: its "
                         "output is features), so it has no logits to attack; attack it through a linear probe: "
                         "assert_robust_under_attack(..., method='linear_probe')")
    return model(x)


def _check_images(images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise ValueError(
            f"images: expected a torch.Tensor of shape N×C×H×W, got {type(images).__name__}; "
            "convert with torch.as_tensor(images, dtype=torch.float32)"
        )
    if not images.is_floating_point():
        raise ValueError(f"images: expected float values in [0, 1], got dtype {images.dtype}; use images.float() / 255")
    if images.ndim != 4:
        raise ValueError(f"images: expected a batch N×C×H×W, got shape {tuple(images.shape)}; add images[None]")
    if images.shape[0] == 0:
        raise ValueError("images: the batch is empty; pass at least one image")
    check_unit_range(images, tol=1e-6,
                     hint="attack the un-normalised images and let the model's preprocess normalise them")
    return images


def _as_int(value: object, name: str, what: str) -> int:
    """``value`` as an int (numpy integers too; bools and floats refused)."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name}: expected {what}, got {value!r}") from None


def _check_labels(labels: object, n: int, device: torch.device) -> torch.Tensor:
    if isinstance(labels, torch.Tensor):
        y = labels.detach()
    else:
        try:
            y = torch.as_tensor(np.asarray(labels))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"labels: cannot be read as integer class indices ({exc})") from None
    if y.ndim != 1:
        raise ValueError(
            f"labels: expected a 1-d sequence of class indices, got shape {tuple(y.shape)}; "
            "pass integer labels, not one-hot rows"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels: expected integer class indices, got dtype {y.dtype}")
    if len(y) != n:
        raise ValueError(f"labels: has {len(y)} entries but images has {n}; pass one label per image")
    if len(y) and int(y.min()) < 0:
        raise ValueError(f"labels: class indices must be ≥ 0, got {int(y.min())}")
    return y.to(device=device, dtype=torch.long)


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)):
        raise ValueError(f"eps: expected a number in [0, 1] (pixel units, e.g. 8/255), got {eps!r}")
    value = float(eps)
    if not (0.0 <= value <= 1.0):
        raise ValueError(
            f"eps: must lie in [0, 1] (pixel units of images in [0, 1]), got {value!r}; "
            "for a budget of 8 grey levels use eps=8/255"
        )
    return value


def _input_gradient(model: Model, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """∂ cross-entropy(model(x), labels) / ∂x, summed over the batch (only its sign is used)."""
    x = x.detach().clone().requires_grad_(True)
    try:
        logits = _logits(model, x)
    except RuntimeError as exc:
        if "nference tensor" in str(exc):
            raise ValueError(
                "model: its parameters were created inside torch.inference_mode(), so no gradient can flow "
                "through them; build or load the model outside inference mode"
            ) from exc
        raise
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model: expected logits of shape N×K = ({x.shape[0]}, K), got {shape}")
    if int(labels.max()) >= logits.shape[1]:
        raise ValueError(
            f"labels: class index {int(labels.max())} is out of range for a model with {logits.shape[1]} outputs"
        )
    grad = None
    if logits.requires_grad:
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:
        raise ValueError(
            "model: its output does not depend on the images through autograd (a detach, numpy or "
            "inference-mode step in preprocess?); the attack needs a differentiable model"
        )
    return grad


def fgsm(model: Model, images: torch.Tensor, labels: Any, *, eps: float) -> torch.Tensor:
    """Fast gradient sign method: ``clip(x + eps · sign(∇ₓ CE(model(x), y)), 0, 1)``.

    One gradient step of size ``eps`` (L∞, pixel units in [0, 1]) that
    increases the cross-entropy of the true ``labels`` (Goodfellow et al.,
    ICLR 2015). Returns the perturbed images: same shape, dtype and device,
    in [0, 1], within ``eps`` of ``images``.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    >>> x = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    >>> adv = fgsm(net, x, [0, 1, 0, 1, 0], eps=8 / 255)
    >>> bool((adv - x).abs().max() <= 8 / 255 + 1e-6)
    True
    """
    eps = _check_eps(eps)
    images = _check_images(images)
    with torch.inference_mode(False):
        x0 = images.detach().clone()
        y = _check_labels(labels, x0.shape[0], x0.device)
        with _attack_mode(model), torch.enable_grad():
            grad = _input_gradient(model, x0, y)
        return (x0 + eps * grad.sign()).clamp_(0.0, 1.0)


def pgd(
    model: Model,
    images: torch.Tensor,
    labels: Any,
    *,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    seed: int = 0,
    random_start: bool = True,
) -> torch.Tensor:
    """Projected gradient descent in the L∞ ball of radius ``eps`` (Madry et al., ICLR 2018).

    Starts from a uniform random point of the ball (seeded by ``seed``, when
    ``random_start``), then ``steps`` times moves by ``step_size`` along the
    sign of the cross-entropy gradient and projects back onto the ball ∩
    [0, 1]. ``step_size`` defaults to ``2.5 · eps / steps``. Returns the final
    iterate: same shape, dtype and device as ``images``, in [0, 1], within
    ``eps`` of ``images``; deterministic for a seed.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    >>> x = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    >>> adv = pgd(net, x, [0, 1, 0, 1, 0], eps=8 / 255, steps=5)
    >>> bool((adv - x).abs().max() <= 8 / 255 + 1e-6), bool(adv.min() >= 0)
    (True, True)
    """
    eps = _check_eps(eps)
    steps = _as_int(steps, "steps", "a positive integer")
    if steps < 1:
        raise ValueError(f"steps: must be at least 1, got {steps}")
    if step_size is None:
        step = 2.5 * eps / steps
    else:
        if isinstance(step_size, bool) or not isinstance(step_size, (int, float, np.floating, np.integer)):
            raise ValueError(f"step_size: expected a positive number or None, got {step_size!r}")
        step = float(step_size)
        if not (step > 0 and math.isfinite(step)):
            raise ValueError(f"step_size: must be a positive finite number (pixel units), got {step_size!r}")
    seed = _as_int(seed, "seed", "an integer")
    images = _check_images(images)
    with torch.inference_mode(False):
        x0 = images.detach().clone()
        y = _check_labels(labels, x0.shape[0], x0.device)
        lo = (x0 - eps).clamp_(min=0.0)
        hi = (x0 + eps).clamp_(max=1.0)
        x = x0.clone()
        if random_start and eps > 0:
            gen = torch.Generator(device=x0.device).manual_seed(seed)
            noise = torch.rand(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
            x = torch.minimum(torch.maximum(x0 + (2 * noise - 1) * eps, lo), hi)
        with _attack_mode(model), torch.enable_grad():
            for _ in range(steps):
                grad = _input_gradient(model, x, y)
                x = torch.minimum(torch.maximum(x + step * grad.sign(), lo), hi)
        return x
