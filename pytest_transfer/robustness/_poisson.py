"""Poisson draws for images on the 8-bit grid, by Walker's alias method (private).

Shot noise draws ``Poisson(x · scale)`` for every value ``x`` of a batch. On
the CPU one Poisson variate costs about 50 ns in both torch and numpy (numpy
uses Hörmann's PTRS rejection for means ≥ 10, a multiplication loop below),
and neither vectorises it. Images decoded from 8-bit files have only 256
distinct values ``k / 255``, so only 256 distinct means per severity: for each
of them this module builds the alias table of the Poisson distribution once
(Walker, "An efficient method for generating discrete random variables with
general distributions", ACM TOMS 3(3), 1977; Vose's construction, IEEE TSE
17(9), 1991), and a draw becomes one 64-bit random word, two table lookups
and a comparison, vectorised over the whole chunk.

Exactness: each mean's table covers the smallest window ``[lo, lo + W)`` of
counts holding all but 2⁻⁶⁴ of the probability on each side (``W`` a power of
two shared by the 256 means of one scale), renormalised; the top ``log2 W``
bits of the random word pick a column, the remaining bits are compared with
the column's acceptance threshold as integers. Values off the grid by more
than float32 rounding (resized or blended images) are drawn by numpy's own
Poisson sampler instead; both give the same distribution.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

#: uint8 images converted to float: ``k / 255`` (torchvision's ``to_tensor``, PIL → numpy / 255)
GRID = 255

#: probability left out on each side of a mean's window
TAIL = 2.0**-64

#: the largest scale drawn from tables (the published shot-noise tables go up to 500); above it the
#: tables would span too many counts, and numpy's sampler draws every chunk
MAX_TABLE_SCALE = 2000.0

#: a value counts as on the grid when ``|x · 255 − k| <= GRID_TOL · (k + 1)``: a few float32 roundings
#: of ``k / 255`` (true division or a multiplication by ``1 / 255`` differ by one unit in the last place)
GRID_TOL = 1e-6


def _poisson_log_pmf(means: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``log P(X = count)`` for ``X ~ Poisson(mean)``, rows = means, columns = counts; ``-inf`` for impossible."""
    log_fact = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, counts[-1] + 1)))))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = counts[None, :] * np.log(means)[:, None] - means[:, None] - log_fact[counts][None, :]
    out[means == 0] = -np.inf
    out[means == 0, 0] = 0.0  # Poisson(0) is the point mass at 0
    return out


