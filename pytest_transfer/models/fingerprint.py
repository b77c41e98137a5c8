"""The model fingerprint: a hash of everything that decides a module's outputs, with a cheap memo.

What is hashed (a miss): the class of every submodule, every parameter and
buffer (persistent or not) by name, dtype, shape and values (on the CPU, in
contiguous layout, so the device and memory format do not change it), the
plain attributes of every submodule (numbers, strings, bytes, flags, dtypes,
enums, tuples / lists / dicts / sets of those, and tensors kept as plain
attributes), what the preprocess does to a fixed probe batch, and the
feature node.

What the memo compares (a hit, well under a millisecond for a ResNet-18, see
``benchmarks/bench_fingerprint.py``): per tensor its identity, storage
address and ``_version`` counter (every in-place operation bumps it: an
optimizer step, ``load_state_dict``, ``w.add_(1)`` under ``no_grad``), a
snapshot of the plain attributes, the preprocess (identity and ``repr``) and
the feature node, and a strided sample of every CPU tensor's values (writes
through ``.data`` bypass the version counter; the sample is compared bit for
bit). What it cannot see: arbitrary Python in ``forward`` or in hooks, and
objects kept as attributes that are none of the above (seen by their type
only).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

_PLAIN = (bool, int, float, complex, str, bytes, type(None))
_SAMPLE_BUDGET = 64  # values sampled per tensor by the memo (about this many, spread over every dimension)


class _TensorAttr:
    """Stands for a tensor kept as a plain attribute (hashed with the other tensors)."""

    __slots__ = ("ident", "name")

    def __init__(self, name: str, ident: int) -> None:
        self.name = name
        self.ident = ident  # which tensor object: compared by the memo, not hashed

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _TensorAttr) and (other.name, other.ident) == (self.name, self.ident)

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"<tensor {self.name}>"


def _base_keys() -> frozenset[str]:
    from torch import nn

    return frozenset(vars(nn.Module()))


_BASE: frozenset[str] | None = None


def _plain(value: Any, name: str, tensors: list[tuple[str, Any]]) -> Any:
    """A comparable, repr-able copy of an attribute value (tensors go to ``tensors``)."""
    import torch

    if isinstance(value, _PLAIN) or isinstance(value, (enum.Enum, torch.dtype, torch.device)):
        return value
    if isinstance(value, torch.Tensor):
        tensors.append((name, value))
        return _TensorAttr(name, id(value))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_plain(v, f"{name}.{i}", tensors) for i, v in enumerate(value)))
    if isinstance(value, dict):
        return ("dict", tuple((repr(k), _plain(v, f"{name}.{k}", tensors)) for k, v in value.items()))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted(repr(v) for v in value)))
    if isinstance(value, torch.nn.Module):
        return ("module", type(value).__qualname__)  # a module kept outside _modules: seen by its class
    if callable(value) and hasattr(value, "__qualname__"):
        return ("callable", getattr(value, "__module__", None), value.__qualname__)
    return ("object", type(value).__module__, type(value).__qualname__)


def walk(module: nn.Module) -> tuple[list[tuple[str, Any]], tuple[Any, ...]]:
    """``(tensors, structure)`` of a module tree.

    ``tensors``: ``(qualified name, tensor)`` for every parameter, buffer
    (persistent or not) and tensor attribute. ``structure``: per submodule
    its name, class and plain attributes (comparable, and printable for the
    hash).
    """
    global _BASE
    if _BASE is None:
        _BASE = _base_keys()
    tensors: list[tuple[str, Any]] = []
    structure = []
    for prefix, m in module.named_modules(remove_duplicate=False):
        d = vars(m)
        for kind in ("_parameters", "_buffers"):
            for k, t in d[kind].items():
                if t is not None:
                    tensors.append((f"{prefix}.{k}" if prefix else k, t))
        attrs = tuple((k, _plain(v, f"{prefix}.{k}", tensors)) for k, v in d.items() if k not in _BASE)
        structure.append((prefix, type(m), attrs))
    return tensors, tuple(structure)


def _int_view(t: torch.Tensor) -> Any:
    """A numpy view of a CPU tensor's bits (same storage; integers, so NaN compares equal), or ``None``."""
    import torch

    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    if t.device.type != "cpu" or t.is_quantized or t.is_sparse or t.element_size() not in ints or not t.numel():
        return None
    try:
        return t.detach().view(ints[t.element_size()]).numpy()
    except (RuntimeError, TypeError):
        return None


