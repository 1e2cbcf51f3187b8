"""The jitted patch/combine kernel and its sharding helpers.

One kernel does the arithmetic of every patch: :func:`rws_jax.patch`,
:func:`rws_jax.compose` (``method='sum'``), :class:`rws_jax.PatchPlan`,
:class:`rws_jax.PatchStack` and the BatchNorm scheme all run :func:`combine_impl`, so
their results agree bit for bit. For every path ``p`` held by any of the K delta
dicts it computes, in the accumulation dtype of :func:`rws_jax.extraction.delta_dtype`
(quantized deltas are dequantized in the same pass)::

    out[p] = leaves[p] + Σ_{k holding p} alphas[k] · deltas[k][p]     (leaves given)
    out[p] =             Σ_{k holding p} alphas[k] · deltas[k][p]     (leaves=None: compose)

Shapes: ``leaves: {path: T[*S_p]}`` (or ``None``), ``deltas: ({path: f[*S_p] or
QuantizedTensor of shape S_p}, ...)`` (K dicts, any mix of paths), ``alphas: f32[K]``;
the result is ``{path: T[*S_p]}`` over the union of the deltas' paths (with
``leaves=None``, the accumulation dtype of the first delta holding the path).

:class:`PatchCache` is ``rws.patch``'s fast path: it reuses, for a tree structure and
signatures already checked, the work of the first call (see its notes below).

Sharded inputs stay sharded: :func:`out_shardings` picks each output's sharding (the
model leaf's, else the first delta's) and the kernel pins it, so nothing is gathered.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable

import jax

from rws_jax import tree_paths
from rws_jax.errors import IncompatibleSignatureError
from rws_jax.extraction import delta_dtype
from rws_jax.quantized_tensor import as_float, delta_sharding
from rws_jax.signature import Signature, is_marked_finite


def combine_impl(leaves: dict | None, deltas: tuple, alphas: jax.Array, shardings: tuple | None = None) -> dict:
    """``leaves[p] + Σ_k alphas[k] · deltas[k][p]`` for every path in any delta (traceable).

    Args:
      leaves: ``{path: T[*S_p]}`` model leaves holding at least the deltas' paths, or
        ``None`` to only sum the deltas (compose).
      deltas: K dicts ``{path: f[*S_p] | QuantizedTensor}``.
      alphas: ``f32[K]`` coefficients.
      shardings: static ``((path, sharding), ...)`` pinned on the outputs (see
        :func:`out_shardings`), or ``None``.

    Returns:
      ``{path: T[*S_p]}`` for the union of the deltas' paths (the leaf's dtype; with
      ``leaves=None`` the accumulation dtype).
    """
    paths = sorted({p for d in deltas for p in d})
    sh = dict(shardings or ())
    out = {}
    for p in paths:
        held = [(k, d[p]) for k, d in enumerate(deltas) if p in d]  # at least one
        base = None if leaves is None else leaves[p]
        acc_dtype = delta_dtype(base.dtype if base is not None else as_float(held[0][1]).dtype)
        terms = [alphas[k].astype(acc_dtype) * as_float(v).astype(acc_dtype) for k, v in held]
        acc = terms[0] if base is None else base.astype(acc_dtype) + terms[0]
        for term in terms[1:]:
            acc = acc + term
        out[p] = tree_paths.constrain(acc if base is None else acc.astype(base.dtype), sh.get(p))
    return out


#: :func:`combine_impl` under ``jax.jit`` (``shardings`` static).
combine_jit = jax.jit(combine_impl, static_argnames=("shardings",))
#: :func:`combine_impl` under ``jax.jit``, donating the buffers of ``leaves``.
combine_donated_jit = jax.jit(combine_impl, donate_argnums=0, static_argnames=("shardings",))


def out_shardings(leaves: dict | None, deltas: tuple) -> tuple | None:
    """Output shardings of a combine: the model leaf's, else the first delta's.

    Args:
      leaves: ``{path: T[*S_p]}`` or ``None``, as for :func:`combine_impl`.
      deltas: K dicts ``{path: f[*S_p] | QuantizedTensor}``.

    Returns:
      Static ``((path, sharding), ...)`` for :func:`combine_impl`'s ``shardings``
      (see :func:`rws_jax.tree_paths.static_shardings`), ``None`` when nothing is sharded.
    """
    found = {}
    for p in sorted({p for d in deltas for p in d}):
        s = tree_paths.device_sharding(leaves[p]) if leaves is not None else None
        if s is None and leaves is None:
            s = next((delta_sharding(d[p]) for d in deltas if p in d and delta_sharding(d[p]) is not None), None)
        found[p] = s
    return tree_paths.static_shardings(found)


def combine(leaves: dict | None, deltas: tuple, alphas: jax.Array) -> dict:
    """Jitted :func:`combine_impl` (same arguments and result); sharded inputs give
    outputs sharded the same way."""
    return combine_jit(leaves, deltas, alphas, shardings=out_shardings(leaves, deltas))


def combine_donated(leaves: dict, deltas: tuple, alphas: jax.Array) -> dict:
    """:func:`combine` reusing (donating) the buffers of ``leaves``: those arrays are
    invalid afterwards."""
    return combine_donated_jit(leaves, deltas, alphas, shardings=out_shardings(leaves, deltas))


# ----------------------------------------------------------------------------- rws.patch's cache
#
# ``rws.patch`` on a tree structure and signatures it has already checked skips the
# Python work of the first call: per (tree structure, signature metadata objects,
# check_base) a :class:`PatchCache` keeps the positions of the patched leaves and one
# jitted function whose arguments are flat lists (the model leaves it patches; with
# ``check_base`` also the others; the signatures' delta leaves; the coefficients). The
# checks that depend on the leaves' shapes and dtypes (the patched leaves', the deltas',
# the whole tree's fingerprint with ``check_base``) run when that function is *traced*:
# a call whose leaves have the shapes and dtypes of an earlier successful call hits
# jit's cache, so they passed; any other shape or dtype retraces, and a failing check
# sends the call back to the full path, which raises the error it always raised. The
# arithmetic is :func:`combine_impl`, so results are bit-identical.


class _NeedsFullPath(Exception):
    """Raised while tracing the cached kernel where the full path's checks would fail."""


