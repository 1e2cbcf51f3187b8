"""Pre-validated patching: validate once, then patch at the cost of one jitted call.

:func:`rws_jax.patch` checks everything on the first call for a tree structure and a
signature, then reuses that work from a cache (:class:`rws_jax.kernels.PatchCache`), with
the shape and dtype checks run when a new shape is traced. A :class:`PatchPlan` makes the
same one-time work explicit, and holds it for you::

    plan = rws.patch_plan(variables, [fog, snow])      # checks paths, shapes, dtypes, NaN
    patched = plan(variables, [0.7, 0.5])              # one flatten + one jitted call
    patched = plan(patched, [-0.7, -0.5], donate=True) # in place

A call flattens ``variables`` with ``jax.tree_util.tree_flatten``, checks that its
structure is the planned one (a treedef comparison), picks the patched leaves by
their precomputed positions and runs one jitted function whose arguments are flat
lists (the signature's leaves were flattened at construction). Leaf shapes and
dtypes are checked when that function is traced: a call with the planned shapes hits
the jit cache and costs nothing more; another shape retraces, and the trace raises.

The arithmetic is :func:`rws_jax.kernels.combine_impl`, the one :func:`rws.patch
<rws_jax.patch>` runs, so results are bit-identical.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NoReturn, Sequence

import jax

from rws_jax import tree_paths
from rws_jax.algebra import MODES, check_compatible, check_finite, host_coefficients
from rws_jax.errors import IncompatibleSignatureError, RWSError
from rws_jax.kernels import combine_impl, out_shardings
from rws_jax.signature import SignatureLike, signature_list
from rws_jax.types import Alphas, Variables


@dataclasses.dataclass(frozen=True, eq=False)
class _Layout:
    """Static description of a plan's jitted call (hashed by identity).

    Attributes:
      paths: ``(P,)`` sorted leaf paths patched.
      specs: ``((shape, dtype name), ...)`` of those P model leaves.
      delta_treedef: structure of the tuple of K delta dicts (quantized or float).
      shardings: ``((path, sharding), ...)`` pinned on the outputs, or ``None``.
    """

    paths: tuple
    specs: tuple
    delta_treedef: Any
    shardings: tuple | None


def _plan_impl(leaves: list, delta_leaves: list, alphas: jax.Array, *, layout: _Layout) -> list:
    """``[leaves[i] + Σ_k alphas[k] · RWS_k[paths[i]] for i < P]``.

    Args:
      leaves: P model leaves, in ``layout.paths`` order, with ``layout.specs``.
      delta_leaves: the flattened leaves of the K delta dicts.
      alphas: ``f32[K]`` coefficients.

    Raises (when traced, i.e. on a new shape or dtype):
      IncompatibleSignatureError: a leaf of another shape or dtype than planned.
    """
    for p, x, want in zip(layout.paths, leaves, layout.specs):
        have = tree_paths.leaf_spec(x)
        if have != want:
            raise IncompatibleSignatureError(
                f"this patch plan was made for {p!r} of shape {want[0]} dtype {want[1]}; "
                f"got shape {have[0]} dtype {have[1]}. Make a new plan for this model."
            )
    deltas = jax.tree_util.tree_unflatten(layout.delta_treedef, delta_leaves)
    out = combine_impl(dict(zip(layout.paths, leaves)), deltas, alphas, layout.shardings)
    return [out[p] for p in layout.paths]


class PatchPlan:
    """A validated, compiled ``θ + Σ_k α_k · RWS_k`` for one tree structure.

    Made by :func:`patch_plan`. Immutable: holds the K signatures' flattened leaves,
    the positions of the P patched leaves among the tree's leaves, the tree
    structure, and two jitted functions (copying and donating) of one kernel.

    Attributes:
      paths: ``(P,)`` sorted leaf paths the plan patches.
      num_signatures: K.
      mode: ``'linear'`` or ``'reference'`` (see :func:`rws_jax.coefficients`).
      fingerprint: :func:`rws_jax.fingerprint` of the planned tree.
    """

    __slots__ = ("paths", "num_signatures", "mode", "fingerprint", "_treedef", "_indices", "_delta_leaves",
                 "_impl", "_copy", "_donated")
    paths: tuple[str, ...]
    num_signatures: int
    mode: str
    fingerprint: str
    _treedef: jax.tree_util.PyTreeDef
    _indices: tuple[int, ...]
    _delta_leaves: list[Any]
    _impl: Callable[[list, list, jax.Array], list]
    _copy: Callable[[list, list, Any], list]
    _donated: Callable[[list, list, Any], list]

    def __init__(self, *, paths: Sequence[str], num_signatures: int, mode: str, fingerprint: str,
                 treedef: jax.tree_util.PyTreeDef, indices: Sequence[int], delta_leaves: Sequence[Any],
                 layout: _Layout) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("paths", tuple(paths))
        set_("num_signatures", int(num_signatures))
        set_("mode", mode)
        set_("fingerprint", fingerprint)
        set_("_treedef", treedef)
        set_("_indices", tuple(indices))
        set_("_delta_leaves", list(delta_leaves))
        fn = functools.partial(_plan_impl, layout=layout)
        set_("_impl", fn)
        set_("_copy", jax.jit(fn))
        set_("_donated", jax.jit(fn, donate_argnums=0))

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("PatchPlan is immutable")

    def __call__(self, variables: Variables, alphas: Alphas = 1.0, *, donate: bool = False) -> Variables:
        """``variables`` with ``θ_p + Σ_k α_k · RWS_k[p]`` at the planned paths.

        Args:
          variables: a tree of the planned structure (same treedef, shapes, dtypes).
          alphas: a scalar (same α for all K) or K coefficients.
          donate: reuse the patched leaves' buffers (in place); those leaves of
            ``variables`` are invalid afterwards.

        Returns:
          A tree of the same structure; untouched leaves are the same objects.

        Raises:
          IncompatibleSignatureError: another tree structure, or a patched leaf of
            another shape or dtype (nothing is modified or donated then).
          RWSError / NonFiniteError: wrong number of coefficients, NaN/inf ones.
        """
        leaves, treedef = jax.tree_util.tree_flatten(variables)
        if treedef != self._treedef:
            raise IncompatibleSignatureError(
                f"this patch plan was made for a tree of another structure (fingerprint {self.fingerprint}); "
                f"got {tree_paths.fingerprint(variables)}. Make a new plan with rws.patch_plan for this model."
            )
        alpha = host_coefficients(alphas, self.num_signatures, self.mode)
        fn = self._donated if donate else self._copy
        new = fn([leaves[i] for i in self._indices], self._delta_leaves, alpha)
        for i, x in zip(self._indices, new):
            leaves[i] = x
        return jax.tree_util.tree_unflatten(treedef, leaves)

    def traced(self, variables: Variables, alphas: jax.Array) -> Variables:
        """The plan's patch as a traceable function, to fuse it into a caller's ``jax.jit``
        (e.g. patch + forward pass in one compiled call)::

            step = jax.jit(lambda v, a, x: model.apply(plan.traced(v, a), x))

        ``alphas``: ``f32[K]`` final coefficients (no scalar broadcast, no ``'reference'``
        weighting, no finiteness check: validate on the host first, e.g. with
        :func:`rws_jax.coefficients`). The signatures' deltas enter the caller's program as
        constants. Raises like ``__call__`` on another tree structure, shape or dtype.
        """
        leaves, treedef = jax.tree_util.tree_flatten(variables)
        if treedef != self._treedef:
            raise IncompatibleSignatureError(
                f"this patch plan was made for a tree of another structure (fingerprint {self.fingerprint}); "
                "make a new plan with rws.patch_plan for this model.")
        new = self._impl([leaves[i] for i in self._indices], self._delta_leaves, alphas)
        for i, x in zip(self._indices, new):
            leaves[i] = x
        return jax.tree_util.tree_unflatten(treedef, leaves)

    def __repr__(self) -> str:
        return (f"PatchPlan(signatures={self.num_signatures}, tensors={len(self.paths)}, mode={self.mode}, "
                f"fingerprint={self.fingerprint})")


def patch_plan(
    variables: Variables,
    signatures: SignatureLike,
    *,
    mode: str = "linear",
    check_base: bool = True,
    check_values: bool = True,
) -> PatchPlan:
    """Validates ``signatures`` against ``variables`` once and returns a :class:`PatchPlan`.

    ``plan(v, alphas)`` then equals ``rws.patch(v, signatures, alphas, mode=mode)``
    bit for bit, for any ``v`` of the planned structure, at the cost of one flatten
    and one jitted call. Example (ResNet-50, default selection: P = 63 leaves,
    1.16M values; K = 2 signatures)::

        plan = rws.patch_plan(variables, [fog, snow])   # {path: f32[...]} x 2
        v1 = plan(variables, [0.7, 0.5])                # alphas: f32[2] or a scalar
        v2 = plan(v1, 1.0, donate=True)                 # in place; v1's patched leaves die

    Args:
      variables: a model tree (Linen dict, NNX ``State``, any pytree) of the
        structure to patch. Its leaves' shardings are kept on the outputs.
      signatures: one ``Signature`` or K of them (float or quantized, any mix of
        layer selections); their leaves are held by the plan.
      mode: ``'linear'`` or ``'reference'``, as in :func:`rws_jax.patch`.
      check_base: also require the whole tree to match the signatures' base
        fingerprint (as :func:`rws_jax.patch`).
      check_values: refuse signatures holding NaN/inf.

    Raises:
      RWSError: unknown mode, no signature, or a non-signature.
      IncompatibleSignatureError: a patched path missing or of another shape/dtype,
        or (``check_base``) another base model.
      NonFiniteError: NaN/inf in a signature.
    """
    if mode not in MODES:
        raise RWSError(f"unknown combination mode {mode!r}: choose one of {MODES}")
    sigs = signature_list(signatures)
    flat, _ = tree_paths.flatten(variables)
    for s in sigs:
        check_compatible(s, variables, check_base=check_base, flat=flat)
    if check_values:
        check_finite(sigs)
    paths = tuple(sorted({p for s in sigs for p in s.deltas}))
    order = {p: i for i, p in enumerate(flat)}
    deltas = tuple(dict(s.deltas) for s in sigs)
    delta_leaves, delta_treedef = jax.tree_util.tree_flatten(deltas)
    leaves = {p: flat[p] for p in paths}
    layout = _Layout(paths=paths, specs=tuple(tree_paths.leaf_spec(flat[p]) for p in paths),
                     delta_treedef=delta_treedef, shardings=out_shardings(leaves, deltas))
    return PatchPlan(paths=paths, num_signatures=len(sigs), mode=mode, fingerprint=tree_paths.fingerprint(variables),
                     treedef=jax.tree_util.tree_structure(variables), indices=[order[p] for p in paths],
                     delta_leaves=delta_leaves, layout=layout)
