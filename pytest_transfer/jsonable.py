"""One conversion to strict JSON values, used by the gates and by every report."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def plain(value: Any) -> Any:
    """``value`` with numpy scalars / arrays turned into Python numbers / lists and NaN / ±Inf into ``None``
    (recursively through mappings, lists and tuples; mapping keys become strings).

    Measurement details travel as JSON (pytest-xdist, JUnit properties,
    ``--transfer-report``), so gates and reports pass them through this.

    >>> import numpy as np
    >>> plain({"a": np.float32(0.5), 1: [float("nan"), np.arange(2)]})
    {'a': 0.5, '1': [None, [0, 1]]}
    """
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = ["plain"]
