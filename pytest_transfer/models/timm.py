"""``timm:<name>``: a timm model with its pretrained weights from the local Hugging Face cache.

Weights come through timm's own loader (``create_model(name,
pretrained=True)``) with huggingface_hub forced offline, or from a file
(``weights=<path>``); the preprocess is timm's own eval transform for the
model's resolved data config, applied to the batch of tensors. Needs the
``timm`` extra: ``pip install 'pytest-transfer[timm]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .core import TensorTransform, TransferModel, close_names, refuse_near_misses
from .geometry import split_compose
from .hfhub import fill_hint, hf_cache_dir, hf_offline, repo_folder


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ImportError("timm: models need the timm package: pip install 'pytest-transfer[timm]'") from None
    return timm


def _check_name(timm: Any, name: str) -> None:
    arch = name.partition(".")[0]
    if not timm.is_model(arch):
        close = close_names(name, timm.list_pretrained() if "." in name else timm.list_models())
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models() / timm.list_pretrained()"
        raise ValueError(f"timm: no model {name!r}; {hint}")


def _missing(name: str, cfg: Any, cache: Path) -> FileNotFoundError:
    repo = getattr(cfg, "hf_hub_id", None) or f"timm/{name}"
    folder = repo_folder(repo.partition("@")[0], cache)
    hint = fill_hint(f"import timm; timm.create_model('{name}', pretrained=True)", cache, folder)
    return FileNotFoundError(f"timm:{name}: pretrained weights are not in the Hugging Face cache {cache} (timm looks "
                             f"in {folder}). {hint}; or pass weights=<file>, or pretrained=False for random weights")


def _pretrained(timm: Any, name: str, cache: Path, kwargs: dict[str, Any]) -> Any:
    """``timm.create_model(name, pretrained=True)`` offline, from ``cache`` (or the torch hub cache for the
    few models timm still loads from a URL)."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    from .torchvision import hub_checkpoint_dir

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and not cfg.hf_hub_id and cfg.url:
        path = hub_checkpoint_dir() / os.path.basename(cfg.url)
        if not path.is_file():
            raise FileNotFoundError(f"timm:{name}: pretrained weights are not in the torch hub cache: expected "
                                    f"{path}; pytest-transfer never downloads")
    try:
        with hf_offline():
            return timm.create_model(name, pretrained=True, cache_dir=str(cache), **kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, FileNotFoundError) as exc:
        raise _missing(name, cfg, cache) from exc


def _classes_in(model: Any, state: dict[str, Any]) -> int | None:
    """The number of classes of the head ``state`` holds for ``model``'s architecture: the rows of the weight
    of the classifier timm names in the model's pretrained config (``fc``, ``head.fc``, ``classifier``);
    ``None`` when the file has no such weight (a headless state dict, or another layout)."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    names = cfg.get("classifier") or ()
    for head in ([names] if isinstance(names, str) else list(names)):
        weight = state.get(f"{head}.weight")
        if getattr(weight, "ndim", 0) >= 2:
            return int(weight.shape[0])
    return None


def load_timm(name: str, *, weights: str | os.PathLike[str] | None = None, pretrained: bool = True,
              cache_dir: str | os.PathLike[str] | None = None, feature_node: str | None = None,
              seed: int = 0, **create_kwargs: Any) -> TransferModel:
    """``timm:<name>`` (``name`` may carry a pretrained tag: ``resnet18.a1_in1k``).

    Weights: timm's own loader from the Hugging Face cache (``cache_dir``, by
    default :func:`~pytest_transfer.models.hfhub.hf_cache_dir`), offline, a
    missing file being a ``FileNotFoundError`` that names the cache folder
    and how to fill it; or ``weights=<file>`` (a state dict of this model,
    read as :func:`~pytest_transfer.models.state.read_weights` reads it); or
    ``pretrained=False`` (random, seeded like ``torchvision:<arch>:none``).
    ``preprocess``: ``timm.data.create_transform(**resolve_data_config({},
    model=model), is_training=False)`` (input size, crop percentage,
    interpolation, mean, std) on the float [0, 1] batch. Features: the input
    of ``model.get_classifier()``, i.e. timm's pre-logits
    (``forward_head(forward_features(x), pre_logits=True)``).
    """
    timm = _import_timm()
    from .state import load_into, read_weights, unwrap_state_dict
    from .torchvision import seeded_build

    _check_name(timm, name)
    refuse_near_misses(create_kwargs, ("weights", "pretrained", "cache_dir", "feature_node", "seed"), f"timm:{name}")
    if weights is None and pretrained:
        model = _pretrained(timm, name, hf_cache_dir(cache_dir), create_kwargs)
    else:
        state = unwrap_state_dict(read_weights(weights), str(weights)) if weights is not None else None
        model = seeded_build(int(seed),
                             lambda: timm.create_model(name, pretrained=False, **create_kwargs))
        classes = _classes_in(model, state) if state is not None and "num_classes" not in create_kwargs else None
        if classes is not None and classes != getattr(model, "num_classes", classes):  # the file's own head
            model = seeded_build(int(seed), lambda: timm.create_model(name, pretrained=False, num_classes=classes,
                                                                      **create_kwargs))
        if state is not None:
            load_into(model, state, str(weights), hint=f"Check that the file holds timm:{name}'s state dict "
                                                       "(and num_classes= if its head was replaced)")
    model.eval()
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config, is_training=False)
    split = split_compose(transform, source=f"timm:{name}")
    preprocess = TensorTransform(transform, source=f"timm:{name}", geometry=split[0] if split else None,
                                 photometric=split[1] if split else None)
    return TransferModel(model, name=f"timm:{name}", preprocess=preprocess,
                         num_classes=model.num_classes or None, categories=_categories(timm, model),
                         feature_node=feature_node or _pre_logits_node(model))


def _pre_logits_node(model: Any) -> str | None:
    """``"<classifier>:input"``: what timm calls the pre-logits features (``None`` without a classifier)."""
    from torch import nn

    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module) or isinstance(head, nn.Identity):
        return None
    name = next((n for n, m in model.named_modules() if m is head), None)
    return f"{name}:input" if name else None


def _categories(timm: Any, model: Any) -> list[str] | None:
    """ImageNet class descriptions when timm knows the model's label set and its size matches."""
    try:
        subset = timm.data.infer_imagenet_subset(model)
        labels = list(timm.data.ImageNetInfo(subset).label_descriptions()) if subset else None
    except Exception:  # label files are optional metadata
        return None
    return labels if labels and len(labels) == model.num_classes else None
