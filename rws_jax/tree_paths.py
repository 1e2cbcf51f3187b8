"""Flat, string-keyed views of variable pytrees.

Every model format we accept (Flax Linen variable dicts, Flax NNX ``State``, any
nested dict pytree) is reduced to an ordered mapping ``path -> array`` where a path
is the ``'/'``-joined list of keys, e.g. ``'params/conv_0/kernel'`` for Linen or
``'conv_0/kernel'`` for an NNX ``State`` (the trailing ``value`` attribute of an
NNX ``Variable`` is dropped). Signatures are keyed by these paths, so one signature
can patch the same layers of any tree that has them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from rws_jax.types import PyTree

if TYPE_CHECKING:
    from jax.sharding import Sharding

_NNX_VALUE_KEYS = ("value", "raw_value")

# NNX variable types -> the Linen collection name they correspond to.
_NNX_COLLECTIONS = {"Param": "params", "BatchStat": "batch_stats"}


def _key_name(key: Any) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_to_str(key_path: tuple) -> str:
    """``(DictKey('params'), DictKey('conv_0'), DictKey('kernel'))`` -> ``'params/conv_0/kernel'``."""
    names = [_key_name(k) for k in key_path]
    if len(names) > 1 and isinstance(key_path[-1], jax.tree_util.GetAttrKey) and names[-1] in _NNX_VALUE_KEYS:
        names = names[:-1]
    return "/".join(names)


def _unique_paths(key_paths: Iterable[tuple]) -> tuple[str, ...]:
    paths = tuple(path_to_str(p) for p in key_paths)
    if len(set(paths)) != len(paths):
        raise ValueError("tree has two leaves with the same path string; rws_jax needs unique paths")
    return paths


@functools.lru_cache(maxsize=512)
def _paths_of(treedef: jax.tree_util.PyTreeDef) -> tuple[str, ...]:
    """Leaf path strings of a tree structure (cached: patching in a loop reuses them)."""
    dummy = jax.tree_util.tree_unflatten(treedef, [np.zeros(()) for _ in range(treedef.num_leaves)])
    return _unique_paths(p for p, _ in jax.tree_util.tree_flatten_with_path(dummy)[0])


def flatten(tree: PyTree) -> tuple[dict[str, Any], Callable[[Mapping[str, Any]], PyTree]]:
    """Flattens ``tree`` to ``({path: leaf}, rebuild)``.

    ``rebuild(replacements)`` returns a new tree of the same structure where the
    leaves named in ``replacements`` are swapped; every other leaf is the very same
    object as in ``tree`` (nothing is copied).
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    try:
        paths = _paths_of(treedef)
    except TypeError:  # an unhashable treedef: compute the paths from the tree itself
        paths = _unique_paths(p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0])
    flat = dict(zip(paths, leaves))

    def rebuild(replacements: Mapping[str, Any]) -> PyTree:
        unknown = set(replacements) - flat.keys()
        if unknown:
            raise KeyError(f"paths not in the tree: {sorted(unknown)[:5]}")
        return jax.tree_util.tree_unflatten(treedef, [replacements.get(p, flat[p]) for p in paths])

    return flat, rebuild


def collection_of(tree: PyTree) -> dict[str, str | None]:
    """Maps each leaf path to its collection (``'params'``, ``'batch_stats'``, ...).

    Linen variable dicts carry the collection as their first key. For NNX ``State``
    the collection is derived from the ``Variable`` type (``Param`` -> ``'params'``,
    ``BatchStat`` -> ``'batch_stats'``). Plain dicts without collections map to ``None``.
    """
    out: dict[str, str | None] = {}
    nnx_var = _nnx_variable_type()
    if nnx_var is not None:
        with_vars = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, nnx_var))[0]
        if any(isinstance(leaf, nnx_var) for _, leaf in with_vars):
            for p, leaf in with_vars:
                name = type(leaf).__name__
                out[path_to_str(p)] = _NNX_COLLECTIONS.get(name, name)
            return _expand_value_paths(out, tree)
    top = set(tree.keys()) if isinstance(tree, Mapping) else set()
    has_collections = "params" in top or "batch_stats" in top
    for s in flatten(tree)[0]:  # path strings cached per tree structure
        out[s] = s.split("/", 1)[0] if has_collections else None
    return out


def _expand_value_paths(var_collections: dict[str, str | None], tree: PyTree) -> dict[str, str | None]:
    # NNX Variables flatten to one array leaf; their path strings already match.
    leaf_paths = flatten(tree)[0].keys()
    return {p: var_collections.get(p) for p in leaf_paths}


def _nnx_variable_type() -> type | None:
    try:
        from flax import nnx  # noqa: PLC0415 - flax.nnx costs ~0.4 s to import; only NNX states need it
    except Exception:  # pragma: no cover - flax is a dependency
        return None
    return getattr(nnx, "Variable", None)


