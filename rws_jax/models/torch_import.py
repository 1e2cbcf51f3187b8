"""Import PyTorch checkpoints of the reference RWS code (and their usual layouts) into Flax.

:func:`from_torch_state_dict` maps a PyTorch ``state_dict`` to the variables of the
model of the same name in :mod:`rws_jax.models`::

    ckpt = torch.load("model_best.pth.tar", map_location="cpu", weights_only=True)
    imported = from_torch_state_dict("vgg16", ckpt)        # num_classes from the classifier
    logits = imported.model.apply(imported.variables, x_nhwc_normalised)
    imported.normalization                                  # Normalization(mean, std) or None

The PyTorch key names of each model (VGG, torchvision ResNets, akamaster's CIFAR
ResNets) and the tensor layouts are those of :mod:`rws_jax.models.torch_layout`; checkpoint
files are read by :func:`~rws_jax.models.torch_checkpoint.load_torch_checkpoint`.

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

Every mismatch raises :class:`~rws_jax.models.torch_checkpoint.TorchImportError` (a
``ValueError``) naming the problem: unknown model name, missing or unexpected keys, a
shape that disagrees with the model (key and both shapes, in PyTorch layout); a NaN/inf
raises :class:`~rws_jax.errors.NonFiniteError`. torch is imported only to read a
``.pth``/``.pt``/``.tar`` file (:mod:`rws_jax.models.torch_checkpoint`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from rws_jax.errors import NonFiniteError
from rws_jax.models.registry import get_model
from rws_jax.models.torch_checkpoint import TorchImportError, unwrap_state_dict
from rws_jax.models.torch_layout import (
    classifier_name,
    first_conv_key,
    head_prefixes,
    infer_num_classes,
    infer_stem_and_shortcut,
    model_family,
    shortcut_module,
    to_flax_layout,
    torch_key,
    torch_shape,
    vgg_feature_indices,
)

NORMALIZE_KEYS = ("normalize.mean", "normalize.std")
HEAD_MODES = ("keep", "drop")
FIRST_CONV_MODES = ("keep", "gray")
_SHOW = 5  # keys listed in an error message


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
        from :func:`~rws_jax.models.load_torch_checkpoint`).
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
        sd = {k: v for k, v in sd.items() if not k.startswith(head_prefixes(family))}
    if first_conv == "gray":
        _gray_first_conv(first_conv_key(family), sd)
        normalization = _gray_normalization(normalization)
    kwargs = infer_stem_and_shortcut(name, family, sd, dict(model_kwargs))
    if num_classes is None:
        num_classes = infer_num_classes(family, sd)
    # Without a classifier (num_classes None) one class is a placeholder: the key check
    # below then reports the classifier's keys missing.
    model = get_model(name, 1 if num_classes is None else num_classes, **kwargs)
    first = sd.get(first_conv_key(family))
    in_channels = int(first.shape[1]) if first is not None and first.ndim == 4 else (1 if first_conv == "gray" else 3)
    expected = _expected_variables(model, in_channels)
    flat_expected = traverse_util.flatten_dict(expected)
    what = _describe(name, num_classes, kwargs)

    head_name, shortcuts = classifier_name(family, sd), shortcut_module(family, sd)
    indices = vgg_feature_indices(model.cfg) if family == "vgg" else []
    is_head = (lambda path: path[1:-1] == ("head",)) if head == "drop" else (lambda path: False)
    key_of = {path: torch_key(family, path, vgg_indices=indices, head=head_name, shortcut_name=shortcuts)
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
        gray = " after first_conv='gray'" if first_conv == "gray" and key == first_conv_key(family) else ""
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
    # jaxlib has no stub for PyTreeDef: mypy sees an unresolved type without ``!=``
    if jax.tree_util.tree_structure(variables) != jax.tree_util.tree_structure(expected):  # type: ignore[operator]
        raise AssertionError("imported variables do not have the structure of model.init")
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(expected)):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise AssertionError(f"imported leaf {a.shape}/{a.dtype} != model.init {b.shape}/{b.dtype}")

