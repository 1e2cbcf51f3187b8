"""Signature extraction: the per-tensor rank-1 orthogonal projection of docs/design.md §1.

For every kept tensor, flattened::

    a     = θ_std − θ_init            # clean fine-tuning direction
    Δ     = θ_rob − θ_init            # robust fine-tuning direction
    RWS   = Δ − (Δ·â) â,   â = a/‖a‖

computed without ever forming a d×d matrix (two reductions and an axpy per tensor).
When ``a`` is zero or tiny the projection is the identity, so no NaN can appear.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rws_jax import selection as selection_lib
from rws_jax import tree_paths
from rws_jax.errors import IncompatibleSignatureError, NonFiniteError
from rws_jax.signature import Signature, SignatureMeta, leaf_specs_for, mark_finite
from rws_jax.types import Variables
from rws_jax.selection import SelectionLike


def delta_dtype(dtype: Any) -> jnp.dtype:
    """Deltas are kept at least in float32 (bf16/fp16 deltas do not round-trip)."""
    return jnp.promote_types(dtype, jnp.float32)


def project_out(delta: jax.Array, direction: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Removes from ``delta`` its component along ``direction`` (any shape, same shape).

    ``delta − (delta·a / a·a) a`` for ``a = direction``, i.e. ``delta − (delta·â) â``.
    If the L2 norm of the flattened direction is at most ``eps`` (tested as
    ``a·a ≤ eps²``, so a direction so tiny that its squares underflow counts too),
    the direction is treated as zero and ``delta`` is returned unchanged, so no NaN
    can appear. One fused pass computes both dot products and a second applies the update;
    on sharded arrays only two scalar all-reduces are needed.
    """
    dt = delta_dtype(delta.dtype)
    d = delta.astype(dt)
    a = direction.astype(dt)
    norm_sq = jnp.sum(a * a)
    ok = norm_sq > eps * eps
    coef = jnp.sum(d * a) / jnp.where(ok, norm_sq, 1.0)
    return jnp.where(ok, d - coef * a, d)


@jax.jit(static_argnames=("project", "eps", "shardings"))
def _extract_leaves(init: dict, standard: dict, robust: dict, project: bool, eps: float,
                    shardings: tuple | None = None) -> tuple[dict, jax.Array]:
    out, finite = {}, []
    sh = dict(shardings or ())
    for p in init:
        dt = delta_dtype(init[p].dtype)
        delta = robust[p].astype(dt) - init[p].astype(dt)
        if project:
            delta = project_out(delta, standard[p].astype(dt) - init[p].astype(dt), eps)
        out[p] = tree_paths.constrain(delta, sh.get(p))
        finite.append(jnp.all(jnp.isfinite(delta)))
    return out, jnp.stack(finite)


def extract(
    init: Variables,
    standard: Variables,
    robust: Variables,
    select: SelectionLike = 7,
    *,
    project: bool = True,
    name: str = "",
    severity: int | None = None,
    eps: float = 1e-12,
) -> Signature:
    """Extracts a robust weight signature.

    Args:
      init: θ_init variables (Linen dict ``{'params': ..., 'batch_stats': ...}``,
        NNX ``State`` or any dict pytree).
      standard: θ_std, same structure (fine-tuned from ``init`` on clean data).
      robust: θ_rob,c, same structure (fine-tuned from ``init`` on corruption c).
        Only the selected leaves of ``standard`` are read.
      select: layer selection: a :class:`~rws_jax.selection.Selection`
        (``first_k``, ``by_pattern``, ``by_paths``), an int k (first k units in
        natural name order, ``params`` only, head excluded), a regex, or a list of
        paths. Default: the reference's first 7 units.
      project: ``True`` for the paper's RWS (orthogonal to the clean direction);
        ``False`` for the plain difference ``θ_rob − θ_init`` (task vector).
      name, severity: labels stored in the signature (e.g. ``'fog'``, ``5``).
      eps: threshold on the L2 norm: a tensor whose clean direction
        ``a = θ_std − θ_init`` (flattened) has ``‖a‖₂ ≤ eps`` is not projected (its
        delta is kept as is), see :func:`project_out`.

    Returns:
      ``Signature`` with one float32 (or wider) delta per selected leaf, each of the
      leaf's shape, e.g. ``deltas['params/conv_0/kernel']: f32[3, 3, C_in, C_out]``.

    Raises:
      IncompatibleSignatureError: the three trees differ in a selected leaf's
        presence, shape or dtype.
      NonFiniteError: a delta is NaN/inf (a model holds NaN/inf).
    """
    sel = selection_lib.as_selection(select)
    flat_init, _ = tree_paths.flatten(init)
    flat_std, _ = tree_paths.flatten(standard)
    flat_rob, _ = tree_paths.flatten(robust)
    paths = sel.resolve(init)
    for label, other in (("standard", flat_std), ("robust", flat_rob)):
        for p in paths:
            if p not in other:
                raise IncompatibleSignatureError(f"{label} model has no leaf {p!r} (present in init)")
            if tree_paths.leaf_spec(other[p]) != tree_paths.leaf_spec(flat_init[p]):
                raise IncompatibleSignatureError(
                    f"{label} model leaf {p!r} is {tree_paths.leaf_spec(other[p])}, "
                    f"init has {tree_paths.leaf_spec(flat_init[p])} (shape, dtype)"
                )
    pick = lambda flat: {p: flat[p] for p in paths}  # noqa: E731
    # Deltas come out sharded like the leaves of ``init`` (no gather on a mesh).
    shardings = tree_paths.static_shardings({p: tree_paths.device_sharding(flat_init[p]) for p in paths})
    deltas, finite = _extract_leaves(
        pick(flat_init), pick(flat_std), pick(flat_rob), project=project, eps=float(eps), shardings=shardings
    )
    # Inside jit the dict is iterated in sorted key order; one host transfer for all flags.
    bad = [p for p, ok in zip(sorted(paths), np.asarray(finite)) if not ok]
    if bad:
        raise NonFiniteError(f"NaN/inf in the weight difference of {bad[:5]}: one of the models holds NaN or inf")
    meta = SignatureMeta(
        base_fingerprint=tree_paths.fingerprint(init),
        leaf_specs=leaf_specs_for(flat_init, paths),
        name=name,
        severity=severity,
        kind="projected" if project else "difference",
        selection=json.dumps(sel.to_json(), sort_keys=True),
    )
    return mark_finite(Signature(deltas=dict(deltas), meta=meta))


