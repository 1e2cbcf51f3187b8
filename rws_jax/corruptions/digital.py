"""Digital corruptions: brightness, contrast, elastic, pixelate, JPEG, saturate.

Single image ``(H, W, C)`` float32 in [0, 1] -> same.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from . import image_ops
from .jpeg import jpeg_roundtrip


def brightness(key, x, p):
    """HSV value + ``delta_v`` (skimage rgb2hsv/hsv2rgb, closed form);
    grayscale: ``x + delta_v`` (as imagecorruptions)."""
    del key
    if x.shape[-1] != 3:
        return x + p["delta_v"]
    return image_ops.hsv_value_add(x, p["delta_v"])


def contrast(key, x, p):
    """``(x - mean) * factor + mean`` with per-channel image means."""
    del key
    m = jnp.mean(x, axis=(0, 1), keepdims=True)
    return (x - m) * p["factor"] + m


def saturate(key, x, p):
    """HSV saturation ``S * scale + shift`` (skimage semantics, closed form).

    Grayscale input is returned unchanged: imagecorruptions stacks it to RGB,
    whose hue/saturation are 0, and keeps the red channel, which equals V.
    """
    del key
    if x.shape[-1] != 3:
        return x
    return image_ops.hsv_saturation_affine(x, p["scale"], p["shift"])


def pixelate(key, x, p):
    """PIL BOX downsampling to ``int(size * factor)`` then back up with
    nearest neighbour (imagecorruptions uses NEAREST; CIFAR-10-C used BOX,
    which for upsampling selects the same single source pixel). The factor is
    static (it sets the small image's shape).

    The two resamplings are done at once, without gathers: the nearest upsampling
    gives output pixel ``y`` the small pixel whose box window contains ``y``, so the
    output is, per axis, the mean of a static run of 2-3 neighbours
    (:func:`~rws_jax.corruptions.image_ops.box_nearest_sum`: shifted slices times
    constant 0/1 vectors). The 8-bit block sums are exact; the mean is rounded half
    up to 8 bits, once."""
    del key
    H, W, _ = x.shape
    f = float(p["factor"])
    h = max(1, int(H * f + 1e-6))
    w = max(1, int(W * f + 1e-6))
    v = jnp.round(x * 255.0)  # PIL works on 8-bit images
    s, ch = image_ops.box_nearest_sum(v, h, axis=0)
    # a barrier, or XLA fuses the first pass into each shifted read of the second
    s, cw = image_ops.box_nearest_sum(lax.optimization_barrier(s), w, axis=1)
    count = jnp.asarray((ch[:, None] * cw[None, :])[..., None], jnp.float32)
    return jnp.floor(s / count + 0.5) / 255.0


def jpeg_compression(key, x, p):
    """Baseline JPEG round trip at ``quality`` (see :mod:`.jpeg`; the quality is
    static, so the quantisation tables are compile-time constants)."""
    del key
    return jpeg_roundtrip(x, int(p["quality"]), bool(p.get("subsample", True)))


def _affine_from_points(src, dst):
    """cv2.getAffineTransform: 2x3 ``M`` with ``dst = M @ [src, 1]``."""
    A = jnp.concatenate([src, jnp.ones((3, 1), src.dtype)], axis=1)  # 3x3
    return jnp.linalg.solve(A, dst).T  # 2x3


def elastic_transform(key, x, p):
    """Elastic deformation (Simard et al.), per the two references.

    cifar10 preset (make_cifar_c.py): random affine (three control points
    moved by U(-affine, affine) pixels; cv2.warpAffine, bilinear,
    BORDER_REFLECT_101) followed by a displacement field
    ``gaussian(U(-1, 1), sigma, reflect, truncate=3) * alpha``; all three
    constants are fractions of the image size.  imagenet preset
    (imagecorruptions): no affine; ``gaussian(U(-max_d, max_d), sigma) * alpha``
    with ``sigma = 0.01*size``, ``max_d = 0.005*size``.  The displaced image
    is sampled bilinearly with ``jax.scipy.ndimage.map_coordinates``
    (mode 'reflect').
    """
    H, W, _ = x.shape
    u_aff, ux, uy = image_ops.uniforms(key, (3, 2), (H, W), (H, W))
    rows = jnp.arange(H, dtype=jnp.float32)[:, None] * jnp.ones((1, W))
    cols = jnp.ones((H, 1)) * jnp.arange(W, dtype=jnp.float32)[None, :]
    if "affine_frac" in p:  # cifar10
        size = min(H, W)
        alpha = p["alpha_frac"] * size
        sigma = p["sigma_frac"] * size
        c2 = p["affine_frac"] * size
        cx, cy = float(W // 2), float(H // 2)
        sq = float(size // 3)
        # points are (x, y) = (column, row) for cv2
        pts1 = jnp.asarray([[cx + sq, cy + sq], [cx + sq, cy - sq],
                            [cx - sq, cy - sq]], jnp.float32)
        pts2 = pts1 + (2.0 * u_aff - 1.0) * c2
        M = _affine_from_points(pts1, pts2)
        full = jnp.concatenate([M, jnp.asarray([[0.0, 0.0, 1.0]])], axis=0)
        inv = jnp.linalg.inv(full)
        src_x = inv[0, 0] * cols + inv[0, 1] * rows + inv[0, 2]
        src_y = inv[1, 0] * cols + inv[1, 1] * rows + inv[1, 2]
        x = image_ops.bilinear_sample(x, src_y, src_x, mode="mirror")
        ux = 2.0 * ux - 1.0
        uy = 2.0 * uy - 1.0
        sig = (sigma, sigma)
    else:  # imagenet / imagecorruptions
        alpha = p["alpha"]
        md = p["max_d_frac"] * H
        ux = (2.0 * ux - 1.0) * md
        uy = (2.0 * uy - 1.0) * md
        sig = (p["sigma_frac"] * H, p["sigma_frac"] * W)
    dx = image_ops.gaussian_blur_dyn(ux, sig, p["kmax"], 3.0, "symmetric") * alpha
    dy = image_ops.gaussian_blur_dyn(uy, sig, p["kmax"], 3.0, "symmetric") * alpha
    return image_ops.bilinear_sample(x, rows + dy, cols + dx, mode="reflect")
