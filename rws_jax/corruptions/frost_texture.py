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

def _value_noise(grids, H, W):
    """Sum of bicubically upsampled uniform grids, amplitude halving; in [0, 1]."""
    out = jnp.zeros((H, W), jnp.float32)
    amp, total = 1.0, 0.0
    for g in grids:
        out = out + amp * jax.image.resize(g, (H, W), "cubic")
        total += amp
        amp *= 0.5
    out = out / total
    return (out - out.min()) / (out.max() - out.min() + 1e-6)


def _needles(u_seed, u_val, u_ang, H, W):
    """Sparse seeds drawn into tapering line segments, one random direction per plane,
    by circular convolution in the Fourier domain; max over the directions."""
    n_dirs = u_seed.shape[0]
    L = max(2, int(round(0.15 * min(H, W))))  # half length in pixels
    seeds = (u_seed < 12.0 / (H * W)) * (0.5 + 0.5 * u_val)
    angles = (u_ang * jnp.pi)[:, None, None]
    t = jnp.arange(-L, L + 1, dtype=jnp.float32)
    Y, X = t[:, None], t[None, :]
    along = X * jnp.cos(angles) + Y * jnp.sin(angles)
    across = -X * jnp.sin(angles) + Y * jnp.cos(angles)
    kern = jnp.clip(1.0 - jnp.abs(across), 0.0, 1.0) * jnp.clip(
        1.0 - jnp.abs(along) / (L + 1), 0.0, 1.0)  # (n_dirs, 2L+1, 2L+1)
    # centre the kernel at (0, 0) of an (H, W) plane: circular convolution = wrap padding
    full = jnp.zeros((n_dirs, H, W), jnp.float32).at[:, :2 * L + 1, :2 * L + 1].set(kern)
    full = jnp.roll(full, (-L, -L), axis=(1, 2))
    out = jnp.fft.irfft2(jnp.fft.rfft2(seeds) * jnp.fft.rfft2(full), s=(H, W))
    return jnp.clip(jnp.max(out, axis=0), 0.0, 1.0)


def procedural_field(key, H: int, W: int):
    """A frost luminance field of shape (H, W) in [0, 1] (see the module doc)."""
    from . import _ops

    n_dirs = 3
    haze_shapes = [(max(2, min(3 * 2 ** o, H)), max(2, min(3 * 2 ** o, W))) for o in range(5)]
    patch_shapes = [(max(2, min(2 * 2 ** o, H)), max(2, min(2 * 2 ** o, W))) for o in range(3)]
    draws = _ops.uniforms(key, *haze_shapes, *patch_shapes, (n_dirs, H, W), (n_dirs, H, W), (n_dirs,))
    haze = _value_noise(draws[:5], H, W)
    patches = _value_noise(draws[5:8], H, W)
    needles = _needles(draws[8], draws[9], draws[10], H, W)
    gate = jnp.clip(1.6 * patches - 0.3, 0.0, 1.0)
    lum = 0.30 + 0.35 * haze + 0.6 * needles * gate
    sigma = 0.35 * min(H, W) / 32.0
    k = _ops.gaussian_kernel_1d(sigma)
    lum = _ops.fft_conv2d(lum, k[:, None] * k[None, :], "wrap")
    return jnp.clip(lum, 0.0, 1.0)


@functools.lru_cache(maxsize=1)
def _base_field() -> np.ndarray:
    # May be first called while a corruption is being traced: make the key concrete
    # and run an ahead-of-time compiled program, so the field is computed now (and
    # once) instead of being staged into the caller's program.
    with jax.ensure_compile_time_eval():
        key = jax.random.key(20230701)
    compiled = jax.jit(procedural_field, static_argnums=(1, 2)).lower(key, BASE_SIZE, BASE_SIZE).compile()
    return np.asarray(compiled(key), np.float32)


def _target_std(stds, size: int) -> float:
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
        with jax.ensure_compile_time_eval():
            base = np.asarray(jax.image.resize(base, (side, side), "linear"), np.float32)
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