def relative_change(init: Variables, other: Variables, *,
                    collections: Sequence[str] | None = ("params",)) -> dict[str, float]:
    """Per-unit relative weight change ``‖θ_other − θ_init‖ / ‖θ_init‖``.

    Returns ``{unit_name: float}`` over every floating leaf of the chosen
    collections (head included), the quantity of the paper's layer-wise plot.
    """
    flat_i, _ = tree_paths.flatten(init)
    flat_o, _ = tree_paths.flatten(other)
    colls = tree_paths.collection_of(init)
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for p, x in flat_i.items():
        c = colls[p]
        if collections is not None and c is not None and c not in collections:
            continue
        if not jnp.issubdtype(x.dtype, jnp.floating):
            continue
        u = tree_paths.unit_of(p, c)
        x32 = jnp.asarray(x, jnp.float32)
        num[u] = num.get(u, 0.0) + float(jnp.sum((jnp.asarray(flat_o[p], jnp.float32) - x32) ** 2))
        den[u] = den.get(u, 0.0) + float(jnp.sum(x32**2))
    return {u: float(np.sqrt(num[u]) / max(np.sqrt(den[u]), 1e-30)) for u in num}


@jax.jit
def _dot_products(init: dict, standard: dict, robust: dict) -> dict:
    """Per leaf: (Δ·a, a·a, Δ·Δ, θ_init·θ_init) in float32 (one fused pass)."""
    out = {}
    for p in init:
        x = init[p].astype(jnp.float32)
        a = standard[p].astype(jnp.float32) - x
        d = robust[p].astype(jnp.float32) - x
        out[p] = jnp.stack([jnp.sum(d * a), jnp.sum(a * a), jnp.sum(d * d), jnp.sum(x * x)])
    return out


def projection_diagnostics(init: Variables, standard: Variables, robust: Variables, *,
                           collections: Sequence[str] | None = ("params",)) -> dict[str, dict[str, float]]:
    """How much of the robust fine-tuning direction the projection removes, per unit.

    For each unit (conv layer or residual block; the head included) with Δ = θ_rob − θ_init
    and a = θ_std − θ_init over the unit's floating leaves of ``collections``:

    - ``cos``: cos(Δ, a) of the unit's concatenated tensors;
    - ``removed``: ‖proj‖ / ‖Δ‖ where proj is the per-tensor projection of Δ onto a that
      :func:`extract` subtracts (0: the RWS is Δ itself; 1: nothing is left);
    - ``clean_change`` / ``robust_change``: ‖a‖ / ‖θ_init‖ and ‖Δ‖ / ‖θ_init‖.

    Returns ``{unit: {"cos", "removed", "clean_change", "robust_change"}}``.
    """
    flat_i, _ = tree_paths.flatten(init)
    flat_s, _ = tree_paths.flatten(standard)
    flat_r, _ = tree_paths.flatten(robust)
    colls = tree_paths.collection_of(init)
    keep = [p for p, x in flat_i.items() if (collections is None or colls[p] is None or colls[p] in collections)
            and jnp.issubdtype(x.dtype, jnp.floating)]
    dots = jax.device_get(_dot_products({p: flat_i[p] for p in keep}, {p: flat_s[p] for p in keep},
                                        {p: flat_r[p] for p in keep}))
    sums: dict[str, np.ndarray] = {}
    for p in keep:
        da, aa, dd, xx = (float(v) for v in dots[p])
        proj_sq = da * da / aa if aa > 1e-24 else 0.0  # (Δ·â)², as project_out's zero guard
        u = tree_paths.unit_of(p, colls[p])
        sums[u] = sums.get(u, np.zeros(5)) + np.array([da, aa, dd, xx, proj_sq])
    out = {}
    for u, (da, aa, dd, xx, proj_sq) in sums.items():
        out[u] = {"cos": float(da / max(np.sqrt(aa * dd), 1e-30)),
                  "removed": float(np.sqrt(proj_sq) / max(np.sqrt(dd), 1e-30)),
                  "clean_change": float(np.sqrt(aa) / max(np.sqrt(xx), 1e-30)),
                  "robust_change": float(np.sqrt(dd) / max(np.sqrt(xx), 1e-30))}
    return out
