"""Small image operators shared by the corruptions (pure jax.numpy / lax).

Every function here works on ONE image of shape ``(H, W, C)`` (or a 2-D map
``(H, W)``) holding float32 values in ``[0, 1]``; batching is done by
``jax.vmap`` in :mod:`rws_jax.corruptions.registry`.  Kernels are built from
Python/jnp constants at trace time, so the functions are jit- and vmap-able.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates
from jax.scipy.special import ndtri
import numpy as np
from jax import lax

# ----------------------------------------------------------------------------
# padding / convolution
# ----------------------------------------------------------------------------

# numpy pad-mode names for the border rules of the libraries the reference uses
#   cv2 BORDER_REFLECT_101 (filter2D default) -> 'reflect'   (d c b | a b c d | c b a)
#   skimage.filters.gaussian default 'nearest' -> 'edge'
#   scipy 'reflect'                            -> 'symmetric' (d c b a | a b c d | d c b a)


def _as_hwc(x):
    squeeze = x.ndim == 2
    if squeeze:
        x = x[..., None]
    return x, squeeze


def conv2d(x, kernel, pad_mode="reflect"):
    """Correlate every channel of ``x`` (H, W[, C]) with a 2-D ``kernel``.

    Border handled by padding with ``jnp.pad(mode=pad_mode)``; output has the
    input's spatial size (the kernel anchor is its centre, like cv2.filter2D).
    """
    x, squeeze = _as_hwc(x)
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    xp = _pad(x, ph, pw, pad_mode)
    if kh * kw <= 25:
        # small kernels: a sum of shifted copies (one fused loop; XLA's CPU convolution
        # is slow for single-channel images)
        H, W = x.shape[:2]
        k = jnp.asarray(kernel, x.dtype)
        out = jnp.zeros_like(x)
        for i in range(kh):
            for j in range(kw):
                out = out + k[i, j] * xp[i:i + H, j:j + W]
        return out[..., 0] if squeeze else out
    # (C, 1, H, W) as a batch of single-channel images
    lhs = jnp.transpose(xp, (2, 0, 1))[:, None]
    rhs = jnp.asarray(kernel, x.dtype)[None, None]
    out = lax.conv_general_dilated(lhs, rhs, (1, 1), "VALID",
                                   precision=lax.Precision.HIGHEST)
    out = jnp.transpose(out[:, 0], (1, 2, 0))
    return out[..., 0] if squeeze else out


def _fast_len(n: int) -> int:
    """Smallest m >= n whose prime factors are 2, 3 and 5 (a fast FFT length)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def fft_conv2d(x, kernel, pad_mode="reflect"):
    """:func:`conv2d` computed in the Fourier domain: same result (up to float32
    rounding, ~1e-6), cost independent of the kernel size.

    The image is padded by the kernel's half-size with ``pad_mode`` (so the border
    rule is the same as :func:`conv2d`), zero-extended to a fast FFT length, and
    circularly convolved; the wrap-around never reaches the kept centre.
    """
    x, squeeze = _as_hwc(x)
    H, W, C = x.shape
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    xp = _pad(x, ph, pw, pad_mode)
    Hf, Wf = _fast_len(xp.shape[0]), _fast_len(xp.shape[1])
    xp = jnp.pad(xp, ((0, Hf - xp.shape[0]), (0, Wf - xp.shape[1]), (0, 0)))
    # correlation = convolution with the flipped kernel, centred at the origin
    k = jnp.asarray(kernel, jnp.float32)[::-1, ::-1]
    kf = jnp.zeros((Hf, Wf), jnp.float32).at[:kh, :kw].set(k)
    kf = jnp.roll(kf, (-ph, -pw), axis=(0, 1))
    X = jnp.fft.rfft2(xp, axes=(0, 1))
    K = jnp.fft.rfft2(kf)
    out = jnp.fft.irfft2(X * K[..., None], s=(Hf, Wf), axes=(0, 1))[ph:ph + H, pw:pw + W]
    return out[..., 0] if squeeze else out


