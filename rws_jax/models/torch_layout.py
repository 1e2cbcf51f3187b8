"""The PyTorch layouts of the reference's models and their mapping to the Flax models.

Which PyTorch state-dict key holds each Flax variable (:func:`torch_key`), how its
tensor is laid out (:func:`to_flax_layout`, :func:`torch_shape`), and what the state
dict says of the model (:func:`infer_num_classes`, :func:`infer_stem_and_shortcut`).

Layouts (keys after stripping a ``module.`` prefix; ``num_batches_tracked`` is ignored):

* ``vgg11/13/16/19`` - the reference's ``models/vgg.py`` without BatchNorm:
  ``features.{N}.weight/bias`` with ``N`` the index in its ``nn.Sequential`` (conv, ReLU
  and MaxPool take one index each), ``classifier.weight/bias`` (a single Linear).
* ``resnet18/34/50/101/152`` - torchvision / the reference's ``models/resnet.py``:
  ``conv1, bn1, layer{1-4}.{i}.conv1/bn1/conv2/bn2[/conv3/bn3]``,
  ``layer{s}.{i}.downsample.0`` (1x1 conv) / ``.1`` (BN), ``fc``. The stem is read off
  ``conv1.weight``: a 7x7 kernel is the ImageNet stem, a 3x3 one ``small_input=True``.
* ``resnet20/32/44/56/110`` - the CIFAR ResNets of akamaster's pytorch_resnet_cifar10:
  ``conv1, bn1, layer{1-3}.{i}.conv1/bn1/conv2/bn2``, classifier ``linear`` (or ``fc``);
  the option-A shortcut has no parameters (``shortcut='pad'``); ``shortcut.0/.1`` (or
  ``downsample.0/.1``) keys select ``shortcut='projection'``.

Tensors are converted as: conv ``[O, I, kH, kW]`` -> ``kernel [kH, kW, I, O]``; Linear
``[out, in]`` -> ``kernel [in, out]``; BN ``weight -> scale``, ``bias -> bias``,
``running_mean -> batch_stats mean``, ``running_var -> batch_stats var``; all float32.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from rws_jax.models.torch_checkpoint import TorchImportError

VGG_NAMES = ("vgg11", "vgg13", "vgg16", "vgg19")
CIFAR_RESNET_NAMES = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
RESNET_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def vgg_feature_indices(cfg) -> list[int]:
    """Index in the reference's ``features`` Sequential of each conv of ``cfg``.

    Conv, ReLU and MaxPool take one index each, so VGG-16 gives 0, 2, 5, 7, 10, ...
    """
    out, i = [], 0
    for v in cfg:
        if v == "M":
            i += 1
        else:
            out.append(i)
            i += 2
    return out


def model_family(name: str) -> str:
    """'vgg', 'resnet_cifar' or 'resnet' for a model name; TorchImportError for another name."""
    if name in VGG_NAMES:
        return "vgg"
    if name in CIFAR_RESNET_NAMES:
        return "resnet_cifar"
    if name in RESNET_NAMES:
        return "resnet"
    valid = ", ".join(VGG_NAMES + CIFAR_RESNET_NAMES + RESNET_NAMES)
    raise TorchImportError(f"unknown model {name!r}; valid names: {valid}")


def classifier_name(family: str, sd: Mapping[str, Any]) -> str:
    """Module name of the classifier in a state dict of ``family``: 'classifier', 'fc' or 'linear'."""
    if family == "vgg":
        return "classifier"
    if family == "resnet_cifar":
        return "fc" if "fc.weight" in sd and "linear.weight" not in sd else "linear"
    return "fc"


def head_prefixes(family: str) -> tuple[str, ...]:
    """Key prefixes of every classifier key ignored by ``head='drop'``.

    VGG: ``classifier.`` (the reference's single Linear and torchvision's 4096-wide
    ``classifier.0/3/6``); ResNets: ``fc.`` and ``linear.``.
    """
    return ("classifier.",) if family == "vgg" else ("fc.", "linear.")


def first_conv_key(family: str) -> str:
    """State-dict key of the first conv's weight in ``family``."""
    return "features.0.weight" if family == "vgg" else "conv1.weight"


_BLOCK_RE = re.compile(r"block_(\d+)_(\d+)")
_PROJ_RE = re.compile(r"layer\d+\.\d+\.(shortcut|downsample)\.0\.weight")


