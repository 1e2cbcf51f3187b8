"""The 19 Hendrycks common corruptions (ImageNet-C / CIFAR-10-C) in JAX.

Pure, jit- and vmap-able functions on NHWC batches (uint8 or float, 1 or 3
channels) keyed by ``jax.random`` keys, so corrupted training data for Robust
Weight Signatures can be generated on device inside the input pipeline.

>>> import jax, jax.numpy as jnp
>>> from rws_jax.corruptions import corrupt
>>> x = jnp.zeros((4, 32, 32, 3), jnp.uint8)
>>> y = corrupt(x, "gaussian_noise", 5, jax.random.key(0))

See docs/guides/corruptions.md for the parameters and the differences from the
reference implementations.
"""

from .params import CORRUPTIONS, PRESETS, REFERENCE_SIZE, SEVERITIES
from .registry import (DETERMINISTIC, UnknownCorruptionError, corrupt,
                       corrupt_mixture, corruption_params, get_corruption,
                       tfds_config_name)
from .frost_texture import frost_texture

__all__ = [
    "CORRUPTIONS", "PRESETS", "SEVERITIES", "REFERENCE_SIZE", "DETERMINISTIC",
    "UnknownCorruptionError", "corrupt", "corrupt_mixture", "get_corruption",
    "tfds_config_name", "corruption_params", "frost_texture",
]