def _pad(x, ph, pw, mode):
    """Pad (H, W, C) spatially; falls back to repeated padding when the pad is
    wider than the image (numpy's reflect needs pad < size)."""
    H, W = x.shape[:2]
    if mode in ("reflect", "symmetric") and (ph >= H or pw >= W):
        # pad in several rounds so that each round is legal
        while ph > 0 or pw > 0:
            h, w = x.shape[:2]
            sh = min(ph, h - 1 if mode == "reflect" else h)
            sw = min(pw, w - 1 if mode == "reflect" else w)
            x = jnp.pad(x, ((sh, sh), (sw, sw), (0, 0)), mode=mode)
            ph, pw = ph - sh, pw - sw
        return x
    return jnp.pad(x, ((ph, ph), (pw, pw), (0, 0)), mode=mode)


def gaussian_kernel_1d(sigma: float, truncate: float = 4.0):
    """scipy.ndimage / skimage Gaussian taps: radius int(truncate*sigma+0.5)."""
    radius = int(truncate * float(sigma) + 0.5)
    if sigma <= 0 or radius == 0:
        return jnp.ones((1,), jnp.float32)
    t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    k = jnp.exp(-0.5 * (t / sigma) ** 2)
    return k / jnp.sum(k)


def gaussian_blur(x, sigma, truncate: float = 4.0, pad_mode: str = "edge"):
    """``skimage.filters.gaussian`` over the two spatial axes (separable).

    ``sigma`` may be a float or an (sigma_y, sigma_x) pair of Python floats.
    """
    if isinstance(sigma, (tuple, list)):
        sy, sx = (float(s) for s in sigma)
    else:
        sy = sx = float(sigma)
    ky = gaussian_kernel_1d(sy, truncate)
    kx = gaussian_kernel_1d(sx, truncate)
    if ky.shape[0] > 1:
        x = conv2d(x, ky[:, None], pad_mode)
    if kx.shape[0] > 1:
        x = conv2d(x, kx[None, :], pad_mode)
    return x


def box_blur3(x):
    """cv2.blur(x, (3, 3)) with the default BORDER_REFLECT_101."""
    return conv2d(x, jnp.full((3, 3), 1.0 / 9.0, jnp.float32), "reflect")


# ----------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------

def shift_edge(x, dy, dx):
    """``out[y, x] = img[clip(y - dy), clip(x - dx)]`` with (traced) integer
    shifts: the edge-replicating shift of imagecorruptions' ``shift``."""
    H, W = x.shape[:2]
    rows = jnp.clip(jnp.arange(H) - dy, 0, H - 1)
    cols = jnp.clip(jnp.arange(W) - dx, 0, W - 1)
    return jnp.take(jnp.take(x, rows, axis=0), cols, axis=1)


def motion_blur(x, radius: int, sigma: float, angle_deg):
    """ImageMagick ``MotionBlurImage`` as re-implemented by imagecorruptions.

    One-sided Gaussian kernel of width ``2*radius+1`` laid along ``angle``
    (degrees, may be traced); taps beyond the image border are dropped
    (the reference's ``break``), edges are replicated.
    """
    radius = int(radius)
    width = 2 * radius + 1
    i = jnp.arange(width, dtype=jnp.float32)
    k = jnp.exp(-(i ** 2) / (2.0 * float(sigma) ** 2))
    k = k / jnp.sum(k)
    a = jnp.deg2rad(angle_deg)
    sin, cos = jnp.sin(a), jnp.cos(a)
    H, W = x.shape[:2]
    out = jnp.zeros_like(x)
    alive = jnp.asarray(True)
    for t in range(width):
        dy = -jnp.ceil(t * sin - 0.5).astype(jnp.int32)
        dx = -jnp.ceil(t * cos - 0.5).astype(jnp.int32)
        alive = alive & (jnp.abs(dy) < H) & (jnp.abs(dx) < W)
        out = out + jnp.where(alive, k[t], 0.0) * shift_edge(x, dy, dx)
    return out


