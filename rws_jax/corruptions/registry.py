"""Name -> implementation table, validation, dtype handling and batching."""

from __future__ import annotations

import difflib
import functools
import math
import numbers
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from . import blur, digital, image_ops, noise, weather
from .params import (CORRUPTIONS, PRESETS, REFERENCE_SIZE, SEVERITIES,
                     raw_params, scaled_params)

_IMPLS: dict[str, Callable] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
    "speckle_noise": noise.speckle_noise,
    "gaussian_blur": blur.gaussian_blur,
    "spatter": weather.spatter,
    "saturate": digital.saturate,
}
assert tuple(_IMPLS) == CORRUPTIONS

# corruptions whose output does not depend on the key
DETERMINISTIC: frozenset[str] = frozenset({
    "defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate",
    "jpeg_compression", "gaussian_blur", "saturate"})

_TFDS_NAMES = {"glass_blur": "frosted_glass_blur", "elastic_transform": "elastic"}


class UnknownCorruptionError(ValueError):
    """Unknown corruption name, severity outside 1..5 or unknown preset."""


def validate(name: Any, severity: Any, preset: Any = "cifar10") -> None:
    """Raise :class:`UnknownCorruptionError` with the valid choices."""
    if not isinstance(name, str) or name not in _IMPLS:
        hint = ""
        if isinstance(name, str):
            close = difflib.get_close_matches(name, CORRUPTIONS, n=1)
            if close:
                hint = f" Did you mean {close[0]!r}?"
        raise UnknownCorruptionError(
            f"unknown corruption {name!r}.{hint} Valid names: {', '.join(CORRUPTIONS)}.")
    if (isinstance(severity, bool) or not isinstance(severity, numbers.Integral)
            or int(severity) not in SEVERITIES):
        raise UnknownCorruptionError(
            f"severity must be an int in {SEVERITIES} (1 = mildest, 5 = strongest), "
            f"got {severity!r}")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise UnknownCorruptionError(
            f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)} "
            f"('cifar10' = CIFAR-10-C constants for {REFERENCE_SIZE['cifar10']}px "
            f"images, 'imagenet' = ImageNet-C / imagecorruptions constants for "
            f"{REFERENCE_SIZE['imagenet']}px images)")


def corruption_params(name: str, severity: int, preset: str = "cifar10") -> dict[str, Any]:
    """The reference constants for ``(name, severity, preset)`` (a dict keyed
    by parameter name, at the preset's reference image size)."""
    validate(name, severity, preset)
    return raw_params(name, int(severity), preset)


def tfds_config_name(name: str, severity: int) -> str:
    """TFDS builder config of the CIFAR-10-C split, e.g.
    ``'cifar10_corrupted/frosted_glass_blur_3'``."""
    validate(name, severity)
    return f"cifar10_corrupted/{_TFDS_NAMES.get(name, name)}_{int(severity)}"


# ---------------------------------------------------------------- dtype

def _to_float(images):
    images = jnp.asarray(images)
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(
            f"images must be uint8 in [0, 255] or float in [0, 1], got {images.dtype}")
    return jnp.clip(images.astype(jnp.float32), 0.0, 1.0)


def _from_float(x, dtype):
    x = jnp.clip(x, 0.0, 1.0)
    if dtype == jnp.uint8:
        return jnp.round(x * 255.0).astype(jnp.uint8)
    return x.astype(dtype)


def _check_shape(shape):
    if len(shape) not in (3, 4):
        raise ValueError(f"images must be NHWC (or a single HWC image), got shape {shape}")
    H, W, C = shape[-3:]
    if C not in (1, 3):
        raise ValueError(f"images must have 1 (grayscale) or 3 (RGB) channels, got {C}")
    if min(H, W) < 8:
        raise ValueError(f"images must be at least 8x8 pixels, got {H}x{W}")


_STATIC_KEYS = {"glass_blur": ("max_delta", "iterations"), "spatter": ("mud",),
                "pixelate": ("factor",), "jpeg_compression": ("quality",)}


