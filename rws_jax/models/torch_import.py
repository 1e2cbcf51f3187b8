"""Import PyTorch checkpoints of the reference RWS code (and their usual layouts) into Flax.

:func:`from_torch_state_dict` maps a PyTorch ``state_dict`` to the variables of the
model of the same name in :mod:`rws_jax.models`::

    ckpt = torch.load("model_best.pth.tar", map_location="cpu", weights_only=True)
    imported = from_torch_state_dict("vgg16", ckpt)        # num_classes from the classifier
    logits = imported.model.apply(imported.variables, x_nhwc_normalised)
    imported.normalization                                  # Normalization(mean, std) or None

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

The reference model holds a ``normalize`` layer (``NormalizeByChannelMeanStd``) whose
buffers ``normalize.mean`` / ``normalize.std`` are in its state dict. Our models take
already-normalised input, so those are returned apart, as :class:`Normalization`:
feed the model ``(x - mean) / std`` (per channel, NHWC).

Pretrained ImageNet checkpoints (θ_init of the reference): the reference starts from a
*generic* checkpoint with its head dropped, e.g. torchvision's ``vgg16-397923af.pth``
(``features.{0,2,5,...,28}.*`` at the reference's indices - its fifth max-pool is the
last module - plus the 4096-wide head ``classifier.0/3/6.*``), loaded with
``strict=False``. Here that is ``head='drop'`` (the classifier keys are ignored, the head
is the model's own initialisation) and, for grayscale data, ``first_conv='gray'``::

    sd = load_torch_checkpoint("vgg16-397923af.pth")     # or a .npz of the same keys
    theta_init = from_torch_state_dict("vgg16", sd, head="drop", num_classes=10,
                                       first_conv="gray")  # for 1-channel images

Every mismatch raises :class:`TorchImportError` (a ``ValueError``) naming the problem:
unknown model name, missing or unexpected keys, a shape that disagrees with the model
(key and both shapes, in PyTorch layout); a NaN/inf raises
:class:`~rws_jax.errors.NonFiniteError`. This module imports torch only in
:func:`load_torch_checkpoint`, for a ``.pth``/``.pt``/``.tar`` file.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from rws_jax.errors import NonFiniteError, RWSError

VGG_NAMES = ("vgg11", "vgg13", "vgg16", "vgg19")
CIFAR_RESNET_NAMES = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
RESNET_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
NORMALIZE_KEYS = ("normalize.mean", "normalize.std")
HEAD_MODES = ("keep", "drop")
FIRST_CONV_MODES = ("keep", "gray")
TORCH_SUFFIXES = (".pth", ".pt", ".tar")
_SHOW = 5  # keys listed in an error message


class TorchImportError(RWSError):
    """A PyTorch state dict does not fit the named model (keys, shapes, values, name)."""


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Per-channel input normalisation of the reference model: ``(x - mean) / std``.

    Attributes:
      mean: ``[C]`` float32.
      std: ``[C]`` float32, positive.
    """

    mean: np.ndarray
    std: np.ndarray

    def apply(self, x_nhwc: Any) -> Any:
        """``(x - mean) / std`` on the last (channel) axis of ``[N, H, W, C]`` input."""
        return (x_nhwc - self.mean) / self.std


@dataclasses.dataclass(frozen=True)
class ImportedModel:
    """Result of :func:`from_torch_state_dict`.

    Attributes:
      model: the Flax model the variables belong to (name, num_classes and the inferred
        options such as ``small_input`` or ``shortcut`` already set).
      variables: ``{'params': ..., 'batch_stats': ...}`` (no ``'batch_stats'`` for VGG),
        float32 ``jax.Array`` leaves, the same tree structure, shapes and dtypes as
        ``model.init``.
      normalization: the ``normalize.mean/std`` buffers, or None when the state dict
        holds none (a bare ImageNet-style checkpoint).
      model_kwargs: the keyword arguments ``model`` was built with by
        :func:`rws_jax.models.get_model` (besides the name and ``num_classes``).
    """

    model: nn.Module
    variables: dict
    normalization: Normalization | None
    model_kwargs: dict

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.variables.get("params", {})))


# --------------------------------------------------------------------------- input