def unit_of(path: str, collection: str | None) -> str:
    """The *unit* a leaf belongs to: its first path component below the collection.

    ``'params/block_0_1/conv1/kernel'`` -> ``'block_0_1'``; ``'conv_3/kernel'`` -> ``'conv_3'``.
    """
    parts = path.split("/")
    if collection is not None and parts[0] == collection and len(parts) > 1:
        parts = parts[1:]
    return parts[0]


@functools.lru_cache(maxsize=64)
def _dtype_name(dtype: Any) -> str:
    return str(np.dtype(dtype))


def leaf_spec(leaf: Any) -> tuple[tuple[int, ...], str]:
    """``(shape, dtype name)`` of an array leaf."""
    shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
    if shape is None or dtype is None:
        leaf = np.asarray(leaf)
        shape, dtype = leaf.shape, leaf.dtype
    return tuple(map(int, shape)), _dtype_name(dtype)


def fingerprint(tree: PyTree, paths: Iterable[str] | None = None) -> str:
    """A short sha256 of the tree's leaf paths, shapes and dtypes (not values).

    With ``paths`` only those leaves are covered. Two trees with the same fingerprint
    accept the same signatures. Cached per (structure, shapes, dtypes), so checking the
    base model on every patch costs a flatten, not a hash.
    """
    flat, _ = flatten(tree)
    keys = tuple(sorted(flat) if paths is None else sorted(paths))
    specs = tuple(leaf_spec(flat[k]) for k in keys)
    return _fingerprint_of(keys, specs)


@functools.lru_cache(maxsize=256)
def _fingerprint_of(keys: tuple, specs: tuple) -> str:
    spec = [[k, list(shape), dtype] for k, (shape, dtype) in zip(keys, specs)]
    return hashlib.sha256(json.dumps(spec, separators=(",", ":")).encode()).hexdigest()[:16]


def natural_key(name: str) -> list[int | str]:
    """Sort key under which ``conv_2`` comes before ``conv_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# ------------------------------------------------------------------------ sharding helpers
#
# The jitted kernels of rws_jax (extract, quantize, dequantize, compose, patch) are
# elementwise per leaf plus scalar or per-channel reductions, so under a
# ``jax.sharding.Mesh`` every device works on its own shards and only scalars (or one
# value per channel) are all-reduced; nothing gathers a whole tensor. To make sure the
# outputs come back sharded like the inputs (XLA's propagation usually, but not always,
# does that), the kernels take the wanted output shardings as a static argument and
# pin them with ``jax.lax.with_sharding_constraint``.


def device_sharding(x: Any) -> Sharding | None:
    """``x.sharding`` if ``x`` is a concrete ``jax.Array`` spread over several devices.

    ``None`` for numpy arrays, tracers and single-device arrays (nothing to preserve).
    """
    if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
        return None
    s = getattr(x, "sharding", None)
    try:
        if s is None or len(s.device_set) <= 1:
            return None
    except Exception:  # noqa: BLE001 - exotic sharding types
        return None
    return s


def shard_shape(x: Any) -> tuple[int, ...] | None:
    """Shape of one device's block of ``x`` (``None`` unless ``x`` is sharded)."""
    s = device_sharding(x)
    if s is None:
        return None
    try:
        return tuple(int(d) for d in s.shard_shape(tuple(x.shape)))
    except Exception:  # noqa: BLE001
        return None


def derived_sharding(sharding: Any, ndim: int, keep_axes: Iterable[int] | None = None) -> NamedSharding | None:
    """A ``NamedSharding`` on the same mesh for an array derived from a leaf.

    The derived array has ``ndim`` dimensions aligned with the leaf's; dimension ``i``
    keeps the leaf's partitioning if ``i`` is in ``keep_axes`` (all if ``None``) and is
    replicated otherwise. ``None`` when ``sharding`` is not a ``NamedSharding``.
    """
    if not isinstance(sharding, NamedSharding):
        return None
    spec = tuple(sharding.spec) + (None,) * max(0, ndim - len(sharding.spec))
    keep = set(range(ndim)) if keep_axes is None else {a % max(ndim, 1) for a in keep_axes}
    return NamedSharding(sharding.mesh, PartitionSpec(*(spec[i] if i in keep else None for i in range(ndim))))


def constrain(x: Any, sharding: Any) -> Any:
    """``jax.lax.with_sharding_constraint(x, sharding)``, or ``x`` if ``sharding`` is None."""
    return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)


def static_shardings(mapping: Mapping[str, Any]) -> tuple | None:
    """``{path: sharding or None}`` as a hashable static argument (``None`` if all None)."""
    items = tuple(sorted((p, s) for p, s in mapping.items() if s is not None))
    return items or None
