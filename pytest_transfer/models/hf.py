"""``hf:<local folder or cached repo id>``: a Hugging Face transformers image classifier, offline.

The model is ``AutoModelForImageClassification.from_pretrained`` and the
preprocess the saved image processor (``AutoImageProcessor``, torchvision
backend) called on the float [0, 1] batch × 255 (its own rescale then runs
as on an 8-bit file); both are
read with ``local_files_only=True`` and huggingface_hub forced offline. Needs
the ``hf`` extra: ``pip install 'pytest-transfer[hf]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core import TensorTransform, TransferModel
from .geometry import ProcessorGeometry, ProcessorPhotometric
from .hfhub import fill_hint, hf_cache_dir, hf_offline, repo_folder

if TYPE_CHECKING:  # pragma: no cover
    import torch


class ProcessorCall:
    """A Hugging Face image processor as a function of float [0, 1] N×C×H×W tensors: all of its own steps
    (resize, crop, rescale, normalisation, ...) on the images × 255, the 8-bit range it is given a file in."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = self.processor(images=images * 255.0, return_tensors="pt")["pixel_values"]
        return out.to(images.device)

    def __repr__(self) -> str:
        return f"ProcessorCall({type(self.processor).__name__}({self.processor.to_json_string()}))"


def processor_preprocess(processor: Any, ref: str) -> TensorTransform:
    """The preprocess of ``hf:<ref>``: the processor's geometry per image, its per-pixel steps per batch
    (:mod:`~pytest_transfer.models.geometry`), and the whole processor for tensors of any size. The two
    stages are checked against the processor itself on a 37×29 test image (its own call on the PIL image,
    as on a file): a processor with a per-pixel step the split does not know is a ``ValueError``, not
    silently different numbers."""
    import numpy as np
    import torch
    from PIL import Image

    geometry = ProcessorGeometry(processor, source=f"hf:{ref}")
    photometric = ProcessorPhotometric(processor)
    ramp = np.add.outer(np.arange(29) * 7, np.arange(37) * 5)
    img = Image.fromarray(np.stack([ramp % 256, (ramp * 3) % 256, 255 - ramp % 256], -1).astype(np.uint8))
    try:
        want = processor(images=img, return_tensors="pt")["pixel_values"].float()
        staged = geometry.image(img)
    except Exception as exc:  # the library's own error, whatever its type, named with the model
        raise ValueError(f"hf:{ref}: the image processor {type(processor).__name__} fails on a 37×29 RGB test "
                         f"image: {type(exc).__name__}: {exc}") from exc
    got = photometric((staged.float() / 255 if staged.dtype == torch.uint8 else staged)[None])
    diff = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
    if not diff <= 1e-4 * (1.0 + float(want.abs().max())):
        raise ValueError(f"hf:{ref}: the image processor {type(processor).__name__} does more per pixel than "
                         f"{photometric!r} (its own output differs by {diff:.3g} on a test image), so pytest-transfer "
                         "cannot feed files as it does; please report it with the processor's config")
    return TensorTransform(ProcessorCall(processor), source=f"hf:{ref}", geometry=geometry, photometric=photometric)


def _logits_module() -> Any:
    from torch import nn

    class HFClassifier(nn.Module):
        """A transformers image classifier whose forward returns the ``.logits`` of its output."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values=pixel_values).logits

    return HFClassifier


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError("hf: models need the transformers package: pip install 'pytest-transfer[hf]'") from None
    return transformers


def _categories(config: Any) -> list[str] | None:
    labels = getattr(config, "id2label", None) or {}
    names = [str(labels.get(i, labels.get(str(i), ""))) for i in range(config.num_labels)]
    return None if all(n in ("", f"LABEL_{i}") for i, n in enumerate(names)) else names


def load_hf(ref: str, *, cache_dir: str | os.PathLike[str] | None = None, revision: str | None = None,
            feature_node: str | None = None, **model_kwargs: Any) -> TransferModel:
    """``hf:<ref>``: ``ref`` is a folder written by ``save_pretrained`` or a repo id in the Hugging Face cache.

    The cache is ``cache_dir`` or :func:`~pytest_transfer.models.hfhub.hf_cache_dir`
    (``HF_HUB_CACHE``, ``HF_HOME/hub``, ...); nothing is downloaded, and a
    missing model is a ``FileNotFoundError`` naming the folder looked in and
    how to fill it. ``num_classes`` and ``categories`` come from the
    config's labels. Logits are the output's ``.logits``; features are the
    input of the classification head (the last ``nn.Linear``, the model's
    ``classifier``): the final [CLS] token for ViT / DeiT / BEiT, the pooled
    output for ConvNeXt, ResNet, Swin. A model saved with ``num_labels=0``
    (its classifier is ``nn.Identity``) is a headless backbone: its output,
    the pooled features, is read as features and ``direct`` is refused; ``feature_node="model.<submodule>"``
    chooses another (the module is wrapped, hence the ``model.`` prefix).
    """
    transformers = _import_transformers()
    local = Path(ref).expanduser()
    cache = hf_cache_dir(cache_dir)
    where = str(local) if local.is_dir() else ref
    common = {"local_files_only": True, "cache_dir": str(cache), "revision": revision}
    try:
        with hf_offline():
            model = transformers.AutoModelForImageClassification.from_pretrained(where, **common, **model_kwargs)
            processor = transformers.AutoImageProcessor.from_pretrained(where, backend="torchvision", **common)
    except (OSError, ValueError) as exc:
        if not local.is_dir() and not isinstance(exc, OSError):
            raise
        if local.is_dir():
            raise FileNotFoundError(f"hf:{ref}: {local} does not hold a saved image classifier and image processor "
                                    f"(model.save_pretrained(path) and processor.save_pretrained(path)): "
                                    f"{str(exc).splitlines()[0]}") from None
        folder = repo_folder(ref, cache)
        python = (f"from transformers import AutoModelForImageClassification as M, AutoImageProcessor as P; "
                  f"M.from_pretrained('{ref}'); P.from_pretrained('{ref}')")
        raise FileNotFoundError(f"hf:{ref}: not a folder, and not in the Hugging Face cache {cache} (looked in "
                                f"{folder}). {fill_hint(python, cache, folder)}") from None
    model.eval()
    return TransferModel(_logits_module()(model).eval(), name=f"hf:{ref}",
                         preprocess=processor_preprocess(processor, ref),
                         num_classes=model.config.num_labels, categories=_categories(model.config),
                         feature_node=feature_node)
