"""FGSM and PGD on a small classifier trained on real digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pytest_transfer.robustness import fgsm, pgd


class Wrapped:
    """What the attacks receive from the project: preprocess (normalise) then an nn.Module."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.module((images - 0.3) / 0.4)


@pytest.fixture(scope="module")
def digits() -> tuple[Wrapped, torch.Tensor, torch.Tensor]:
    """A linear classifier on 1×8×8 digits in [0, 1], trained full-batch; returns (model, test images, labels)."""
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.load_digits(return_X_y=True)
    images = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    labels = torch.tensor(y)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    model = Wrapped(module)
    opt = torch.optim.LBFGS(module.parameters(), max_iter=200, line_search_fn="strong_wolfe")
    train, test = slice(0, 1200), slice(1200, None)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(images[train]), labels[train]) + 1e-3 * module[1].weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    module.zero_grad(set_to_none=True)
    return model, images[test], labels[test]


def accuracy(model, images, labels) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def test_the_trained_net_is_accurate(digits):
    model, x, y = digits
    assert accuracy(model, x, y) > 0.9


def test_eps_zero_leaves_images_and_accuracy_unchanged(digits):
    model, x, y = digits
    clean = accuracy(model, x, y)
    for adv in (fgsm(model, x, y, eps=0.0), pgd(model, x, y, eps=0.0, steps=3)):
        assert torch.equal(adv, x)
        assert accuracy(model, adv, y) == clean


def test_pgd_is_at_least_as_strong_as_fgsm_which_beats_clean(digits):
    model, x, y = digits
    clean = accuracy(model, x, y)
    for eps in (0.05, 0.1):
        acc_fgsm = accuracy(model, fgsm(model, x, y, eps=eps), y)
        acc_pgd = accuracy(model, pgd(model, x, y, eps=eps, steps=10), y)
        assert acc_pgd <= acc_fgsm < clean, (eps, acc_pgd, acc_fgsm, clean)
    assert accuracy(model, pgd(model, x, y, eps=0.1), y) < 0.7 * clean  # measured: 0.56 vs 0.92


def test_perturbations_stay_in_the_eps_ball_and_in_unit_range(digits):
    model, x, y = digits
    eps = 0.07
    for adv in (fgsm(model, x, y, eps=eps), pgd(model, x, y, eps=eps, steps=5, step_size=0.05)):
        assert adv.shape == x.shape and adv.dtype == x.dtype
        assert float((adv - x).abs().max()) <= eps + 1e-6
        assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    # digits have many pixels at exactly 0 and 1: the clip to [0, 1] is active there
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_fgsm_equals_the_analytic_gradient_sign_of_a_linear_model(digits):
    model, x, y = digits
    w, b = model.module[1].weight.detach().double(), model.module[1].bias.detach().double()
    flat = x.reshape(len(x), -1).double()
    probs = torch.softmax(((flat - 0.3) / 0.4) @ w.T + b, dim=1)
    grad = (probs - nn.functional.one_hot(y, 10).double()) @ w / 0.4  # d CE / d x
    out = fgsm(model, x, y, eps=0.05).reshape(len(x), -1).double()
    # the sign of a gradient entry at rounding level depends on float32 summation order (thread
    # count): the exact comparison is made where the analytic gradient is clearly non-zero
    clear = grad.abs() > 1e-4 * grad.abs().amax(dim=1, keepdim=True)
    assert clear.float().mean() > 0.6  # most pixels are compared exactly
    expected = (flat + 0.05 * grad.sign()).clamp(0, 1)
    assert torch.allclose(out[clear], expected[clear], atol=1e-6)
    # elsewhere the pixel moved by -eps, 0 or +eps (then clipped), nothing else
    options = torch.stack([(flat + s * 0.05).clamp(0, 1) for s in (-1.0, 0.0, 1.0)])
    assert bool(((out - options).abs() <= 1e-6).any(dim=0)[~clear].all())


def test_pgd_default_step_size_and_seeded_random_start(digits):
    model, x, y = digits
    a = pgd(model, x, y, eps=0.05, steps=4, seed=1)
    assert torch.equal(a, pgd(model, x, y, eps=0.05, steps=4, seed=1))
    assert torch.equal(a, pgd(model, x, y, eps=0.05, steps=4, step_size=2.5 * 0.05 / 4, seed=1))
    assert not torch.equal(a, pgd(model, x, y, eps=0.05, steps=4, seed=2))
    fixed = pgd(model, x, y, eps=0.05, steps=4, seed=1, random_start=False)
    assert torch.equal(fixed, pgd(model, x, y, eps=0.05, steps=4, seed=2, random_start=False))


