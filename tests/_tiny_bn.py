"""A tiny BatchNorm classifier and separable data, shared by tests that train in subprocesses
(imported as ``tests._tiny_bn`` with the repository on ``PYTHONPATH``)."""

import flax.linen as nn
import numpy as np


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(8, (3, 3), strides=(2, 2))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        return nn.Dense(3)(x)


def separable_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8[n, 8, 8, 1], int32[n])``: three classes told apart by brightness."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n).astype(np.int32)
    images = (rng.integers(0, 40, (n, 8, 8, 1)) + 80 * labels[:, None, None, None]).astype(np.uint8)
    return images, labels
