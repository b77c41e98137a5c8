"""Model similarity: CKA of two models' features, and of their empirical neural-tangent-kernel Grams."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..context import current_context
from ..engine.memo import evaluate
from ..models import leaves_models_as_found
from ..resolve import resolve_pair

if TYPE_CHECKING:  # pragma: no cover
    import torch


#: measured transfer accuracy on the test split (not an estimator): usable as ``metric=`` in rankings

def feature_cka(model_a: Any, model_b: Any, dataset: Any, *, split: str = "test", node_a: str | None = None,
                node_b: str | None = None, debiased: bool = False) -> float:
    """Linear CKA (Kornblith et al. 2019) between two models' features on the same images.

    Features at each model's feature node (or ``node_a`` / ``node_b``) on
    ``split`` of ``dataset``, from the engine's memoised passes; 1 for
    representations equal up to rotation and isotropic scaling.

    >>> feature_cka("efficientnet-lite0", "efficientnet-lite0-random", "digits")  # doctest: +SKIP
    """
    from ..metrics.similarity import linear_cka

    ctx = current_context()
    a, ds = resolve_pair(model_a, dataset)
    b, _ = resolve_pair(model_b, ds)
    ea = evaluate(a, ds, split=split, taps=[node_a] if node_a else [], context=ctx)
    eb = evaluate(b, ds, split=split, taps=[node_b] if node_b else [], context=ctx)
    return linear_cka(ea.taps[node_a] if node_a else ea.features, eb.taps[node_b] if node_b else eb.features,
                      debiased=debiased)


NTK_KERNELS = ("pntk", "trace")
NTK_MAX_BYTES = 4 << 30


def _param_owner(name: str) -> str:
    return name.rpartition(".")[0]


def select_ntk_parameters(module: Any, *, layers: int | str | Sequence[str] | None = None,
                          max_params: int | None = None) -> list[str]:
    """Names of the parameters whose gradients make the empirical NTK.

    ``layers``: ``None`` (all), an int k (the parameters of the last k
    submodules that own parameters, in registration order) or submodule name
    prefixes. ``max_params``: then keep the longest run of parameter tensors
    from the end whose total size fits the budget.
    """
    named = [(n, p) for n, p in module.named_parameters()]
    if layers is not None:
        if isinstance(layers, bool) or (isinstance(layers, int) and layers < 1):
            raise ValueError(f"layers: expected a positive number of layers or submodule names, got {layers!r}")
        if isinstance(layers, int):
            owners = list(dict.fromkeys(_param_owner(n) for n, _ in named))
            keep = set(owners[-layers:])
            named = [(n, p) for n, p in named if _param_owner(n) in keep]
        else:
            prefixes = [layers] if isinstance(layers, str) else list(layers)
            for pre in prefixes:
                if not any(n == pre or n.startswith(pre + ".") for n, _ in named):
                    owners = list(dict.fromkeys(_param_owner(n) for n, _ in named))
                    raise ValueError(f"layers: {pre!r} owns no parameters; the last ones are "
                                     f"{', '.join(owners[-6:])}")
            named = [(n, p) for n, p in named if any(n == pre or n.startswith(pre + ".") for pre in prefixes)]
    if max_params is not None:
        if int(max_params) < 1:
            raise ValueError(f"max_params: expected a positive parameter budget, got {max_params}")
        kept: list[tuple[str, Any]] = []
        total = 0
        for n, p in reversed(named):
            if total + p.numel() > max_params:
                break
            kept.insert(0, (n, p))
            total += p.numel()
        if not kept:
            n, p = named[-1]
            raise ValueError(f"max_params: {max_params} is smaller than the last parameter tensor {n!r} "
                             f"({p.numel()} values); raise the budget or choose layers=")
        named = kept
    if not named:
        raise ValueError("layers: selects no parameters; the model has none to take gradients of")
    return [n for n, _ in named]


def _as_images(images: Any, *, n_samples: int, split: str, model: Any = None) -> tuple[torch.Tensor, Any]:
    """``(images, the model that takes them)``: a dataset's first ``n_samples`` of ``split`` at ``model``'s input
    size (each file through its library's geometry, as the engine feeds it) with the view of ``model`` that
    takes images of that size (:meth:`~pytest_transfer.models.TransferModel.at_input_size`); a tensor as given,
    with ``model`` itself."""
    import torch

    from ..datasets import TargetDataset, load_dataset

    if isinstance(images, (str, TargetDataset)):
        ds = images if isinstance(images, TargetDataset) else load_dataset(images)
        idx = ds.indices(split)[:n_samples]
        if model is None or getattr(model, "geometry", None) is None:
            return ds.batch(idx), model
        from ..engine.chunks import model_batch

        return model_batch(model, ds, idx, "cpu"), model.at_input_size()
    x = torch.as_tensor(np.asarray(images) if not hasattr(images, "detach") else images.detach()).float()
    if x.ndim != 4:
        raise ValueError(f"images: expected N×C×H×W float images in [0, 1], got shape {tuple(x.shape)}")
    if len(x) < 2:
        raise ValueError(f"images: got {len(x)} image(s); NTK similarity needs at least 2 (CKA on an N×N Gram)")
    return x, model


@leaves_models_as_found
def ntk_gram(model: Any, images: Any, *, layers: int | str | Sequence[str] | None = None,
             max_params: int | None = None, kernel: str = "pntk", n_samples: int = 64, split: str = "test",
             batch_size: int = 16, centered: bool = False) -> np.ndarray:
    """The empirical neural-tangent-kernel Gram matrix of ``model`` on ``images`` (N×N, float64).

    ``Θ(x, x') = J(x) J(x')ᵀ`` with ``J`` the gradient of the outputs with
    respect to the selected parameters (see :func:`select_ntk_parameters`), per
    sample, computed with ``torch.func`` (``vmap`` of ``grad``/``jacrev`` over a
    ``functional_call``; the module in eval mode, images through its preprocess).
    ``kernel="pntk"`` (default): the pseudo-NTK of Mohamadi et al. 2023, the NTK
    of the summed logits divided by the number of outputs C, one gradient per
    sample. ``kernel="trace"``: the mean over the C outputs of each output's NTK
    (the trace of the full NC×NC eNTK over C), C gradients per sample.
    Memory: N × P × 4 bytes (× C for ``trace``) for P selected parameters.
    ``centered=True`` returns ``H Θ H`` (``H = I − 11ᵀ/N``), computed from
    gradients centred over the samples: exact where forming Θ first would lose
    the small sample-dependent part against a large constant one (the bias
    gradients of a network whose features are tiny, e.g. at random init).
    """
    import torch
    from torch.func import functional_call, grad, jacrev, vmap

    from ..models import load_model
    from ..models.call import as_logits, module_dtype, to_module_dtype

    if kernel not in NTK_KERNELS:
        raise ValueError(f"kernel: expected one of {', '.join(NTK_KERNELS)}, got {kernel!r}")
    if not hasattr(model, "module"):
        model = load_model(model)
    ctx = current_context()
    x_all, model = _as_images(images, n_samples=n_samples, split=split, model=model)
    module = model.module.eval()
    device = ctx.device
    model.to(device)
    names = select_ntk_parameters(module, layers=layers, max_params=max_params)
    dtype = module_dtype(module)  # the one call convention: the module's own dtype, logits of any output
    params = dict(module.named_parameters())
    chosen = {n: params[n].detach() for n in names}
    fixed = {n: p.detach() for n, p in params.items() if n not in chosen}
    buffers = {n: b.detach() for n, b in module.named_buffers()}
    with torch.inference_mode():
        n_out = int(torch.as_tensor(model(x_all[:1].to(device))).reshape(-1).numel())
    p_total = sum(t.numel() for t in chosen.values())
    width = p_total * (n_out if kernel == "trace" else 1)
    need = len(x_all) * width * 4
    if need > NTK_MAX_BYTES:
        raise ValueError(
            f"images: {len(x_all)} samples × {width:,} gradient entries need {need / 2**30:.1f} GiB; restrict the "
            "parameters (layers=..., max_params=...), use fewer images, or kernel='pntk'"
        )

    def outputs(p: dict[str, Any], xi: Any) -> Any:
        out = as_logits(functional_call(module, ({**fixed, **p}, buffers), (xi.unsqueeze(0),)),
                        where=f"model {model.name!r}")
        return out.reshape(-1)

    def summed(p: dict[str, Any], xi: Any) -> Any:
        return outputs(p, xi).sum()

    per_sample = vmap(grad(summed) if kernel == "pntk" else jacrev(outputs), in_dims=(None, 0))
    rows = torch.empty(len(x_all), width, dtype=torch.float32, device=device)
    with torch.enable_grad(), torch.inference_mode(False):
        for start in range(0, len(x_all), batch_size):
            xb = to_module_dtype(model.inputs(x_all[start:start + batch_size].to(device)), dtype)
            g = per_sample(chosen, xb)
            rows[start:start + len(xb)] = torch.cat([g[n].reshape(len(xb), -1) for n in names], dim=1)
    gram = torch.zeros(len(x_all), len(x_all), dtype=torch.float64, device=device)
    step = max(1, (1 << 24) // max(1, len(x_all)))
    for c0 in range(0, width, step):
        block = rows[:, c0:c0 + step].double()
        if centered:  # H J Jᵀ H = (H J)(H J)ᵀ: no cancellation against large constant gradients (biases)
            block -= block.mean(dim=0, keepdim=True)
        gram += block @ block.T
    return (gram / n_out).cpu().numpy()


def ntk_similarity(model_a: Any, model_b: Any, images: Any, *, layers: int | str | Sequence[str] | None = None,
                   max_params: int | None = None, kernel: str = "pntk", n_samples: int = 64, split: str = "test",
                   debiased: bool = False, batch_size: int = 16) -> float:
    """CKA between two models' empirical NTK Gram matrices on the same images.

    What it means: the empirical NTK ``Θ(x, x') = ⟨∂f(x)/∂θ, ∂f(x')/∂θ⟩`` says
    which samples a small gradient step on ``x`` also moves; two models with a
    high NTK-CKA (near 1) would *change* alike under fine-tuning from here,
    which feature CKA (:func:`feature_cka`) does not see. Restricted to the
    final linear layer it equals the linear CKA of the penultimate features.

    ``images``: float [0, 1] images N×C×H×W, or a dataset (spec or object)
    whose ``split`` gives the first ``n_samples`` images. Each model applies
    its own preprocess. ``layers`` / ``max_params`` restrict the parameters
    (the same rule for both models, see :func:`select_ntk_parameters`);
    ``kernel`` is ``"pntk"`` or ``"trace"`` (see :func:`ntk_gram`).

    Cost per model: N per-sample gradients (vmapped in batches of
    ``batch_size``: about N forward+backward passes), N × P × 4 bytes of memory
    for P selected parameters (× C outputs with ``kernel="trace"``; more than
    4 GiB is refused), and an O(N² P) Gram product. For EfficientNet-Lite0
    (4.7 M parameters) and 64 images: about 1.2 GiB; ``layers=3`` or
    ``max_params=500_000`` makes it a few MB.

    >>> ntk_similarity("efficientnet-lite0", "efficientnet-lite0-random", "digits", layers=2)  # doctest: +SKIP
    """
    from ..datasets import load_dataset
    from ..metrics.similarity import cka_from_grams

    x = load_dataset(images) if isinstance(images, str) else images  # each model sees it through its own geometry
    ka = ntk_gram(model_a, x, layers=layers, max_params=max_params, kernel=kernel, batch_size=batch_size,
                  centered=not debiased, n_samples=n_samples, split=split)
    kb = ntk_gram(model_b, x, layers=layers, max_params=max_params, kernel=kernel, batch_size=batch_size,
                  centered=not debiased, n_samples=n_samples, split=split)
    for name, k, m in (("model_a", ka, model_a), ("model_b", kb, model_b)):
        if _centered_norm(k) == 0.0:
            raise ValueError(
                f"{name}: every image gets the same gradient for the selected parameters of "
                f"{getattr(m, 'name', m)!r} (e.g. only a bias), so its NTK carries no information; select more "
                "parameters (layers=..., a larger max_params)"
            )
    return cka_from_grams(ka, kb, debiased=debiased)


def _centered_norm(k: np.ndarray) -> float:
    """Frobenius norm of ``H K H``: 0 when the kernel does not depend on the sample."""
    kc = k - k.mean(axis=0) - k.mean(axis=1)[:, None] + k.mean()
    return float(np.linalg.norm(kc)) if np.abs(kc).max(initial=0.0) > 1e-12 * np.abs(k).max(initial=0.0) else 0.0


__all__ = ["feature_cka", "ntk_gram", "ntk_similarity", "select_ntk_parameters"]
