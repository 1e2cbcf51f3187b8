"""Label-free synthetic pre-training data: rendered iterated-function-system (IFS) fractals.

Formula-driven supervised learning (FractalDB, Kataoka et al., ACCV 2020): every class is
one IFS code, a set of 2-4 random affine maps ``x -> A_k x + b_k`` of the plane; an image
of the class is the attractor of a slightly perturbed copy of the code, drawn by the chaos
game and binned at the image size. No natural image and no label of any task is involved.

Sampling rule (the σ-factor of Anderson & Farrell, "Improving Fractal Pre-training",
WACV 2022, which replaces FractalDB's render-and-reject search for codes that are neither
a few dots nor a filled blob): a code of ``N`` maps has σ-factor
``α = Σ_k (σ_k1 + 2 σ_k2)`` over the singular values ``1 >= σ_k1 >= σ_k2 >= 0`` of its
linear parts, drawn uniformly in ``[(5 + N) / 2, (6 + N) / 2]``; the singular values are
drawn one map at a time under that sum, and ``A_k = R(θ_k) diag(σ_k1, ±σ_k2) R(φ_k)``
with uniform angles and a random reflection; ``b_k`` is uniform in ``[-1, 1]^2``; map k
is picked with probability proportional to ``|det A_k|`` (floored at 5% of the largest, so
a flat map is still visited). A code is then kept only if it passes a filling-rate rule
as FractalDB's at a 32x32 probe render (at least :data:`MIN_FILL` of the pixels lit),
otherwise redrawn.

Within a class (FractalDB's intra-category augmentation), every image perturbs one
parameter of one map of the code by a factor drawn uniformly in ``[0.8, 1.2]`` (the linear
part rescaled back to spectral norm ``<= 1`` if it left it), so no two images of a class
are the same fractal. Flips are left to the trainer's augmentation.

Rendering: the chaos game (``points`` steps after a short burn-in) vectorised over the
images with numpy; each image's points are fitted to the canvas (bounding box, aspect
kept, centred) and binned; the pixel value is ``255 · log(1 + count) / log(1 + max
count)``. With 3 channels every map of every image gets a random bright colour and a
pixel takes the mean colour of its points times that value (FractalDB colours points
randomly as well: the colour says nothing about the class). Numpy's seeded generator
makes the images a function of the seed alone.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from rws_jax.data.core import ArraySplit

# The most maps a code has; codes are stored padded to this many (probability 0).
MAX_MAPS = 4
# A code's row is (a, b, c, d, e, f, p): the map x -> [[a, b], [c, d]] x + [e, f], picked
# with probability p (column P).
P = 6
# The filling-rate rule: a code is kept when its 32x32 probe render lights at least this
# share of the pixels (FractalDB keeps filling rate >= 0.2 at its own resolution; 0.1 at
# 32x32 rejects the ~5% thinnest σ-factor codes, needles and dust).
MIN_FILL = 0.1
# Chaos-game steps discarded before binning (the start point's transient).
BURN_IN = 20
# Images rendered at once (fixed, so that the random stream, hence the images, depend on the seed only).
CHUNK = 2048
# The fractal θ_init's task when the config does not say: classes (codes) and images of each.
DEFAULT_CLASSES = 100
DEFAULT_IMAGES_PER_CLASS = 500
# FractalDB's per-image parameter weighting: one parameter of one map times U[0.8, 1.2].
PERTURBATION = 0.2


def _sample_singular_values(rng: np.random.Generator, n: int, alpha: float) -> np.ndarray:
    """``[n, 2]`` singular values (σ1, σ2) with ``1 >= σ1 >= σ2 >= 0`` and
    ``Σ (σ1 + 2 σ2) = alpha`` (needs ``0 <= alpha <= 3 n``), one map at a time: each map's
    share is bounded so that the maps after it can still make up the rest."""
    out = np.empty((n, 2))
    rest = float(alpha)
    for k in range(n - 1):
        after = 3.0 * (n - k - 1)  # the most the maps after this one can contribute
        s1 = rng.uniform(max(0.0, (rest - after) / 3.0), min(1.0, rest))
        s2 = rng.uniform(max(0.0, (rest - after - s1) / 2.0), min(s1, (rest - s1) / 2.0))
        out[k] = s1, s2
        rest -= s1 + 2.0 * s2
    s2 = rng.uniform(max(0.0, (rest - 1.0) / 2.0), rest / 3.0)
    out[n - 1] = rest - 2.0 * s2, s2
    return out


def _rotation(angle: np.ndarray) -> np.ndarray:
    """``[..., 2, 2]`` rotation matrices by ``angle`` (radians, any shape)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _sample_code(rng: np.random.Generator) -> np.ndarray:
    """One ``[MAX_MAPS, 7]`` code by the σ-factor rule (unused rows all zero)."""
    n = int(rng.integers(2, MAX_MAPS + 1))
    alpha = rng.uniform((5 + n) / 2.0, (6 + n) / 2.0)
    sv = _sample_singular_values(rng, n, alpha)
    theta, phi = rng.uniform(0.0, 2.0 * np.pi, (2, n))
    reflect = rng.choice(np.array([-1.0, 1.0]), n)
    diag = np.zeros((n, 2, 2))
    diag[:, 0, 0], diag[:, 1, 1] = sv[:, 0], sv[:, 1] * reflect
    lin = _rotation(theta) @ diag @ _rotation(phi)
    shift = rng.uniform(-1.0, 1.0, (n, 2))
    det = np.abs(sv[:, 0] * sv[:, 1])
    prob = np.maximum(det, 1e-3 + 0.05 * det.max())  # a flat map is still visited now and then
    code = np.zeros((MAX_MAPS, 7))
    code[:n, :4] = lin.reshape(n, 4)
    code[:n, 4:6] = shift
    code[:n, P] = prob / prob.sum()
    return code


