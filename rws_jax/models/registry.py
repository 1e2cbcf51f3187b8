"""The models by name: :data:`MODELS`, :data:`MODEL_NAMES` and :func:`get_model`."""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn

from rws_jax.models.resnet import resnet18, resnet34, resnet50, resnet101, resnet152, resnet_cifar
from rws_jax.models.vgg import VGG, VGG_CFGS


def _vgg(cfg_name: str) -> Callable[..., VGG]:
    def make(num_classes: int, **kwargs) -> VGG:
        return VGG(num_classes=num_classes, cfg=VGG_CFGS[cfg_name], **kwargs)
    return make


MODELS: dict[str, Callable[..., nn.Module]] = {
    "vgg11": _vgg("vgg11"),
    "vgg13": _vgg("vgg13"),
    "vgg16": _vgg("vgg16"),
    "vgg19": _vgg("vgg19"),
    "resnet20": functools.partial(resnet_cifar, 20),
    "resnet32": functools.partial(resnet_cifar, 32),
    "resnet44": functools.partial(resnet_cifar, 44),
    "resnet56": functools.partial(resnet_cifar, 56),
    "resnet110": functools.partial(resnet_cifar, 110),
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def get_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a model by name.

    'vgg11/13/16/19' -> :class:`VGG` (kwargs: width, dtype);
    'resnet20/32/44/56/110' -> :class:`ResNetCifar` (kwargs: width, shortcut, ...);
    'resnet18/34/50/101/152' -> :class:`ResNet` (kwargs: small_input, width, ...).
    """
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    return MODELS[key](num_classes=num_classes, **kwargs)
