"""Flax Linen models for rws_jax.

All models take NHWC float inputs (any number of channels), are called as
``model.apply(variables, x, train=False)``, expose ``unit_names`` (top-level submodule
names in forward order, without the classifier ``'head'``) and have a single ``Dense``
classifier named ``'head'``. ResNets keep BatchNorm statistics in ``'batch_stats'``.

:func:`from_torch_state_dict` imports the reference's PyTorch checkpoints (VGG, torchvision
ResNets, akamaster's CIFAR ResNets) into these models (``head='drop'`` for a generic ImageNet
checkpoint, ``first_conv='gray'`` for 1-channel data); :func:`load_torch_checkpoint` reads
a ``.pth``/``.pt``/``.tar`` (torch) or ``.npz`` (numpy) file. Modules: ``vgg``, ``resnet``
and ``conv`` (the networks), ``registry`` (the models by name: :func:`get_model`),
``torch_checkpoint`` (reading checkpoint files), ``torch_layout`` (the PyTorch key names
and tensor layouts of each model) and ``torch_import`` (the import itself).

Unit names are not zero-padded: take the forward order from :func:`unit_order`, never
from sorted dict keys.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

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
from rws_jax.models.registry import MODEL_NAMES, MODELS, get_model
from rws_jax.models.torch_checkpoint import TorchImportError, load_torch_checkpoint, torch_load
from rws_jax.models.torch_import import ImportedModel, Normalization, from_torch_state_dict
from rws_jax.models.torch_layout import model_family

__all__ = [
    "VGG", "VGG_CFGS", "vgg16", "with_fresh_head",
    "ResNet", "ResNetCifar", "BasicBlock", "BottleneckBlock", "Stem",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet_cifar",
    "MODELS", "MODEL_NAMES", "get_model", "unit_order", "uses_batch_norm",
    "from_torch_state_dict", "load_torch_checkpoint", "ImportedModel", "Normalization", "TorchImportError",
    "torch_load", "model_family",
]


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
    fresh = model.init(jax.random.key(seed), jnp.zeros((1, *image_shape), jnp.float32), train=False)
    fresh = {k: dict(v) for k, v in fresh.items()}
    out: dict[str, dict] = {}
    for col, tree in fresh.items():
        old = variables.get(col, {})
        out[col] = {}
        for unit, sub in tree.items():
            # jaxlib has no stub for PyTreeDef: mypy sees an unresolved type without ``==``
            same = unit in old and (jax.tree_util.tree_structure(old[unit]) == jax.tree_util.tree_structure(sub)  # type: ignore[operator]
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