def ifs_codes(num_classes: int, seed: int) -> np.ndarray:
    """``num_classes`` IFS codes, one per class: float64 ``[num_classes, MAX_MAPS, 7]``,
    row k of a code ``(a, b, c, d, e, f, p)`` the map ``x -> [[a, b], [c, d]] x + [e, f]``
    picked with probability ``p`` (rows past the code's 2-4 maps are zero). Drawn by the
    σ-factor rule and kept when they pass the filling-rate rule (module docstring);
    deterministic in ``seed``."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    rng = np.random.default_rng(seed)
    codes: list[np.ndarray] = []
    batch = 0
    while len(codes) < num_classes:  # candidates in batches, probed together, kept in order
        candidates = np.stack([_sample_code(rng) for _ in range(max(8, 2 * (num_classes - len(codes))))])
        probe = _render(candidates, np.arange(len(candidates)), (32, 32, 1),
                        np.random.default_rng((seed, batch)), points=2048, perturb=False)
        fill = (probe > 0).reshape(len(candidates), -1).mean(1)
        codes.extend(candidates[fill >= MIN_FILL][: num_classes - len(codes)])
        batch += 1
    return np.stack(codes)


def _perturb(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each ``[MAX_MAPS, 7]`` code of ``codes`` ``[M, MAX_MAPS, 7]`` with one parameter
    (a..f) of one of its maps times U[1 - PERTURBATION, 1 + PERTURBATION]; a linear part
    pushed past spectral norm 1 is scaled back to it."""
    m = codes.shape[0]
    out = codes.copy()
    n_maps = (codes[:, :, P] > 0).sum(1)
    which_map = (rng.random(m) * n_maps).astype(np.int64)
    which_param = rng.integers(0, 6, m)
    factor = rng.uniform(1.0 - PERTURBATION, 1.0 + PERTURBATION, m)
    rows = np.arange(m)
    out[rows, which_map, which_param] *= factor
    lin = out[rows, which_map, :4].reshape(m, 2, 2)
    norm = np.linalg.norm(lin, ord=2, axis=(1, 2))
    out[rows, which_map, :4] /= np.maximum(norm, 1.0)[:, None]
    return out