def _to_numpy(key: str, value: Any) -> np.ndarray:
    """A torch tensor or array-like -> numpy array (no torch import)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor
        t = value.detach().cpu()
        if str(getattr(t, "dtype", "")) == "torch.bfloat16":  # numpy has no bfloat16
            t = t.float()
        return np.asarray(t.numpy())
    try:
        arr = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - report any unconvertible value by key
        raise TorchImportError(f"{key}: cannot convert a {type(value).__name__} to an array ({e})") from None
    if arr.dtype == object:
        raise TorchImportError(f"{key}: expected a tensor or array, got a {type(value).__name__}")
    return arr


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flat ``{key: numpy array}`` from a state dict or a checkpoint holding one.

    Accepts a bare state dict or ``{'state_dict': state_dict, ...}`` (as the reference
    saves trained models); strips a ``module.`` prefix (``nn.DataParallel``) and drops
    ``*.num_batches_tracked``.
    """
    if not isinstance(checkpoint, Mapping):
        raise TorchImportError(f"expected a state dict (a mapping of names to tensors), got {type(checkpoint).__name__}")
    sd = checkpoint.get("state_dict", checkpoint)
    if not isinstance(sd, Mapping):
        raise TorchImportError(f"checkpoint['state_dict'] is a {type(sd).__name__}, not a state dict")
    out: dict[str, np.ndarray] = {}
    for key, value in sd.items():
        if not isinstance(key, str):
            raise TorchImportError(f"state dict keys must be strings, got {key!r}")
        name = key[len("module."):] if key.startswith("module.") else key
        if name.endswith("num_batches_tracked"):
            continue
        if name in out:
            raise TorchImportError(f"key {name!r} appears twice (with and without the 'module.' prefix)")
        out[name] = _to_numpy(key, value)
    if not out:
        raise TorchImportError("the state dict holds no tensors")
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, whatever the file's suffix;
    torch is imported here (the ``torch`` extra). Raises :class:`TorchImportError` (one
    line) when torch is missing or the file cannot be loaded."""
    try:
        import torch  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise TorchImportError(f"reading {path} needs PyTorch: pip install -e '.[torch]', or convert it to "
                               ".npz with numpy.savez(path, **state_dict)") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unreadable or not a weights-only checkpoint
        raise TorchImportError(f"cannot load {path} with torch.load(weights_only=True): {_first_line(e)}") from None


def load_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch checkpoint file into a flat ``{key: numpy array}`` state dict.

    * ``.pth`` / ``.pt`` / ``.tar`` (e.g. ``model_best.pth.tar``, ``vgg16-397923af.pth``):
      ``torch.load(path, map_location="cpu", weights_only=True)``; torch is imported here
      only (the ``torch`` extra).
    * ``.npz``: read with numpy (no torch needed), one array per state-dict key, as
      written by ``numpy.savez(path, **{k: v.numpy() for k, v in state_dict.items()})``.

    The result is :func:`unwrap_state_dict` of the file's content: a checkpoint
    ``{'state_dict': ..., ...}`` is unwrapped, a ``module.`` prefix stripped and
    ``num_batches_tracked`` dropped; other keys (``normalize.*`` included) are kept as
    they are. Pass it to :func:`from_torch_state_dict`.

    Raises:
      TorchImportError: a missing file (named), another suffix, torch missing for a
        ``.pth``/``.pt``/``.tar`` file (install torch or convert the file to ``.npz``), or
        a file that cannot be read (one line each).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a checkpoint file" if path.is_dir() else "no such checkpoint file"
        raise TorchImportError(f"{path}: {what}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                content = {k: np.asarray(npz[k]) for k in npz.files}
        except Exception as e:  # noqa: BLE001 - corrupt or pickled (object) arrays
            raise TorchImportError(f"cannot read {path} with numpy.load: {_first_line(e)}") from None
    elif suffix in TORCH_SUFFIXES:
        content = torch_load(path)
    else:
        raise TorchImportError(f"{path}: unknown checkpoint suffix {path.suffix!r}; expected "
                               f"{', '.join(TORCH_SUFFIXES)} (torch.load) or .npz (numpy)")
    return unwrap_state_dict(content)


def _normalization(sd: dict[str, np.ndarray]) -> Normalization | None:
    present = [k for k in NORMALIZE_KEYS if k in sd]
    if not present:
        return None
    if len(present) == 1:
        missing = next(k for k in NORMALIZE_KEYS if k not in sd)
        raise TorchImportError(f"{present[0]} is present but {missing} is missing")
    mean, std = (np.asarray(sd[k], np.float32).reshape(-1) for k in NORMALIZE_KEYS)
    if mean.shape != std.shape:
        raise TorchImportError(f"normalize.mean has {mean.size} channels but normalize.std has {std.size}")
    for k, v in zip(NORMALIZE_KEYS, (mean, std)):
        if not np.all(np.isfinite(v)):
            raise NonFiniteError(f"{k} holds NaN or inf")
    if np.any(std <= 0):
        raise TorchImportError(f"normalize.std must be positive, got {std.tolist()}")
    return Normalization(mean=mean, std=std)


# ------------------------------------------------------------------ name mapping


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


def _classifier(family: str, sd: Mapping[str, Any]) -> str:
    if family == "vgg":
        return "classifier"
    if family == "resnet_cifar":
        return "fc" if "fc.weight" in sd and "linear.weight" not in sd else "linear"
    return "fc"


def _head_prefixes(family: str) -> tuple[str, ...]:
    """Key prefixes of every classifier key ignored by ``head='drop'``.

    VGG: ``classifier.`` (the reference's single Linear and torchvision's 4096-wide
    ``classifier.0/3/6``); ResNets: ``fc.`` and ``linear.``.
    """
    return ("classifier.",) if family == "vgg" else ("fc.", "linear.")


def _first_conv(family: str) -> str:
    return "features.0.weight" if family == "vgg" else "conv1.weight"


_BLOCK_RE = re.compile(r"block_(\d+)_(\d+)")
_PROJ_RE = re.compile(r"layer\d+\.\d+\.(shortcut|downsample)\.0\.weight")


def _module_key(family: str, modules: tuple[str, ...], *, vgg_indices: list[int], head: str,
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


# ----------------------------------------------------------------------- import


def _infer_num_classes(family: str, sd: dict[str, np.ndarray]) -> int | None:
    """Rows of the classifier weight; None when the state dict has no classifier."""
    head = _classifier(family, sd)
    w = sd.get(f"{head}.weight")
    if w is None:
        return None
    if w.ndim != 2:
        raise TorchImportError(f"{head}.weight has shape {tuple(w.shape)}; expected [num_classes, features]")
    return int(w.shape[0])


def _infer_stem_and_shortcut(name: str, family: str, sd: dict[str, np.ndarray], kwargs: dict) -> dict:
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


def _expected_variables(model: nn.Module, in_channels: int) -> dict:
    """Shapes and dtypes of ``model.init`` (abstract: nothing is computed)."""
    x = jax.ShapeDtypeStruct((1, 32, 32, in_channels), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), x)


def _describe(name: str, num_classes: int | None, kwargs: dict) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in sorted(kwargs.items()))
    return f"{name}(num_classes={'?' if num_classes is None else num_classes}{', ' + opts if opts else ''})"


def _few(keys) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _gray_first_conv(key: str, sd: dict[str, np.ndarray]) -> None:
    """``first_conv='gray'``: the first conv's ``[O, 3, kH, kW]`` kernel summed to ``[O, 1, kH, kW]``, in place."""
    w = sd.get(key)
    if w is None:  # the key check reports it missing
        return
    if w.ndim != 4 or w.shape[1] != 3:
        raise TorchImportError(f"first_conv='gray' sums the 3 RGB input channels of {key}, but it has shape "
                               f"{tuple(w.shape)}; pass first_conv='keep' for a checkpoint of other input channels")
    dtype = np.float64 if np.issubdtype(w.dtype, np.floating) else None  # others: the dtype check reports them
    sd[key] = w.sum(axis=1, keepdims=True, dtype=dtype)


