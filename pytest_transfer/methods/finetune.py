"""Fine-tuning for ``method="finetune"``: a new head for the target classes, optionally the last blocks too.

The fit (:class:`FinetuneMethod`) is a new :class:`TransferModel` whose head
predicts the target's classes, so its predictions are that model's own head's
(:class:`~pytest_transfer.methods.direct.FittedHead`): it is evaluated (and
perturbed, cached, attacked) like any model with ``method="direct"``.

- ``last_blocks=0`` (default): the backbone stays frozen; the head is trained
  on the cached, standardised train-split features (no extra forward pass
  over the backbone during training) with mini-batch Adam for ``epochs``.
- ``last_blocks=k``: the last ``k`` parameterised top-level children before
  the head are trained together with it, end to end on the train images
  (batch norm keeps its running statistics: the module stays in eval mode).
  A module kept in float16 / bfloat16 / float64 is trained in float32 (Adam's
  steps underflow in half precision) and returned in its own dtype.

Training is seeded and deterministic on the CPU.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .core import TransferMethod
from .direct import FittedHead, direct_mapping

if TYPE_CHECKING:  # pragma: no cover
    from ..context import Context
    from ..datasets import TargetDataset
    from ..models import TransferModel


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 10
    lr: float | None = None  # 1e-2 for the head alone, 1e-3 when blocks are trained too
    last_blocks: int = 0
    batch_size: int = 64
    weight_decay: float = 0.0

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> FinetuneConfig:
        options = dict(options or {})
        valid = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ValueError(f"finetune: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
        cfg = cls(**options)
        if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.last_blocks < 0 or (cfg.lr is not None and cfg.lr <= 0):
            raise ValueError(f"finetune: epochs and batch_size must be >= 1, last_blocks >= 0 and lr > 0, got {cfg}")
        return cfg


def _head_path(module: Any) -> tuple[Any, str]:
    """The parent module and attribute name of the final ``nn.Linear``."""
    from ..models import find_head

    found = find_head(module)
    if found is None:
        raise ValueError("method='finetune' needs a classification head to replace, and this model has none (a "
                         "headless backbone: its output is read as features); use method='linear_probe' or 'knn'")
    if not hasattr(found[1], "in_features"):
        raise ValueError("method='finetune' needs a final nn.Linear head to replace (this model's head is "
                         f"{type(found[1]).__name__}); use method='linear_probe'")
    name = found[0]
    parent_name, _, attr = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    return parent, attr


def _trainable_blocks(module: Any, head: Any, k: int) -> list[Any]:
    blocks = [m for m in module.children() if m is not head and any(True for _ in m.parameters())]
    blocks = [b for b in blocks if not any(p is q for p in b.parameters() for q in head.parameters())]
    if k > len(blocks):
        raise ValueError(f"finetune: last_blocks={k} but the model has only {len(blocks)} parameterised blocks")
    return blocks[len(blocks) - k:] if k else []


def finetuned_model(model: TransferModel, dataset: TargetDataset, cfg: FinetuneConfig, *, context: Context,
                    seed: int) -> TransferModel:
    """Train (once, then from the cache: :func:`~pytest_transfer.cache.cached_result`, kind ``finetune``)
    and return the fine-tuned model. The cache holds the trained head and blocks, keyed by the model's and
    the train split's fingerprints, ``cfg``, ``seed``, the device type and the code."""
    from ..cache import cached_result
    from ..engine.keys import code_fingerprint
    from ..fingerprints import code_identity

    key = {"model": model.fingerprint(), "code": code_fingerprint(model), "data": dataset.fingerprint(),
           "train": dataset.split_fingerprint("train"), "config": repr(cfg), "seed": int(seed),
           "device": context.device.type, "source": code_identity(finetuned_model)}
    return cached_result("finetune", key, lambda: _finetune(model, dataset, cfg, context=context, seed=seed),
                         encode=lambda tuned: _trained_state(tuned.module, cfg),
                         decode=lambda arrays: _rebuild(model, dataset, cfg, arrays), context=context,
                         libraries=("torch",))