def _render(codes: np.ndarray, labels: np.ndarray, image_shape: tuple[int, int, int],
            rng: np.random.Generator, *, points: int, perturb: bool = True) -> np.ndarray:
    """uint8 ``[len(labels), H, W, C]``: image i of the attractor of ``codes[labels[i]]``
    (perturbed per image when ``perturb``), by the chaos game, ``CHUNK`` images at a time."""
    h, w, ch = image_shape
    out = np.empty((len(labels), h, w, ch), np.uint8)
    for start in range(0, len(labels), CHUNK):
        lab = labels[start:start + CHUNK]
        code = codes[lab]
        if perturb:
            code = _perturb(code, rng)
        out[start:start + len(lab)] = _render_chunk(code, (h, w, ch), rng, points)
    return out


def _render_chunk(code: np.ndarray, image_shape: tuple[int, int, int], rng: np.random.Generator,
                  points: int) -> np.ndarray:
    """uint8 ``[M, H, W, C]``: image i the chaos game of ``code[i]`` (``[M, MAX_MAPS, 7]``)."""
    h, w, ch = image_shape
    m = code.shape[0]
    steps = BURN_IN + points
    # the map of every step: u in [0, 1) against the cumulative probabilities (maps past a
    # code's last are never picked: their thresholds are set beyond 1)
    cum = np.cumsum(code[:, :, P], axis=1)[:, :-1]
    cum[code[:, 1:, P] <= 0] = 2.0
    cum = cum.astype(np.float32)
    u = rng.random((steps, m), np.float32)
    chosen = np.zeros((steps, m), np.int8)  # [steps, M] in 0..n-1
    for k in range(MAX_MAPS - 1):
        chosen += u >= cum[:, k]
    index = chosen.astype(np.intp)  # [steps, M] rows of the maps table
    index += (np.arange(m) * MAX_MAPS)[None]
    maps = code[:, :, :6].astype(np.float32).reshape(m * MAX_MAPS, 6).T.copy()  # [6, M * MAX_MAPS]
    x = np.zeros(m, np.float32)
    y = np.zeros(m, np.float32)
    xs = np.empty((points, m), np.float32)
    ys = np.empty((points, m), np.float32)
    for t in range(steps):
        a, b, c, d, e, f = (maps[j].take(index[t]) for j in range(6))
        x, y = a * x + b * y + e, c * x + d * y + f
        if t >= BURN_IN:
            xs[t - BURN_IN], ys[t - BURN_IN] = x, y
    # fit each image's points to the canvas: bounding box centred, aspect kept, 1 px margin
    lo_x, hi_x = xs.min(0), xs.max(0)
    lo_y, hi_y = ys.min(0), ys.max(0)
    half = np.maximum(np.maximum(hi_x - lo_x, hi_y - lo_y) / 2.0, 1e-6)
    col = _to_pixel(xs, (lo_x + hi_x) / 2.0, (w - 2) / 2.0 / half, w)
    row = _to_pixel(ys, (lo_y + hi_y) / 2.0, -(h - 2) / 2.0 / half, h)  # y up
    pixel = row * w
    pixel += col
    pixel += (np.arange(m, dtype=np.int32) * (h * w))[None]
    if ch == 1:
        count = np.bincount(pixel.ravel(), minlength=m * h * w).reshape(m, h, w).astype(np.float32)
        return np.round(_brightness(count) * 255.0).astype(np.uint8)[..., None]
    if ch != 3:
        raise ValueError(f"fractal images have 1 or 3 channels, got {ch}")
    # colour: one bin per (image, pixel, map), the count of a pixel's points of each map
    pixel *= MAX_MAPS
    pixel += chosen[BURN_IN:]
    per_map = np.bincount(pixel.ravel(), minlength=m * h * w * MAX_MAPS).reshape(m, h, w, MAX_MAPS)
    count = per_map.sum(-1).astype(np.float32)
    value = _brightness(count)
    # a random bright colour per map and image; a pixel is the mean colour of its points
    colour = rng.uniform(0.0, 1.0, (m, MAX_MAPS, 3)).astype(np.float32)
    colour /= colour.max(-1, keepdims=True)
    rgb = np.matmul(per_map.reshape(m, h * w, MAX_MAPS).astype(np.float32), colour).reshape(m, h, w, 3)
    rgb *= (value / np.maximum(count, 1.0))[..., None]
    return np.round(rgb * 255.0).astype(np.uint8)


