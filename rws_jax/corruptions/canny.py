"""Canny edges and a truncated Euclidean distance transform, in jax.numpy.

:func:`canny` reproduces ``cv2.Canny(image, low, high)`` with its defaults (3x3 Sobel,
L1 gradient magnitude) on an 8-bit single-channel image, exactly, in integer arithmetic:

1. gradients ``gx``, ``gy`` by the 3x3 Sobel kernels with replicated borders, magnitude
   ``|gx| + |gy|`` (0 outside the image);
2. non-maximum suppression along the gradient direction quantised to 0/45/90/135
   degrees with OpenCV's fixed-point tangent test (``tan 22.5 deg`` as 13573 / 2**15),
   including its asymmetric comparisons (``>`` on one side, ``>=`` on the other);
3. double threshold (``> floor(low)`` weak, ``> floor(high)`` strong) and hysteresis:
   weak pixels 8-connected to a strong one become edges, by repeated 3x3 dilation inside
   a ``lax.while_loop`` until nothing changes.

:func:`distance_to_edges` is the exact Euclidean distance to the nearest edge pixel,
truncated at ``cap`` (``cv2.distanceTransform`` followed by ``THRESH_TRUNC`` at
``cap``), computed separably: nearest edge along each row within ``cap`` pixels, then
the minimum of ``dy**2 + row**2`` over the rows within ``cap``.

Both work on one ``(H, W)`` image and ``vmap`` over a batch.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

_TG22 = 13573  # int(tan(22.5 deg) * 2**15 + 0.5), as OpenCV
_SHIFT = 15


def _sobel_int(img):
    """Sobel x / y derivatives of an int32 (H, W) image, replicated border."""
    p = jnp.pad(img, 1, mode="edge")
    H, W = img.shape

    def s(dy, dx):
        return p[1 + dy:1 + dy + H, 1 + dx:1 + dx + W]

    gx = (s(-1, 1) + 2 * s(0, 1) + s(1, 1)) - (s(-1, -1) + 2 * s(0, -1) + s(1, -1))
    gy = (s(1, -1) + 2 * s(1, 0) + s(1, 1)) - (s(-1, -1) + 2 * s(-1, 0) + s(-1, 1))
    return gx, gy


def _dilate3(b):
    """8-neighbourhood dilation of a boolean (H, W) map."""
    x = b.astype(jnp.int8)
    return lax.reduce_window(x, jnp.int8(0), lax.max, (3, 3), (1, 1), "SAME") > 0


def canny(image, low: float = 50.0, high: float = 150.0):
    """Edges of ``image`` (H, W) holding integer values in [0, 255] (any dtype).

    Returns a boolean (H, W) map equal to ``cv2.Canny(image.astype(uint8), low, high) > 0``.
    """
    low_i, high_i = int(low // 1), int(high // 1)
    if low_i > high_i:
        low_i, high_i = high_i, low_i
    img = jnp.asarray(image).astype(jnp.int32)
    H, W = img.shape
    gx, gy = _sobel_int(img)
    mag = jnp.abs(gx) + jnp.abs(gy)
    mp = jnp.pad(mag, 1)  # zero outside the image

    def m(dy, dx):
        return mp[1 + dy:1 + dy + H, 1 + dx:1 + dx + W]

    x = jnp.abs(gx)
    y = jnp.abs(gy) << _SHIFT
    tg22x = x * _TG22
    tg67x = tg22x + (x << (_SHIFT + 1))
    horizontal = y < tg22x
    vertical = (~horizontal) & (y > tg67x)
    s_pos = (gx ^ gy) >= 0  # s = +1: compare up-left and down-right
    keep_h = (mag > m(0, -1)) & (mag >= m(0, 1))
    keep_v = (mag > m(-1, 0)) & (mag >= m(1, 0))
    keep_d = jnp.where(s_pos, (mag > m(-1, -1)) & (mag > m(1, 1)),
                       (mag > m(-1, 1)) & (mag > m(1, -1)))
    nms = jnp.where(horizontal, keep_h, jnp.where(vertical, keep_v, keep_d))
    weak = nms & (mag > low_i)
    strong = weak & (mag > high_i)

    def cond(c):
        return c[1]

    def body(c):
        edges, _ = c
        grown = edges | (weak & _dilate3(edges))
        return grown, jnp.any(grown != edges)

    edges, _ = lax.while_loop(cond, body, (strong, jnp.asarray(True)))
    return edges


def distance_to_edges(edges, cap: int = 20):
    """Euclidean distance (float32, (H, W)) from each pixel to the nearest ``True``
    pixel of ``edges``, truncated at ``cap`` (``cap`` where none is that close)."""
    cap = int(cap)
    H, W = edges.shape
    big = jnp.float32(4 * cap * cap + 1)
    ep = jnp.pad(edges, ((0, 0), (cap, cap)))
    row = jnp.full((H, W), big)
    for dx in range(-cap, cap + 1):
        hit = ep[:, cap + dx:cap + dx + W]
        row = jnp.where(hit, jnp.minimum(row, float(dx * dx)), row)
    rp = jnp.pad(row, ((cap, cap), (0, 0)), constant_values=big)
    d2 = jnp.full((H, W), big)
    for dy in range(-cap, cap + 1):
        d2 = jnp.minimum(d2, rp[cap + dy:cap + dy + H] + float(dy * dy))
    return jnp.minimum(jnp.sqrt(d2), float(cap))
