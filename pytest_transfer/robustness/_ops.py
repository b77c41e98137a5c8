"""Batched tensor primitives shared by the corruptions (private).

Everything here works on N×C×H×W float tensors on the tensors' own device.
Kernels and resampling matrices are cached per (size, parameters, device,
dtype) with :func:`functools.lru_cache`, so a sweep over many batches of the
same size builds each of them once.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

#: the side, in pixels, that ImageNet-C's pixel-valued parameters were written for
REFERENCE_SIZE = 224

#: ITU-R 601 luma weights, as OpenCV's ``COLOR_RGB2GRAY`` uses them
LUMA = (0.299, 0.587, 0.114)


def pixel_scale(x: torch.Tensor) -> float:
    """``min(H, W) / 224``: the factor applied to every parameter given in pixels at 224 px."""
    return min(x.shape[-2], x.shape[-1]) / REFERENCE_SIZE


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

    def poisson(self, rate: torch.Tensor) -> torch.Tensor:
        r = rate if self.on_device else rate.cpu()
        return self._place(torch.poisson(r, generator=self.generator))

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Integers in ``[low, high)`` (``numpy.random.randint`` semantics)."""
        t = torch.randint(low, high, shape, generator=self.generator, device=self._where())
        return self._place(t)


# --------------------------------------------------------------------------- blurs


def gaussian_blur(x: torch.Tensor, sigma: float, *, truncate: float = 4.0) -> torch.Tensor:
    """Gaussian blur with scikit-image's kernel radius ``int(truncate * sigma + 0.5)``.

    Delegates to ``torchvision.transforms.v2.functional.gaussian_blur`` (reflect
    padding); the radius is capped below the image side so tiny images work.
    """
    radius = min(int(truncate * sigma + 0.5), x.shape[-2] - 1, x.shape[-1] - 1)
    if sigma <= 0 or radius < 1:
        return x
    k = 2 * radius + 1
    return TF.gaussian_blur(x, kernel_size=[k, k], sigma=[float(sigma), float(sigma)])


@lru_cache(maxsize=64)
def _reflect_gauss_matrix_np(n: int, sigma: float, truncate: float) -> np.ndarray:
    # scipy.ndimage's mode="reflect" (d c b a | a b c d | d c b a) folded into an n×n matrix,
    # exact for any sigma, even one much larger than the signal.
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (offsets / sigma) ** 2)
    w /= w.sum()
    j = np.arange(n)[:, None] + offsets[None, :]
    j = np.mod(j, 2 * n)
    j = np.where(j >= n, 2 * n - 1 - j, j)
    m = np.zeros((n, n))
    np.add.at(m, (np.repeat(np.arange(n), len(offsets)), j.ravel()), np.tile(w, n))
    return m


@lru_cache(maxsize=64)
def reflect_gauss_matrix(n: int, sigma: float, truncate: float, device: torch.device, dtype: torch.dtype):
    """The n×n matrix of a reflect-mode Gaussian filter (identity when the radius is 0)."""
    if sigma <= 0 or int(truncate * sigma + 0.5) == 0:
        return torch.eye(n, device=device, dtype=dtype)
    return torch.as_tensor(_reflect_gauss_matrix_np(n, float(sigma), float(truncate)), device=device, dtype=dtype)


def smooth_field(field: torch.Tensor, sigma: float, *, truncate: float = 3.0) -> torch.Tensor:
    """Gaussian-smooth ``...×H×W`` maps as ``G_H @ field @ G_Wᵀ`` (reflect boundary, any sigma)."""
    h, w = field.shape[-2:]
    gh = reflect_gauss_matrix(h, float(sigma), truncate, field.device, field.dtype)
    gw = reflect_gauss_matrix(w, float(sigma), truncate, field.device, field.dtype)
    return gh @ field @ gw.T


def motion_kernel(radius: float, sigma: float) -> list[float]:
    """ImageMagick's one-sided motion kernel: ``2·radius + 1`` taps, ``exp(-i²/2σ²)``, normalised."""
    width = 2 * int(round(radius)) + 1
    if width <= 1 or sigma <= 0:
        return [1.0]
    k = np.exp(-(np.arange(width) ** 2) / (2.0 * sigma**2))
    return (k / k.sum()).tolist()


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """Motion blur along one direction per image (``angles_deg``: N), edges replicated.

    Tap ``i`` samples the image ``(round(i·cos θ), round(i·sin θ))`` pixels
    away (ImageMagick's ``MotionBlurImage`` offsets); one gather per tap.
    """
    taps = motion_kernel(radius, sigma)
    if len(taps) == 1:
        return x
    n, c, h, w = x.shape
    theta = torch.deg2rad(angles_deg.to(torch.float64)).cpu()
    cos, sin = torch.cos(theta), torch.sin(theta)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    for i, weight in enumerate(taps):
        dx = torch.ceil(i * cos - 0.5).long().to(x.device)
        dy = torch.ceil(i * sin - 0.5).long().to(x.device)
        r = (rows[None, :] + dy[:, None]).clamp_(0, h - 1)
        q = (cols[None, :] + dx[:, None]).clamp_(0, w - 1)
        idx = (r[:, :, None] * w + q[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
        out.add_(flat.gather(2, idx), alpha=weight)
    return out.reshape(n, c, h, w)


def box_blur3(x: torch.Tensor) -> torch.Tensor:
    """3×3 mean filter with reflect-101 borders (OpenCV's ``cv2.blur(x, (3, 3))``)."""
    if min(x.shape[-2:]) < 2:
        return x
    k = torch.full((1, 1, 3, 3), 1.0 / 9.0, device=x.device, dtype=x.dtype)
    n, c, h, w = x.shape
    y = F.conv2d(F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="reflect"), k)
    return y.reshape(n, c, h, w)


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate every channel with one odd-sized 2-D kernel, reflect-101 borders (``cv2.filter2D``)."""
    kh, kw = kernel.shape
    n, c, h, w = x.shape
    ph, pw = kh // 2, kw // 2
    y = x.reshape(n * c, 1, h, w)
    if ph >= h or pw >= w:  # reflect padding needs pad < size; replicate for tiny images
        y = F.pad(y, (pw, pw, ph, ph), mode="replicate")
    else:
        y = F.pad(y, (pw, pw, ph, ph), mode="reflect")
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


def zoom_about_centre(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Bilinear zoom by ``factors`` (one per image, ≥ 1) about the centre, cropped to the input size."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = 1.0 / factors
    theta[:, 1, 1] = 1.0 / factors
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


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
        value = sum(a * b for a, b in zip(rgb, LUMA))
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


def ceil_int(v: float) -> int:
    return int(math.ceil(v))


class Context:
    """What one corruption call needs besides the images: the seed and a cache shared by a sweep.

    ``corrupt_many`` passes one context to every (name, severity) of a batch so
    that work that does not depend on the severity (zoomed copies, frost
    textures, the uint8 copy for JPEG) is done once.
    """

    def __init__(self, seed: int, device: torch.device, dtype: torch.dtype) -> None:
        self.seed = int(seed)
        self.device = device
        self.dtype = dtype
        self.cache: dict = {}

    def rng(self, name: str, severity: int) -> Rng:
        return Rng(self.seed, name, severity, self.device, self.dtype)