def _zoom_coords(n: int, z: float):
    """Source coordinates of ``clipped_zoom`` along one axis (Python floats).

    Reference: crop the centre ``ch = ceil(n / z)`` pixels, ``scipy.ndimage.zoom``
    (order 1, corner-aligned) them to ``round(ch * z)`` pixels and trim the
    centre ``n``.  Returns the source coordinate of each output pixel.
    """
    ch = int(math.ceil(n / float(z)))
    top = (n - ch) // 2
    out = int(round(ch * z))
    trim = (out - n) // 2
    if out <= 1:
        return [float(top)] * n
    step = (ch - 1) / (out - 1)
    coords = []
    for o in range(n):
        j = min(max(o + trim, 0), out - 1)
        coords.append(top + j * step)
    return coords


def clipped_zoom(x, z: float):
    """Centre zoom by a static factor ``z >= 1`` (bilinear), same size out."""
    x, squeeze = _as_hwc(x)
    H, W, C = x.shape
    cy = jnp.asarray(_zoom_coords(H, z), jnp.float32)
    cx = jnp.asarray(_zoom_coords(W, z), jnp.float32)
    out = bilinear_sample(x, cy[:, None] * jnp.ones((1, W)),
                          jnp.ones((H, 1)) * cx[None, :], mode="nearest")
    return out[..., 0] if squeeze else out


def bilinear_sample(x, rows, cols, mode="nearest"):
    """Sample every channel of (H, W, C) ``x`` at float ``rows``/``cols``
    (each (H', W')) with ``jax.scipy.ndimage.map_coordinates(order=1)``."""
    def one(ch):
        return map_coordinates(ch, [rows, cols], order=1, mode=mode)

    return jax.vmap(one, in_axes=2, out_axes=2)(x)


def nearest_index(n_in: int, n_out: int):
    """PIL ``Image.NEAREST`` source index of each output pixel (host int32 array)."""
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int32)
    return np.clip(idx, 0, n_in - 1)


# ----------------------------------------------------------------------------
# colour
# ----------------------------------------------------------------------------

def rgb_to_gray(x):
    """cv2 COLOR_RGB2GRAY weights (ITU-R 601); returns (H, W, 1)."""
    w = jnp.asarray([0.299, 0.587, 0.114], x.dtype)
    return jnp.sum(x * w, axis=-1, keepdims=True)


def hsv_value_add(x, c):
    """skimage rgb2hsv -> V = clip(V + c) -> hsv2rgb, in closed form.

    Every RGB channel of ``hsv2rgb`` is V times a factor of (H, S) only, so
    moving V scales the pixel; black pixels (S = H = 0 in skimage) turn grey.
    """
    v = jnp.max(x, axis=-1, keepdims=True)
    v2 = jnp.clip(v + c, 0.0, 1.0)
    safe = jnp.where(v > 0, v, 1.0)
    return jnp.where(v > 0, x * (v2 / safe), v2 * jnp.ones_like(x))


def hsv_saturation_affine(x, a, b):
    """skimage rgb2hsv -> S = clip(S * a + b) -> hsv2rgb, in closed form.

    With H and V fixed, ``rgb = V - V*S*f(H)`` per channel, so
    ``rgb' = V - (V - rgb) * S'/S``; achromatic pixels have H = 0 in skimage,
    which hsv2rgb maps to (V, V(1-S'), V(1-S')) (a red tint when b > 0).
    """
    v = jnp.max(x, axis=-1, keepdims=True)
    mn = jnp.min(x, axis=-1, keepdims=True)
    s = jnp.where(v > 0, (v - mn) / jnp.where(v > 0, v, 1.0), 0.0)
    s2 = jnp.clip(s * a + b, 0.0, 1.0)
    chroma = jnp.where(s > 0, v - (v - x) * (s2 / jnp.where(s > 0, s, 1.0)), 0.0)
    red = jnp.concatenate([v, v * (1 - s2), v * (1 - s2)], axis=-1)
    return jnp.where(s > 0, chroma, red)


