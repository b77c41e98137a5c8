"""Batched tensor primitives shared by the corruptions (private).

Everything here works on N×C×H×W float tensors on the tensors' own device.
Kernels and resampling matrices are cached per (size, parameters, device,
dtype) with :func:`functools.lru_cache`, so a sweep over many batches of the
same size builds each of them once.
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._poisson import fill_poisson
from .corruptions_tables import IMAGENET_C, CorruptionTable


def check_unit_range(images: torch.Tensor, *, hint: str, tol: float = 1e-4) -> None:
    """Refuse NaN/Inf and values outside [0, 1] (within ``tol``); ``hint`` says what to pass instead."""
    if not images.numel():
        return
    lo, hi = float(images.min()), float(images.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("images: contains NaN or Inf values; clean the input batch first")
    if lo < -tol or hi > 1 + tol:
        raise ValueError(f"images: values must lie in [0, 1], got min {lo:.4g} and max {hi:.4g}; {hint}")

#: ITU-R 601 luma weights, as OpenCV's ``COLOR_RGB2GRAY`` uses them
LUMA = (0.299, 0.587, 0.114)


#: elements per independently seeded chunk of :meth:`Rng.poisson` on the CPU
POISSON_CHUNK = 1 << 16

_pools: dict[int, tuple[int, ThreadPoolExecutor]] = {}  # process id -> (size, pool): a forked child makes its own


def worker_pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool of at least ``workers`` threads for this process, kept for the next call.

    For numpy and Pillow work that releases the GIL, never torch ops: a torch
    op in a helper thread starts an OpenMP team of its own, whose threads then
    spin on the cores torch's own team needs (after a shot-noise draw with
    ``torch.poisson`` in helper threads, every later corruption of a sweep ran
    up to 3× slower). Created on first use and again in a forked child, whose
    copy of the parent's pool has no threads.
    """
    size, pool = _pools.get(os.getpid(), (0, None))
    if pool is None or size < workers:
        pool = ThreadPoolExecutor(workers, thread_name_prefix="pytest-transfer")
        _pools[os.getpid()] = (workers, pool)
    return pool


