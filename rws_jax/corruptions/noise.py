"""Noise corruptions: gaussian, shot (Poisson), impulse (salt & pepper), speckle.

Single image ``(H, W, C)`` float32 in [0, 1] -> same; ``p`` holds the
constants from :mod:`rws_jax.corruptions.params`.  Noise is drawn
independently for every pixel *and channel*, as in the reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gaussian_noise(key, x, p):
    """``x + N(0, sigma)``."""
    return x + p["sigma"] * jax.random.normal(key, x.shape, x.dtype)


def shot_noise(key, x, p):
    """``Poisson(x * photons) / photons``."""
    c = p["photons"]
    return jax.random.poisson(key, x * c, x.shape).astype(x.dtype) / c


def impulse_noise(key, x, p):
    """``skimage.util.random_noise(mode='s&p', amount)``: each value is
    replaced with probability ``amount``, by 1 or 0 with equal odds."""
    u = jax.random.uniform(key, (2,) + x.shape)
    flipped = u[0] <= p["amount"]
    salted = u[1] <= 0.5
    return jnp.where(flipped, jnp.where(salted, 1.0, 0.0).astype(x.dtype), x)


def speckle_noise(key, x, p):
    """``x + x * N(0, sigma)``."""
    return x + x * p["sigma"] * jax.random.normal(key, x.shape, x.dtype)
