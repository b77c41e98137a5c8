"""The one call convention: how every path that runs a module (the engine, the attacks, fine-tuning, the NTK,
the layer taps, the probe-head attack model) feeds it and reads its logits.

* **Input dtype**: the module is fed its own floating dtype (:func:`module_dtype`: float16, bfloat16 or
  float64 modules get float16, bfloat16 or float64 inputs); images and preprocess stay float32 before it.
* **Output**: :func:`as_logits` reads the logits of whatever a classifier returns: a tensor; a tuple or list
  (its first element, as torchvision's Inception / GoogLeNet with auxiliary outputs put the logits first); a
  dict or a transformers ``ModelOutput`` (its ``logits`` entry, or its only tensor).
* **Taps**: :func:`tap_tensor` reads a submodule's output (a tensor, the first of a tuple, the first tensor
  of a ``ModelOutput``, such as ``last_hidden_state``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


def module_dtype(module: Any) -> torch.dtype:
    """The floating dtype a module takes: its ``input_dtype`` attribute when it declares one, else the dtype of
    its first floating parameter (or buffer), else ``torch.float32``."""
    import torch

    declared = getattr(module, "input_dtype", None)
    if isinstance(declared, torch.dtype):
        return declared
    for tensors in (module.parameters(), module.buffers()):
        for t in tensors:
            if t.is_floating_point():
                return t.dtype
    return torch.float32


def as_logits(out: Any, *, where: str = "model") -> torch.Tensor:
    """The logits tensor of a classifier's output (a tensor, a tuple/list, a dict or a ``ModelOutput``).

    Raises ``ValueError`` naming what was returned when no tensor of logits can be told apart (an empty
    tuple, a dict with several tensors none of which is ``logits``).
    """
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, Mapping):
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"]
        tensors = [k for k, v in out.items() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return out[tensors[0]]
        raise ValueError(f"{where} returns a {type(out).__name__} with keys {list(out)[:8]} and no 'logits' entry; "
                         "return the logits tensor, a tuple with the logits first, or a dict with a 'logits' key")
    raise ValueError(f"{where} returns {type(out).__name__}; a classifier must return N×classes logits (a tensor, "
                     "a tuple with the logits first, or a dict / ModelOutput with a 'logits' entry)")


def tap_tensor(out: Any) -> Any:
    """The tensor a feature tap reads from a submodule's output: the output itself, the first element of a
    tuple/list, or the first tensor of a dict / ``ModelOutput`` (``last_hidden_state``, ``logits``, ...)."""
    if isinstance(out, (tuple, list)) and out:
        return out[0]
    if isinstance(out, Mapping):
        return next((v for v in out.values() if hasattr(v, "ndim")), out)
    return out


def to_module_dtype(inp: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``inp`` in the module's floating ``dtype`` (unchanged when it already is, or is not floating)."""
    return inp.to(dtype) if inp.is_floating_point() and inp.dtype != dtype else inp


def call_module(module: Any, inp: torch.Tensor, *, dtype: torch.dtype | None = None,
                where: str = "model") -> torch.Tensor:
    """``module(inp)`` with ``inp`` in the module's dtype (``dtype``, default :func:`module_dtype`), and the
    logits read from its output by :func:`as_logits`."""
    inp = to_module_dtype(inp, dtype if dtype is not None else module_dtype(module))
    return as_logits(module(inp), where=where)


__all__ = ["as_logits", "call_module", "module_dtype", "tap_tensor", "to_module_dtype"]
