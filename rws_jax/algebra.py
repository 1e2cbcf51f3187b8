"""Signature algebra and patching: scale, negate, add/compose, patch, exact removal.

Patching computes, for each kept leaf, in one fused jitted pass::

    θ_patched = θ + Σ_k α_k · RWS_k          (mode='linear', the paper's equation)

(the kernel, shared with ``patch_plan``, ``PatchStack`` and the BatchNorm scheme, is
:func:`rws_jax.kernels.combine_impl`).

Signatures with different layer selections combine: a leaf is updated by the
signatures that hold it. Quantized signatures are dequantized inside the same pass.
Coefficients are traced, so changing α does not recompile.

``mode='reference'`` reproduces the weighting of the reference PyTorch code
(``model_patching.py``). Its ``decompose`` multiplies each robust delta by a weight
``w_k`` *before* projecting it and then again in ``diag(weight) @ vectors``; the
projection is linear, so signature k enters with ``w_k²``. The reference has two
ways to set the weights, and ``alphas`` selects between them as the reference's
flags do:

- a scalar ``α`` (the reference's default path, ``--alpha α`` with ``α ≠ 0``):
  ``w_k = α/N`` for all N signatures combined, so every coefficient is ``(α/N)²``;
- a sequence of N values ``w_1 … w_N`` (the reference's ``--alpha 0
  --finetune_alpha w_1 … w_N``): used as given, *without* dividing by N, so the
  coefficients are ``w_k²``.

Squaring loses the sign: ``w_k = −0.5`` adds the signature with ``+0.25``, as the
reference does. Use ``mode='linear'`` to subtract.

Removal: :func:`patch` can return an :class:`Undo` record holding the original
leaves, and :func:`unpatch` puts them back — bit-exact, unlike subtracting.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, overload

import jax
import jax.numpy as jnp
import numpy as np

from rws_jax import merging, tree_paths
from rws_jax.errors import IncompatibleSignatureError, NonFiniteError, RWSError
from rws_jax.extraction import delta_dtype
from rws_jax.kernels import PatchCache, combine, combine_donated, out_shardings
from rws_jax.quantized_tensor import as_float
from rws_jax.signature import (Signature, SignatureLike, SignatureMeta, is_marked_finite, mark_finite,
                               signature_list)
from rws_jax.types import Alphas, Variables

MODES = ("linear", "reference")


def coefficients(alphas: Alphas, num: int, mode: str = "linear") -> jax.Array:
    """``f32[num]`` coefficients applied to the signatures.

    Args:
      alphas: a scalar (the same α for all) or a sequence of ``num`` values.
      num: N, the number of signatures combined.
      mode: ``'linear'``: ``α_k`` (the paper's equation). ``'reference'``: the
        reference code's weighting (see the module doc): a scalar α gives
        ``(α/N)²`` to every signature (its ``--alpha``), a sequence gives
        ``w_k²`` with no division by N (its ``--alpha 0 --finetune_alpha``).
        Squaring drops the sign of α or w_k.

    Raises:
      RWSError: unknown mode, or a sequence whose length is not ``num``.
      NonFiniteError: a NaN/inf coefficient.
    """
    return jnp.asarray(host_coefficients(alphas, num, mode))


def host_coefficients(alphas: Alphas, num: int, mode: str = "linear") -> np.ndarray:
    """:func:`coefficients` as a host ``f32[num]`` numpy array (same values, same
    errors): ``rws.patch_plan`` passes it to its jitted call with the other arguments
    instead of a separate ``jnp.asarray`` transfer."""
    key = None
    if type(alphas) in (float, int) and mode in MODES:  # a Python scalar: memoised (read-only result)
        sign = math.copysign(1.0, alphas) if type(alphas) is float else 0.0  # -0.0 and 0.0 differ
        key = (type(alphas), alphas, sign, num, mode)
        hit = _SCALAR_COEFFICIENTS.get(key)
        if hit is not None:
            return hit
    a = _host_coefficients(alphas, num, mode)
    if key is not None and len(_SCALAR_COEFFICIENTS) < 4096:
        a.flags.writeable = False
        _SCALAR_COEFFICIENTS[key] = a
    return a


#: :func:`host_coefficients` of Python scalars, keyed by ``(value, sign, num, mode)``.
_SCALAR_COEFFICIENTS: dict[tuple, np.ndarray] = {}


def _host_coefficients(alphas: Alphas, num: int, mode: str) -> np.ndarray:
    if mode not in MODES:
        raise RWSError(f"unknown combination mode {mode!r}: choose one of {MODES}")
    a = np.asarray(alphas, dtype=np.float32)
    per_signature = a.ndim != 0
    if not per_signature:
        a = np.full((num,), a, np.float32)
    if a.shape != (num,):
        raise RWSError(f"got {a.size} coefficients for {num} signatures")
    if not np.all(np.isfinite(a)):
        raise NonFiniteError(f"coefficients must be finite, got {a.tolist()}")
    if mode == "reference":
        # --finetune_alpha w_1 … w_N: w_k as given; --alpha α: w_k = α/N. Applied twice.
        w = a if per_signature else a / np.float32(num)
        a = w * w
    return a


@jax.jit
def _all_finite(deltas: tuple) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(as_float(v))) for d in deltas for v in d.values()]
    return jnp.all(jnp.stack(leaves))


def check_finite(signatures: SignatureLike) -> None:
    """Raises :class:`NonFiniteError` naming the first signature holding NaN/inf.

    One reduction over each signature's values, done once per signature object.
    """
    for s in signature_list(signatures):
        if is_marked_finite(s):
            continue
        if not bool(_all_finite((s.deltas,))):
            bad = [p for p, v in s.deltas.items() if not bool(jnp.all(jnp.isfinite(as_float(v))))]
            raise NonFiniteError(f"signature {s.name!r} holds NaN/inf in {bad[:5]}")
        mark_finite(s)


def check_compatible(signature: Signature, variables: Variables, *, check_base: bool = True,
                     flat: dict[str, Any] | None = None) -> None:
    """Raises :class:`IncompatibleSignatureError` unless ``signature`` fits ``variables``.

    Every patched leaf must exist with the shape and dtype the signature was made
    for. With ``check_base`` the whole tree must also match the base model's
    fingerprint (paths, shapes, dtypes); pass ``check_base=False`` to patch a model
    that shares only the patched layers (e.g. another dataset's head size).
    """
    if flat is None:
        flat, _ = tree_paths.flatten(variables)
    specs = {p: (tuple(s), d) for p, s, d in signature.meta.leaf_specs}
    for p in sorted(signature.deltas):
        if p not in flat:
            raise IncompatibleSignatureError(
                f"signature {signature.name!r} patches {p!r}, which this model does not have "
                f"(model leaves look like {list(flat)[:3]})"
            )
        have = tree_paths.leaf_spec(flat[p])
        want = specs.get(p)
        if want is not None and have != want:
            raise IncompatibleSignatureError(
                f"signature {signature.name!r} was made for {p!r} of shape {want[0]} dtype {want[1]}; "
                f"this model has shape {have[0]} dtype {have[1]}"
            )
        v = signature.deltas[p]
        vshape = tuple(getattr(v, "shape", ()))
        if vshape != have[0]:
            raise IncompatibleSignatureError(
                f"signature {signature.name!r} holds a delta of shape {vshape} for {p!r}, model leaf is {have[0]}"
            )
    if check_base:
        fp = tree_paths.fingerprint(variables)
        if fp != signature.meta.base_fingerprint:
            raise IncompatibleSignatureError(
                f"signature {signature.name!r} was extracted from a model with fingerprint "
                f"{signature.meta.base_fingerprint}, this model's is {fp} (different structure, shapes or "
                "dtypes). If it shares the patched layers on purpose (transfer), pass check_base=False."
            )


#: :func:`patch`'s cache of checked tree structures and signatures (its fast path).
PATCH_CACHE = PatchCache(check_compatible, check_finite)


@dataclasses.dataclass(frozen=True)
class Undo:
    """The original leaves a :func:`patch` overwrote: ``{path: array}``."""

    originals: dict[str, Any]
    fingerprint: str

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(sorted(self.originals))


@overload
def patch(
    variables: Variables,
    signatures: SignatureLike,
    alphas: Alphas = ...,
    *,
    mode: str = ...,
    donate: bool = ...,
    check_base: bool = ...,
    check_values: bool = ...,
    return_undo: Literal[False] = ...,
) -> Variables: ...


@overload
def patch(
    variables: Variables,
    signatures: SignatureLike,
    alphas: Alphas = ...,
    *,
    mode: str = ...,
    donate: bool = ...,
    check_base: bool = ...,
    check_values: bool = ...,
    return_undo: Literal[True],
) -> tuple[Variables, Undo]: ...


@overload
def patch(
    variables: Variables,
    signatures: SignatureLike,
    alphas: Alphas = ...,
    *,
    mode: str = ...,
    donate: bool = ...,
    check_base: bool = ...,
    check_values: bool = ...,
    return_undo: bool,
) -> Variables | tuple[Variables, Undo]: ...


def patch(
    variables: Variables,
    signatures: SignatureLike,
    alphas: Alphas = 1.0,
    *,
    mode: str = "linear",
    donate: bool = False,
    check_base: bool = True,
    check_values: bool = True,
    return_undo: bool = False,
) -> Variables | tuple[Variables, Undo]:
    """``θ + Σ_k α_k · RWS_k`` on the signatures' leaves, in one jitted pass.

    Args:
      variables: the model to patch (Linen variable dict, NNX ``State``, any pytree).
      signatures: one ``Signature`` or a sequence of K of them (float or quantized,
        any mix of layer selections).
      alphas: scalar or ``K`` coefficients.
      mode: ``'linear'`` (paper: ``α_k``) or ``'reference'`` (the reference code's
        weighting: a scalar α gives every signature ``(α/K)²``, a sequence of K
        weights gives ``w_k²``, no division by K; the sign is lost by squaring.
        See the module doc and :func:`coefficients`).
      donate: let XLA reuse the patched leaves' buffers (in-place update). The
        patched leaves of ``variables`` are invalid afterwards; with
        ``return_undo`` copies of them are kept first.
      check_base: also require the whole tree to match the base fingerprint.
      check_values: refuse signatures holding NaN/inf (one reduction over them).
      return_undo: also return an :class:`Undo` for bit-exact :func:`unpatch`.

    Returns:
      The patched tree (same structure; untouched leaves are the same objects), or
      ``(patched, undo)``. Nothing is modified if an error is raised.

    Repeated calls are cheap: the first call on a tree structure and signature set
    checks everything in Python; later calls with the same structure and the same
    signature objects reuse that work (leaf positions, one jitted call on flat lists)
    and re-check shapes and dtypes through jit's cache. Results and errors are those
    of the full checks (see :class:`rws_jax.kernels.PatchCache`).
    """
    sigs = signature_list(signatures)
    alpha = host_coefficients(alphas, len(sigs), mode)
    if not return_undo:
        fast = PATCH_CACHE.patch(variables, sigs, alpha, donate=donate, check_base=check_base,
                                 check_values=check_values)
        if fast is not None:
            return fast
    return _patch_full(variables, sigs, alpha, donate=donate, check_base=check_base, check_values=check_values,
                       return_undo=return_undo)


def _patch_full(variables: Variables, sigs: list[Signature], host_alpha: np.ndarray, *, donate: bool,
                check_base: bool, check_values: bool, return_undo: bool) -> Variables | tuple[Variables, Undo]:
    """:func:`patch`'s full path: every check on every call, then :func:`combine` on
    ``{path: leaf}`` dicts (the only path before the fast one; still taken for
    ``return_undo``, trees with non-``jax.Array`` leaves, several devices, a first
    check of a signature's values, and every call whose checks fail)."""
    alpha = jnp.asarray(host_alpha)
    flat, rebuild = tree_paths.flatten(variables)
    for s in sigs:
        check_compatible(s, variables, check_base=check_base, flat=flat)
    if check_values:
        check_finite(sigs)
    paths = sorted({p for s in sigs for p in s.deltas})
    leaves = {p: flat[p] for p in paths}
    undo = None
    if return_undo:
        originals = {p: jnp.array(x, copy=True) for p, x in leaves.items()} if donate else dict(leaves)
        undo = Undo(originals=originals, fingerprint=tree_paths.fingerprint(variables, paths))
    fn = combine_donated if donate else combine
    new = fn(leaves, tuple(s.deltas for s in sigs), alpha)
    patched = rebuild(new)
    return (patched, undo) if return_undo else patched


def unpatch(patched: Variables, undo: Undo) -> Variables:
    """Restores the leaves a :func:`patch` changed, bit for bit."""
    flat, rebuild = tree_paths.flatten(patched)
    missing = [p for p in undo.originals if p not in flat]
    if missing:
        raise IncompatibleSignatureError(f"cannot restore {missing[:5]}: not in this tree")
    for p, x in undo.originals.items():
        if tree_paths.leaf_spec(flat[p]) != tree_paths.leaf_spec(x):
            raise IncompatibleSignatureError(f"cannot restore {p!r}: the tree's leaf has another shape or dtype")
    return rebuild(dict(undo.originals))


def subtract(variables: Variables, signatures: SignatureLike, alphas: Alphas = 1.0, **kwargs: Any) -> Variables:
    """Arithmetic removal ``θ − Σ α_k RWS_k`` (exact only up to float rounding;
    use :func:`unpatch` for a bit-exact restore)."""
    sigs = signature_list(signatures)
    return patch(variables, sigs, -np.asarray(coefficients(alphas, len(sigs), kwargs.pop("mode", "linear"))), **kwargs)


def _merge_impl(deltas: tuple, alphas: jax.Array, key: jax.Array | None, method: str, density: float,
                drop_rate: float, shardings: tuple | None = None) -> dict:
    """``{path: merge_k(α_k · RWS_k[path])}`` over the signatures holding each path
    (:func:`rws_jax.merging.merge_leaf`); quantized deltas are dequantized here."""
    paths = sorted({p for d in deltas for p in d})
    sh = dict(shardings or ())
    out = {}
    for p in paths:
        holders = [(k, d[p]) for k, d in enumerate(deltas) if p in d]
        acc_dtype = delta_dtype(as_float(holders[0][1]).dtype)
        terms = [(k, alphas[k].astype(acc_dtype) * as_float(v).astype(acc_dtype)) for k, v in holders]
        out[p] = tree_paths.constrain(merging.merge_leaf(terms, p, method, density, drop_rate, key), sh.get(p))
    return out


_merge_jit = jax.jit(_merge_impl, static_argnames=("method", "density", "drop_rate", "shardings"))


def compose(
    signatures: SignatureLike,
    alphas: Alphas = 1.0,
    *,
    method: str = "sum",
    mode: str = "linear",
    name: str | None = None,
    density: float = 0.2,
    drop_rate: float = 0.9,
    key: jax.Array | int | None = None,
    check_values: bool = True,
) -> Signature:
    """One signature merging K signatures leaf by leaf (union of the layer selections).

    ``c = coefficients(alphas, K, mode)``: ``α_k`` for ``mode='linear'``; for
    ``mode='reference'`` (``method='sum'`` only) ``(α/K)²`` from a scalar and ``w_k²``
    from a sequence. Each leaf ``f[*shape]`` is merged over the signatures that hold it
    (``K_p ≤ K`` of them), in one jitted pass that keeps each leaf's sharding:

    - ``'sum'`` (default): ``Σ_k c_k · RWS_k``. Patching with the result equals patching
      with the K signatures (up to float rounding).
    - ``'mean'``: ``Σ_k c_k · RWS_k / K_p``.
    - ``'ties'``: TIES-merging of the ``c_k · RWS_k`` (α applied *before* trimming, so it
      weighs the sign election; a scalar α is λ times the merge): keep the top
      ``ceil(density · n)`` magnitudes per tensor, elect signs by total mass, average
      the agreeing entries (disjoint mean). See :mod:`rws_jax.merging`.
    - ``'dare'``: ``Σ_k dare(c_k · RWS_k)``: drop each element with probability
      ``drop_rate`` and rescale the rest by ``1/(1 − drop_rate)``; needs ``key``.
    - ``'dare_ties'``: DARE, then TIES (with ``density``) on the rescaled deltas.

    Example::

        merged = rws.compose([fog, snow], 1.0, method="ties", density=0.2)   # λ = 1
        rand = rws.compose([fog, snow], [0.7, 0.5], method="dare", drop_rate=0.9,
                           key=jax.random.key(0))

    Args:
      signatures: K signatures of one base model (float or quantized; quantized ones
        are dequantized in the pass).
      alphas: scalar or K coefficients.
      method: one of :data:`rws_jax.merging.METHODS`.
      density: static fraction in ``(0, 1]`` of each tensor kept by TIES' trim.
      drop_rate: static drop probability in ``[0, 1)`` of DARE.
      key: ``jax.random`` key (required for ``'dare'``/``'dare_ties'``, unused otherwise).
      check_values: refuse signatures holding NaN/inf, as :func:`patch` does.

    Raises:
      RWSError: unknown method or mode, ``mode='reference'`` with another method than
        ``'sum'``, bad density/drop_rate, DARE without a key.
      NonFiniteError: NaN/inf coefficients or signature values.
      IncompatibleSignatureError: signatures of different base models or leaf specs.
    """
    sigs = signature_list(signatures)
    merging.check_method(method, density, drop_rate, key)
    if mode != "linear" and method != "sum":
        raise RWSError(f"mode={mode!r} is defined for method='sum' only; method {method!r} needs mode='linear'")
    alpha = coefficients(alphas, len(sigs), mode)
    fps = {s.meta.base_fingerprint for s in sigs}
    if len(fps) > 1:
        raise IncompatibleSignatureError(f"cannot compose signatures of different base models: {sorted(fps)}")
    specs: dict[str, tuple] = {}
    for s in sigs:
        for p, shape, dtype in s.meta.leaf_specs:
            if p in specs and specs[p] != (tuple(shape), dtype):
                raise IncompatibleSignatureError(f"signatures disagree on leaf {p!r}: {specs[p]} vs {(shape, dtype)}")
            specs[p] = (tuple(shape), dtype)
    if check_values:
        check_finite(sigs)
    all_deltas = tuple(s.deltas for s in sigs)
    if method == "sum":
        deltas = combine(None, all_deltas, alpha)
    else:
        if isinstance(key, (int, np.integer)):  # a seed
            key = jax.random.key(int(key))
        deltas = _merge_jit(all_deltas, alpha, key if method in merging.RANDOM_METHODS else None,
                            method=method, density=float(density) if method in merging.TRIM_METHODS else 1.0,
                            drop_rate=float(drop_rate) if method in merging.RANDOM_METHODS else 0.0,
                            shardings=out_shardings(None, all_deltas))
    kind = ("composed" if len(sigs) > 1 else sigs[0].meta.kind) if method == "sum" else f"merged-{method}"
    default_name = "+".join(s.name or "?" for s in sigs)
    meta = SignatureMeta(
        base_fingerprint=sigs[0].meta.base_fingerprint,
        leaf_specs=tuple((p, *specs[p]) for p in sorted(specs)),
        name=name if name is not None else (default_name if method == "sum" else f"{method}({default_name})"),
        severity=sigs[0].meta.severity if len({s.meta.severity for s in sigs}) == 1 else None,
        kind=kind,
        selection=sigs[0].meta.selection if len({s.meta.selection for s in sigs}) == 1 else "",
    )
    return Signature(deltas=dict(deltas), meta=meta)


def scale(signature: Signature, alpha: float) -> Signature:
    """``α · RWS`` (dequantizes a quantized signature)."""
    return compose([signature], alpha, name=signature.name)


def negate(signature: Signature) -> Signature:
    """``−RWS``."""
    return scale(signature, -1.0)


def add(*signatures: Signature) -> Signature:
    """``RWS_1 + RWS_2 + ...``."""
    return compose(list(signatures), 1.0)
