"""Device specs: ``auto | cpu | cuda[:N] | mps`` → ``torch.device``; xdist workers spread over GPUs and cores.

Under pytest-xdist every worker is a process of its own. With CUDA devices,
worker *i* runs on ``cuda:{i mod count}`` (a ``pytest_transfer_device`` hook
may choose otherwise); on the CPU each worker gets an equal share of the
cores for torch's intra-op threads, so ``-n`` does not oversubscribe them.
"""

from __future__ import annotations

import os
import re
from typing import Any

VALID = "auto, cpu, cuda, cuda:N or mps"
_SPEC = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def validate_device_spec(spec: str) -> str:
    """Return the normalised spec or raise ``ValueError`` listing the valid values.

    >>> validate_device_spec(" CUDA:1 ")
    'cuda:1'
    """
    text = str(spec).strip().lower()
    if not _SPEC.match(text):
        raise ValueError(f"unknown device {spec!r}; valid: {VALID}")
    return text


def xdist_worker_index() -> int | None:
    """The index of this pytest-xdist worker (``gw3`` → 3), or ``None`` outside xdist."""
    wid = os.environ.get("PYTEST_XDIST_WORKER", "")
    m = re.match(r"^gw(\d+)$", wid)
    return int(m.group(1)) if m else None


def xdist_worker_count() -> int | None:
    """How many pytest-xdist workers run this session (``PYTEST_XDIST_WORKER_COUNT``), or ``None``."""
    text = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    return int(text) if text.isdigit() else None


def resolve_device(spec: str = "auto", *, worker: int | None = None) -> Any:
    """Turn a spec into a ``torch.device``.

    ``auto`` picks CUDA when available (worker *i* of pytest-xdist gets
    ``cuda:{i mod count}``; so does a bare ``cuda``), then MPS, then the CPU.
    Asking for a device that is not there raises ``ValueError`` that says what
    is available.

    >>> resolve_device("cpu")  # doctest: +SKIP
    device(type='cpu')
    """
    import torch

    text = validate_device_spec(spec)
    if worker is None:
        worker = xdist_worker_index()
    if text == "auto":
        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            return torch.device("cuda", (worker or 0) % count)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} asked for, but CUDA is not available here; use --transfer-device=cpu")
        count = torch.cuda.device_count()
        if ":" in text:
            idx = int(text.split(":")[1])
            if idx >= count:
                raise ValueError(f"device {spec!r} asked for, but only {count} CUDA device(s) are visible "
                                 f"(cuda:0 to cuda:{count - 1}; see CUDA_VISIBLE_DEVICES)")
            return torch.device("cuda", idx)
        return torch.device("cuda", (worker or 0) % count)
    if text == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ValueError("device 'mps' asked for, but MPS is not available here; use --transfer-device=cpu")
        return torch.device("mps")
    return torch.device("cpu")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def share_cpu_threads(worker_count: int | None, *, cpus: int | None = None) -> int | None:
    """Divide torch's intra-op threads between ``worker_count`` xdist workers; returns the threads set.

    Each worker gets ``cpus // worker_count`` threads (at least one), never
    more than it already had (an explicit ``OMP_NUM_THREADS`` or
    ``torch.set_num_threads`` is kept). Nothing changes outside xdist or with
    one worker (``None`` is returned).

    >>> share_cpu_threads(None) is None
    True
    """
    if not worker_count or worker_count <= 1:
        return None
    import torch

    cpus = available_cpus() if cpus is None else int(cpus)
    threads = max(1, min(torch.get_num_threads(), cpus // worker_count))
    torch.set_num_threads(threads)
    return threads