def _gray_normalization(norm: Normalization | None) -> Normalization | None:
    """The 1-channel :class:`Normalization` of a 3-channel one whose channels agree (else an error)."""
    if norm is None:
        return None
    if norm.mean.size == 3 and np.all(norm.mean == norm.mean[0]) and np.all(norm.std == norm.std[0]):
        return Normalization(mean=norm.mean[:1].copy(), std=norm.std[:1].copy())
    raise TorchImportError(
        f"first_conv='gray' is exact only when the 3 input channels are normalised alike, but normalize.mean="
        f"{norm.mean.tolist()} and normalize.std={norm.std.tolist()} differ per channel; drop the normalize.* keys "
        "from the state dict and normalise the gray images yourself")


def from_torch_state_dict(name: str, state_dict: Mapping[str, Any], *, num_classes: int | None = None,
                          head: str = "keep", head_seed: int = 0, first_conv: str = "keep",
                          **model_kwargs) -> ImportedModel:
    """Maps a reference-layout PyTorch state dict to the Flax variables of model ``name``.

    Args:
      name: a name of :data:`rws_jax.models.MODEL_NAMES` (vgg11/13/16/19, resnet20/32/44/
        56/110, resnet18/34/50/101/152), case-insensitive.
      state_dict: ``{key: tensor or array}``, or a checkpoint ``{'state_dict': ..., ...}``;
        keys may carry a ``module.`` prefix. Values: torch tensors or numpy arrays (e.g.
        from :func:`load_torch_checkpoint`).
      num_classes: number of logits; default (``head='keep'``): read off the classifier
        weight. Required with ``head='drop'``.
      head: ``'keep'`` (default): the classifier is imported like every other layer and
        must fit the model. ``'drop'``: every classifier key of the state dict is ignored
        (VGG: all keys starting with ``classifier.``, which includes torchvision's
        4096-wide ImageNet head ``classifier.0/3/6.*``; ResNets: ``fc.*`` and
        ``linear.*``) and the returned head is the model's own initialisation,
        ``model.init(jax.random.key(head_seed), ...)['params']['head']``, as the
        reference's ``load_state_dict(..., strict=False)`` of a generic ImageNet
        checkpoint leaves its fresh head. Every other key is still checked strictly
        (missing/unexpected keys, shapes, dtype, NaN/inf).
      head_seed: seed of the fresh head with ``head='drop'`` (ignored with ``'keep'``).
      first_conv: ``'keep'`` (default): the first conv (``features.0`` / ``conv1``) is
        imported as is, and the model takes as many input channels as it has.
        ``'gray'``: its ``[O, 3, kH, kW]`` kernel is summed over the RGB input channels to
        ``[O, 1, kH, kW]`` (summed in float64, stored float32) and the model takes
        1-channel input - the usual way to apply an RGB-pretrained network to grayscale
        images (Fashion-MNIST), exact for a gray image replicated into RGB. A
        ``normalize.mean/std`` pair is then reduced to one channel; if its 3 channels
        differ the import fails (the sum would not be exact).
      **model_kwargs: passed to :func:`rws_jax.models.get_model` (e.g. ``width`` for a
        narrowed model, ``dtype``). ``small_input`` (torchvision ResNets) and ``shortcut``
        (CIFAR ResNets) are inferred from the state dict unless given.

    Returns:
      :class:`ImportedModel` with ``model``, ``variables`` (exactly the structure,
      shapes and float32 dtypes of ``model.init``), ``normalization`` (None for a
      checkpoint without ``normalize.*`` buffers, e.g. every torchvision one) and
      ``model_kwargs``.

    Example - θ_init from torchvision's ImageNet VGG-16 (13 convs at the reference's
    ``features`` indices, its ``classifier.0/3/6`` ImageNet head dropped), for 10
    classes of 1-channel 32x32 images::

        sd = load_torch_checkpoint("vgg16-397923af.pth")
        imported = from_torch_state_dict("vgg16", sd, head="drop", num_classes=10, first_conv="gray")
        imported.normalization  # None: torchvision checkpoints hold no normalize buffers

    Raises:
      TorchImportError: unknown name, an invalid ``head``/``first_conv``, ``head='drop'``
        without ``num_classes``, missing/unexpected keys, a shape mismatch, a non-float
        dtype.
      NonFiniteError: a NaN or inf value.
    """
    from rws_jax.models import get_model

    name = str(name).lower()
    family = model_family(name)
    if head not in HEAD_MODES:
        raise TorchImportError(f"head must be one of {', '.join(map(repr, HEAD_MODES))}, got {head!r}")
    if first_conv not in FIRST_CONV_MODES:
        raise TorchImportError(f"first_conv must be one of {', '.join(map(repr, FIRST_CONV_MODES))}, "
                               f"got {first_conv!r}")
    if head == "drop" and num_classes is None:
        raise TorchImportError("head='drop' needs num_classes: the state dict's classifier is ignored, so the "
                               "number of logits cannot be read off it")
    sd = unwrap_state_dict(state_dict)
    normalization = _normalization(sd)
    sd = {k: v for k, v in sd.items() if k not in NORMALIZE_KEYS}
    if head == "drop":
        sd = {k: v for k, v in sd.items() if not k.startswith(_head_prefixes(family))}
    if first_conv == "gray":
        _gray_first_conv(_first_conv(family), sd)
        normalization = _gray_normalization(normalization)
    kwargs = _infer_stem_and_shortcut(name, family, sd, dict(model_kwargs))
    if num_classes is None:
        num_classes = _infer_num_classes(family, sd)
    # Without a classifier (num_classes None) one class is a placeholder: the key check
    # below then reports the classifier's keys missing.
    model = get_model(name, 1 if num_classes is None else num_classes, **kwargs)
    first = sd.get(_first_conv(family))
    in_channels = int(first.shape[1]) if first is not None and first.ndim == 4 else (1 if first_conv == "gray" else 3)
    expected = _expected_variables(model, in_channels)
    flat_expected = traverse_util.flatten_dict(expected)
    what = _describe(name, num_classes, kwargs)

    head_name = _classifier(family, sd)
    shortcut_name = "downsample" if family == "resnet" or any(
        ".downsample." in k for k in sd) else "shortcut"
    indices = vgg_feature_indices(model.cfg) if family == "vgg" else []
    is_head = (lambda path: path[1:-1] == ("head",)) if head == "drop" else (lambda path: False)
    key_of = {path: _module_key(family, path[1:-1], vgg_indices=indices, head=head_name,
                                shortcut_name=shortcut_name) + "." + _LEAF[(path[0], path[-1])]
              for path in flat_expected if not is_head(path)}

    missing = [k for k in key_of.values() if k not in sd]
    unexpected = sorted(set(sd) - set(key_of.values()))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
        dropped = " (head='drop': the classifier keys are ignored)" if head == "drop" else ""
        raise TorchImportError(f"the state dict does not fit {what}{dropped}: " + "; ".join(parts))

    path_of = {key: path for path, key in key_of.items()}
    wrong = [(key, tuple(sd[key].shape), torch_shape(tuple(flat_expected[path_of[key]].shape)))
             for key in sd]  # in the state dict's (module) order: weight before bias
    wrong = [w for w in wrong if w[1] != w[2]]
    if wrong:
        (key, got, want), rest = wrong[0], wrong[1:_SHOW]
        more = "".join(f"; {k} has shape {g}, expected {w}" for k, g, w in rest)
        more += f"; ... ({len(wrong) - _SHOW} more)" if len(wrong) > _SHOW else ""
        gray = " after first_conv='gray'" if first_conv == "gray" and key == _first_conv(family) else ""
        raise TorchImportError(f"{key} has shape {got}{gray} but {what} expects {want} "
                               f"(torch layout; {len(wrong)} shape mismatch(es){more})")

    flat: dict[tuple, jax.Array] = {}
    for path, key in key_of.items():
        spec = flat_expected[path]
        value = sd[key]
        if not np.issubdtype(value.dtype, np.floating):
            raise TorchImportError(f"{key} has dtype {value.dtype}; expected floating point")
        if not np.all(np.isfinite(value)):
            raise NonFiniteError(f"{key} holds NaN or inf")
        flat[path] = jnp.asarray(to_flax_layout(value, len(spec.shape)), dtype=spec.dtype)
    if head == "drop":
        fresh = model.init(jax.random.key(head_seed), jnp.zeros((1, 32, 32, in_channels), jnp.float32))
        for path, value in traverse_util.flatten_dict(fresh).items():
            if is_head(path):
                flat[path] = value
    variables = traverse_util.unflatten_dict(flat)
    _check_like(variables, expected)
    return ImportedModel(model=model, variables=variables, normalization=normalization, model_kwargs=kwargs)


def _check_like(variables: Any, expected: Any) -> None:
    """The tree structure, shapes and dtypes of ``variables`` equal those of ``expected``."""
    if jax.tree_util.tree_structure(variables) != jax.tree_util.tree_structure(expected):
        raise AssertionError("imported variables do not have the structure of model.init")
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(expected)):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise AssertionError(f"imported leaf {a.shape}/{a.dtype} != model.init {b.shape}/{b.dtype}")

