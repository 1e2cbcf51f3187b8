"""On-device input pipeline pieces: corruption, augmentation and normalisation (all jittable).

Images are NHWC, uint8 (or float in [0, 1]); every function keeps the dtype until
:func:`normalize_images`, which produces float32.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp

from rws_jax import corruptions as C

CorruptFn = Callable[[jax.Array, jax.Array], jax.Array]


def random_crop(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
    """Per-image random crop of the original size from the zero-padded image (torchvision
    ``RandomCrop(size, padding=4)``)."""
    if padding <= 0:
        return images
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Per-image horizontal flip with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def augment_batch(key: jax.Array, images: jax.Array, padding: int = 4, flip: bool = True) -> jax.Array:
    """Random crop (zero padding ``padding``) then optional horizontal flip."""
    k_crop, k_flip = jax.random.split(key)
    images = random_crop(k_crop, images, padding)
    if flip:
        images = random_flip(k_flip, images)
    return images


def normalize_images(images: jax.Array, mean: Optional[Sequence[float]] = None,
                     std: Optional[Sequence[float]] = None) -> jax.Array:
    """uint8 -> float32 x/255 (float input is taken to be in [0, 1]); then (x-mean)/std."""
    if jnp.issubdtype(images.dtype, jnp.integer):
        x = images.astype(jnp.float32) / 255.0
    else:
        x = images.astype(jnp.float32)
    if mean is not None:
        x = x - jnp.asarray(mean, jnp.float32)
    if std is not None:
        x = x / jnp.asarray(std, jnp.float32)
    return x


def mixture_corrupt_fn(fns: Sequence[CorruptFn]) -> CorruptFn:
    """Each image gets one of ``fns`` chosen uniformly at random (all are evaluated on the
    batch and the result is selected per image, which keeps it jittable and shardable)."""
    fns = tuple(fns)
    if len(fns) == 1:
        return fns[0]

    def corrupt(key, images):
        k_pick, *ks = jax.random.split(key, len(fns) + 1)
        pick = jax.random.randint(k_pick, (images.shape[0],), 0, len(fns))
        out = images
        for i, (fn, k) in enumerate(zip(fns, ks)):
            y = fn(k, images).astype(images.dtype)
            out = jnp.where((pick == i)[:, None, None, None], y, out)
        return out

    return corrupt


def build_corrupt_fn(corruption: Union[None, str, Sequence[str]], severity: int = 5,
                     preset: str = "cifar10") -> Optional[CorruptFn]:
    """``corrupt_fn(key, images) -> images`` from corruption name(s) via ``rws_jax.corruptions``
    . ``None`` -> ``None``; a name -> that corruption; a tuple of names ->
    a per-image random mixture. Severity is 1..5."""
    if corruption is None:
        return None
    names = (corruption,) if isinstance(corruption, str) else tuple(corruption)
    if len(names) == 1:
        return C.get_corruption(names[0], severity, preset=preset)

    def corrupt(key, images):  # one lax.switch per image over the named corruptions
        return C.corrupt_mixture(images, names, severity, key, preset=preset)

    return corrupt


def prepare_inputs(key: jax.Array, images: jax.Array, *, corrupt_fn: Optional[CorruptFn] = None,
                   augment: bool = False, crop_padding: int = 4, flip: bool = True,
                   mean: Optional[Tuple[float, ...]] = None,
                   std: Optional[Tuple[float, ...]] = None) -> jax.Array:
    """The device-side input pipeline: corruption -> augmentation -> float32 normalisation."""
    k_corrupt, k_aug = jax.random.split(key)
    if corrupt_fn is not None:
        images = corrupt_fn(k_corrupt, images)
    if augment:
        images = augment_batch(k_aug, images, crop_padding, flip)
    return normalize_images(images, mean, std)
