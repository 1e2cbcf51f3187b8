"""VGG without BatchNorm (the network of the reference RWS code).

Forward order of units (one unit = one 3x3 conv layer, each a top-level submodule):

    conv_0, conv_1, [pool], conv_2, conv_3, [pool], conv_4, conv_5, conv_6, [pool],
    conv_7, conv_8, conv_9, [pool], conv_10, conv_11, conv_12, [pool], head

Names are *not* zero-padded, so ``sorted(params)`` puts ``conv_10`` before ``conv_2``:
always take the forward order from :attr:`VGG.unit_names` (or
:func:`rws_jax.models.unit_order`), never from sorted dict keys.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import flax.linen as nn
from jax.nn import initializers

# 'M' = 2x2 max-pool, stride 2.
VGG_CFGS: dict[str, tuple] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}


def scale_width(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1."""
    return max(1, int(round(channels * width)))


class VGG(nn.Module):
    """VGG (default: VGG-16, 13 convs) without BatchNorm, for small images.

    Each conv is ``Conv(3x3, SAME) -> ReLU`` with He-normal (fan-in) kernels and zero
    biases. A 2x2 max-pool follows where the cfg says 'M', except when the spatial size is
    already 1 (so 28x28 or smaller inputs work). The classifier is a single ``Dense`` named
    ``'head'`` after global average pooling, which for 32x32 inputs (1x1 feature map) is
    the reference's flatten + Linear(512, num_classes).

    Attributes:
      num_classes: number of logits.
      width: channel multiplier (0.125 gives 8..64 channels).
      cfg: layer configuration (ints = conv channels, 'M' = max-pool).
      dtype: computation dtype (parameters stay float32; logits are returned as float32).

    Input: NHWC float, any number of channels. ``train`` is accepted for API uniformity
    (the model has no dropout or BatchNorm, so it is ignored).
    """

    num_classes: int = 10
    width: float = 1.0
    cfg: Sequence[Any] = VGG_CFGS["vgg16"]
    dtype: Any = jnp.float32

    @property
    def num_convs(self) -> int:
        return sum(1 for v in self.cfg if v != "M")

    @property
    def unit_names(self) -> tuple[str, ...]:
        """Top-level submodule names in forward order, without 'head'."""
        return tuple(f"conv_{i}" for i in range(self.num_convs))

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = jnp.asarray(x, self.dtype)
        i = 0
        for v in self.cfg:
            if v == "M":
                if x.shape[1] > 1 and x.shape[2] > 1:
                    x = nn.max_pool(x, (2, 2), strides=(2, 2))
                continue
            x = nn.Conv(scale_width(v, self.width), (3, 3), padding="SAME",
                        kernel_init=initializers.he_normal(), dtype=self.dtype,
                        name=f"conv_{i}")(x)
            x = nn.relu(x)
            i += 1
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return jnp.asarray(x, jnp.float32)


def vgg16(num_classes: int = 10, **kwargs) -> VGG:
    return VGG(num_classes=num_classes, cfg=VGG_CFGS["vgg16"], **kwargs)
