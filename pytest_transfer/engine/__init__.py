"""Batched inference: one pass per model × dataset × split × perturbation, memoised and cached on disk.

A pass yields labels, logits and penultimate features (and any other
requested layer taps) together. Every gate on the same pair reuses it; a
second pytest run reads it from the disk cache (:mod:`pytest_transfer.cache`).

What the pass does, per device:

* everywhere: the module called by :func:`pytest_transfer.models.call.call_module`
  (fed its own dtype; logits read from a tensor, tuple, dict or ``ModelOutput``;
  a headless backbone's output pooled as its features), ``torch.inference_mode``,
  forward hooks for the taps (pooled on the device), channels-last inputs and weights where the layout rule says
  so (:func:`prefers_channels_last`), the outputs copied to the host per batch
  into arrays allocated once, one NaN/Inf check at the end;
* CPU (glibc): malloc keeps freed activation buffers for the next batch
  instead of unmapping them (:mod:`pytest_transfer.allocator`,
  ``--transfer-malloc-tuning=off`` to turn off);
* CUDA: the raw images are copied from pinned host memory with
  ``non_blocking=True`` (uint8 data travels as uint8 and is scaled on the
  GPU), outputs come back asynchronously and are synchronised once, and the
  module runs under ``torch.autocast(float16)`` (``--transfer-autocast``:
  ``auto`` = on for CUDA, falling back to float32 for a model whose outputs
  overflow; ``on``; ``off``);
* any device: a batch that raises ``torch.OutOfMemoryError`` is halved and
  retried (down to one image); the smaller size is remembered for the module
  and device.

The modules, in the order a pass uses them:

* ``chunks``: the chunk source (:func:`load_chunks`: dataset + indices → float [0, 1] chunks; one
  perturbation by :func:`iter_chunks`, several by :func:`iter_variants`), :class:`Perturbation` (the
  interface; the factories are in :mod:`pytest_transfer.robustness.perturbations`), and :class:`Regroup`,
  which cuts chunks into batches;
* ``passes``: :func:`run_pass` and its policies: batching (:class:`BatchPolicy`), memory layout
  (:func:`prepare_module`), precision (:func:`autocast_dtype`), taps (forward hooks,
  :func:`pool_features`), host copies, progress (:class:`pytest_transfer.progress.PassProgress`);
* ``keys``: what identifies a pass (:func:`memo_base`, :func:`cache_key`, :func:`code_fingerprint`,
  :func:`geometry_key`);
* ``memo``: :func:`evaluate` and :func:`evaluate_many`, the one path through the session memo and the disk
  cache (:meth:`pytest_transfer.cache.DiskCache.get_or_compute_many`, which alone decides what is a
  warning), and :class:`Evaluation`.

This package re-exports their public names; code that replaces :func:`run_pass` for a session (a counter, a
timer) replaces ``engine.passes.run_pass``, which ``memo`` calls.
"""

from __future__ import annotations

from ..models import PENULTIMATE
from ..settings import AUTOCAST_MODES
from .chunks import (
    CHUNK,
    Perturbation,
    Regroup,
    VariantMaker,
    apply_each,
    iter_batches,
    iter_chunks,
    iter_variants,
    load_chunks,
    model_batch,
    split_variants,
)
from .keys import ENGINE_VERSION, cache_key, code_fingerprint, geometry_key, memo_base
from .memo import Evaluation, evaluate, evaluate_many
from .passes import (
    BatchPolicy,
    autocast_dtype,
    batch_limit,
    check_logits,
    is_out_of_memory,
    pass_autocast,
    pool_features,
    precision_label,
    prefers_channels_last,
    prepare_module,
    run_pass,
)

__all__ = [
    "AUTOCAST_MODES", "CHUNK", "ENGINE_VERSION", "PENULTIMATE", "BatchPolicy", "Evaluation", "Perturbation",
    "Regroup", "VariantMaker", "apply_each", "autocast_dtype", "batch_limit", "cache_key", "check_logits",
    "code_fingerprint", "evaluate", "evaluate_many", "geometry_key", "is_out_of_memory", "iter_batches",
    "iter_chunks", "iter_variants", "load_chunks", "memo_base", "model_batch", "pass_autocast", "pool_features",
    "precision_label",
    "prefers_channels_last", "prepare_module", "run_pass", "split_variants",
]