# ----------------------------------------------------------------------------
# kernels with traced parameters (one compilation for all severities)
# ----------------------------------------------------------------------------

def gaussian_taps(sigma, kmax: int, truncate: float = 4.0):
    """Gaussian taps on a static grid ``[-kmax, kmax]`` for a possibly traced
    ``sigma``; taps beyond scipy's radius ``int(truncate*sigma + .5)`` are 0,
    so the result equals :func:`gaussian_kernel_1d` zero-padded."""
    t = jnp.arange(-kmax, kmax + 1, dtype=jnp.float32)
    sigma = jnp.asarray(sigma, jnp.float32)
    radius = jnp.floor(truncate * sigma + 0.5)
    safe = jnp.maximum(sigma, 1e-6)
    k = jnp.where(jnp.abs(t) <= radius, jnp.exp(-0.5 * (t / safe) ** 2), 0.0)
    return k / jnp.sum(k)


def gaussian_blur_dyn(x, sigma, kmax: int, truncate: float = 4.0,
                      pad_mode: str = "edge"):
    """:func:`gaussian_blur` with a traced sigma (scalar or (sy, sx)), computed by FFT
    (:func:`fft_conv2d`), so its cost does not grow with the blur."""
    if kmax <= 0:
        return x
    if isinstance(sigma, (tuple, list)):
        sy, sx = sigma
    else:
        sy = sx = sigma
    ky = gaussian_taps(sy, kmax, truncate)
    kx = gaussian_taps(sx, kmax, truncate)
    # the separable filter as one 2-D kernel in the Fourier domain: the padding modes
    # are separable, so this equals the row pass followed by the column pass
    return fft_conv2d(x, ky[:, None] * kx[None, :], pad_mode)


def gauss_radius(sigma: float, truncate: float = 4.0) -> int:
    return int(truncate * float(sigma) + 0.5) if sigma > 0 else 0


def motion_blur_dyn(x, radius, sigma, angle_deg, wmax: int):
    """:func:`motion_blur` with traced ``radius``/``sigma``: a ``fori_loop``
    over ``2*wmax+1`` taps (small compiled program), taps ``>= 2*radius+1``
    get weight 0."""
    width = 2 * int(wmax) + 1
    i = jnp.arange(width, dtype=jnp.float32)
    sigma = jnp.asarray(sigma, jnp.float32)
    k = jnp.exp(-(i ** 2) / (2.0 * sigma ** 2))
    k = jnp.where(i < 2 * jnp.asarray(radius, jnp.float32) + 1, k, 0.0)
    k = k / jnp.sum(k)
    a = jnp.deg2rad(angle_deg)
    sin, cos = jnp.sin(a), jnp.cos(a)
    x, squeeze = _as_hwc(x)
    H, W, C = x.shape
    # |shift| <= width - 1: an edge-padded copy turns each shift into one contiguous
    # dynamic_slice (out[y, x] = img[clip(y - dy), clip(x - dx)])
    P = width
    xp = jnp.pad(x, ((P, P), (P, P), (0, 0)), mode="edge")

    def body(t, carry):
        out, alive = carry
        tf = t.astype(jnp.float32)
        dy = -jnp.ceil(tf * sin - 0.5).astype(jnp.int32)
        dx = -jnp.ceil(tf * cos - 0.5).astype(jnp.int32)
        alive = alive & (jnp.abs(dy) < H) & (jnp.abs(dx) < W)
        shifted = lax.dynamic_slice(xp, (P - dy, P - dx, 0), (H, W, C))
        out = out + jnp.where(alive, k[t], 0.0) * shifted
        return out, alive

    out, _ = lax.fori_loop(0, width, body, (jnp.zeros_like(x), jnp.asarray(True)))
    return out[..., 0] if squeeze else out


