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

Sharded inputs stay sharded: :func:`out_shardings` picks each output's sharding (the
model leaf's, else the first delta's) and the kernel pins it, so nothing is gathered.
"""

from __future__ import annotations

import jax

from rws_jax import tree_paths
from rws_jax.extraction import delta_dtype
from rws_jax.quantized_tensor import as_float, delta_sharding


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