def _vose(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alias tables of each row of ``q`` (rows sum to the row length W): (acceptance probability, alias column).

    Vose's construction run on all rows at once: each step pairs one column
    below 1 with one at or above 1 in every row that still has both.
    """
    rows, width = q.shape
    q = q.copy()
    prob = np.ones_like(q)
    alias = np.broadcast_to(np.arange(width), q.shape).copy()
    # per row: the columns below 1 and those at or above 1, as stacks with their heights
    is_small = q < 1.0
    order = np.argsort(~is_small, axis=1, kind="stable")
    small = order.copy()
    n_small = is_small.sum(axis=1)
    large = np.zeros_like(order)
    n_large = width - n_small
    for r in range(rows):  # the large columns, in their own stack
        large[r, : n_large[r]] = order[r, n_small[r]:]
    for _ in range(width):
        live = np.flatnonzero((n_small > 0) & (n_large > 0))
        if not live.size:
            break
        s = small[live, n_small[live] - 1]
        g = large[live, n_large[live] - 1]
        prob[live, s] = q[live, s]
        alias[live, s] = g
        q[live, g] -= 1.0 - q[live, s]
        n_small[live] -= 1
        moved = q[live, g] < 1.0  # the large column fell below 1: it joins the small stack
        rm, gm = live[moved], g[moved]
        n_large[rm] -= 1
        small[rm, n_small[rm]] = gm
        n_small[rm] += 1
    return prob, alias


@lru_cache(maxsize=64)
def alias_tables(scale: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Alias tables of ``Poisson(k / 255 · scale)`` for ``k = 0..255``.

    Returns ``(threshold, counts, bits)``: for each of the ``256 · 2**bits``
    cells (row ``k``, column ``j``, flat), the acceptance threshold on the low
    ``64 − bits`` bits of a random word (uint64), and (int32, two per cell)
    the count the cell stands for followed by the count of its alias.
    """
    means = np.arange(GRID + 1) / GRID * float(scale)
    top = int(scale + 60.0 * math.sqrt(scale) + 100.0)
    counts = np.arange(top + 1)
    log_pmf = _poisson_log_pmf(means, counts)
    pmf = np.exp(log_pmf - log_pmf.max(axis=1, keepdims=True))
    pmf /= pmf.sum(axis=1, keepdims=True)
    lo = (np.cumsum(pmf, axis=1) <= TAIL).sum(axis=1)
    hi = top - (np.cumsum(pmf[:, ::-1], axis=1) <= TAIL).sum(axis=1)
    bits = max(1, math.ceil(math.log2(int((hi - lo).max()) + 1)))
    width = 1 << bits
    lo = np.minimum(lo, top + 1 - width)
    cols = lo[:, None] + np.arange(width)[None, :]
    window = np.take_along_axis(pmf, cols, axis=1)
    prob, alias = _vose(window * (width / window.sum(axis=1, keepdims=True)))
    span = float(1 << (64 - bits))
    threshold = np.where(prob >= 1.0, span, np.floor(prob * span))
    threshold = np.minimum(threshold, span).astype(np.uint64)  # span itself: always accept
    counts = np.stack([cols, np.take_along_axis(cols, alias, axis=1)], axis=-1).astype(np.int32)
    return threshold.reshape(-1), counts.reshape(-1), bits


def grid_levels(x: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The nearest 8-bit levels ``k`` (intp) of values ``x`` in [0, 1], and for each ``chunk`` of values
    whether all of them lie on the grid ``k / 255``."""
    t = x * x.dtype.type(GRID)
    k = np.rint(t)
    t -= k
    np.abs(t, out=t)
    limit = k + 1
    limit *= GRID_TOL
    near = t <= limit
    per_chunk = np.logical_and.reduceat(near, np.arange(0, x.size, chunk)) if x.size else near
    return k.astype(np.intp), per_chunk


def draw_on_grid(levels: np.ndarray, scale: float, words: np.ndarray) -> np.ndarray:
    """``Poisson(levels / 255 · scale)`` counts (int32), one random 64-bit word (uint64, consumed) per value."""
    threshold, counts, bits = alias_tables(float(scale))
    cell = levels << bits
    cell += (words >> np.uint64(64 - bits)).astype(np.intp)  # the top bits pick the column
    words &= np.uint64((1 << (64 - bits)) - 1)
    rejected = words >= threshold[cell]  # the low bits decide between the column's count and its alias
    cell <<= 1
    cell += rejected
    return counts[cell]


def fill_poisson(out: np.ndarray, x: np.ndarray, scale: float, streams: list[np.random.BitGenerator],
                 chunk: int) -> None:
    """``out[:] = Poisson(x · scale)`` for consecutive chunks of ``chunk`` values of ``x`` (the last may be
    shorter), chunk ``j`` drawn from ``streams[j]``.

    A chunk on the 8-bit grid takes one word per value from its
    stream for the alias tables (``scale`` up to :data:`MAX_TABLE_SCALE`); any
    other chunk is drawn by numpy's Poisson sampler from its stream. Work is vectorised over all chunks at once, so a
    thread handed many chunks spends little time holding the GIL.
    """
    levels, on = grid_levels(x, chunk)
    if not 0.0 < scale <= MAX_TABLE_SCALE:
        on[:] = False
    if on.any():
        words = np.zeros(x.size, dtype=np.uint64)
        for j in np.flatnonzero(on):
            part = slice(j * chunk, (j + 1) * chunk)
            words[part] = streams[j].random_raw(len(words[part]))
        out[...] = draw_on_grid(levels, scale, words)
    for j in np.flatnonzero(~on):
        part = slice(j * chunk, (j + 1) * chunk)
        out[part] = np.random.Generator(streams[j]).poisson(x[part] * float(scale))