def _sample_views(tensors: list[tuple[str, Any]]) -> dict[int, list[Any]]:
    """Strided numpy views (about ``_SAMPLE_BUDGET`` values each) of every CPU tensor, grouped by item size."""
    groups: dict[int, list[Any]] = {}
    for _, t in tensors:
        a = _int_view(t)
        if a is None:
            continue
        per_dim = max(2, round(_SAMPLE_BUDGET ** (1 / max(a.ndim, 1))))
        index = tuple(slice(None, None, max(1, -(-n // per_dim))) for n in a.shape)
        groups.setdefault(a.itemsize, []).append(a[index])
    return groups


def _sample(groups: dict[int, list[Any]]) -> dict[int, Any]:
    import numpy as np

    return {size: np.concatenate(views, axis=None) for size, views in groups.items()}


def _hash_tensor(h: Any, name: str, t: torch.Tensor) -> None:
    import torch

    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
    c = t.detach().to("cpu").contiguous()
    if c.is_quantized:
        c = c.dequantize()
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    if c.element_size() in ints:
        c = c.view(ints[c.element_size()])
    h.update(c.numpy().tobytes())


def preprocess_fingerprint(preprocess: Callable[..., Any], channels: int) -> str:
    """Hash what ``preprocess`` does to a fixed probe batch (catches any change of behaviour).

    The probe runs on one intra-op thread: resizes and other reductions split over threads can
    round differently, and the same preprocess must give the same key in a serial run, under
    pytest-xdist (fewer threads per worker) and on a CI runner with another core count.
    """
    import torch

    g = torch.Generator().manual_seed(1234)
    probe = torch.rand(2, channels, 20, 28, generator=g)  # not square: what a resize does to the aspect counts
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.inference_mode():
            out = preprocess(probe)
        data = out.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        return hashlib.blake2b(data + repr(tuple(out.shape)).encode(), digest_size=16).hexdigest()
    except Exception:  # a preprocess that needs other sizes: fall back to its description
        return hashlib.blake2b(repr(preprocess).encode(), digest_size=16).hexdigest()
    finally:
        torch.set_num_threads(threads)


_SCALARS = frozenset({bool, int, float, complex, str, bytes, type(None)})


def _immutable(value: Any) -> bool:
    """Whether ``value`` cannot change without being replaced (so identity comparison suffices)."""
    import torch

    if type(value) in _SCALARS or isinstance(value, (enum.Enum, torch.dtype, torch.device)):
        return True
    return type(value) is tuple and all(_immutable(v) for v in value)


class _ModuleRecord:
    """What the memo compares for one submodule: its attributes (by identity when immutable, by value
    otherwise) and the tensors in its parameter and buffer slots."""

    __slots__ = ("buffers", "get", "mutable", "n", "params", "values")

    def __init__(self, m: Any) -> None:
        from operator import itemgetter

        d = vars(m)
        assert _BASE is not None
        keys = [k for k in d if k not in _BASE]
        self.n = len(d)
        self.get = itemgetter(*keys) if keys else (lambda _d: ())
        self.values = self.get(d)
        self.mutable = tuple((k, _plain(d[k], k, [])) for k in keys if not _immutable(d[k]))
        self.params = tuple(map(id, d["_parameters"].values()))
        self.buffers = tuple(map(id, d["_buffers"].values()))

    def unchanged(self, m: Any) -> bool:
        d = vars(m)
        if len(d) != self.n:
            return False
        try:
            if self.get(d) != self.values:
                return False
        except (RuntimeError, ValueError, TypeError):  # a tensor attribute replaced: == is elementwise
            return False
        if tuple(map(id, d["_parameters"].values())) != self.params \
                or tuple(map(id, d["_buffers"].values())) != self.buffers:
            return False
        return all(_plain(d[k], k, []) == p for k, p in self.mutable)


class _Snapshot:
    """Everything a memo hit compares (see the module docstring)."""

    def __init__(self, module: Any, tensors: list[tuple[str, Any]], preprocess: Any, feature_node: str) -> None:
        self.modules = list(module.modules())
        self.records = [_ModuleRecord(m) for m in self.modules]
        self.tensors = [t for _, t in tensors]
        self.state = [(t.data_ptr(), t._version) for t in self.tensors]
        self.views = _sample_views(tensors)
        self.sample = {size: a.copy() for size, a in _sample(self.views).items()}
        self.preprocess = (id(preprocess), repr(preprocess), feature_node)

    def unchanged(self, module: Any, preprocess: Any, feature_node: str) -> bool:
        import numpy as np

        modules = list(module.modules())
        if modules != self.modules or (id(preprocess), repr(preprocess), feature_node) != self.preprocess:
            return False
        if not all(r.unchanged(m) for r, m in zip(self.records, modules, strict=True)):
            return False
        if [(t.data_ptr(), t._version) for t in self.tensors] != self.state:
            return False
        now = _sample(self.views)
        return all(np.array_equal(now[size], self.sample[size]) for size in self.sample)


class ModelFingerprint:
    """The memoised fingerprint of one ``TransferModel`` (see the module docstring for what it sees).

    Call it with ``(module, preprocess, feature_node, channels)``; it returns
    a 32-character hex digest (BLAKE2b, 16 bytes).
    """

    def __init__(self) -> None:
        self.snapshot: _Snapshot | None = None
        self.digest = ""

    def is_current(self, module: nn.Module, preprocess: Any, feature_node: str) -> bool:
        """Whether the memo still describes the module (the check a hit costs)."""
        return self.snapshot is not None and self.snapshot.unchanged(module, preprocess, feature_node)

    def __call__(self, module: nn.Module, preprocess: Any, feature_node: str, channels: int) -> str:
        if self.is_current(module, preprocess, feature_node):
            return self.digest
        tensors, structure = walk(module)
        h = hashlib.blake2b(digest_size=16)
        h.update(repr(structure).encode())  # classes and plain attributes of every submodule, in order
        for name, t in tensors:
            _hash_tensor(h, name, t)
        h.update(feature_node.encode())
        h.update(preprocess_fingerprint(preprocess, channels).encode())
        self.snapshot = _Snapshot(module, tensors, preprocess, feature_node)
        self.digest = h.hexdigest()
        return self.digest