@dataclasses.dataclass(frozen=True, eq=False)
class _CachedLayout:
    """Static description of a cached kernel (compared and hashed by value).

    Attributes:
      paths: ``(P,)`` sorted patched leaf paths, the order of the ``leaves`` argument.
      other_paths: the tree's other leaf paths (the ``others`` argument) with
        ``check_base``, ``()`` otherwise.
      delta_treedef: structure of the tuple of K delta dicts.
      sig_specs: per signature ``(leaf_specs, base_fingerprint or None)``: what the checks read.
      check_base: whether the whole tree must match the base fingerprint.
      metas: the K signature metadata objects (not compared: only ``sig_specs`` matter).
      check: the ``check_compatible(signature, variables, *, check_base, flat)`` to run.
    """

    paths: tuple
    other_paths: tuple
    delta_treedef: Any
    sig_specs: tuple
    check_base: bool
    metas: tuple
    check: Callable[..., None]

    def _key(self) -> tuple:
        return (self.paths, self.other_paths, self.delta_treedef, self.sig_specs, self.check_base, self.check)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _CachedLayout) and (self is other or self._key() == other._key())


def _cached_impl(leaves: list, others: list, delta_leaves: list, alphas: jax.Array, *, layout: _CachedLayout) -> list:
    """``[leaves[i] + Σ_k alphas[k] · RWS_k[paths[i]]]`` after the full path's leaf checks
    (run at trace time, on the leaves' shapes and dtypes).

    Raises (when traced): _NeedsFullPath where ``layout.check`` raises
    :class:`IncompatibleSignatureError`.
    """
    deltas = jax.tree_util.tree_unflatten(layout.delta_treedef, delta_leaves)
    flat = dict(zip(layout.paths, leaves))
    tree = None
    if layout.check_base:
        tree = dict(flat)
        tree.update(zip(layout.other_paths, others))
    try:
        for meta, d in zip(layout.metas, deltas):
            layout.check(Signature(deltas=d, meta=meta), tree, check_base=layout.check_base,
                         flat=flat if tree is None else tree)
    except IncompatibleSignatureError:
        raise _NeedsFullPath() from None
    out = combine_impl(flat, deltas, alphas)
    return [out[p] for p in layout.paths]


@dataclasses.dataclass(frozen=True, eq=False)
class _CacheEntry:
    metas: tuple  # held, so that the ids in the cache key stay theirs
    delta_treedef: Any
    indices: tuple  # positions of the patched leaves among the tree's leaves
    other_indices: tuple  # positions of the others (check_base), else ()
    copy: Callable
    donated: Callable


@functools.lru_cache(maxsize=None)
def _single_device() -> bool:
    """One device in this process: no leaf is sharded, no output sharding to pin."""
    return jax.device_count() == 1


@functools.lru_cache(maxsize=64)
def _is_array_type(t: type) -> bool:
    """A concrete ``jax.Array`` type (not a tracer, not numpy): its shape and dtype are
    what jit's cache key and the traced checks see."""
    return issubclass(t, jax.Array) and not issubclass(t, jax.core.Tracer)