def _trained_state(module: Any, cfg: FinetuneConfig) -> dict[str, np.ndarray]:
    """The state entries of the head and the trained blocks (float arrays): what a cache entry holds."""
    parent, attr = _head_path(module)
    head = getattr(parent, attr)
    trained = [head, *_trainable_blocks(module, head, cfg.last_blocks)]
    prefixes = tuple(f"{name}." if name else "" for name, m in module.named_modules() if any(m is t for t in trained))
    return {k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
            for k, v in module.state_dict().items() if k.startswith(prefixes)}  # bfloat16 has no numpy dtype


def _fresh_module(model: TransferModel, n_classes: int, gen: Any) -> Any:
    """A frozen copy of the model's module with a new (seeded) head for ``n_classes``."""
    import torch

    module = copy.deepcopy(model.module).eval()
    parent, attr = _head_path(module)
    old = getattr(parent, attr)
    new_head = torch.nn.Linear(old.in_features, n_classes)
    with torch.no_grad():
        new_head.weight.copy_(torch.randn(new_head.weight.shape, generator=gen) * 0.01)
        new_head.bias.zero_()
    setattr(parent, attr, new_head.to(device=model.device, dtype=old.weight.dtype))  # the module's own dtype
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _wrap(model: TransferModel, dataset: TargetDataset, module: Any) -> TransferModel:
    from ..models import TransferModel

    for p in module.parameters():
        p.requires_grad_(False)
    return TransferModel(module.eval(), name=f"{model.name}+finetune", preprocess=model.preprocess,
                         num_classes=dataset.num_classes, categories=list(dataset.classes),
                         in_channels=model.in_channels)


def _rebuild(model: TransferModel, dataset: TargetDataset, cfg: FinetuneConfig,
             arrays: dict[str, np.ndarray]) -> TransferModel:
    """The fine-tuned model from a cache entry; an entry without exactly the trained entries raises KeyError."""
    import torch

    module = _fresh_module(model, dataset.num_classes, torch.Generator().manual_seed(0))
    expected = set(_trained_state(module, cfg))
    if set(arrays) != expected:
        raise KeyError(f"the entry holds {sorted(set(arrays) ^ expected)[:3]} but not the trained state")
    state = module.state_dict()
    with torch.no_grad():
        for k, v in arrays.items():
            state[k].copy_(torch.from_numpy(v))
    return _wrap(model, dataset, module)


def _finetune(model: TransferModel, dataset: TargetDataset, cfg: FinetuneConfig, *, context: Context,
              seed: int) -> TransferModel:
    import torch

    from ..models.call import module_dtype

    gen = torch.Generator().manual_seed(seed)
    module = _fresh_module(model, dataset.num_classes, gen)
    dtype = module_dtype(module)  # a float16 / bfloat16 / float64 module trains in float32, then returns to it
    module.float()
    parent, attr = _head_path(module)
    new_head = getattr(parent, attr)
    labels = torch.from_numpy(dataset.labels[dataset.indices("train")])
    if cfg.last_blocks == 0:
        _train_head(model, dataset, new_head, labels, cfg, gen, context=context)
    else:
        _train_last_blocks(model, dataset, module, new_head, labels, cfg, gen, context=context)
    return _wrap(model, dataset, module.to(dtype))


def _train_head(model: TransferModel, dataset: TargetDataset, new_head: Any, labels: Any, cfg: FinetuneConfig,
                gen: Any, *, context: Context) -> None:
    """``last_blocks=0``: the head alone, trained on the standardised train features of the engine's pass."""
    import torch

    from ..engine.memo import evaluate
    from ..metrics.probes import Standardizer

    feats = evaluate(model, dataset, split="train", context=context).features.astype(np.float64)
    std = Standardizer.fit(feats)
    x = torch.from_numpy(std(feats)).float()
    head = torch.nn.Linear(x.shape[1], dataset.num_classes)
    head.load_state_dict(new_head.state_dict())
    _train(lambda idx: head(x[idx]), head.parameters(), labels, cfg, gen)
    with torch.no_grad():  # fold the standardisation into the head, as LinearProbe.torch_head does
        weight = head.weight / torch.from_numpy(std.scale).float()  # in float32, then the module's dtype
        new_head.weight.copy_(weight.to(new_head.weight.device))
        new_head.bias.copy_((head.bias - weight @ torch.from_numpy(std.mean).float()).to(new_head.weight.device))


