"""ResNets with BatchNorm: CIFAR-style (6n+2) and ImageNet-style (18/34/50/101/152).

Every *unit* is one top-level submodule, so a variable tree looks like::

    {'params':      {'stem': {...}, 'block_0_0': {...}, ..., 'head': {...}},
     'batch_stats': {'stem': {...}, 'block_0_0': {...}, ...}}

Forward order of units: ``stem, block_0_0, block_0_1, ..., block_{S-1}_{n-1}`` then the
``head`` Dense (global average pooling before it). Block names are
``block_{stage}_{index}`` with *no* zero padding (``block_0_10`` sorts before
``block_0_2``): take the forward order from ``model.unit_names`` or
:func:`rws_jax.models.unit_order`, never from sorted dict keys.

Inside a unit: ``stem`` = ``conv`` + ``bn`` (+ a 3x3/2 max-pool for the ImageNet stem, no
parameters); a basic block = ``conv_0, bn_0, conv_1, bn_1`` (+ ``proj_conv, proj_bn`` for
a projection shortcut); a bottleneck block = ``conv_0..2, bn_0..2`` (+ ``proj_conv,
proj_bn``).

BatchNorm: ``use_running_average=not train``, momentum 0.9, epsilon 1e-5, statistics in
the ``'batch_stats'`` collection. Call with ``train=True`` and ``mutable=['batch_stats']``
to train.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import flax.linen as nn
from jax.nn import initializers

from rws_jax.models.conv import Conv
from rws_jax.models.vgg import scale_width

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# He-normal with fan-out, as torchvision initializes ResNet convs.
conv_init = initializers.variance_scaling(2.0, "fan_out", "normal")


def _norm(train: bool, dtype: Any, name: str, zero_scale: bool = False) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        scale_init=initializers.zeros if zero_scale else initializers.ones,
        name=name,
    )


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str, impl: str = "auto") -> Conv:
    pad = kernel // 2
    return Conv(features, (kernel, kernel), strides=(stride, stride),
                padding=((pad, pad), (pad, pad)), use_bias=False,
                kernel_init=conv_init, dtype=dtype, impl=impl, name=name)


class Stem(nn.Module):
    """conv + BN + ReLU (+ 3x3 stride-2 max-pool when ``max_pool``)."""

    features: int
    kernel: int = 3
    stride: int = 1
    max_pool: bool = False
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = _conv(self.features, self.kernel, self.stride, self.dtype, "conv", self.conv_impl)(x)
        x = _norm(train, self.dtype, "bn")(x)
        x = nn.relu(x)
        if self.max_pool:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        return x


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; identity, zero-pad ('pad') or 1x1-conv ('projection') shortcut."""

    features: int
    stride: int = 1
    shortcut: str = "projection"  # 'projection' (option B) or 'pad' (option A)
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        out = _conv(self.features, 3, self.stride, self.dtype, "conv_0", self.conv_impl)(x)
        out = nn.relu(_norm(train, self.dtype, "bn_0")(out))
        out = _conv(self.features, 3, 1, self.dtype, "conv_1", self.conv_impl)(out)
        out = _norm(train, self.dtype, "bn_1", self.zero_init_residual)(out)
        return nn.relu(out + _shortcut(self, x, self.features, train))


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (strided, as in torchvision 'v1.5') -> 1x1 (x4) with BN; projection shortcut."""

    features: int
    stride: int = 1
    shortcut: str = "projection"
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        out_features = self.features * self.expansion
        out = _conv(self.features, 1, 1, self.dtype, "conv_0", self.conv_impl)(x)
        out = nn.relu(_norm(train, self.dtype, "bn_0")(out))
        out = _conv(self.features, 3, self.stride, self.dtype, "conv_1", self.conv_impl)(out)
        out = nn.relu(_norm(train, self.dtype, "bn_1")(out))
        out = _conv(out_features, 1, 1, self.dtype, "conv_2", self.conv_impl)(out)
        out = _norm(train, self.dtype, "bn_2", self.zero_init_residual)(out)
        return nn.relu(out + _shortcut(self, x, out_features, train))


def _shortcut(block: nn.Module, x, out_features: int, train: bool):
    """Shortcut branch, called from inside a block's compact ``__call__``."""
    in_features = x.shape[-1]
    if block.stride == 1 and in_features == out_features:
        return x
    if block.shortcut == "pad":  # He et al. 2016, option A: subsample + zero channels
        y = x[:, :: block.stride, :: block.stride, :]
        extra = out_features - in_features
        if extra < 0:
            raise ValueError("'pad' shortcut cannot reduce the number of channels")
        return jnp.pad(y, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    if block.shortcut == "projection":
        y = _conv(out_features, 1, block.stride, block.dtype, "proj_conv", block.conv_impl)(x)
        return _norm(train, block.dtype, "proj_bn")(y)
    raise ValueError(f"shortcut must be 'projection' or 'pad', got {block.shortcut!r}")


BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


def _block_cls(block):
    if isinstance(block, str):
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        return BLOCKS[block]
    return block


def _unit_names(stage_sizes: Sequence[int]) -> tuple[str, ...]:
    names = ["stem"]
    for s, n in enumerate(stage_sizes):
        names.extend(f"block_{s}_{i}" for i in range(n))
    return tuple(names)


class ResNetCifar(nn.Module):
    """CIFAR ResNet of He et al. (2016): depth 6n+2, three stages of n basic blocks.

    Stem: 3x3 conv (16*width channels) + BN + ReLU, no pooling. Stages: 16/32/64 channels
    (times ``width``), stride 1/2/2. Global average pooling, then Dense ``'head'``.
    ResNet-20 has n=3, ResNet-56 n=9.

    Forward order (``unit_names``): ``stem, block_0_0 .. block_0_{n-1}, block_1_0 ..,
    block_2_0 .. block_2_{n-1}``; then ``head``.

    Attributes:
      depth: 6n+2 (20, 32, 44, 56, 110, ...).
      num_classes: number of logits.
      width: channel multiplier.
      shortcut: 'pad' (default; option A of the paper, parameter free, ResNet-20 has
        0.27M parameters) or 'projection' (1x1 conv + BN when the shape changes).
      zero_init_residual: initialize the last BN scale of each block to zero.
      dtype: computation dtype (logits are returned as float32).
      conv_impl: conv lowering (:class:`rws_jax.models.conv.Conv`; ``'auto'`` default,
        ``'xla'`` = exactly ``nn.Conv``); parameters and results are the same.
    """

    depth: int = 20
    num_classes: int = 10
    width: float = 1.0
    shortcut: str = "pad"
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @property
    def blocks_per_stage(self) -> int:
        if self.depth < 8 or (self.depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {self.depth}")
        return (self.depth - 2) // 6

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        return (self.blocks_per_stage,) * 3

    @property
    def unit_names(self) -> tuple[str, ...]:
        """Top-level submodule names in forward order, without 'head'."""
        return _unit_names(self.stage_sizes)

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jnp.asarray(x, self.dtype)
        x = Stem(scale_width(16, self.width), kernel=3, stride=1, dtype=self.dtype,
                 conv_impl=self.conv_impl, name="stem")(x, train)
        for s, n in enumerate(self.stage_sizes):
            features = scale_width(16 * 2**s, self.width)
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1
                x = BasicBlock(features, stride=stride, shortcut=self.shortcut,
                               zero_init_residual=self.zero_init_residual,
                               dtype=self.dtype, conv_impl=self.conv_impl,
                               name=f"block_{s}_{i}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return jnp.asarray(x, jnp.float32)


class ResNet(nn.Module):
    """ImageNet-style ResNet (torchvision layout) with an optional small-input stem.

    Stem: 7x7/2 conv + BN + ReLU + 3x3/2 max-pool, or with ``small_input=True`` a 3x3/1
    conv + BN + ReLU without max-pool (for 32x32 images). Stages of ``stage_sizes`` blocks
    with 64/128/256/512 base channels (times ``width``; x4 output for bottlenecks),
    stride 1/2/2/2, projection shortcuts. Global average pooling, then Dense ``'head'``.

    Forward order (``unit_names``): ``stem, block_0_0, .., block_3_{n-1}``; then ``head``.

    Attributes:
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
      block: 'basic' or 'bottleneck' (or a block class).
      num_classes, width, small_input, zero_init_residual, dtype: see above.
      conv_impl: conv lowering (:class:`rws_jax.models.conv.Conv`), as for ResNetCifar.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block: Any = "basic"
    num_classes: int = 1000
    width: float = 1.0
    num_filters: int = 64
    small_input: bool = False
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @property
    def unit_names(self) -> tuple[str, ...]:
        """Top-level submodule names in forward order, without 'head'."""
        return _unit_names(self.stage_sizes)

    @nn.compact
    def __call__(self, x, train: bool = False):
        block_cls = _block_cls(self.block)
        x = jnp.asarray(x, self.dtype)
        stem_features = scale_width(self.num_filters, self.width)
        if self.small_input:
            stem = Stem(stem_features, kernel=3, stride=1, max_pool=False, dtype=self.dtype,
                        conv_impl=self.conv_impl, name="stem")
        else:
            stem = Stem(stem_features, kernel=7, stride=2, max_pool=True, dtype=self.dtype,
                        conv_impl=self.conv_impl, name="stem")
        x = stem(x, train)
        for s, n in enumerate(self.stage_sizes):
            features = scale_width(self.num_filters * 2**s, self.width)
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1
                x = block_cls(features, stride=stride, shortcut="projection",
                              zero_init_residual=self.zero_init_residual,
                              dtype=self.dtype, conv_impl=self.conv_impl,
                              name=f"block_{s}_{i}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return jnp.asarray(x, jnp.float32)


def resnet18(num_classes: int = 1000, **kwargs) -> ResNet:
    return ResNet(stage_sizes=(2, 2, 2, 2), block="basic", num_classes=num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> ResNet:
    return ResNet(stage_sizes=(3, 4, 6, 3), block="basic", num_classes=num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    return ResNet(stage_sizes=(3, 4, 6, 3), block="bottleneck", num_classes=num_classes, **kwargs)


def resnet101(num_classes: int = 1000, **kwargs) -> ResNet:
    return ResNet(stage_sizes=(3, 4, 23, 3), block="bottleneck", num_classes=num_classes, **kwargs)


def resnet152(num_classes: int = 1000, **kwargs) -> ResNet:
    return ResNet(stage_sizes=(3, 8, 36, 3), block="bottleneck", num_classes=num_classes, **kwargs)


def resnet_cifar(depth: int, num_classes: int = 10, **kwargs) -> ResNetCifar:
    return ResNetCifar(depth=depth, num_classes=num_classes, **kwargs)