class PatchCache:
    """:func:`rws_jax.patch`'s fast path: checked tree structures and signatures, reused.

    ``cache.patch(variables, sigs, alphas, ...)`` returns what the full path returns, or
    ``None`` when the call must take the full path: the first check of a signature's
    values, a tree leaf that is not a concrete ``jax.Array`` (numpy, Python scalars,
    tracers), several devices (shardings to pin), or any failing check (the full path
    then raises its error). A new tree structure or signature runs the full checks
    (``check_compatible`` per signature, then ``check_finite``) before it is cached.

    Entries are keyed by the tree's structure, ``check_base`` and the identity of the
    signatures' metadata objects (held by the entry); the signatures' delta leaves are
    passed anew on every call (changed values are used) and their structure is compared.
    At most ``size`` entries, least recently used dropped first; kernels are shared
    between entries whose checks read the same values.
    """

    def __init__(self, check_compatible: Callable[..., None], check_finite: Callable[[list], None],
                 size: int = 64, kernels: int = 256) -> None:
        self._check_compatible = check_compatible
        self._check_finite = check_finite
        self._size = size
        self._kernel_size = kernels
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._kernels: dict[_CachedLayout, tuple[Callable, Callable]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._kernels.clear()

    def entry(self, treedef: Any, check_base: bool, signatures: list) -> _CacheEntry | None:
        """The entry of a tree structure and signature list, if cached (for benchmarks)."""
        return self._entries.get((treedef, check_base, *map(id, (s.meta for s in signatures))))

    def _build(self, paths_all: list[str], sigs: list, delta_treedef: Any, check_base: bool) -> _CacheEntry:
        order = {p: i for i, p in enumerate(paths_all)}
        paths = tuple(sorted({p for s in sigs for p in s.deltas}))
        patched = set(paths)
        other_paths = tuple(p for p in paths_all if p not in patched) if check_base else ()
        metas = tuple(s.meta for s in sigs)
        sig_specs = tuple((tuple((p, tuple(shape), str(dtype)) for p, shape, dtype in m.leaf_specs),
                           m.base_fingerprint if check_base else None) for m in metas)
        layout = _CachedLayout(paths=paths, other_paths=other_paths, delta_treedef=delta_treedef,
                               sig_specs=sig_specs, check_base=check_base, metas=metas, check=self._check_compatible)
        fns = self._kernels.get(layout)
        if fns is None:
            fn = functools.partial(_cached_impl, layout=layout)
            fns = (jax.jit(fn), jax.jit(fn, donate_argnums=0))
            if len(self._kernels) >= self._kernel_size:
                self._kernels.pop(next(iter(self._kernels)))
            self._kernels[layout] = fns
        return _CacheEntry(metas=metas, delta_treedef=delta_treedef, indices=tuple(order[p] for p in paths),
                           other_indices=tuple(order[p] for p in other_paths), copy=fns[0], donated=fns[1])

    def patch(self, variables: Any, sigs: list, alphas: Any, *, donate: bool, check_base: bool,
              check_values: bool) -> Any | None:
        """``variables`` patched by ``Σ_k alphas[k] · sigs[k]`` (``alphas``: final host
        ``f32[K]`` coefficients), or ``None``: take the full path."""
        if not _single_device():
            return None
        leaves, treedef = jax.tree_util.tree_flatten(variables)
        if not all(map(_is_array_type, set(map(type, leaves)))):
            return None
        delta_leaves, delta_treedef = jax.tree_util.tree_flatten(tuple(s.deltas for s in sigs))
        key = (treedef, check_base, *map(id, (s.meta for s in sigs)))
        try:
            entry = self._entries.get(key)
        except TypeError:  # an unhashable treedef
            return None
        if entry is None or entry.delta_treedef != delta_treedef:
            # First call for this structure: the full checks, in the full path's order.
            flat, _ = tree_paths.flatten(variables)
            for s in sigs:
                self._check_compatible(s, variables, check_base=check_base, flat=flat)
            if check_values:
                self._check_finite(sigs)
            entry = self._build(list(flat), sigs, delta_treedef, check_base)
            self._entries[key] = entry
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        else:
            try:
                self._entries.move_to_end(key)
            except KeyError:  # evicted meanwhile by another thread: the entry in hand still works
                pass
            if check_values and not all(map(is_marked_finite, sigs)):
                return None
        fn = entry.donated if donate else entry.copy
        try:
            new = fn([leaves[i] for i in entry.indices], [leaves[i] for i in entry.other_indices], delta_leaves,
                     alphas)
        except _NeedsFullPath:
            return None
        for i, x in zip(entry.indices, new):
            leaves[i] = x
        return jax.tree_util.tree_unflatten(treedef, leaves)