def _train_last_blocks(model: TransferModel, dataset: TargetDataset, module: Any, new_head: Any, labels: Any,
                       cfg: FinetuneConfig, gen: Any, *, context: Context) -> None:
    """``last_blocks=k``: the head and the last ``k`` blocks, trained end to end on the train images."""
    import torch

    from ..models.call import call_module

    params = list(new_head.parameters())
    for block in _trainable_blocks(module, new_head, cfg.last_blocks):
        for p in block.parameters():
            p.requires_grad_(True)
        params += list(block.parameters())
    for p in new_head.parameters():
        p.requires_grad_(True)
    module.to(context.device)
    images = train_images(model, dataset, context.device)
    sized = model.at_input_size()  # the images are at the input size: what is left is the model's normalisation

    def forward(idx: torch.Tensor) -> torch.Tensor:
        return call_module(module, sized.inputs(images(idx)), where=f"model {model.name!r}").float().cpu()

    _train(forward, params, labels, cfg, gen)


#: the most bytes the train split's images at the model's input size (float32, on the training device) may take
#: to be decoded once per fit; a larger train split is decoded again at every step, as it streams
TRAIN_IMAGES_BYTES = 1 << 30


def train_images(model: TransferModel, dataset: TargetDataset, device: Any) -> Any:
    """``images(positions)``: the train split's images at positions ``positions`` (a CPU index tensor into
    ``dataset.indices("train")``), float [0, 1] at ``model``'s input size on ``device``, as the engine feeds
    them (:func:`~pytest_transfer.engine.chunks.model_batch`: files through the model's geometry).

    The whole split is decoded once when it takes at most :data:`TRAIN_IMAGES_BYTES` (measured on its first
    image; images at the input size all have its shape); otherwise each call decodes its images (memory
    bounded by a batch, every epoch decoding the split again). Either way an image's values are the same.
    """
    from ..engine.chunks import model_batch

    train_idx = dataset.indices("train")
    first = model_batch(model, dataset, train_idx[:1], device)
    if first[0].numel() * first.element_size() * len(train_idx) > TRAIN_IMAGES_BYTES:
        return lambda idx: model_batch(model, dataset, train_idx[idx.numpy()], device)
    decoded = model_batch(model, dataset, train_idx, device)
    return lambda idx: decoded[idx.to(decoded.device)]


def _train(forward: Any, params: Any, labels: Any, cfg: FinetuneConfig, gen: Any) -> None:
    import torch

    params = list(params)
    lr = cfg.lr if cfg.lr is not None else (1e-2 if cfg.last_blocks == 0 else 1e-3)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    n = len(labels)
    with torch.inference_mode(False), torch.enable_grad():
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                loss = torch.nn.functional.cross_entropy(forward(idx), labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()


class FinetuneMethod(TransferMethod):
    """Fine-tuning: a new head (and optionally the last blocks) trained on the train split; ``finetune`` holds the
    options of :class:`FinetuneConfig`, checked here (before any pass)."""

    hint = ("train longer or more of the network (finetune={'epochs': ..., 'last_blocks': ...}); compare "
            "method='linear_probe' to see what the frozen features give")

    def __init__(self, name: str, *, finetune: dict[str, Any] | None = None) -> None:
        super().__init__(name)
        self.config = FinetuneConfig.from_dict(finetune)

    def fit(self, model: TransferModel, dataset: TargetDataset, *, context: Context) -> FittedHead:
        """The fine-tuned model (seeded with ``--transfer-seed``; cached), predicted through its own head."""
        tuned = finetuned_model(model, dataset, self.config, context=context, seed=context.settings.seed)
        return FittedHead(self.name, tuned, direct_mapping(tuned, dataset))


__all__ = ["FinetuneConfig", "FinetuneMethod", "finetuned_model"]
