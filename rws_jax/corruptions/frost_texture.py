"""Frost layers: crops of one procedural frost field, matched to the reference's photographs.

The reference (``imagecorruptions`` / ImageNet-C) blends the image with a random crop of
one of five photographs of frosted glass (``frost1..5``; ``frost6`` is never drawn). We
ship no photographs. Instead:

1. **One procedural field**, built once per process (cached) at ``BASE_SIZE`` pixels,
   roughly the size of the photographs (resized by 0.2 for the cifar10 preset, as
   CIFAR-10-C shrinks its photographs): a fractal value-noise haze (5 octaves of
   bicubically upsampled uniform noise) plus crystalline needles (sparse seeds smeared
   along three random directions by a circular FFT convolution, the strongest direction
   wins per pixel), gated by a coarse noise so that ice grows in patches, lightly
   blurred. Images larger than ``BASE_SIZE / 1.1`` get the field resized up, as the
   reference resizes its photograph.
2. **Per image**: one of the five reference photographs is drawn uniformly (its
   statistics, not its pixels), and a random window of the image's size is cut from the
   field (plus a random flip of each axis). The window is centred on its own mean,
   scaled by the field's average within-window standard deviation, and given that
   photograph's mean colour and the luminance standard deviation that a crop *of the
   same size* of that photograph has (:data:`REFERENCE_FROST`, measured by
   ``python -m benchmarks.frost_reference_stats``; interpolated in log size between
   32, 64 and 224 pixels, constant outside).

So the frost layer has the brightness, colour and contrast of the reference's crops at
every image size, and costs a crop and a multiply-add per image: nothing is synthesised
inside the jitted corruption.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

BASE_SIZE = 512
LUMA = (0.2989, 0.5870, 0.1140)  # imagecorruptions' rgb2gray weights
CROP_SIZES = (32, 64, 224)
# Written by `python -m benchmarks.frost_reference_stats` (tests/test_corruption_fidelity.py
# re-measures it when imagecorruptions is installed):
# (mean R, G, B) in [0, 1], luminance std within a crop of 32 / 64 / 224 px
REFERENCE_FROST = (
    ((0.305, 0.585, 0.65), (0.042, 0.045, 0.059)),  # frost1.png
    ((0.787, 0.805, 0.841), (0.057, 0.061, 0.074)),  # frost2.png
    ((0.787, 0.805, 0.841), (0.055, 0.06, 0.076)),  # frost3.png
    ((0.54, 0.599, 0.648), (0.082, 0.082, 0.101)),  # frost4.jpg
    ((0.441, 0.484, 0.528), (0.113, 0.124, 0.135)),  # frost5.jpg
)


# ---------------------------------------------------------------- the field

def _cubic_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bicubic (Keys, a = -0.5) upsampling weights, half-pixel centres,
    clamped borders."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    base = np.floor(pos).astype(np.int64)
    m = np.zeros((n_out, n_in))
    for k in range(-1, 3):
        t = np.abs(pos - (base + k))
        w = np.where(t <= 1, 1.5 * t ** 3 - 2.5 * t ** 2 + 1,
                     np.where(t < 2, -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2, 0.0))
        np.add.at(m, (np.arange(n_out), np.clip(base + k, 0, n_in - 1)), w)
    return m / m.sum(1, keepdims=True)


def _linear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bilinear resampling weights, half-pixel centres, clamped borders
    (no antialiasing, like ``cv2.resize(..., INTER_LINEAR)``)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - (pos - lo))
    np.add.at(m, (np.arange(n_out), hi), pos - lo)
    return m


def _value_noise(rng, shapes, H, W) -> np.ndarray:
    """Sum of bicubically upsampled uniform grids, amplitude halving; in [0, 1]."""
    out = np.zeros((H, W))
    amp, total = 1.0, 0.0
    for h, w in shapes:
        g = rng.random((h, w))
        out += amp * (_cubic_matrix(H, h) @ g @ _cubic_matrix(W, w).T)
        total += amp
        amp *= 0.5
    out /= total
    return (out - out.min()) / (out.max() - out.min() + 1e-6)


def _circular_conv(planes: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Circular 2-D convolution of (n, H, W) planes with centred (n, k, k) kernels."""
    n, H, W = planes.shape
    k = kernels.shape[-1]
    full = np.zeros((n, H, W))
    full[:, :k, :k] = kernels
    full = np.roll(full, (-(k // 2), -(k // 2)), axis=(1, 2))
    return np.fft.irfft2(np.fft.rfft2(planes) * np.fft.rfft2(full), s=(H, W))


def _needles(rng, H, W, n_dirs: int = 3) -> np.ndarray:
    """Sparse seeds drawn into tapering line segments, one random direction per plane;
    max over the directions."""
    L = max(2, int(round(0.15 * min(H, W))))  # half length in pixels
    seeds = (rng.random((n_dirs, H, W)) < 12.0 / (H * W)) * (0.5 + 0.5 * rng.random((n_dirs, H, W)))
    angles = (rng.random(n_dirs) * np.pi)[:, None, None]
    t = np.arange(-L, L + 1, dtype=np.float64)
    Y, X = t[:, None], t[None, :]
    along = X * np.cos(angles) + Y * np.sin(angles)
    across = -X * np.sin(angles) + Y * np.cos(angles)
    kern = np.clip(1.0 - np.abs(across), 0.0, 1.0) * np.clip(1.0 - np.abs(along) / (L + 1), 0.0, 1.0)
    return np.clip(_circular_conv(seeds, kern).max(axis=0), 0.0, 1.0)


def procedural_field(seed: int, H: int, W: int) -> np.ndarray:
    """A frost luminance field, float32 (H, W) in [0, 1], from a numpy seed (see the
    module doc). Host code: built once, then cropped inside the jitted corruption."""
    rng = np.random.default_rng(seed)
    haze = _value_noise(rng, [(max(2, min(3 * 2 ** o, H)), max(2, min(3 * 2 ** o, W))) for o in range(5)], H, W)
    patches = _value_noise(rng, [(max(2, min(2 * 2 ** o, H)), max(2, min(2 * 2 ** o, W))) for o in range(3)], H, W)
    needles = _needles(rng, H, W)
    gate = np.clip(1.6 * patches - 0.3, 0.0, 1.0)
    lum = 0.30 + 0.35 * haze + 0.6 * needles * gate
    sigma = 0.35 * min(H, W) / 32.0
    r = int(4 * sigma + 0.5)
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    g /= g.sum()
    lum = _circular_conv(lum[None], (g[:, None] * g[None, :])[None])[0]
    return np.clip(lum, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _base_field() -> np.ndarray:
    return procedural_field(20230701, BASE_SIZE, BASE_SIZE)


def _target_std(stds, size: float) -> float:
    """Crop std of a reference photograph for a crop of ``size`` pixels: linear in
    log(size) between the measured sizes, constant outside them."""
    logs = [math.log(s) for s in CROP_SIZES]
    return float(np.interp(math.log(max(size, 1)), logs, stds))


@functools.lru_cache(maxsize=16)
def frost_bank(H: int, W: int, photo_scale: float = 1.0):
    """Host constants for ``(H, W)`` images: the field, resized by ``photo_scale`` (the
    CIFAR-10-C reference shrinks its photographs by 0.2 before cropping 32 px) and at
    least to ``1.1 * max(H, W)`` (the reference enlarges a photograph smaller than the
    image), standardised so that an ``H x W`` crop has, on average, std 1; and per
    reference photograph its RGB mean and the std of a crop that covers the same part
    of the photograph (``H / photo_scale`` pixels).

    Returns ``(field[Hf, Wf] float32, mean_rgb[5, 3], std[5])`` as numpy arrays.
    """
    base = _base_field()
    side = max(int(round(BASE_SIZE * photo_scale)), int(math.ceil(1.1 * max(H, W))))
    if side != BASE_SIZE:
        m = _linear_matrix(side, BASE_SIZE)
        base = (m @ base @ m.T).astype(np.float32)
    rng = np.random.default_rng(0)
    ys = rng.integers(0, side - H + 1, 256)
    xs = rng.integers(0, side - W + 1, 256)
    crop_std = float(np.mean([base[y:y + H, x:x + W].std() for y, x in zip(ys, xs)]))
    field = ((base - base.mean()) / max(crop_std, 1e-6)).astype(np.float32)
    mean_rgb = np.asarray([m for m, _ in REFERENCE_FROST], np.float32)
    covered = min(H, W) * BASE_SIZE / side  # pixels of the (512 px) photograph a crop covers
    std = np.asarray([_target_std(s, covered) for _, s in REFERENCE_FROST], np.float32)
    return field, mean_rgb, std


def frost_layer(key, H: int, W: int, channels: int = 3, photo_scale: float = 1.0):
    """A frost layer of shape (H, W, channels), values in [0, 1], for one image."""
    field, mean_rgb, std = frost_bank(H, W, float(photo_scale))
    Hf, Wf = field.shape
    k_pick, k_y, k_x, k_flip = jax.random.split(key, 4)
    v = jax.random.randint(k_pick, (), 0, len(REFERENCE_FROST))
    y = jax.random.randint(k_y, (), 0, Hf - H + 1)
    x = jax.random.randint(k_x, (), 0, Wf - W + 1)
    crop = lax.dynamic_slice(jnp.asarray(field), (y, x), (H, W))
    crop = crop - jnp.mean(crop)  # the photograph's mean, whichever window
    flips = jax.random.bernoulli(k_flip, 0.5, (2,))
    crop = jnp.where(flips[0], crop[::-1], crop)
    crop = jnp.where(flips[1], crop[:, ::-1], crop)
    rgb = jnp.asarray(mean_rgb)[v]
    lum_mean = jnp.sum(rgb * jnp.asarray(LUMA, jnp.float32))
    lum = lum_mean + jnp.asarray(std)[v] * crop  # (H, W)
    if channels == 1:
        return jnp.clip(lum, 0.0, 1.0)[..., None]
    return jnp.clip(lum[..., None] * (rgb / lum_mean), 0.0, 1.0)


def frost_texture(key, H: int, W: int, channels: int = 3, photo_scale: float = 1.0):
    """Alias of :func:`frost_layer` (the name of earlier versions)."""
    return frost_layer(key, H, W, channels, photo_scale)
