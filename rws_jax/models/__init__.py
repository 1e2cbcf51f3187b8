"""Flax Linen models for rws_jax.

All models take NHWC float inputs (any number of channels), are called as
``model.apply(variables, x, train=False)``, expose ``unit_names`` (top-level submodule
names in forward order, without the classifier ``'head'``) and have a single ``Dense``
classifier named ``'head'``. ResNets keep BatchNorm statistics in ``'batch_stats'``.

:func:`from_torch_state_dict` imports the reference's PyTorch checkpoints (VGG, torchvision
ResNets, akamaster's CIFAR ResNets) into these models (``head='drop'`` for a generic ImageNet
checkpoint, ``first_conv='gray'`` for 1-channel data); :func:`load_torch_checkpoint` reads
a ``.pth``/``.pt``/``.tar`` (torch) or ``.npz`` (numpy) file.

Unit names are not zero-padded: take the forward order from :func:`unit_order`, never
from sorted dict keys.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn

from rws_jax.models.resnet import (
    BasicBlock,
    BottleneckBlock,
    ResNet,
    ResNetCifar,
    Stem,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet_cifar,
)
from rws_jax.models.vgg import VGG, VGG_CFGS, vgg16
from rws_jax.models.torch_import import (
    ImportedModel,
    Normalization,
    TorchImportError,
    from_torch_state_dict,
    load_torch_checkpoint,
)

__all__ = [
    "VGG", "VGG_CFGS", "vgg16", "with_fresh_head",
    "ResNet", "ResNetCifar", "BasicBlock", "BottleneckBlock", "Stem",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet_cifar",
    "MODELS", "MODEL_NAMES", "get_model", "unit_order", "uses_batch_norm",
    "from_torch_state_dict", "load_torch_checkpoint", "ImportedModel", "Normalization", "TorchImportError",
]


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


def unit_order(model: nn.Module) -> tuple[str, ...]:
    """Top-level submodule names of ``model`` in forward order, excluding 'head'."""
    try:
        names = model.unit_names
    except AttributeError:
        raise TypeError(f"{type(model).__name__} does not define unit_names") from None
    return tuple(names)


def with_fresh_head(variables: dict, model: nn.Module, image_shape, seed: int = 0, *, always: bool = False) -> dict:
    """``variables`` (e.g. θ_init of a 10-class model) for ``model``: every tensor outside
    the classifier ``'head'`` is kept, the head is ``model``'s own initialisation (key
    ``seed``) when its shape differs (another class count) or ``always`` (another task with
    as many classes), else kept too.

    ``image_shape``: (H, W, C) of the inputs. Fails when a non-head tensor does not fit
    ``model`` (another architecture or width).
    """
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    fresh = model.init(jax.random.key(seed), jnp.zeros((1, *image_shape), jnp.float32), train=False)
    fresh = {k: dict(v) for k, v in fresh.items()}
    out = {}
    for col, tree in fresh.items():
        old = variables.get(col, {})
        out[col] = {}
        for unit, sub in tree.items():
            same = unit in old and (jax.tree_util.tree_structure(old[unit]) == jax.tree_util.tree_structure(sub)
                                    and all(jnp.shape(a) == jnp.shape(b) for a, b in zip(
                                        jax.tree_util.tree_leaves(old[unit]), jax.tree_util.tree_leaves(sub))))
            if unit == "head" and (always or not same):
                out[col][unit] = sub
            elif not same:
                raise ValueError(f"variables do not fit {type(model).__name__}: {col}/{unit} differs in structure "
                                 "or shape (another architecture or width?)")
            else:
                out[col][unit] = old[unit]
    return out


def uses_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` has a 'batch_stats' collection (needs ``mutable=['batch_stats']``)."""
    return isinstance(model, (ResNet, ResNetCifar))
