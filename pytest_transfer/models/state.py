"""Weights files as training scripts write them: reading, unwrapping containers, shared key prefixes.

Written once, used by every source that loads a state dict (checkpoints,
``timm:`` with ``weights=<file>``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

#: keys under which training scripts nest the model's state dict (PyTorch Lightning: ``state_dict``)
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".pth.tar", ".pt.tar", ".tar")


def weights_suffix(path: str | os.PathLike[str]) -> str | None:
    """The weights-file type of ``path`` among :data:`SUFFIXES` (the longest that ends the name, so
    ``model_best.pth.tar``, as the PyTorch ImageNet example and timm's train.py write it, is ``.pth.tar``),
    or ``None``."""
    name = Path(path).name.lower()
    return max((s for s in SUFFIXES if name.endswith(s) and len(name) > len(s)), key=len, default=None)


def read_weights(path: str | os.PathLike[str]) -> Any:
    """The object stored in a weights file.

    ``.safetensors`` files are read with ``safetensors.torch.load_file``;
    anything else (``.pt``, ``.pth``, ``.ckpt``, ``.bin``, ``.pth.tar``) with
    ``torch.load(map_location="cpu", weights_only=True)``: only tensors and
    plain containers, never arbitrary pickled objects. Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` for one that
    cannot be read (a pickled module, a truncated file).
    """
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {p} does not exist; check the path (relative paths start at the "
                                f"current directory {Path.cwd()})")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"{p}: reading .safetensors needs the safetensors package: pip install safetensors "
                              "(included in pytest-transfer[timm] and [hf])") from None
        try:
            return load_file(str(p), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"{p}: cannot be read as a safetensors file ({exc}); is the file complete?") from None
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{p}: refused by torch.load(weights_only=True) ({str(exc).splitlines()[0]}); "
            "save a state dict (torch.save(model.state_dict(), path)) rather than a pickled model"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{p}: cannot be read as a torch checkpoint ({exc}); is the file complete?") from None


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, where: str) -> dict[str, Any]:
    """The state dict inside what a training script saved.

    A plain state dict is returned as is; a dict holding one under
    :data:`CONTAINER_KEYS` (``state_dict``, ``model_state_dict``, ``model``,
    ...; nested containers too) is opened, and non-tensor entries beside the
    tensors (Lightning's metadata) are dropped. Raises ``ValueError`` naming
    the keys seen when no state dict is found.
    """
    import torch

    seen = obj
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
            break
        obj = inner
    if not _is_state_dict(obj):
        what = f"a dict with keys {list(seen)[:8]}" if isinstance(seen, Mapping) else type(seen).__name__
        raise ValueError(f"{where}: expected a state dict (name -> tensor), or one under "
                         f"{', '.join(map(repr, CONTAINER_KEYS))}; found {what}")
    return dict(obj)


def common_prefix(keys: list[str]) -> str:
    """The longest run of dotted components every key starts with (``"model.backbone."``), or ``""``."""
    if not keys:
        return ""
    parts = [k.split(".")[:-1] for k in keys]
    shared = []
    for column in zip(*parts, strict=False):
        if len(set(column)) != 1:
            break
        shared.append(column[0])
    return "".join(f"{c}." for c in shared)


def strip_shared_prefixes(state: dict[str, Any], expected: set[str]) -> tuple[dict[str, Any], str]:
    """Remove the prefixes a wrapper added to every key: ``module.`` (DataParallel / DDP), ``_orig_mod.``
    (``torch.compile``), ``model.`` (a Lightning module), stacked in any order.

    A shared first component is stripped while the keys do not match
    ``expected`` and the module's own keys do not all start with it.
    Returns the new state dict and what was stripped.
    """
    stripped = ""
    while state and not (set(state) & expected):
        first = {k.split(".", 1)[0] for k in state}
        if len(first) != 1 or any("." not in k for k in state):
            break
        prefix = f"{first.pop()}."
        if expected and all(k.startswith(prefix) for k in expected):
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
        stripped += prefix
    return state, stripped


def load_into(module: nn.Module, state: dict[str, Any], where: str, *, hint: str = "") -> None:
    """Load ``state`` into ``module`` strictly, after :func:`strip_shared_prefixes`.

    Raises ``ValueError`` showing a few missing and unexpected keys, the
    prefix the file's keys share and what was stripped, or the first shape
    mismatch; ``hint`` says what to check (``arch=``, ``num_classes=``).
    """
    expected = set(module.state_dict())
    state, stripped = strip_shared_prefixes(state, expected)
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln][:3]
        raise ValueError(f"{where}: shapes do not match {type(module).__name__}: {'; '.join(lines) or exc}. "
                         f"{hint}".rstrip()) from None
    if result.missing_keys or result.unexpected_keys:
        seen = common_prefix(list(state))
        raise ValueError(
            f"{where}: keys do not match {type(module).__name__}: {len(result.missing_keys)} missing "
            f"(e.g. {list(result.missing_keys)[:4]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {list(result.unexpected_keys)[:4]}); the file's keys share the prefix {seen!r}"
            + (f" after stripping {stripped!r}" if stripped else "") + f". {hint}".rstrip()
        )
