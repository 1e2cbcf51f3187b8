"""Weather corruptions: snow, frost, fog, spatter.

Single image ``(H, W, C)`` float32 in [0, 1] -> same.
"""

from __future__ import annotations

import jax.numpy as jnp

from . import image_ops
from .canny import canny, distance_to_edges
from .frost_texture import frost_layer


def _gray(x):
    return image_ops.rgb_to_gray(x) if x.shape[-1] == 3 else x


# ---------------------------------------------------------------- snow

def snow(key, x, p):
    """Snow layer = N(loc, scale) noise, centre-zoomed by ``zoom``, values
    below ``threshold`` zeroed, motion-blurred (angle in [-135, -45] deg),
    rounded to 8 bit; image brightened towards ``1.5*gray + .5`` with weight
    ``1 - gray_mix``; snow added together with its 180-degree rotation."""
    H, W = x.shape[:2]
    u_layer, u_angle = image_ops.uniforms(key, (H, W, 1), ())
    layer = p["loc"] + p["scale"] * image_ops.to_normal(u_layer)
    layer = image_ops.clipped_zoom_dyn(layer, p["zoom"])
    layer = jnp.where(layer < p["threshold"], 0.0, layer)
    layer = jnp.clip(layer, 0.0, 1.0)
    angle = -135.0 + 90.0 * u_angle
    layer = image_ops.motion_blur_dyn(layer, p["blur_radius"], p["blur_sigma"],
                                      angle, p["wmax"])
    layer = jnp.round(layer * 255.0) / 255.0
    c6 = p["gray_mix"]
    x = c6 * x + (1 - c6) * jnp.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + jnp.rot90(layer, 2, axes=(0, 1))


# ---------------------------------------------------------------- frost

def frost(key, x, p):
    """``image_weight * x + frost_weight * layer``: the layer is a random crop of a
    procedural frost field with the mean colour and crop contrast of one of the
    reference's five photographs (see :mod:`rws_jax.corruptions.frost_texture`)."""
    H, W, C = x.shape
    tex = frost_layer(key, H, W, channels=C, photo_scale=p["photo_scale"])
    return p["image_weight"] * x + p["frost_weight"] * tex


# ---------------------------------------------------------------- fog

def plasma_fractal(key, mapsize: int, wibbledecay: float):
    """Diamond-square height map in [0, 1] (the reference's ``plasma_fractal``:
    same update rule, same wibble schedule; static Python loop over the
    log2(mapsize) levels, strided ``.at[].set`` inside a level)."""
    assert mapsize & (mapsize - 1) == 0
    m = jnp.zeros((mapsize, mapsize), jnp.float32)
    shapes, step = [], mapsize
    while step >= 2:
        n, h = mapsize // step, mapsize // step
        shapes += [(n, n), (n, n), (n, n)]
        step //= 2
    draws = iter(image_ops.uniforms(key, *shapes))
    step = mapsize
    wibble = jnp.asarray(100.0, jnp.float32)
    while step >= 2:
        ka = kb = kc = None
        half = step // 2

        def wibbled(arr, k, w=wibble):
            u = next(draws)
            return arr / 4 + w * (2.0 * w * u - w)

        corner = m[0::step, 0::step]
        sq = corner + jnp.roll(corner, -1, axis=0)
        sq = sq + jnp.roll(sq, -1, axis=1)
        m = m.at[half::step, half::step].set(wibbled(sq, ka))
        dr = m[half::step, half::step]
        ul = m[0::step, 0::step]
        lt = dr + jnp.roll(dr, 1, axis=0) + ul + jnp.roll(ul, -1, axis=1)
        m = m.at[0::step, half::step].set(wibbled(lt, kb))
        tt = dr + jnp.roll(dr, 1, axis=1) + ul + jnp.roll(ul, -1, axis=0)
        m = m.at[half::step, 0::step].set(wibbled(tt, kc))
        step //= 2
        wibble /= wibbledecay
    m = m - m.min()
    return m / m.max()


