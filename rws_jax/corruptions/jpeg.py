"""JPEG compression round trip in jax.numpy (baseline JPEG, no entropy coding).

RGB -> YCbCr (JFIF full range), optional 4:2:0 chroma subsampling (2x2 mean,
as libjpeg; PIL's default), level shift, 8x8 orthonormal DCT-II (identical
to the JPEG FDCT), quantisation with the Annex K tables scaled by quality
(libjpeg's ``jpeg_quality_scaling``, baseline clamp 1..255), dequantisation,
IDCT, 8-bit clamping, chroma upsampling (bilinear, ~libjpeg's "fancy"
upsampling), YCbCr -> RGB, 8-bit rounding.  Grayscale images are coded as a
single luminance plane.  Huffman coding is lossless and therefore omitted.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# ITU-T T.81 Annex K, natural (row-major) order
LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99)
CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99)


def quant_table(base, quality: int):
    """libjpeg ``jpeg_set_quality`` scaling of a base table (8x8 floats)."""
    q = jnp.clip(jnp.asarray(quality, jnp.float32), 1, 100)
    scale = jnp.where(q < 50, jnp.floor(5000 / q), 200 - 2 * q)
    b = jnp.asarray(base, jnp.float32).reshape(8, 8)
    return jnp.clip(jnp.floor((b * scale + 50) / 100), 1, 255)


def dct_matrix():
    """Orthonormal 8-point DCT-II matrix D (coefficients = D @ block @ D.T)."""
    rows = []
    for u in range(8):
        cu = math.sqrt(1 / 8) if u == 0 else math.sqrt(2 / 8)
        rows.append([cu * math.cos((2 * x + 1) * u * math.pi / 16) for x in range(8)])
    return jnp.asarray(rows, jnp.float32)


def _dct2_matrix():
    """The 2-D 8x8 DCT-II as one 64x64 matrix on row-major blocks: ``kron(D, D)``."""
    D = dct_matrix()
    return jnp.kron(D, D)


def _code_plane(plane, table):
    """Quantise one (H, W) plane of 0..255 values through the 8x8 DCT.

    All blocks of the plane go through one (blocks, 64) x (64, 64) matrix product
    each way, so that XLA runs two GEMMs instead of many 8x8 products.
    """
    H, W = plane.shape
    Hp, Wp = -(-H // 8) * 8, -(-W // 8) * 8
    x = jnp.pad(plane, ((0, Hp - H), (0, Wp - W)), mode="edge") - 128.0
    blocks = x.reshape(Hp // 8, 8, Wp // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 64)
    K = _dct2_matrix()
    hp = jax.lax.Precision.HIGHEST
    q = jnp.asarray(table, jnp.float32).reshape(64)
    coef = jnp.round(jnp.dot(blocks, K.T, precision=hp) / q) * q
    rec = jnp.dot(coef, K, precision=hp)
    rec = rec.reshape(Hp // 8, Wp // 8, 8, 8).transpose(0, 2, 1, 3).reshape(Hp, Wp)[:H, :W] + 128.0
    return jnp.clip(jnp.round(rec), 0.0, 255.0)


def _upsample2(c, H: int, W: int):
    """2x bilinear upsampling with half-pixel centres and clamped borders
    (``jax.image.resize(..., 'linear')`` for a factor of 2, in closed form):
    ``out[2i] = .75 c[i] + .25 c[i-1]``, ``out[2i+1] = .75 c[i] + .25 c[i+1]``."""
    def axis0(a):
        prev = jnp.concatenate([a[:1], a[:-1]], axis=0)
        nxt = jnp.concatenate([a[1:], a[-1:]], axis=0)
        even = 0.75 * a + 0.25 * prev
        odd = 0.75 * a + 0.25 * nxt
        return jnp.stack([even, odd], axis=1).reshape((2 * a.shape[0],) + a.shape[1:])

    out = axis0(c)
    out = axis0(out.T).T
    return out[:H, :W]


def jpeg_roundtrip(x, quality: int, subsample: bool = True):
    """Compress and decompress one (H, W, C) image in [0, 1], C in {1, 3}."""
    H, W, C = x.shape
    v = jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0)
    qy = quant_table(LUMA_TABLE, quality)
    if C == 1:
        return _code_plane(v[..., 0], qy)[..., None] / 255.0
    qc = quant_table(CHROMA_TABLE, quality)
    r, g, b = v[..., 0], v[..., 1], v[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128.0
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128.0
    y = _code_plane(jnp.clip(jnp.round(y), 0, 255), qy)
    chans = []
    for c in (cb, cr):
        c = jnp.clip(jnp.round(c), 0, 255)
        if subsample:
            h2, w2 = -(-H // 2), -(-W // 2)
            cp = jnp.pad(c, ((0, 2 * h2 - H), (0, 2 * w2 - W)), mode="edge")
            small = cp.reshape(h2, 2, w2, 2).mean(axis=(1, 3))
            small = _code_plane(small, qc)
            c = _upsample2(small, H, W)
        else:
            c = _code_plane(c, qc)
        chans.append(c)
    cb, cr = chans[0] - 128.0, chans[1] - 128.0
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    b = y + 1.772 * cb
    out = jnp.stack([r, g, b], axis=-1)
    return jnp.clip(jnp.round(out), 0.0, 255.0) / 255.0