class Rng:
    """A seeded random source on one device, derived from ``(seed, name, severity)``.

    The seed is hashed (BLAKE2b), so streams for different corruptions and
    severities are independent and do not depend on the order of calls. Draws
    happen on the images' device when it has a generator, else on the CPU.
    """

    def __init__(self, seed: int, name: str, severity: int, device: torch.device, dtype: torch.dtype) -> None:
        digest = hashlib.blake2b(f"{int(seed)}|{name}|{int(severity)}".encode(), digest_size=8).digest()
        self.device = device
        self.dtype = dtype
        try:
            self.generator = torch.Generator(device=device)
            self.on_device = True
        except (RuntimeError, TypeError):  # pragma: no cover - devices without generators
            self.generator = torch.Generator()
            self.on_device = False
        self.generator.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))

    def _place(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.on_device else t.to(self.device)

    def _where(self) -> torch.device:
        return self.device if self.on_device else torch.device("cpu")

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        u = torch.rand(shape, generator=self.generator, device=self._where(), dtype=self.dtype)
        return self._place(u * (high - low) + low)

    def normal(self, *shape: int, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
        z = torch.randn(shape, generator=self.generator, device=self._where(), dtype=self.dtype)
        return self._place(z * std + mean)

    def poisson(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """Poisson draws with means ``x · scale`` for values ``x`` in [0, 1], in ``x``'s shape and dtype.

        On a device: ``torch.poisson``. On the CPU, where ``torch.poisson``
        draws one element after another, the flattened values are cut into
        chunks of :data:`POISSON_CHUNK`, each drawn by its own numpy PCG64
        stream (seeded from this source and the chunk's index) on up to
        ``torch.get_num_threads()`` threads (numpy releases the GIL and runs no
        OpenMP team in helper threads). A chunk whose values all lie on the
        8-bit grid ``k / 255`` (images decoded from 8-bit files) is drawn from
        per-level alias tables (:mod:`._poisson`; 2.2× as fast as numpy's
        sampler, 3.4× ``torch.poisson``: ``benchmarks/bench_shot_noise.py``);
        any other chunk by numpy's Poisson sampler (Hörmann's PTRS for means
        >= 10). The result depends on the seed, the values and the shape only,
        not on the thread count.
        """
        if self.generator.device.type != "cpu":
            return self._place(torch.poisson(x * scale, generator=self.generator))
        flat = x.detach().reshape(-1).cpu().numpy()
        out = np.empty(flat.shape, dtype=flat.dtype)
        base = int(torch.randint(1 << 62, (1,), generator=self.generator))
        chunks = -(-flat.size // POISSON_CHUNK)
        threads = max(1, min(torch.get_num_threads(), chunks))
        # each thread takes one run of consecutive chunks: numpy's small operations on one chunk at a time
        # would pass the GIL back and forth and leave the second core idle
        edges = [c * POISSON_CHUNK for c in np.linspace(0, chunks, threads + 1).round().astype(int)]

        def draw(t: int) -> None:
            lo, hi = edges[t], min(edges[t + 1], flat.size)
            streams = [np.random.PCG64([base, i]) for i in range(lo // POISSON_CHUNK, -(-hi // POISSON_CHUNK))]
            fill_poisson(out[lo:hi], flat[lo:hi], scale, streams, POISSON_CHUNK)

        if threads > 1:
            list(worker_pool(threads).map(draw, range(threads)))
        else:
            draw(0)
        return self._place(torch.from_numpy(out).reshape(x.shape))

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Integers in ``[low, high)`` (``numpy.random.randint`` semantics)."""
        t = torch.randint(low, high, shape, generator=self.generator, device=self._where())
        return self._place(t)


# --------------------------------------------------------------------------- borders and blurs

#: above this side, a Gaussian blur is two 1-d convolutions instead of two banded matrix products
MATMUL_MAX_SIDE = 512


def fold_index(index: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map out-of-range indices into ``0..n-1`` for a border mode, for any distance outside.

    ``"nearest"`` repeats the edge (a a a | a b c d), ``"reflect"`` is
    scipy's half-sample mirror (b a | a b c d), ``"reflect101"`` OpenCV's
    default and torch's ``"reflect"`` (c b | a b c d).
    """
    if n == 1:
        return np.zeros_like(index)
    if mode == "nearest":
        return np.clip(index, 0, n - 1)
    if mode == "reflect":
        j = np.mod(index, 2 * n)
        return np.where(j >= n, 2 * n - 1 - j, j)
    if mode == "reflect101":
        j = np.mod(index, 2 * n - 2)
        return np.where(j >= n, 2 * n - 2 - j, j)
    raise ValueError(f"mode: unknown border mode {mode!r}")  # pragma: no cover - internal


@lru_cache(maxsize=128)
def _pad_index(n: int, before: int, after: int, mode: str, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(fold_index(np.arange(-before, n + after), n, mode), device=device)


def pad(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    """Pad the last two dimensions by ``ph`` / ``pw`` on each side with a border mode, any pad size."""
    if ph:
        x = x.index_select(-2, _pad_index(x.shape[-2], ph, ph, mode, x.device))
    if pw:
        x = x.index_select(-1, _pad_index(x.shape[-1], pw, pw, mode, x.device))
    return x


def _gauss_taps(sigma: float, truncate: float) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (offsets / sigma) ** 2)
    return w / w.sum()


@lru_cache(maxsize=128)
def _gauss_matrix_np(n: int, sigma: float, truncate: float, mode: str) -> np.ndarray:
    # the 1-d filter with its border folded in: exact for any sigma, even one larger than n
    w = _gauss_taps(sigma, truncate)
    radius = len(w) // 2
    j = fold_index(np.arange(n)[:, None] + np.arange(-radius, radius + 1)[None, :], n, mode)
    m = np.zeros((n, n))
    np.add.at(m, (np.repeat(np.arange(n), len(w)), j.ravel()), np.tile(w, n))
    return m


@lru_cache(maxsize=128)
def gauss_matrix(n: int, sigma: float, truncate: float, mode: str, device: torch.device, dtype: torch.dtype):
    """The n×n matrix of a 1-d Gaussian filter with border ``mode`` (identity when the radius is 0)."""
    if sigma <= 0 or int(truncate * sigma + 0.5) == 0:
        return torch.eye(n, device=device, dtype=dtype)
    return torch.as_tensor(_gauss_matrix_np(n, float(sigma), float(truncate), mode), device=device, dtype=dtype)


def gaussian_blur(x: torch.Tensor, sigma: float, *, truncate: float = 4.0, mode: str = "nearest") -> torch.Tensor:
    """Gaussian blur of the last two dimensions, as ``skimage.filters.gaussian`` computes it.

    Radius ``int(truncate·sigma + 0.5)``, border ``mode`` (scikit-image's
    default ``"nearest"``). Up to :data:`MATMUL_MAX_SIDE` pixels it is
    ``G_H @ x @ G_Wᵀ`` with banded, border-folded matrices (two BLAS calls,
    whatever sigma), beyond that two 1-d convolutions.
    """
    if sigma <= 0 or int(truncate * sigma + 0.5) == 0:
        return x
    h, w = x.shape[-2:]
    if max(h, w) <= MATMUL_MAX_SIDE:
        gh = gauss_matrix(h, float(sigma), truncate, mode, x.device, x.dtype)
        gw = gauss_matrix(w, float(sigma), truncate, mode, x.device, x.dtype)
        return gh @ x @ gw.T
    taps = torch.as_tensor(_gauss_taps(float(sigma), truncate), device=x.device, dtype=x.dtype)
    r = len(taps) // 2
    lead = x.shape[:-2]
    y = pad(x.reshape(-1, 1, h, w), r, r, mode)
    y = F.conv2d(F.conv2d(y, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))
    return y.reshape(*lead, h, w)


def smooth_field(field: torch.Tensor, sigma: float, *, truncate: float = 3.0) -> torch.Tensor:
    """Gaussian-smooth ``...×H×W`` maps with scipy's ``mode="reflect"``, any sigma (banded matrices)."""
    h, w = field.shape[-2:]
    gh = gauss_matrix(h, float(sigma), truncate, "reflect", field.device, field.dtype)
    gw = gauss_matrix(w, float(sigma), truncate, "reflect", field.device, field.dtype)
    return gh @ field @ gw.T


def _fast_len(n: int) -> int:
    """The smallest 2·3·5-smooth integer ≥ n (a fast FFT length)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def fft_filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate each image with an odd-sized kernel through the FFT, border ``mode``.

    ``kernel`` is ``kh×kw`` (shared) or ``N×kh×kw`` (one per image); the
    result equals ``cv2.filter2D`` / a direct correlation with the padded
    image, at a cost that does not grow with the kernel size.
    """
    h, w = x.shape[-2:]
    kh, kw = kernel.shape[-2:]
    rh, rw = kh // 2, kw // 2
    xp = pad(x, rh, rw, mode)
    lh, lw = _fast_len(h + 2 * rh), _fast_len(w + 2 * rw)
    k = torch.flip(kernel.to(device=x.device, dtype=x.dtype), dims=(-2, -1))
    spectrum = torch.fft.rfft2(xp, s=(lh, lw)) * torch.fft.rfft2(k, s=(lh, lw)).reshape(-1, 1, lh, lw // 2 + 1)
    y = torch.fft.irfft2(spectrum, s=(lh, lw))
    return y[..., 2 * rh : 2 * rh + h, 2 * rw : 2 * rw + w].contiguous()


def motion_kernel(radius: float, sigma: float) -> list[float]:
    """ImageMagick's one-sided motion kernel: ``2·radius + 1`` taps, ``exp(-i²/2σ²)``, normalised."""
    width = 2 * round(radius) + 1
    if width <= 1 or sigma <= 0:
        return [1.0]
    k = np.exp(-(np.arange(width) ** 2) / (2.0 * sigma**2))
    return (k / k.sum()).tolist()


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """Motion blur along one direction per image (``angles_deg``: N), edges replicated.

    Tap ``i`` samples the image ``(round(i·cos θ), round(i·sin θ))`` pixels
    away (ImageMagick's ``MotionBlurImage`` offsets). The image is padded once
    and each tap adds a shifted view: no index tensors, no FFT.
    """
    taps = motion_kernel(radius, sigma)
    if len(taps) == 1:
        return x
    n, _, h, w = x.shape
    reach = len(taps) - 1
    theta = torch.deg2rad(angles_deg.detach().to("cpu", torch.float64))
    i = torch.arange(len(taps), dtype=torch.float64)
    dx = torch.ceil(i[None, :] * torch.cos(theta)[:, None] - 0.5).long().tolist()
    dy = torch.ceil(i[None, :] * torch.sin(theta)[:, None] - 0.5).long().tolist()
    xp = pad(x, reach, reach, "nearest")
    out = torch.empty_like(x)
    for b in range(n):
        merged: dict[tuple[int, int], float] = {}
        for oy, ox, weight in zip(dy[b], dx[b], taps, strict=True):
            merged[(oy, ox)] = merged.get((oy, ox), 0.0) + weight
        acc = out[b].zero_()
        src = xp[b]
        for (oy, ox), weight in merged.items():
            acc.add_(src[:, reach + oy : reach + oy + h, reach + ox : reach + ox + w], alpha=weight)
    return out


def box_blur3(x: torch.Tensor) -> torch.Tensor:
    """3×3 mean filter with reflect-101 borders (OpenCV's ``cv2.blur(x, (3, 3))``)."""
    return filter2d(x, torch.full((3, 3), 1.0 / 9.0))


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate every channel with one small odd-sized kernel, reflect-101 borders (``cv2.filter2D``)."""
    kh, kw = kernel.shape
    n, c, h, w = x.shape
    y = pad(x.reshape(n * c, 1, h, w), kh // 2, kw // 2, "reflect101")
    y = F.conv2d(y, kernel.to(device=x.device, dtype=x.dtype)[None, None])
    return y.reshape(n, c, h, w)


# --------------------------------------------------------------------------- resampling


@lru_cache(maxsize=64)
def _pil_box_matrix_np(n_in: int, n_out: int) -> np.ndarray:
    # Pillow's BOX resampling weights (ImagingResample precompute_coeffs): output pixel i
    # averages the input pixels whose centres fall inside its footprint (-0.5, 0.5].
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        t = (j - center + 0.5) / filterscale
        wts = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
        if wts.sum() == 0:  # pragma: no cover - cannot happen for n_out <= n_in
            wts[np.argmin(np.abs(t))] = 1.0
        m[i, lo:hi] = wts / wts.sum()
    return m


@lru_cache(maxsize=64)
def pil_box_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``n_out × n_in`` matrix of Pillow's ``Image.BOX`` downsampling along one axis."""
    return torch.as_tensor(_pil_box_matrix_np(n_in, n_out), device=device, dtype=dtype)


@lru_cache(maxsize=64)
def nearest_index(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """Source index of each output pixel for nearest upsampling: ``floor((i + 0.5)·n_in/n_out)``."""
    idx = np.minimum(np.floor((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)
    return torch.as_tensor(idx, device=device)


@lru_cache(maxsize=64)
def _box_bands(n_in: int, n_out: int, rows: int) -> tuple[tuple[int, int, int, int], ...]:
    # (o0, o1, i0, i1): output pixels o0:o1 read only input pixels i0:i1 (the BOX matrix is banded)
    m = _pil_box_matrix_np(n_in, n_out)
    bands = []
    for o0 in range(0, n_out, rows):
        o1 = min(o0 + rows, n_out)
        used = np.flatnonzero(m[o0:o1].any(axis=0))
        bands.append((o0, o1, int(used[0]), int(used[-1]) + 1))
    return tuple(bands)


def pil_box_downsample(x: torch.Tensor, h_out: int, w_out: int, *, rows: int = 16) -> torch.Tensor:
    """Pillow's ``Image.BOX`` resize of N×C×H×W ``x`` to N×C×``h_out``×``w_out`` (``h_out ≤ H``, ``w_out ≤ W``).

    The product ``B_h · x · B_wᵀ`` with :func:`pil_box_matrix`, computed band by
    band (``rows`` output pixels at a time, against only the input pixels they
    average) instead of with the dense, mostly-zero matrices.
    """
    _, _, h, w = x.shape
    mh = pil_box_matrix(h, h_out, x.device, x.dtype)
    mw = pil_box_matrix(w, w_out, x.device, x.dtype)
    y = torch.cat([mh[o0:o1, i0:i1] @ x[:, :, i0:i1, :] for o0, o1, i0, i1 in _box_bands(h, h_out, rows)], dim=2)
    return torch.cat([y[..., i0:i1] @ mw[o0:o1, i0:i1].T for o0, o1, i0, i1 in _box_bands(w, w_out, rows)], dim=3)


@lru_cache(maxsize=64)
def _interpolate_matches(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> bool:
    # torch's "nearest-exact" picks floor((i + 0.5)·n_in/n_out) with a rounded float scale (per
    # device kernel): use it only for sizes where that picks the same pixels as nearest_index
    probe = torch.arange(n_in, device=device, dtype=dtype).reshape(1, 1, 1, n_in)
    picked = F.interpolate(probe, size=(1, n_out), mode="nearest-exact").reshape(-1).long()
    return torch.equal(picked, nearest_index(n_in, n_out, device))


def nearest_upsample(x: torch.Tensor, h_out: int, w_out: int) -> torch.Tensor:
    """Nearest upsampling of N×C×H×W ``x`` to ``h_out``×``w_out``: pixel ``floor((i + 0.5)·H/h_out)``.

    Pillow's ``Image.NEAREST`` (and ``Image.BOX`` when enlarging) picks these
    pixels; :func:`torch.nn.functional.interpolate` (``"nearest-exact"``) does
    the copy where its float scale selects the same pixels (checked per size),
    else :func:`nearest_index` does.
    """
    _, _, h, w = x.shape
    if _interpolate_matches(h, h_out, x.device, x.dtype) and _interpolate_matches(w, w_out, x.device, x.dtype):
        return F.interpolate(x, size=(h_out, w_out), mode="nearest-exact")
    return x.index_select(3, nearest_index(w, w_out, x.device)).index_select(2, nearest_index(h, h_out, x.device))


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """ImageNet-C's ``clipped_zoom``: crop the centre ``ceil(side / factor)``, zoom it, trim the centre.

    The zoom is bilinear with corners aligned (``scipy.ndimage.zoom(order=1)``)
    to ``round(crop · factor)`` pixels, then the centre ``H×W`` is kept. Each
    axis is handled on its own, so non-square images work.
    """
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    oh, ow = max(h, round(ch * factor)), max(w, round(cw * factor))
    lead = x.shape[:-2]
    zoomed = F.interpolate(crop.reshape(-1, 1, ch, cw), size=(oh, ow), mode="bilinear", align_corners=True)
    th, tw = (oh - h) // 2, (ow - w) // 2
    return zoomed[..., th : th + h, tw : tw + w].reshape(*lead, h, w)


# --------------------------------------------------------------------------- colour


def luma(x: torch.Tensor) -> torch.Tensor:
    """N×1×H×W grey level (the image itself when it has one channel)."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def colour(rgb: tuple[float, float, float], channels: int, like: torch.Tensor) -> torch.Tensor:
    """A 1×C×1×1 colour; for one-channel images its luma."""
    if channels == 1:
        value = sum(a * b for a, b in zip(rgb, LUMA, strict=True))
        return torch.full((1, 1, 1, 1), value, device=like.device, dtype=like.dtype)
    return torch.tensor(rgb, device=like.device, dtype=like.dtype).view(1, 3, 1, 1)


# --------------------------------------------------------------------------- procedural textures


def next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def plasma_fractal(n: int, mapsize: int, decay: float, rng: Rng) -> torch.Tensor:
    """Diamond–square height maps (N×mapsize×mapsize in [0, 1]), batched.

    The recipe of ImageNet-C's ``plasma_fractal`` (initial wibble 100, divided
    by ``decay`` per level; each new point is the mean of its four parents plus
    ``wibble · U(-wibble, wibble)``), vectorised over the batch.
    """
    m = torch.zeros(n, mapsize, mapsize, device=rng.device, dtype=rng.dtype)
    step = mapsize
    wibble = 100.0
    while step >= 2:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + torch.roll(corner, -1, dims=1)
        sq = sq + torch.roll(sq, -1, dims=2)
        m[:, half::step, half::step] = sq / 4 + wibble * rng.uniform(*sq.shape, low=-wibble, high=wibble)
        dr = m[:, half::step, half::step]
        ul = m[:, 0::step, 0::step]
        lt = dr + torch.roll(dr, 1, dims=1) + ul + torch.roll(ul, -1, dims=2)
        m[:, 0::step, half::step] = lt / 4 + wibble * rng.uniform(*lt.shape, low=-wibble, high=wibble)
        tt = dr + torch.roll(dr, 1, dims=2) + ul + torch.roll(ul, -1, dims=1)
        m[:, half::step, 0::step] = tt / 4 + wibble * rng.uniform(*tt.shape, low=-wibble, high=wibble)
        step = half
        wibble /= decay
    flat = m.reshape(n, -1)
    lo = flat.min(dim=1).values.view(n, 1, 1)
    hi = flat.max(dim=1).values.view(n, 1, 1)
    return (m - lo) / (hi - lo).clamp_min(torch.finfo(m.dtype).tiny)


def splat_segments(
    canvas: torch.Tensor,
    start_y: torch.Tensor,
    start_x: torch.Tensor,
    angle: torch.Tensor,
    length: torch.Tensor,
    weight: torch.Tensor,
    samples: int,
) -> None:
    """Add straight segments (N×S each parameter) to ``canvas`` (N×H×W) by point sampling, in place.

    Each segment is sampled at ``samples`` points; each point adds
    ``weight · length / samples`` so that a segment's ink is proportional to its
    length whatever the sampling.
    """
    n, h, w = canvas.shape
    t = torch.linspace(0.0, 1.0, samples, device=canvas.device, dtype=canvas.dtype)
    ys = start_y[..., None] + t * (length * torch.sin(angle))[..., None]
    xs = start_x[..., None] + t * (length * torch.cos(angle))[..., None]
    ink = (weight * length / samples)[..., None].expand_as(ys)
    r = ys.round().long()
    q = xs.round().long()
    inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
    b = torch.arange(n, device=canvas.device).view(n, 1, 1).expand_as(r)
    flat = canvas.view(-1)
    index = (b * h * w + r * w + q)[inside]
    flat.index_add_(0, index, ink[inside])


def pixel_count_scale(h: int, w: int) -> float:
    """Relative area ``H·W / min(H, W)²`` (1 for square images)."""
    return (h * w) / float(min(h, w) ** 2)


class Context:
    """What one corruption call needs besides the images: the seed and a cache shared by a sweep.

    ``corrupt_many`` passes one context to every (name, severity) of a batch so
    that work that does not depend on the severity (zoomed copies, frost
    textures, the uint8 copy for JPEG) is done once.
    """

    def __init__(self, seed: int, device: torch.device, dtype: torch.dtype,
                 table: CorruptionTable = IMAGENET_C) -> None:
        self.seed = int(seed)
        self.device = device
        self.dtype = dtype
        self.table = table
        self.cache: dict = {}

    def param(self, name: str, severity: int) -> Any:
        """The published parameter of ``name`` at ``severity`` in this context's table."""
        return self.table.params[name][severity - 1]

    def pixel_scale(self, x: torch.Tensor) -> float:
        """``min(H, W) / size``: the factor applied to every parameter the table gives in pixels."""
        return min(x.shape[-2], x.shape[-1]) / self.table.size

    def rng(self, name: str, severity: int) -> Rng:
        return Rng(self.seed, name, severity, self.device, self.dtype)
