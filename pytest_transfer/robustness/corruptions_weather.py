"""Weather corruptions: snow, frost, fog and spatter (private to :mod:`.corruptions`).

Parameters come from the context's published table
(:mod:`.corruptions_tables`); sizes in pixels are scaled by
``min(H, W) / size`` of that table. Frost uses a procedurally synthesised texture instead of
ImageNet-C's six frost photographs, so no image files are shipped; see
:func:`frost_texture`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._ops import (
    Context,
    Rng,
    box_blur3,
    clipped_zoom,
    colour,
    filter2d,
    gaussian_blur,
    luma,
    motion_blur,
    next_power_of_two,
    pixel_count_scale,
    plasma_fractal,
    splat_segments,
)

_WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise
_MUD = (63 / 255, 42 / 255, 20 / 255)  # mud brown
_FROST_TINT = (0.84, 0.95, 1.0)  # the blue-white cast of the frost photographs
_EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])


def snow(x: torch.Tensor, severity: int, ctx: Context) -> torch.Tensor:
    """Snow: thresholded, zoomed Gaussian noise streaked by a motion blur, plus a whitened image."""
    loc, scale, zoom, threshold, radius, sigma, blend = ctx.param("snow", severity)
    n, _, h, w = x.shape
    s = ctx.pixel_scale(x)
    rng = ctx.rng("snow", severity)
    layer = clipped_zoom(rng.normal(n, 1, h, w, mean=loc, std=scale), max(1.0, zoom * s))
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp_(0.0, 1.0)
    angles = rng.uniform(n, low=-135.0, high=-45.0)
    layer = motion_blur(layer, radius * s, sigma * s, angles)
    layer = torch.round(layer * 255.0) / 255.0
    x = blend * x + (1.0 - blend) * torch.maximum(x, luma(x) * 1.5 + 0.5)
    return x + layer + torch.flip(layer, dims=(-2, -1))


def frost_texture(n: int, h: int, w: int, rng: Rng) -> torch.Tensor:
    """A procedural frost texture, N×3×H×W in [0, 1].

    ImageNet-C blends crops of six frost photographs; this synthesises a
    stand-in so that nothing is shipped: a diamond–square haze plus a few
    hundred bright ice needles (random straight segments 12–48 px long at
    224 px, each with side branches at ±60°, the fern-like pattern of window
    frost), antialiased by a small blur and tinted blue-white. The constants
    were chosen to match the photographs' statistics (mean ≈ 0.6, standard
    deviation ≈ 0.12 per channel, blue above red). It is a stand-in, not a
    reproduction: errors under it are comparable across models, not to
    published ImageNet-C frost numbers.
    """
    s = min(h, w) / 224.0
    dev, dt = rng.device, rng.dtype
    haze = plasma_fractal(n, next_power_of_two(max(h, w)), 2.0, rng)[:, :h, :w]
    haze = gaussian_blur(haze[:, None], 2.0 * s)[:, 0]

    p = max(1, round(260 * pixel_count_scale(h, w)))
    sy = rng.uniform(n, p, low=-0.1 * h, high=1.1 * h)
    sx = rng.uniform(n, p, low=-0.1 * w, high=1.1 * w)
    angle = rng.uniform(n, p, low=0.0, high=2.0 * math.pi)
    length = rng.uniform(n, p, low=12.0, high=48.0) * s
    weight = rng.uniform(n, p, low=0.5, high=1.0)
    samples = max(2, math.ceil(48.0 * s) + 1)  # about one point per pixel of the longest needle
    canvas = torch.zeros(n, h, w, device=dev, dtype=dt)
    splat_segments(canvas, sy, sx, angle, length, weight, samples)

    b = 6  # side branches per needle
    t = rng.uniform(n, p, b, low=0.15, high=0.9)
    side = torch.where(rng.uniform(n, p, b) < 0.5, -1.0, 1.0).to(dt)
    by = sy[..., None] + t * (length * torch.sin(angle))[..., None]
    bx = sx[..., None] + t * (length * torch.cos(angle))[..., None]
    bangle = angle[..., None] + side * (math.pi / 3)
    blength = length[..., None] * rng.uniform(n, p, b, low=0.15, high=0.4)
    splat_segments(
        canvas,
        by.reshape(n, -1),
        bx.reshape(n, -1),
        bangle.reshape(n, -1),
        blength.reshape(n, -1),
        (0.7 * weight[..., None]).expand(n, p, b).reshape(n, -1),
        max(2, math.ceil(0.4 * samples)),
    )
    needles = gaussian_blur(canvas[:, None], max(0.45, 0.5 * s))[:, 0]
    needles = 1.0 - torch.exp(-2.0 * needles)
    grain = gaussian_blur(rng.normal(n, 1, h, w), max(0.5, 0.8 * s))[:, 0]
    grey = (0.4 + 0.3 * haze + 0.45 * needles + 0.04 * grain).clamp_(0.0, 1.0)
    tint = torch.tensor(_FROST_TINT, device=dev, dtype=dt).view(1, 3, 1, 1)
    return (grey[:, None] * tint).clamp_(0.0, 1.0)


def frost(x: torch.Tensor, severity: int, ctx: Context) -> torch.Tensor:
    """Frost: ``a·x + b·texture`` with ImageNet-C's weights and a synthesised texture.

    The texture depends on the seed and the batch shape, not on the severity
    (ImageNet-C too draws the frost photograph independently of severity), so
    a sweep synthesises it once and severities differ only by the weights.
    """
    a, b = ctx.param("frost", severity)
    n, c, h, w = x.shape
    key = ("frost_texture", n, h, w)
    if key not in ctx.cache:
        ctx.cache[key] = frost_texture(n, h, w, ctx.rng("frost", 0))
    tex = ctx.cache[key]
    if c == 1:
        tex = luma(tex)
    return a * x + b * tex


def fog(x: torch.Tensor, severity: int, ctx: Context) -> torch.Tensor:
    """Fog: a plasma fractal added to the image, then rescaled to keep its maximum."""
    strength, decay = ctx.param("fog", severity)
    n, _, h, w = x.shape
    plasma = plasma_fractal(n, next_power_of_two(max(h, w)), decay, ctx.rng("fog", severity))
    plasma = plasma[:, None, :h, :w]
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * plasma) * peak / (peak + strength)


def _erosion_depth(mask: torch.Tensor, limit: int) -> torch.Tensor:
    """How many 3×3 erosions each pixel of a 0/1 mask survives, capped at ``limit``.

    That is the chessboard distance to the nearest pixel outside the mask,
    minus one (pixels beyond the image border do not count as outside, as
    with replicated borders), computed without iterating erosions:
    ``d(y, x) = min_δ max(|δ|, r(y + δ, x))`` with ``r`` the distance along the
    row, both as ``2·(limit + 1) + 1`` shifted element-wise minima.
    """
    reach = limit + 1
    big = float(reach)
    h, w = mask.shape[-2:]
    outside = F.pad((mask < 0.5).to(mask.dtype), (reach, reach, 0, 0))
    row = torch.full_like(mask, big)
    for d in range(-reach, reach + 1):
        hit = outside[..., :, reach + d : reach + d + w] > 0
        row = torch.where(hit, torch.clamp(row, max=float(abs(d))), row)
    padded = F.pad(row, (0, 0, reach, reach), value=big)
    dist = torch.full_like(mask, big)
    for d in range(-reach, reach + 1):
        dist = torch.minimum(dist, padded[..., reach + d : reach + d + h, :].clamp(min=float(abs(d))))
    return (dist - 1.0).clamp_(0.0, float(limit))


def _equalize(levels: torch.Tensor, top: int) -> torch.Tensor:
    """OpenCV's ``equalizeHist`` on integer levels ``0..top`` (per image), output in ``0..255``."""
    n = levels.shape[0]
    v = levels.reshape(n, -1).long()
    counts = torch.zeros(n, top + 1, device=levels.device, dtype=levels.dtype)
    counts.scatter_add_(1, v, torch.ones_like(v, dtype=levels.dtype))
    cdf = counts.cumsum(dim=1)
    first = torch.argmax((counts > 0).to(torch.uint8), dim=1, keepdim=True)
    cdf_min = cdf.gather(1, first)
    total = cdf[:, -1:]
    span = (total - cdf_min).clamp_min(1.0)
    lut = torch.round((cdf - cdf_min) * 255.0 / span).clamp_(0.0, 255.0)
    flat = torch.where(total > cdf_min, lut, torch.arange(top + 1, device=lut.device, dtype=lut.dtype).expand_as(lut))
    return flat.gather(1, v).reshape(levels.shape)


