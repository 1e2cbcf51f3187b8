"""Blur corruptions: defocus, glass, motion, zoom, gaussian.

Single image ``(H, W, C)`` float32 in [0, 1] -> same.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from . import image_ops


def disk_kernel(radius, alias_blur, half: int = 8, ksize: int = 3):
    """The reference ``disk``: an aliased disk on a 17x17 grid (or
    ``2*radius+1`` for radius > 8), normalised, then smoothed by a 3x3 (5x5 for
    radius > 8) Gaussian (cv2.GaussianBlur, sigma ``alias_blur``,
    BORDER_REFLECT_101).  ``half``/``ksize`` are static, radius/alias traced."""
    L = jnp.arange(-half, half + 1, dtype=jnp.float32)
    X, Y = jnp.meshgrid(L, L)
    d = ((X ** 2 + Y ** 2) <= radius ** 2).astype(jnp.float32)
    d = d / jnp.sum(d)
    t = jnp.arange(ksize, dtype=jnp.float32) - (ksize - 1) / 2
    g = jnp.exp(-(t ** 2) / (2 * jnp.asarray(alias_blur, jnp.float32) ** 2))
    g = g / jnp.sum(g)
    return image_ops.conv2d(d, g[:, None] * g[None, :], "reflect")


def defocus_blur(key, x, p):
    """Filter with the anti-aliased disk (cv2.filter2D, BORDER_REFLECT_101), by FFT."""
    del key
    k = disk_kernel(p["radius"], p["alias_blur"], p["half"], p["ksize"])
    return image_ops.fft_conv2d(x, k, "reflect")


def gaussian_blur(key, x, p):
    """``skimage.filters.gaussian`` (truncate 4, mode 'nearest')."""
    del key
    return image_ops.gaussian_blur_dyn(x, p["sigma"], p["kmax"])


def _swap_loop(x, offs, d: int, iters: int):
    """The reference's sequential pixel "swaps" on ONE (H, W, C) image: every pixel
    from the bottom-right to the top-left, ``iters`` times, meets the pixel at its
    random offset ``offs[t] = (dx, dy)``; later swaps see earlier ones.

    The reference writes ``x[h, w], x[h', w'] = x[h', w'], x[h, w]``. On an RGB array
    both right-hand sides are numpy *views*, so the first assignment overwrites the
    pixel the second one reads: the pixel at the offset is copied onto ``(h, w)`` and
    keeps its value (no swap). On a 2-D grayscale array they are scalars and the
    pixels do swap. Both are reproduced (``C == 3``: copy; ``C == 1``: swap).
    """
    H, W, C = x.shape
    copy = C == 3
    nh, nw = H - 2 * d, W - 2 * d
    n = nh * nw

    def body(t, img):
        j = t % n
        h = H - d - j // nw
        w = W - d - j % nw
        dx, dy = offs[t, 0], offs[t, 1]
        hp, wp = h + dy, w + dx
        a = lax.dynamic_slice(img, (h, w, 0), (1, 1, C))
        b = lax.dynamic_slice(img, (hp, wp, 0), (1, 1, C))
        img = lax.dynamic_update_slice(img, b, (h, w, 0))
        if copy:
            return img
        return lax.dynamic_update_slice(img, a, (hp, wp, 0))

    return lax.fori_loop(0, iters * n, body, x, unroll=4)


def _swaps(x, offs, d: int, iters: int):
    """:func:`_swap_loop`, batched by ``lax.map`` instead of ``vmap``: a vmapped loop
    would turn each in-place update into a scatter over the whole batch, making the
    per-image cost grow with the batch size."""
    f = jax.custom_batching.custom_vmap(lambda x, offs: _swap_loop(x, offs, d, iters))

    @f.def_vmap
    def _rule(axis_size, in_batched, x, offs):
        xb, ob = in_batched
        x = x if xb else jnp.broadcast_to(x, (axis_size,) + x.shape)
        offs = offs if ob else jnp.broadcast_to(offs, (axis_size,) + offs.shape)
        return lax.map(lambda a: _swaps(a[0], a[1], d, iters), (x, offs)), True

    return f(x, offs)


def glass_blur(key, x, p):
    """Gaussian blur, uint8 truncation, local pixel shuffling, Gaussian blur.

    The reference's triple Python loop (iterations x rows x columns, visiting
    pixels bottom-right to top-left and swapping each with a random neighbour
    at offset in ``[-max_delta, max_delta)``) is kept sequential and exact as
    one ``lax.fori_loop`` over a precomputed table of random offsets, so later
    swaps see earlier ones like in the original, including its copy-instead-of-swap
    on RGB images (see :func:`_swap_loop`).
    """
    sigma, d, iters = p["sigma"], int(p["max_delta"]), int(p["iterations"])
    kmax = p["kmax"]
    H, W = x.shape[:2]
    x = jnp.floor(image_ops.gaussian_blur_dyn(x, sigma, kmax) * 255.0) / 255.0  # np.uint8()
    nh, nw = max(H - 2 * d, 0), max(W - 2 * d, 0)
    n = nh * nw
    if n > 0 and iters > 0:
        # dx, dy = np.random.randint(-d, d, size=(2,))
        bits = jax.random.bits(key, (iters * n, 2), jnp.uint32)
        offs = (image_ops.uniform24(bits) * (2 * d)).astype(jnp.int32) - d
        x = _swaps(x, offs, d, iters)
    return image_ops.gaussian_blur_dyn(x, sigma, kmax)


def motion_blur(key, x, p):
    """Motion blur at an angle drawn uniformly in [-45, 45] degrees.

    Kernel as imagecorruptions' numpy re-implementation of ImageMagick's
    ``MotionBlurImage`` (CIFAR-10-C called Wand/ImageMagick directly): a
    one-sided Gaussian of width ``2*radius+1`` along the angle, integer pixel
    offsets, edge replication.
    """
    angle = jax.random.uniform(key, (), minval=-45.0, maxval=45.0)
    return image_ops.motion_blur_dyn(x, p["radius"], p["sigma"], angle, p["wmax"])


def zoom_blur(key, x, p):
    """Average of the image and its centre zooms by each factor in ``zooms``
    (bilinear ``clipped_zoom``, same crop/trim as the reference)."""
    del key
    zooms = p["zooms"]  # padded to a static length; only n_zooms are used
    valid = jnp.arange(zooms.shape[0]) < p["n_zooms"]

    def body(i, acc):
        return acc + jnp.where(valid[i], image_ops.clipped_zoom_dyn(x, zooms[i]), 0.0)

    out = lax.fori_loop(0, zooms.shape[0], body, jnp.zeros_like(x))
    return (x + out) / (p["n_zooms"] + 1)