def _brightness(count: np.ndarray) -> np.ndarray:
    """float32 ``[M, H, W]`` in [0, 1]: ``log(1 + count) / log(1 + max count)`` per image."""
    peak = np.log1p(count.reshape(count.shape[0], -1).max(1))
    return np.log1p(count) / np.maximum(peak, 1e-6)[:, None, None]


def _to_pixel(coord: np.ndarray, centre: np.ndarray, scale: np.ndarray, size: int) -> np.ndarray:
    """int32 pixel index in ``0..size-1`` of ``coord`` ``[points, M]`` (image i centred at
    ``centre[i]``, ``scale[i]`` pixels per unit; the canvas centre at ``size / 2``)."""
    out = coord - centre[None]
    out *= scale[None]
    out += size / 2.0
    np.clip(out, 0, size - 1, out=out)
    return out.astype(np.int32)  # non-negative: truncation is the floor


def render_fractals(codes: np.ndarray, images_per_class: int, image_shape: Sequence[int],
                    seed: int | Sequence[int], *, points: int | None = None) -> ArraySplit:
    """``images_per_class`` images of each code of ``codes`` (``[K, MAX_MAPS, 7]``, as
    :func:`ifs_codes` returns), labelled by the code's index.

    Returns an :class:`ArraySplit` of uint8 images ``[K * images_per_class, H, W, C]``
    (``image_shape = (H, W, C)``, C 1 or 3) and int32 labels ``[K * images_per_class]``,
    class k's images at rows ``k * images_per_class ...``. Each image is its own
    perturbation of the class's code (module docstring), drawn by the chaos game with
    ``points`` points (default ``max(1024, 2 H W)``). Deterministic in ``seed`` (an int or
    a sequence of ints, as ``np.random.default_rng`` takes).
    """
    codes = np.asarray(codes, np.float64)
    if codes.ndim != 3 or codes.shape[1:] != (MAX_MAPS, 7):
        raise ValueError(f"codes must be [K, {MAX_MAPS}, 7], got shape {codes.shape}")
    if images_per_class < 1:
        raise ValueError(f"images_per_class must be >= 1, got {images_per_class}")
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or shape[2] not in (1, 3) or min(shape[:2]) < 4:
        raise ValueError(f"image_shape must be (H, W, 1 or 3) with H, W >= 4, got {tuple(image_shape)}")
    hwc = (shape[0], shape[1], shape[2])
    points = max(1024, 2 * hwc[0] * hwc[1]) if points is None else int(points)
    labels = np.repeat(np.arange(codes.shape[0], dtype=np.int64), images_per_class)
    images = _render(codes, labels, hwc, np.random.default_rng(seed), points=points)
    return ArraySplit(images, labels.astype(np.int32))


@functools.lru_cache(maxsize=4)
def fractal_splits(num_classes: int, images_per_class: int, image_shape: tuple[int, int, int], seed: int,
                   val_per_class: int | None = None) -> tuple[ArraySplit, ArraySplit]:
    """(train, val) of the fractal classification task: ``num_classes`` codes
    (:func:`ifs_codes` with ``seed``), ``images_per_class`` training and ``val_per_class``
    validation images of each (default ``images_per_class // 10`` clipped to 2..10), rendered
    from two separate random streams of ``seed``. Cached per process (the arrays are
    read-only): the runs of a study, and θ_init's fit and an updated backbone, share one render."""
    if val_per_class is None:
        val_per_class = min(10, max(2, images_per_class // 10))
    codes = ifs_codes(num_classes, seed)
    train = render_fractals(codes, images_per_class, image_shape, (seed, 1))
    val = render_fractals(codes, val_per_class, image_shape, (seed, 2))
    for split in (train, val):
        split.images.setflags(write=False)
        split.labels.setflags(write=False)
    return train, val


__all__: Sequence[str] = ("DEFAULT_CLASSES", "DEFAULT_IMAGES_PER_CLASS", "MAX_MAPS", "MIN_FILL", "ifs_codes",
                          "render_fractals", "fractal_splits")