def split_params(name: str, severity: int, preset: str, height: int, width: int):
    """Constants for an image size, split into a hashable tuple of static
    items (shapes, loop counts, kernel extents shared by all severities) and a
    dict of float32 scalars/arrays that are passed traced, so that the five
    severities of a corruption share one compiled program."""
    allp = [scaled_params(name, s, preset, height, width) for s in SEVERITIES]
    p = dict(allp[int(severity) - 1])
    static = {k: p.pop(k) for k in _STATIC_KEYS.get(name, ())}
    if name == "frost":
        # CIFAR-10-C shrinks the frost photographs by 0.2 for 32 px images (scaled
        # with the image like the other spatial constants); imagecorruptions does not
        scale = max(1.0, min(height, width) / REFERENCE_SIZE[preset])
        static["photo_scale"] = min(1.0, 0.2 * scale) if preset == "cifar10" else 1.0
    elif name == "shot_noise":
        static["table_size"] = noise.poisson_table_size(max(q["photons"] for q in allp))
    elif name == "defocus_blur":
        static["half"] = max(8 if q["radius"] <= 8 else int(q["radius"]) for q in allp)
        static["ksize"] = 3 if p["radius"] <= 8 else 5
    elif name in ("glass_blur", "gaussian_blur"):
        static["kmax"] = max(image_ops.gauss_radius(q["sigma"]) for q in allp)
    elif name == "motion_blur":
        static["wmax"] = max(q["radius"] for q in allp)
    elif name == "snow":
        static["wmax"] = max(q["blur_radius"] for q in allp)
    elif name == "spatter":
        static["kmax"] = max(image_ops.gauss_radius(q["sigma"]) for q in allp)
        static["kmax_mud"] = max([image_ops.gauss_radius(q["intensity_or_sigma"])
                                  for q in allp if q["mud"]] or [0])
    elif name == "elastic_transform":
        if "affine_frac" in p:
            size = min(height, width)
            static["kmax"] = max(image_ops.gauss_radius(q["sigma_frac"] * size, 3.0) for q in allp)
        else:
            static["kmax"] = max(image_ops.gauss_radius(q["sigma_frac"] * max(height, width), 3.0)
                                 for q in allp)
    elif name == "zoom_blur":
        n = max(len(q["zooms"]) for q in allp)
        z = list(p.pop("zooms"))
        p["n_zooms"] = len(z)
        p["zooms"] = z + [1.0] * (n - len(z))
    dyn = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
    return tuple(sorted(static.items())), dyn


def image_fn(name: str, severity: int, preset: str, height: int, width: int):
    """Per-image ``f(key, x) -> x`` on (H, W, C) float32 in [0, 1] (unclipped)."""
    static, dyn = split_params(name, severity, preset, height, width)
    p = dict(static)
    p.update(dyn)
    return functools.partial(_call, _IMPLS[name], p)


def _call(impl, p, key, x):
    return impl(key, x, p)


# On a CPU, images are corrupted in chunks of about this many values (a few MB, so a chunk's
# intermediates stay in cache): the cost per image then no longer grows with the batch.
CPU_CHUNK_VALUES = 1 << 20

# Corruptions that stream each value through a few fused passes with no large intermediate
# (pixelate: two shifted-slice passes): chunking only adds copies (the batch gathered into
# chunks, the loop's output buffer, the remainder apart), so the whole batch is one vmap
# (same values; 224 px, 16 images: 0.70 -> 0.38 ms per image in docs/benchmarks/corruption_speed_224.md).
UNCHUNKED = frozenset({"pixelate"})