def zoom_coords_dyn(n: int, z):
    """:func:`_zoom_coords` for a traced zoom factor (jnp)."""
    z = jnp.asarray(z, jnp.float32)
    ch = jnp.ceil(n / z)
    top = jnp.floor((n - ch) / 2)
    out = jnp.round(ch * z)
    trim = jnp.floor((out - n) / 2)
    step = jnp.where(out > 1, (ch - 1) / jnp.maximum(out - 1, 1), 0.0)
    o = jnp.arange(n, dtype=jnp.float32)
    j = jnp.clip(o + trim, 0, jnp.maximum(out - 1, 0))
    return top + j * step


def clipped_zoom_dyn(x, z):
    """:func:`clipped_zoom` with a traced zoom factor."""
    x, squeeze = _as_hwc(x)
    H, W, C = x.shape
    cy = zoom_coords_dyn(H, z)
    cx = zoom_coords_dyn(W, z)
    out = bilinear_sample(x, cy[:, None] * jnp.ones((1, W)),
                          jnp.ones((H, 1)) * cx[None, :], mode="nearest")
    return out[..., 0] if squeeze else out


# ----------------------------------------------------------------------------
# randomness: one PRNG call per corruption keeps the compiled program small
# ----------------------------------------------------------------------------

def uniforms(key, *shapes):
    """Independent U[0, 1) arrays of the given static shapes from ONE draw."""
    sizes = [math.prod(s) for s in shapes]
    flat = jax.random.uniform(key, (sum(sizes),), jnp.float32)
    out, start = [], 0
    for s, n in zip(shapes, sizes):
        out.append(flat[start:start + n].reshape(s))
        start += n
    return out


def to_normal(u):
    """Standard normal by inverse CDF of a uniform array."""
    eps = 1e-7
    return ndtri(jnp.clip(u, eps, 1.0 - eps))