def test_model_state_is_restored_and_no_parameter_gradients_accumulate(digits):
    model, x, y = digits
    module = model.module
    module.train()
    try:
        fgsm(model, x[:10], y[:10], eps=0.1)
        pgd(module, x[:10], y[:10], eps=0.1, steps=2)  # an nn.Module directly
        assert module.training
        assert all(p.requires_grad and p.grad is None for p in module.parameters())
    finally:
        module.eval()


def test_attack_runs_in_eval_mode():
    seen = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x):
            seen.append(self.training)
            return self.linear(x.flatten(1))

    net = Probe().train()
    fgsm(net, torch.rand(3, 1, 2, 2), [0, 1, 0], eps=0.1)
    assert seen == [False] and net.training


def test_attacks_work_inside_inference_mode(digits):
    model, x, y = digits
    expected = fgsm(model, x[:20], y[:20], eps=0.1)
    with torch.inference_mode():
        frozen = x[:20].clone()
        got = fgsm(model, frozen, y[:20], eps=0.1)
        got_pgd = pgd(model, frozen, y[:20], eps=0.1, steps=2)
    assert torch.equal(got, expected)
    assert float((got_pgd - x[:20]).abs().max()) <= 0.1 + 1e-6


def test_labels_may_be_lists_or_numpy(digits):
    model, x, y = digits
    a = fgsm(model, x[:5], y[:5], eps=0.1)
    assert torch.equal(a, fgsm(model, x[:5], y[:5].tolist(), eps=0.1))
    assert torch.equal(a, fgsm(model, x[:5], y[:5].numpy().astype(np.int32), eps=0.1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": -0.1}, "eps: must lie in \\[0, 1\\].*8/255"),
        ({"eps": 8}, "eps: must lie in \\[0, 1\\]"),
        ({"eps": True}, "eps: expected a number"),
        ({"eps": "0.1"}, "eps: expected a number"),
        ({"labels": [0, 1]}, "labels: has 2 entries but images has 3"),
        ({"labels": [[0], [1], [2]]}, "labels: expected a 1-d sequence"),
        ({"labels": [0.0, 1.0, 2.0]}, "labels: expected integer class indices"),
        ({"labels": [0, -1, 2]}, "labels: class indices must be ≥ 0"),
        ({"labels": [0, 1, 10]}, "labels: class index 10 is out of range for a model with 10 outputs"),
        ({"images": torch.rand(3, 64)}, "images: expected a batch N×C×H×W"),
        ({"images": np.zeros((3, 1, 8, 8))}, "images: expected a torch.Tensor"),
        ({"images": torch.full((3, 1, 8, 8), 255.0)}, "images: values must lie in \\[0, 1\\]"),
        ({"images": torch.zeros(3, 1, 8, 8, dtype=torch.uint8)}, "images: expected float values"),
        ({"images": torch.zeros(0, 1, 8, 8), "labels": []}, "images: the batch is empty"),
    ],
)
def test_fgsm_argument_errors(digits, kwargs, match):
    model = digits[0]
    args = {"images": torch.rand(3, 1, 8, 8), "labels": [0, 1, 2], "eps": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        fgsm(model, args["images"], args["labels"], eps=args["eps"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps: must be at least 1"),
        ({"steps": 2.5}, "steps: expected a positive integer"),
        ({"step_size": -0.01}, "step_size: must be a positive finite number"),
        ({"step_size": "big"}, "step_size: expected a positive number or None"),
        ({"seed": 0.5}, "seed: expected an integer"),
        ({"eps": 1.5}, "eps: must lie in \\[0, 1\\]"),
    ],
)
def test_pgd_argument_errors(digits, kwargs, match):
    model = digits[0]
    args = {"eps": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        pgd(model, torch.rand(3, 1, 8, 8), [0, 1, 2], **args)


def test_models_that_return_the_wrong_shape_or_detach_are_rejected():
    x = torch.rand(2, 1, 2, 2)
    with pytest.raises(ValueError, match="model: expected logits of shape N×K"):
        fgsm(lambda images: images.sum(), x, [0, 1], eps=0.1)
    net = nn.Linear(4, 2)
    with pytest.raises(ValueError, match="model: its output does not depend on the images"):
        fgsm(lambda images: net(images.detach().flatten(1)), x, [0, 1], eps=0.1)