def map_images(per_image, keys, x, chunked: bool = True):
    """``jax.vmap(per_image)(keys, x)`` over the leading axis, or, on a CPU backend with a
    batch larger than a chunk (and ``chunked``), ``lax.map(..., batch_size=chunk)``: vmap
    inside chunks of ``CPU_CHUNK_VALUES // values_per_image`` images, chunks one after
    another. The same per-image computation either way; on GPU/TPU the whole batch is
    one vmap."""
    n = x.shape[0]
    chunk = max(1, CPU_CHUNK_VALUES // max(1, math.prod(x.shape[1:])))
    if jax.default_backend() != "cpu" or n <= chunk or not chunked:
        return jax.vmap(per_image)(keys, x)
    return lax.map(lambda kx: per_image(*kx), (keys, x), batch_size=chunk)


def _batched(images, key, per_image, chunked: bool = True):
    """Split the key per image and vmap ``per_image`` over the batch (see :func:`map_images`)."""
    dtype = jnp.asarray(images).dtype
    x = _to_float(images)
    single = x.ndim == 3
    if single:
        x = x[None]
    keys = jax.random.split(key, x.shape[0])
    out = map_images(per_image, keys, x, chunked)
    out = _from_float(out, dtype)
    return out[0] if single else out


# ---------------------------------------------------------------- public API

@functools.partial(jax.jit, static_argnames=("name", "preset", "static"))
def _corrupt_core(images, key, dyn, *, name, preset, static):
    del preset  # part of the cache key only
    p = dict(static)
    p.update(dyn)
    return _batched(images, key, functools.partial(_call, _IMPLS[name], p), chunked=name not in UNCHUNKED)


def corrupt(images, name: str, severity: int, key, *, preset: str = "cifar10"):
    """Apply corruption ``name`` at ``severity`` (1..5) to a batch.

    Args:
      images: ``(N, H, W, C)`` (or a single ``(H, W, C)``) uint8 in [0, 255] or
        float in [0, 1]; C is 1 or 3; H, W >= 8.
      name, severity, preset: Python values (static under ``jax.jit``); see
        :data:`CORRUPTIONS`, :data:`PRESETS`.
      key: a ``jax.random`` key; split into one key per image.
    Returns:
      Corrupted images with the input's shape and dtype (uint8 rounded and
      clipped, floats clipped to [0, 1]).

    Runs as one jitted program (``jax.jit`` with ``name``/``preset`` and the
    shape-determining constants static); the severity's floating-point
    constants are passed as traced arguments, so the five severities of a
    corruption share a compilation.  Can be called inside ``jax.jit`` /
    ``jax.vmap`` (with ``name``, ``severity``, ``preset`` static).
    """
    validate(name, severity, preset)
    shape = jnp.shape(images)
    _check_shape(shape)
    H, W = shape[-3:-1]
    static, dyn = split_params(name, int(severity), preset, H, W)
    return _corrupt_core(images, key, dyn, name=name, preset=preset, static=static)


def get_corruption(name: str, severity: int, *, preset: str = "cifar10"
                   ) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Validate now and return a jitted ``f(key, images) -> images``."""
    validate(name, severity, preset)
    sev = int(severity)

    def f(key, images):
        return corrupt(images, name, sev, key, preset=preset)

    f.__name__ = f"{name}_{sev}"
    f.__doc__ = f"{name} at severity {sev} ({preset} preset): f(key, images) -> images."
    return f


@functools.partial(jax.jit, static_argnames=("names", "severity", "preset",
                                             "return_indices"))
def _corrupt_mixture(images, names, severity, key, preset, return_indices):
    for n in names:
        validate(n, severity, preset)
    _check_shape(images.shape)
    H, W = images.shape[-3:-1]
    branches = [image_fn(n, severity, preset, H, W) for n in names]
    def per_image(k, x):
        k_choice, k_apply = jax.random.split(k)
        idx = jax.random.randint(k_choice, (), 0, len(branches))
        out = lax.switch(idx, branches, k_apply, x)
        return out, idx

    dtype = images.dtype
    x = _to_float(images)
    single = x.ndim == 3
    if single:
        x = x[None]
    keys = jax.random.split(key, x.shape[0])
    out, idx = map_images(per_image, keys, x)
    out = _from_float(out, dtype)
    if single:
        out, idx = out[0], idx[0]
    return (out, idx) if return_indices else out


def corrupt_mixture(images, names: Sequence[str], severity: int, key, *,
                    preset: str = "cifar10", return_indices: bool = False):
    """Each image gets one corruption drawn uniformly from ``names``.

    The "data augmentation" baseline of the RWS paper.  ``names`` and
    ``severity`` are static; dispatch is ``lax.switch`` per image (under the
    batch ``vmap`` XLA evaluates every branch and selects).  With
    ``return_indices=True`` also returns the chosen index into ``names``.
    """
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    if not names:
        raise UnknownCorruptionError(
            f"names must contain at least one of: {', '.join(CORRUPTIONS)}")
    for n in names:
        validate(n, severity, preset)
    return _corrupt_mixture(images, names, int(severity), key, preset,
                            bool(return_indices))