def spatter(x: torch.Tensor, severity: int, ctx: Context) -> torch.Tensor:
    """Spatter: water droplets (severities 1–3) or mud (4–5) on the lens.

    Follows ImageNet-C's recipe at the table's own size, and resizes the
    resulting droplet or mud map to the image (bilinear; antialiased when
    shrinking): blurring per-pixel noise with a sigma scaled to a larger image
    would shrink its spread below the threshold and the droplets would vanish.
    For water, OpenCV's Canny + distance transform (distance to the droplet
    rims, truncated at 20 px) is replaced by the chessboard distance to the
    rims computed by repeated 3×3 erosion.
    """
    loc, scale, sigma, threshold, intensity, mud = ctx.param("spatter", severity)
    n, c, h, w = x.shape
    s = ctx.pixel_scale(x)
    hr, wr = max(1, round(h / s)), max(1, round(w / s))
    liquid = gaussian_blur(ctx.rng("spatter", severity).normal(n, 1, hr, wr, mean=loc, std=scale), sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mud:
        m = gaussian_blur((liquid > threshold).to(x.dtype), intensity)
        m = _to_size(torch.where(m < 0.8, torch.zeros_like(m), m), h, w)
        return x * (1.0 - m) + colour(_MUD, c, x) * m
    mask = (liquid > 0).to(x.dtype)
    depth = _erosion_depth(mask, 20) + _erosion_depth(1.0 - mask, 20)
    dist = _equalize(torch.floor(box_blur3(depth.clamp(max=20.0))), 20)  # truncated at 20 px, as published
    dist = box_blur3(filter2d(dist, _EMBOSS).clamp_(0.0, 255.0))
    m = liquid * dist
    m = _to_size(m / m.amax(dim=(1, 2, 3), keepdim=True).clamp_min(torch.finfo(m.dtype).tiny) * intensity, h, w)
    return x + m * colour(_WATER, c, x)


def _to_size(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``m`` (N×1×h'×w') resized to h×w: bilinear, antialiased when shrinking; unchanged at the same size."""
    if m.shape[-2:] == (h, w):
        return m
    return F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False, antialias=m.shape[-2] > h)