def normal16(key, shape):
    """Standard normals of a static ``shape``, two per 32 random bits: Box-Muller on
    the two 16-bit halves of each word (half the random bits of ``jax.random.normal``,
    which dominate the cost of the noise corruptions on CPU). ``|z| <= 4.71``
    (``sqrt(2 ln 2**16)``): the tails beyond are cut, a 2.5e-6 probability."""
    n = math.prod(shape)
    bits = jax.random.bits(key, ((n + 1) // 2,), jnp.uint32)
    u1 = ((bits & 0xFFFF).astype(jnp.float32) + 1.0) * (1.0 / 65536.0)  # (0, 1]
    u2 = (bits >> 16).astype(jnp.float32) * (2.0 * math.pi / 65536.0)
    r = jnp.sqrt(-2.0 * jnp.log(u1))
    return jnp.concatenate([r * jnp.cos(u2), r * jnp.sin(u2)])[:n].reshape(shape)


def uniform24(bits):
    """U[0, 1) from the top 24 bits of uint32 ``bits`` (exact in float32)."""
    return (bits >> 8).astype(jnp.float32) * (1.0 / 16777216.0)


def box_taps(n_in: int, n_out: int):
    """PIL ``Image.BOX`` downsampling from ``n_in`` to ``n_out <= n_in`` pixels as
    host constants: output ``o`` averages the input pixels ``j`` whose centre lies in
    ``[c - s/2, c + s/2)`` (``c = (o + .5) s``, ``s = n_in / n_out``, in double
    precision as PIL), a contiguous run of ``floor(s)`` or ``ceil(s)`` pixels.

    Returns ``(index[K, n_out] int32, mask[K, n_out] bool, count[n_out])``: tap ``t`` of
    output ``o`` reads pixel ``index[t, o]`` when ``mask[t, o]``.
    """
    scale = n_in / n_out
    fs = max(scale, 1.0)
    o = np.arange(n_out)
    c = (o + 0.5) * scale
    lo = np.maximum(np.ceil(c - fs / 2 - 0.5).astype(np.int64) - 1, 0)
    K = int(math.ceil(fs)) + 2
    j = lo[None, :] + np.arange(K)[:, None]
    xs = j + 0.5
    mask = (xs >= c - fs / 2) & (xs < c + fs / 2) & (j < n_in)
    count = np.maximum(mask.sum(0), 1)
    return np.minimum(j, n_in - 1).astype(np.int32), mask, count


def box_downsample(x, n_out: int, axis: int = 0):
    """PIL ``Image.BOX`` downsampling of ``x`` along ``axis`` to a static ``n_out``
    (see :func:`box_taps`): a few gathers with constant indices. Exact (up to the
    final division) for integer-valued ``x``."""
    idx, mask, count = box_taps(x.shape[axis], int(n_out))
    shape = [1] * x.ndim
    shape[axis] = int(n_out)
    acc = None
    for t in range(idx.shape[0]):
        if not mask[t].any():
            continue
        term = jnp.take(x, jnp.asarray(idx[t]), axis=axis, mode="clip")
        if not mask[t].all():
            term = term * jnp.asarray(mask[t], x.dtype).reshape(shape)
        acc = term if acc is None else acc + term
    assert acc is not None  # box_taps gives every output pixel at least one tap
    return acc / jnp.asarray(count, x.dtype).reshape(shape)


def box_nearest_taps(n: int, m: int):
    """PIL ``BOX`` downsampling from ``n`` to ``m`` pixels followed by ``NEAREST``
    upsampling back to ``n``, along one axis, as host constants: output pixel ``y``
    is the mean of the box window of small pixel ``nearest_index(m, n)[y]``, i.e. of
    input pixels ``y + o`` for the offsets ``o`` with ``weight[o][y] == 1``.

    Returns ``(offsets tuple[int], weight[T, n] float32 0/1, count[n] float)``. The
    windows are runs of ``floor(n/m)`` or ``ceil(n/m)`` pixels that contain ``y``, so
    ``T`` is about ``2 * ceil(n/m) - 1`` (5 at 224 -> 89 px).
    """
    idx, mask, count = box_taps(n, m)
    up = nearest_index(m, n)
    offs = idx[:, up] - np.arange(n)[None, :]  # (K, n)
    msk = mask[:, up]
    offsets = tuple(sorted({int(o) for o in offs[msk]}))
    weight = np.stack([((offs == o) & msk).any(axis=0) for o in offsets]).astype(np.float32)
    return offsets, weight, count[up].astype(np.float64)


def box_nearest_sum(x, m: int, axis: int):
    """Window sums of :func:`box_nearest_taps` along ``axis`` of ``x``: a few static
    shifted slices times 0/1 constant vectors, one fused elementwise pass (no gather).
    Returns ``(sums, count)``: ``sums`` has ``x``'s shape, ``count`` (host) the window
    size of every position along ``axis``. Exact for integer-valued ``x``."""
    n = x.shape[axis]
    offsets, weight, count = box_nearest_taps(n, int(m))
    lo, hi = max(0, -offsets[0]), max(0, offsets[-1])
    pad = [(0, 0)] * x.ndim
    pad[axis] = (lo, hi)
    xp = jnp.pad(x, pad)
    shape = [1] * x.ndim
    shape[axis] = n
    acc = None
    for o, w in zip(offsets, weight):
        term = lax.slice_in_dim(xp, lo + o, lo + o + n, axis=axis)
        if not w.all():
            term = term * jnp.asarray(w, x.dtype).reshape(shape)
        acc = term if acc is None else acc + term
    assert acc is not None
    return acc, count
