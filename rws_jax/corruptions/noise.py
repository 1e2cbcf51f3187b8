"""Noise corruptions: gaussian, shot (Poisson), impulse (salt & pepper), speckle.

Single image ``(H, W, C)`` float32 in [0, 1] -> same; ``p`` holds the
constants from :mod:`rws_jax.corruptions.params`.  Noise is drawn
independently for every pixel *and channel*, as in the reference.

On a CPU the cost of these corruptions is the random bits, so each draws as few as
it can: two normals per 32-bit word (:func:`image_ops.normal16`), one word per value for
salt and pepper, one word per value for an exact Poisson draw by table inversion.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import gammaln, xlogy

from . import image_ops


def gaussian_noise(key, x, p):
    """``x + N(0, sigma)``."""
    return x + p["sigma"] * image_ops.normal16(key, x.shape)


def poisson_table_size(max_rate: float) -> int:
    """Support kept for Poisson rates up to ``max_rate``: ``P(K >= size)`` is below
    1e-12 (mean + 8 standard deviations + 16)."""
    return int(math.ceil(max_rate + 8.0 * math.sqrt(max_rate) + 16.0))


def poisson_inverse_cdf(u, level, c, size: int, levels: int = 256):
    """Exact ``Poisson(level / (levels - 1) * c)`` draws by inverting the CDF.

    ``level``: integer array of rates on the 8-bit grid; ``u``: U[0, 1) of the same
    shape. The CDF of every level is tabulated once (``levels x size`` floats, ``c``
    may be traced) and each draw is a binary search of its row: ~log2(size) gathers
    instead of a rejection loop.
    """
    lam = jnp.arange(levels, dtype=jnp.float32) / (levels - 1) * c  # (levels,)
    k = jnp.arange(size, dtype=jnp.float32)
    logpmf = xlogy(k[None, :], lam[:, None]) - lam[:, None] - gammaln(k + 1.0)[None, :]
    cdf = jnp.cumsum(jnp.exp(logpmf), axis=1)  # (levels, size)
    flat = cdf.reshape(-1)
    base = level.astype(jnp.int32) * size
    lo = jnp.zeros(u.shape, jnp.int32)  # answer: smallest k with cdf[k] > u
    hi = jnp.full(u.shape, size - 1, jnp.int32)

    def body(_, lohi):
        lo, hi = lohi
        mid = (lo + hi) // 2
        go_right = flat[base + mid] <= u
        return jnp.where(go_right, mid + 1, lo), jnp.where(go_right, hi, mid)

    lo, _ = lax.fori_loop(0, max(1, int(math.ceil(math.log2(size)))) + 1, body, (lo, hi))
    return lo.astype(jnp.float32)


def shot_noise(key, x, p):
    """``Poisson(x * photons) / photons``, exact; the rate is taken on the 8-bit grid
    (the reference reads uint8 images, so for uint8 input this is no change)."""
    c = p["photons"]
    level = jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.int32)
    u = image_ops.uniform24(jax.random.bits(key, x.shape, jnp.uint32))
    return poisson_inverse_cdf(u, level, c, p["table_size"]) / c


def impulse_noise(key, x, p):
    """``skimage.util.random_noise(mode='s&p', amount)``: each value is
    replaced with probability ``amount``, by 1 or 0 with equal odds. Each value uses
    16 random bits: 15 decide the flip (``amount`` is rounded to a multiple of
    2**-15), the 16th the salt."""
    n = math.prod(x.shape)
    bits = jax.random.bits(key, ((n + 1) // 2,), jnp.uint32)
    half = jnp.concatenate([bits & 0xFFFF, bits >> 16])[:n].reshape(x.shape)
    flipped = (half & 0x7FFF).astype(jnp.float32) < jnp.round(p["amount"] * 32768.0)
    salted = (half >> 15) == 1
    return jnp.where(flipped, jnp.where(salted, 1.0, 0.0).astype(x.dtype), x)


def speckle_noise(key, x, p):
    """``x + x * N(0, sigma)``."""
    return x + x * p["sigma"] * image_ops.normal16(key, x.shape)