def fog(key, x, p):
    """``(x + strength * plasma) * max(x) / (max(x) + strength)``; the plasma
    map side is the next power of two >= max(H, W), cropped top-left."""
    H, W = x.shape[:2]
    size = 1 << (max(H, W) - 1).bit_length()
    c0 = p["strength"]
    max_val = jnp.max(x)
    fractal = plasma_fractal(key, size, p["wibble_decay"])[:H, :W, None]
    return (x + c0 * fractal) * max_val / (max_val + c0)


# ---------------------------------------------------------------- spatter

_WATER = (175 / 255.0, 238 / 255.0, 238 / 255.0)  # pale turquoise (RGB)
_MUD = (63 / 255.0, 42 / 255.0, 20 / 255.0)  # mud brown


def _equalize_hist(v, nbins: int = 256):
    """cv2.equalizeHist on integer-valued float ``v`` in [0, nbins) (nbins <= 256).
    The histogram is one scatter-add: counting it by comparisons took one full reduction
    per bin on XLA:CPU, the largest part of spatter's time at 224 px."""
    vi = jnp.clip(v, 0, nbins - 1).astype(jnp.int32)
    hist = jnp.zeros((nbins,), jnp.int32).at[vi].add(1, mode="drop").astype(jnp.float32)
    cdf = jnp.cumsum(hist)
    total = cdf[-1]
    first = jnp.argmax(hist > 0)
    h0 = hist[first]
    scale = 255.0 / jnp.maximum(total - h0, 1.0)
    lut = jnp.clip(jnp.round((cdf - h0) * scale), 0, 255)
    return jnp.where(h0 >= total, v, lut[vi].astype(jnp.float32))


def spatter(key, x, p):
    """Water (severities with ``mud == 0``) or mud (``mud == 1``) splashes.

    Liquid layer = N(loc, scale) noise, Gaussian-blurred by ``sigma``, values
    below ``threshold`` zeroed.  Mud: blurred mask, kept where >= 0.8, blended
    as brown.  Water: the reference's OpenCV chain: ``cv2.Canny(l8, 50, 150)``
    (exact, :func:`rws_jax.corruptions.canny.canny`), the Euclidean distance to
    the edges truncated at 20 (``cv2.distanceTransform(DIST_L2, 5)`` +
    ``THRESH_TRUNC``; OpenCV's 5x5 mask approximates the Euclidean distance, we
    compute it exactly: differences below 0.4), 3x3 box blur, histogram
    equalisation, the same emboss kernel with 8-bit saturation, 3x3 box blur;
    then ``x + m * turquoise`` with ``m = liquid * dist / max * intensity``.
    """
    H, W, C = x.shape
    liquid = p["loc"] + p["scale"] * image_ops.normal16(key, (H, W))
    liquid = image_ops.gaussian_blur_dyn(liquid, p["sigma"], p["kmax"])
    liquid = jnp.where(liquid < p["threshold"], 0.0, liquid)
    if p["mud"]:
        m = (liquid > p["threshold"]).astype(jnp.float32)
        m = image_ops.gaussian_blur_dyn(m, p["intensity_or_sigma"], p["kmax_mud"])
        m = jnp.where(m < 0.8, 0.0, m)[..., None]
        color = jnp.asarray(_MUD, jnp.float32)
        if C != 3:
            color = image_ops.rgb_to_gray(color[None, None])[0, 0]
        return x * (1 - m) + color * m
    l8 = jnp.clip(jnp.floor(liquid * 255.0), 0.0, 255.0)
    edges = canny(l8, 50.0, 150.0)
    dist = distance_to_edges(edges, 20)
    dist = jnp.floor(image_ops.box_blur3(dist))  # in [0, 20]
    dist = _equalize_hist(dist, 21)
    ker = jnp.asarray([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], jnp.float32)
    dist = jnp.clip(jnp.round(image_ops.conv2d(dist, ker, "reflect")), 0.0, 255.0)
    dist = image_ops.box_blur3(dist)
    m = l8 * dist
    m = m / jnp.maximum(jnp.max(m), 1e-12) * p["intensity_or_sigma"]
    add = jnp.clip(m[..., None] * jnp.asarray(_WATER, jnp.float32), 0.0, 1.0)
    if C != 3:
        return x + image_ops.rgb_to_gray(add)
    return x + add