def module_key(family: str, modules: tuple[str, ...], *, vgg_indices: list[int], head: str,
               shortcut_name: str) -> str:
    """Torch module name of a Flax module path, e.g. ('block_1_0', 'conv_0') -> 'layer2.0.conv1'."""
    if modules == ("head",):
        return head
    if family == "vgg":
        (unit,) = modules
        return f"features.{vgg_indices[int(unit.split('_')[1])]}"
    if modules == ("stem", "conv"):
        return "conv1"
    if modules == ("stem", "bn"):
        return "bn1"
    unit, layer = modules
    m = _BLOCK_RE.fullmatch(unit)
    if m is None:
        raise AssertionError(f"unexpected module path {modules}")
    prefix = f"layer{int(m[1]) + 1}.{m[2]}"
    if layer == "proj_conv":
        return f"{prefix}.{shortcut_name}.0"
    if layer == "proj_bn":
        return f"{prefix}.{shortcut_name}.1"
    kind, k = layer.split("_")  # conv_0 -> conv1, bn_2 -> bn3
    return f"{prefix}.{kind}{int(k) + 1}"


_LEAF = {("params", "kernel"): "weight", ("params", "bias"): "bias", ("params", "scale"): "weight",
         ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def shortcut_module(family: str, sd: Mapping[str, Any]) -> str:
    """Module name of the projection shortcuts in a state dict of ``family``: 'downsample'
    (torchvision ResNets, or keys that say so) or 'shortcut'."""
    return "downsample" if family == "resnet" or any(".downsample." in k for k in sd) else "shortcut"


def torch_key(family: str, path: tuple[str, ...], *, vgg_indices: list[int], head: str, shortcut_name: str) -> str:
    """State-dict key of the Flax variable at ``path`` (collection, modules..., leaf), e.g.
    ('params', 'block_1_0', 'conv_0', 'kernel') -> 'layer2.0.conv1.weight'."""
    return module_key(family, path[1:-1], vgg_indices=vgg_indices, head=head,
                      shortcut_name=shortcut_name) + "." + _LEAF[(path[0], path[-1])]


def to_flax_layout(value: np.ndarray, flax_ndim: int) -> np.ndarray:
    """Torch layout -> Flax: conv OIHW -> HWIO, Linear [out, in] -> [in, out], else as is."""
    if flax_ndim == 4 and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if flax_ndim == 2 and value.ndim == 2:
        return value.T
    return value


def torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Flax shape -> the PyTorch shape of the same tensor (inverse of :func:`to_flax_layout`)."""
    if len(flax_shape) == 4:
        h, w, i, o = flax_shape
        return (o, i, h, w)
    if len(flax_shape) == 2:
        return tuple(reversed(flax_shape))
    return tuple(flax_shape)


def infer_num_classes(family: str, sd: dict[str, np.ndarray]) -> int | None:
    """Rows of the classifier weight; None when the state dict has no classifier."""
    head = classifier_name(family, sd)
    w = sd.get(f"{head}.weight")
    if w is None:
        return None
    if w.ndim != 2:
        raise TorchImportError(f"{head}.weight has shape {tuple(w.shape)}; expected [num_classes, features]")
    return int(w.shape[0])


def infer_stem_and_shortcut(name: str, family: str, sd: dict[str, np.ndarray], kwargs: dict) -> dict:
    """``small_input`` (torchvision ResNets) and ``shortcut`` (CIFAR ResNets) unless given."""
    if family == "resnet" and "small_input" not in kwargs and "conv1.weight" in sd:
        # (without conv1.weight the key check reports it missing)
        w = sd["conv1.weight"]
        kernel = tuple(w.shape[2:])
        if kernel == (7, 7):
            kwargs["small_input"] = False
        elif kernel == (3, 3):
            kwargs["small_input"] = True
        else:
            raise TorchImportError(f"conv1.weight has a {kernel} kernel (shape {tuple(w.shape)}); {name} has a "
                                   "7x7 stride-2 stem (ImageNet) or a 3x3 stride-1 stem (small_input=True)")
    if family == "resnet_cifar" and "shortcut" not in kwargs:
        kwargs["shortcut"] = "projection" if any(_PROJ_RE.fullmatch(k) for k in sd) else "pad"
    return kwargs
