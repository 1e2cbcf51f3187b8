"""Procedural frost textures (no photographs are shipped).

The reference blends the image with a random crop of one of six photographs
of frosted glass.  Instead a texture is synthesised from the PRNG key:

1. a fractal value-noise haze (5 octaves of bicubically upsampled uniform
   noise, amplitude halving per octave);
2. crystalline needles: sparse bright seeds smeared along three random
   directions (two-sided line kernels, length ~30% of the image), the
   strongest direction wins per pixel (``max``), which gives the criss-cross
   streaks of ice crystals;
3. the haze gates the needles (ice grows in patches), a light blur, contrast
   normalisation to roughly the statistics of the reference photographs
   (mean ~0.45, bright needles up to 1), and a pale blue-white tint.

Deterministic in the key; feature sizes are relative to the image size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _ops

TINT = (0.80, 0.88, 1.0)  # RGB of frost relative to its luminance


def _octave_shapes(H, W, octaves, base):
    return [(max(2, min(base * 2 ** o, H)), max(2, min(base * 2 ** o, W)))
            for o in range(octaves)]


def _value_noise(grids, H, W):
    """Sum of bicubically upsampled uniform grids, amplitude halving."""
    out = jnp.zeros((H, W), jnp.float32)
    amp, total = 1.0, 0.0
    for g in grids:
        out = out + amp * jax.image.resize(g, (H, W), "cubic")
        total += amp
        amp *= 0.5
    out = out / total
    return (out - out.min()) / (out.max() - out.min() + 1e-6)


def _needles(u_seed, u_val, u_ang, H, W):
    """Sparse seeds drawn into tapering line segments, one random direction
    per channel, by a single (grouped) convolution with wrap-around padding."""
    n_dirs = u_seed.shape[0]
    size = min(H, W)
    L = max(2, int(round(0.15 * size)))  # half length in pixels
    seeds = (u_seed < 12.0 / (H * W)) * (0.5 + 0.5 * u_val)
    angles = (u_ang * jnp.pi)[:, None, None]
    t = jnp.arange(-L, L + 1, dtype=jnp.float32)
    Y, X = t[:, None], t[None, :]
    along = X * jnp.cos(angles) + Y * jnp.sin(angles)
    across = -X * jnp.sin(angles) + Y * jnp.cos(angles)
    kern = jnp.clip(1.0 - jnp.abs(across), 0.0, 1.0) * jnp.clip(
        1.0 - jnp.abs(along) / (L + 1), 0.0, 1.0)  # (n_dirs, 2L+1, 2L+1)
    xp = jnp.pad(seeds, ((0, 0), (L, L), (L, L)), mode="wrap")
    out = jax.lax.conv_general_dilated(
        xp[None], kern[:, None], (1, 1), "VALID",
        feature_group_count=n_dirs, precision=jax.lax.Precision.HIGHEST)[0]
    return jnp.clip(jnp.max(out, axis=0), 0.0, 1.0)


def frost_texture(key, H: int, W: int, channels: int = 3):
    """A frost texture of shape (H, W, channels) with values in [0, 1]."""
    n_dirs = 3
    haze_shapes = _octave_shapes(H, W, 5, 3)
    patch_shapes = _octave_shapes(H, W, 3, 2)
    draws = _ops.uniforms(key, *haze_shapes, *patch_shapes, (n_dirs, H, W),
                          (n_dirs, H, W), (n_dirs,))
    haze = _value_noise(draws[:5], H, W)
    patches = _value_noise(draws[5:8], H, W)
    needles = _needles(draws[8], draws[9], draws[10], H, W)
    gate = jnp.clip(1.6 * patches - 0.3, 0.0, 1.0)
    lum = 0.30 + 0.35 * haze + 0.6 * needles * gate
    lum = _ops.gaussian_blur(lum, 0.35 * min(H, W) / 32.0, pad_mode="wrap")
    lum = jnp.clip(lum, 0.0, 1.0)
    if channels == 1:
        tint = jnp.asarray(TINT, jnp.float32)
        w = jnp.asarray([0.2989, 0.5870, 0.1140], jnp.float32)
        return (lum * jnp.sum(tint * w))[..., None]
    return lum[..., None] * jnp.asarray(TINT, jnp.float32)
