"""VGG without BatchNorm: the network of the reference RWS code (``models/vgg.py``).

Architecture (cfgs A/B/D/E of the reference for vgg11/13/16/19), for an NHWC input::

    [Conv3x3(pad 1) -> ReLU] and 2x2/2 max-pools as in the cfg (4 pools, none at the end)
    -> adaptive average pool to 1x1 (= mean over H, W) -> flatten -> Dense 'head'

For a 32x32 image VGG-16 goes 32 -> 16 -> 8 -> 4 -> 2 through its four pools, so the
last feature map is 2x2x512 and is *averaged*, exactly as the reference's
``nn.AdaptiveAvgPool2d((1, 1))`` + ``nn.Linear(512, num_classes)``. (Up to this fix the
cfgs ended in a fifth 'M', which max-pooled that 2x2 map instead.)

Forward order of units (one unit = one 3x3 conv layer, each a top-level submodule),
VGG-16::

    conv_0, conv_1, [pool], conv_2, conv_3, [pool], conv_4, conv_5, conv_6, [pool],
    conv_7, conv_8, conv_9, [pool], conv_10, conv_11, conv_12, head

``conv_i`` is the i-th ``nn.Conv2d`` of the reference's ``features`` Sequential and
``head`` its ``classifier``; :func:`rws_jax.models.from_torch_state_dict` maps one to the
other. Names are *not* zero-padded, so ``sorted(params)`` puts ``conv_10`` before
``conv_2``: always take the forward order from :attr:`VGG.unit_names` (or
:func:`rws_jax.models.unit_order`), never from sorted dict keys.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import flax.linen as nn
from jax.nn import initializers

from rws_jax.models.conv import Conv, max_pool_2x2

# The reference's cfgs 'A', 'B', 'D', 'E' (ints = conv output channels, 'M' = 2x2 max-pool,
# stride 2). No trailing 'M': the last feature map is average-pooled to 1x1.
VGG_CFGS: dict[str, tuple] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512),
}

# The reference's VGG._initialize_weights: kaiming_normal_(mode='fan_out',
# nonlinearity='relu') (an untruncated normal of variance 2/fan_out) for conv kernels,
# N(0, 0.01) for the Linear weight, zeros for every bias.
conv_kernel_init = initializers.variance_scaling(2.0, "fan_out", "normal")
head_kernel_init = initializers.normal(stddev=0.01)

# Initialisation schemes: (conv kernel init, head kernel init).
# 'reference': the reference's, above (the default).
# 'he_fan_in': He-normal with fan-in (truncated normal) for convs, LeCun-normal for the head
#   (Flax's defaults for Dense): the offline presets train the narrow, BatchNorm-free
#   VGG-16 on grayscale images for 2–3 epochs, where the reference's fan-out init (its first
#   conv sees 1 input channel) trains more slowly and a fog-corrupted fine-tuning run
#   collapsed to one class.
INIT_SCHEMES = {
    "reference": (conv_kernel_init, head_kernel_init),
    "he_fan_in": (initializers.he_normal(), initializers.lecun_normal()),
}


def scale_width(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1."""
    return max(1, int(round(channels * width)))


class VGG(nn.Module):
    """VGG (default: VGG-16, 13 convs) without BatchNorm, as in the reference RWS code.

    Each conv is ``Conv(3x3, padding 1) -> ReLU`` with a bias. A 2x2 stride-2 max-pool
    (floor of odd sizes, like PyTorch's ``MaxPool2d``) follows where the cfg says 'M',
    except when the height or width is already 1 (so 28x28 and smaller inputs work; at
    32x32 no pool is skipped). The last feature map is averaged over H and W (the
    reference's ``AdaptiveAvgPool2d((1, 1))``) and fed to a single ``Dense`` named
    ``'head'`` (the reference's ``classifier = nn.Linear(512, num_classes)``).

    Initialisation (``init_scheme``): ``'reference'`` (default) mirrors the reference: conv
    kernels He-normal with fan-out (untruncated), head kernel N(0, 0.01), zero biases;
    ``'he_fan_in'``: He-normal fan-in convs and a LeCun-normal head (see
    :data:`INIT_SCHEMES`; the offline presets use it). Weights are the same network
    either way: only where training starts differs.

    The reference model also holds a ``normalize`` layer (per-channel mean/std) in
    front of ``features``; this model takes already-normalised input (the training config
    holds mean/std, and :func:`rws_jax.models.from_torch_state_dict` returns the buffers
    it finds).

    Attributes:
      num_classes: number of logits.
      width: channel multiplier (0.125 gives 8..64 channels).
      cfg: layer configuration (ints = conv channels, 'M' = max-pool).
      dtype: computation dtype (parameters stay float32; logits are returned as float32).
      init_scheme: ``'reference'`` or ``'he_fan_in'`` (initialisation scheme, above).
      conv_impl: how the convs are lowered (:class:`rws_jax.models.conv.Conv`): ``'auto'``
        (default; fastest measured on XLA:CPU), ``'xla'`` (exactly ``nn.Conv`` and
        ``nn.max_pool``, the graph of earlier versions), ``'im2col'`` or ``'tap_grad'``.
        Other than ``'xla'`` the max-pools use :func:`rws_jax.models.conv.max_pool_2x2`
        (same values and gradient). Same parameters and results (up to float32
        rounding) either way.

    Input: ``[N, H, W, C]`` float, any number of channels; output ``[N, num_classes]``
    float32. ``train`` is accepted for API uniformity (the model has no dropout or
    BatchNorm, so it is ignored).
    """

    num_classes: int = 10
    width: float = 1.0
    cfg: Sequence[Any] = VGG_CFGS["vgg16"]
    dtype: Any = jnp.float32
    init_scheme: str = "reference"
    conv_impl: str = "auto"

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
        if self.init_scheme not in INIT_SCHEMES:
            raise ValueError(f"unknown VGG init_scheme {self.init_scheme!r}; valid: {', '.join(INIT_SCHEMES)}")
        conv_init, head_init = INIT_SCHEMES[self.init_scheme]
        x = jnp.asarray(x, self.dtype)
        i = 0
        for v in self.cfg:
            if v == "M":
                if x.shape[1] > 1 and x.shape[2] > 1:
                    if self.conv_impl == "xla":
                        x = nn.max_pool(x, (2, 2), strides=(2, 2))
                    else:  # same values and gradient, cheaper gradient on XLA:CPU
                        x = max_pool_2x2(x)
                continue
            x = Conv(scale_width(v, self.width), (3, 3), padding=((1, 1), (1, 1)),
                     kernel_init=conv_init, bias_init=initializers.zeros,
                     dtype=self.dtype, impl=self.conv_impl, name=f"conv_{i}")(x)
            x = nn.relu(x)
            i += 1
        x = jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d((1, 1)) + flatten: [N, C]
        x = nn.Dense(self.num_classes, kernel_init=head_init, bias_init=initializers.zeros,
                     dtype=self.dtype, name="head")(x)
        return jnp.asarray(x, jnp.float32)


def vgg16(num_classes: int = 10, **kwargs) -> VGG:
    return VGG(num_classes=num_classes, cfg=VGG_CFGS["vgg16"], **kwargs)
