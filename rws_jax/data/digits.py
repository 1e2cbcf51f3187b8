"""scikit-learn's 8x8 ``digits`` (ships with scikit-learn, no download), as 32x32x1 uint8."""

from __future__ import annotations

import numpy as np

from rws_jax.data.core import ArraySplit

DIGITS_UPSCALE = 4  # 8x8 -> 32x32, nearest neighbour


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits: ``(images uint8 [N, 32, 32, 1], labels int32 [N])``.

    Grey values 0..16 are mapped to 0..255 (``round(v * 255 / 16)``) and each pixel is
    repeated 4x4 times (nearest-neighbour upscaling), so the images have the same 32x32x1
    layout as zero-padded Fashion-MNIST.
    """
    from sklearn.datasets import load_digits  # noqa: PLC0415 - scikit-learn costs ~1.7 s to import; only digits needs it

    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float64)  # [N, 8, 8], values 0..16
    x = np.clip(np.round(x * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    x = x.repeat(DIGITS_UPSCALE, axis=1).repeat(DIGITS_UPSCALE, axis=2)[..., None]
    return x, np.asarray(bunch.target, dtype=np.int32)


def split_digits(val_size: int, test_size: int, seed: int = 0
                 ) -> tuple[ArraySplit, ArraySplit, ArraySplit]:
    """Seeded stratified train/val/test split (digits has no official test set)."""
    from sklearn.model_selection import train_test_split  # noqa: PLC0415 - as above

    images, labels = load_digits_arrays()
    idx = np.arange(labels.shape[0])
    rest, test = train_test_split(idx, test_size=test_size, random_state=seed, stratify=labels)
    if val_size > 0:
        train, val = train_test_split(rest, test_size=val_size, random_state=seed + 1,
                                      stratify=labels[rest])
    else:
        train, val = rest, rest[:0]
    full = ArraySplit(images, labels)
    return full.take(np.sort(train)), full.take(np.sort(val)), full.take(np.sort(test))
