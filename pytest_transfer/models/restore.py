"""Leave a user's module as it was found: each submodule's train/eval mode, each parameter's ``requires_grad``,
the device, dtype and memory format of every tensor."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

T = TypeVar("T")


@contextmanager
def restored(model: Any) -> Iterator[nn.Module]:
    """Run a block that may move, convert or switch ``model`` (a ``TransferModel`` or an ``nn.Module``),
    then put it back as it was.

    On exit every submodule gets back its own ``training`` flag (a frozen
    BatchNorm in eval mode inside a model in train mode stays so), every
    parameter its own ``requires_grad``, and every parameter and buffer gets
    back the very tensor it held on entry (so its device, dtype, memory
    format, storage and version counter are as before, and the model's
    fingerprint memo stays valid): the engine may run a pass
    on the session's device in channels-last and eval mode without the
    user's module changing under them. Parameters keep their identity, so an
    optimizer holding them is not affected. Values written *into* the entry
    tensors in place during the block are kept; tensors the block put in
    their place are dropped.

    >>> import torch
    >>> net = torch.nn.Conv2d(3, 4, 1).train()
    >>> with restored(net):
    ...     _ = net.eval().to(memory_format=torch.channels_last)
    >>> net.training, net.weight.is_contiguous()
    (True, True)
    """
    module = getattr(model, "module", model)
    modes = [(m, m.training) for m in module.modules()]
    grads = [(p, p.requires_grad) for p in module.parameters()]
    held = []
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            held.append((m, name, p, p.data))
        for name, b in m.named_buffers(recurse=False):
            held.append((m, name, None, b))
    try:
        yield module
    finally:
        for m, flag in modes:
            m.training = flag
        for p, flag in grads:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        for m, name, param, tensor in held:
            if param is None:
                if getattr(m, name, None) is not tensor:
                    setattr(m, name, tensor)
                continue
            if getattr(m, name, None) is not param:
                setattr(m, name, param)
            if param.data_ptr() != tensor.data_ptr() or param.device != tensor.device or param.dtype != tensor.dtype \
                    or param.stride() != tensor.stride():
                param.data = tensor


def leaves_models_as_found(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate a gate so that every model among its arguments, positional or keyword (a ``TransferModel``
    or an ``nn.Module``), is :func:`restored` when it returns or raises; spec strings pass through."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with ExitStack() as stack:
            for arg in (*args, *kwargs.values()):
                if _is_model(arg):
                    stack.enter_context(restored(arg))
            return fn(*args, **kwargs)

    return wrapper


def _is_model(obj: Any) -> bool:
    module = getattr(obj, "module", obj)
    return callable(getattr(module, "modules", None)) and hasattr(module, "training")
