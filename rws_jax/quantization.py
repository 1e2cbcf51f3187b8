"""Quantization of signatures: 8, 4, 2 and 1 bit; per tensor or per channel; uniform
(symmetric or asymmetric), logarithmic, tanh or sign (1 bit); plus the reference code's
quantizers.

Every scheme stores unsigned codes ``q`` in ``[0, 2**bits − 1]`` and one
``(scale, offset)`` per tensor (or per channel). The two uniform schemes dequantize
as ``x̂ = q · scale + offset``:

- asymmetric (min–max): ``q = round((x − min)/(max − min) · (2**bits − 1))``,
  computed in float32 in the reference's order of operations (its ``linear_quant``
  as PyTorch runs it on CUDA, see :func:`linear_codes`), so codes agree with the
  reference bit for bit; ``scale = (max − min)/(2**bits − 1)``, ``offset = min``. A
  constant tensor (``max = min``) gets codes 0 and scale 0 (the reference: NaN).
- symmetric: ``scale = max|x| / (2**(bits−1) − 1)``, codes centred on
  ``L = 2**(bits−1) − 1`` so that ``offset = −L·scale`` and 0 is exact.

The two non-uniform schemes are the reference code's other quantizers
(``model_patching.decompose``); their codes are the asymmetric codes of a
transformed value, and ``scale``/``offset`` are the step and minimum in that space.
Given the same transformed values the codes are the reference's bit for bit; the
transforms themselves (``log2``, ``tanh``, and ``exp2``/``atanh`` back) may differ in
the last ulp between XLA, numpy and CUDA, which can move a value lying within an
ulp of a rounding tie by one code:

- ``'log2'``: the top bit of a code is the sign (1 = negative), the other
  ``bits − 1`` bits are the asymmetric code of ``log2|x|`` with ``M = 2**(bits−1)``
  levels (the reference's ``quantization >> 1``) over ``[min, max]`` of ``log2|x|``;
  ``x̂ = ±2**(m · scale + offset)``. Every nonzero element keeps its sign and has
  ``|log2|x̂| − log2|x|| ≤ scale/2``, i.e. a relative error of at most
  ``2**(scale/2) − 1``. Exact zeros (deviation: the reference takes ``log2 0 = −inf``,
  which turns the whole tensor into NaN) are left out of the min/max and get code 0,
  i.e. they dequantize to ``+2**offset``, the smallest nonzero magnitude of the
  tensor (absolute error ≤ that magnitude; no level is reserved, so codes of
  nonzero values stay those of the reference). A tensor with no nonzero value is
  stored with ``scale = 0`` and ``offset = −256`` (``2**−256`` is 0 in float32) and
  dequantizes to exact zeros. At 2 bit the magnitude has 2 levels (min, max); the
  reference's ``linear_quant`` has a special 2-level path there that raises unless
  ``min = −max``, so this is a deviation too.
- ``'tanh'``: asymmetric codes of ``tanh(x)`` with ``2**bits`` levels over
  ``[min, max]`` of ``tanh(x)``; ``x̂ = atanh(q · scale + offset)``. The error is at
  most ``scale/2`` *in tanh space*. Before ``atanh`` the value is clipped to
  ``±(1 − 2⁻²⁴)`` (the largest float32 below 1), so ``|x̂| ≤ atanh(1 − 2⁻²⁴) ≈ 8.66``
  and never inf (the reference returns inf where ``tanh`` rounds to ±1 in float32,
  ``|x| ≳ 9``; such values cannot be represented and come back as ±8.66).
- ``'sign'`` (1 bit, the starting point of BitDelta): one bit per element, 1 for
  ``x ≥ 0`` and 0 for ``x < 0``, and ``scale = mean|x|`` over the tensor (or the
  channel); ``offset`` is always 0. ``x̂ = (2q − 1) · scale + offset``, i.e.
  ``+scale`` or ``−scale``. ``scale · sign(x)`` with ``scale = mean|x|`` is the best
  approximation of ``x`` by ``±c`` (signs of ``x``, one ``c ≥ 0``) in the L2 sense:
  ``‖x − c·sign(x)‖² = ‖x‖² − 2c·Σ|x| + n·c²`` is smallest at ``c = mean|x|``. Every
  nonzero element keeps its sign; exact zeros (and ``−0.0``) get bit 1 and come back
  as ``+scale`` (there is no code for 0), except in a tensor or channel that is all
  zeros, whose scale is 0, so it comes back exact. No per-element bound like the
  others' ``scale/2`` exists: ``|x − x̂| = ||x| − scale|`` can be anything up to
  ``(n − 1) · scale`` for a group of ``n`` elements sharing a scale (one element
  holding all the mass), which is what
  :attr:`~rws_jax.quantized_tensor.QuantizedTensor.error_bound` reports.
  The sign scheme is the only 1-bit scheme and is only 1 bit: ``bits=1`` selects it
  when no scheme is given, and any other combination is refused.

Rounding is half-to-even (``jnp.round``), as in the reference. For the uniform
schemes the error of every element is at most ``scale/2`` (plus float rounding).
The results are :class:`~rws_jax.quantized_tensor.QuantizedTensor` values. Their
storage — codes packed 2, 4 and 8 to a byte at 4, 2 and 1 bit, along the last axis in
memory (so that sharded tensors quantize without being gathered) and flat on disk —
and their dequantization live in :mod:`rws_jax.quantized_tensor`; its names
(``QuantizedTensor``, ``dequantize_tensor``, ``codes_of``, ``pack_codes``,
``to_flat_packed``, ``BITS``, ``SCHEMES``, ``SIGN``...) are re-exported here.

Per-channel quantization uses one (scale, offset) per slice along ``axis``
(default −1, the output features of Flax ``Conv``/``Dense`` kernels); leaves with
fewer than 2 dimensions (biases) fall back to per-tensor.

The reference quantizers (``quantize_reference``, methods ``'linear'``, ``'log'``,
``'tanh'`` → schemes ``'asymmetric'``, ``'log2'``, ``'tanh'``) work per tensor with
the min/max *shared across the signatures applied together* (the reference
quantizes the stacked ``[N, d]`` tensor of all N signatures at once), and count
levels as its ``--quantization`` flag does: ``levels = 2**bits`` (256 = 8 bit,
16 = 4 bit, 4 = 2 bit).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

from rws_jax import tree_paths
from rws_jax.errors import RWSError
from rws_jax.quantized_tensor import (  # noqa: F401  (re-exported: the type and its storage live there)
    BITS,
    SCHEMES,
    SIGN,
    TANH_LIMIT,
    QuantizedTensor,
    as_float,
    can_pack_last_axis,
    codes_of,
    delta_sharding,
    dequantize_tensor,
    from_flat_packed,
    largest_magnitude,
    layout_of,
    pack_codes,
    pack_last_axis,
    to_flat_packed,
    unpack_codes,
    unpack_last_axis,
)
from rws_jax.signature import Signature

#: ``quantize_reference`` method (the reference's ``--quantization_type``) -> scheme.
REFERENCE_METHODS = {"linear": "asymmetric", "log": "log2", "tanh": "tanh"}
#: ``offset`` of a ``'log2'`` tensor without any nonzero value: ``2**−256`` is 0 in float32.
LOG2_EMPTY_OFFSET = -256.0


def resolve_scheme(bits: int, scheme: str | None) -> str:
    """The scheme for ``bits`` (``None``: ``'sign'`` at 1 bit, else ``'asymmetric'``),
    after checking that the pair is supported."""
    if isinstance(bits, bool) or bits not in BITS:
        raise RWSError(f"unsupported bit width {bits}: choose one of {BITS}")
    if scheme is None:
        return SIGN if bits == 1 else "asymmetric"
    if scheme not in SCHEMES:
        raise RWSError(f"unknown quantization scheme {scheme!r}: choose one of {SCHEMES}")
    if bits == 1 and scheme != SIGN:
        raise RWSError(f"1-bit quantization has only the {SIGN!r} scheme (sign and mean |x| scale), not {scheme!r}")
    if scheme == SIGN and bits != 1:
        raise RWSError(f"the {SIGN!r} scheme is 1 bit: pass bits=1, not bits={bits}")
    return scheme


def _check(bits: int, scheme: str | None) -> str:
    return resolve_scheme(bits, scheme)


def _reduce_axes(ndim: int, axis: int | None) -> tuple[int, ...] | None:
    if axis is None:
        return None
    return tuple(i for i in range(ndim) if i != axis)


def linear_codes(u: jax.Array, lo: jax.Array, hi: jax.Array, levels: int) -> jax.Array:
    """The reference's ``linear_quant`` codes ``round((u − lo)/(hi − lo) · (levels − 1))``,
    bit for bit as the reference computes them.

    The reference runs on CUDA, where PyTorch divides a tensor by a Python float by
    multiplying with its float32 reciprocal (``BinaryDivTrueKernel.cu``), so this is,
    all in float32 and rounding half to even::

        q = round(((u − lo) · fl(1 / (hi − lo))) · (levels − 1))

    (computing ``round((u − lo)/scale)`` with ``scale = (hi − lo)/(levels − 1)``, as
    before, or with a true division, as PyTorch does on CPU, differs by 1 at
    near-ties). ``lo``/``hi`` broadcast against ``u``; codes are clipped to
    ``[0, levels − 1]`` (a no-op for the true min/max) and are 0 where ``hi ≤ lo``
    (no NaN).

    Returns:
      ``f32`` codes of ``u``'s shape.
    """
    width = hi - lo
    ok = width > 0
    inv = 1.0 / jnp.where(ok, width, 1.0)
    q = jnp.round((u - lo) * inv * (levels - 1))
    return jnp.where(ok, jnp.clip(q, 0, levels - 1), 0.0)


def code_space(x: jax.Array, scheme: str) -> tuple[jax.Array, jax.Array | None]:
    """``(u, valid)``: the values whose min/max set the range, in float32.

    ``u`` is ``x`` for the uniform schemes, ``log2|x|`` for ``'log2'`` (0 at exact
    zeros, which ``valid`` — ``x ≠ 0`` — leaves out of the range) and ``tanh(x)`` for
    ``'tanh'``; ``valid`` is ``None`` where every element counts.
    """
    xf = x.astype(jnp.float32)
    if scheme == "log2":
        a = jnp.abs(xf)
        valid = a > 0
        return jnp.log2(jnp.where(valid, a, 1.0)), valid
    if scheme == "tanh":
        return jnp.tanh(xf), None
    return xf, None


def code_range(u: jax.Array, valid: jax.Array | None, axis: int | tuple[int, ...] | None = None,
               keepdims: bool = False) -> tuple[jax.Array, jax.Array]:
    """``(min, max)`` of ``u`` over ``axis`` among the ``valid`` elements
    (``(+inf, −inf)`` where there are none)."""
    if valid is None:
        return jnp.min(u, axis=axis, keepdims=keepdims), jnp.max(u, axis=axis, keepdims=keepdims)
    lo = jnp.min(jnp.where(valid, u, jnp.inf), axis=axis, keepdims=keepdims)
    hi = jnp.max(jnp.where(valid, u, -jnp.inf), axis=axis, keepdims=keepdims)
    return lo, hi


def quantize_tensor(
    x: jax.Array,
    bits: int = 8,
    *,
    scheme: str | None = None,
    axis: int | None = None,
    value_range: tuple[jax.Array, jax.Array] | None = None,
    pack: bool | None = None,
) -> QuantizedTensor:
    """Quantizes one tensor (see the module doc for the schemes).

    Args:
      x: the tensor, any shape ``[*S]``.
      bits: 8, 4, 2 or 1.
      scheme: ``'asymmetric'``, ``'symmetric'``, ``'log2'``, ``'tanh'`` or ``'sign'``
        (the only 1-bit scheme); ``None``: ``'sign'`` at 1 bit, else ``'asymmetric'``.
      axis: channel axis for per-channel ``(scale, offset)`` (``f32[1, …, C, …, 1]``);
        ``None`` (or a tensor of < 2 dims) for per tensor (``f32[]``).
      value_range: ``(lo, hi)`` overriding the min/max, in the space the codes live
        in: ``x`` (uniform schemes), ``log2|x|`` (``'log2'``; ``lo > hi`` means no
        nonzero value), ``tanh(x)`` (``'tanh'``). The reference shares it across
        signatures (:func:`quantize_reference`).
      pack: pack 4/2/1-bit codes along the last axis (``None``: whenever the last axis
        divides, see the module doc; ``False``: keep one code a byte).

    Returns:
      A :class:`QuantizedTensor` dequantizing to ``x.dtype[*S]``.
    """
    scheme = _check(bits, scheme)
    if scheme == SIGN and value_range is not None:
        raise RWSError("the 'sign' scheme has no value range (its scale is mean |x|)")
    x = jnp.asarray(x)
    out_dtype = str(x.dtype)
    xf = x.astype(jnp.float32)
    if axis is not None:
        axis = axis % x.ndim
        if x.ndim < 2:
            axis = None
    red = _reduce_axes(x.ndim, axis)
    keep = axis is not None
    if scheme == SIGN:
        q = (xf >= 0).astype(jnp.float32)  # bit 1: +scale (zeros too), bit 0: −scale
        scale = jnp.mean(jnp.abs(xf), axis=red, keepdims=keep)
        offset = jnp.zeros_like(scale)
    elif scheme != "symmetric":
        u, valid = code_space(xf, scheme)
        if value_range is None:
            lo, hi = code_range(u, valid, red, keep)
        else:
            lo, hi = (jnp.asarray(v, jnp.float32) for v in value_range)
        if scheme == "log2":
            assert valid is not None  # code_space's mask of the nonzero values, for 'log2'
            levels = 1 << (bits - 1)  # one bit holds the sign
            empty = ~(lo <= hi)  # no nonzero value
            m = linear_codes(jnp.clip(u, lo, hi), lo, hi, levels)  # the reference clamps here
            q = jnp.where(valid, m, 0.0) + jnp.where(xf < 0, float(levels), 0.0)
            scale = jnp.where(empty, 0.0, (hi - lo) / (levels - 1))
            offset = jnp.where(empty, LOG2_EMPTY_OFFSET, lo)
        else:
            levels = 1 << bits
            q = linear_codes(u, lo, hi, levels)
            scale = (hi - lo) / (levels - 1)
            offset = lo
    else:
        half = (1 << (bits - 1)) - 1
        amax = jnp.max(jnp.abs(xf), axis=red, keepdims=keep)
        if value_range is not None:
            amax = jnp.maximum(jnp.abs(jnp.asarray(value_range[0], jnp.float32)), jnp.abs(jnp.asarray(value_range[1], jnp.float32)))
        scale = amax / half
        safe = jnp.where(scale > 0, scale, 1.0)
        q = jnp.clip(jnp.round(xf / safe), -half, half) + half
        offset = -half * scale
    shape = tuple(int(d) for d in x.shape)
    if pack is None:
        pack = can_pack_last_axis(shape, bits)
    pack = bool(pack) and can_pack_last_axis(shape, bits)
    return QuantizedTensor(
        data=pack_last_axis(q, bits) if pack else q.astype(jnp.uint8),
        scale=scale.astype(jnp.float32),
        offset=offset.astype(jnp.float32),
        shape=shape,
        dtype=out_dtype,
        bits=bits,
        scheme=scheme,
        axis=axis,
    )


def describe(bits: int, scheme: str, per_channel: bool, shared: bool = False) -> str:
    return f"{scheme}/{'per_channel' if per_channel else 'per_tensor'}/{bits}" + ("/shared_range" if shared else "")


@jax.jit(static_argnames=("bits", "scheme", "axis", "packs", "shardings"))
def _quantize_all_jit(deltas: dict, bits: int, scheme: str, axis: int | None, ranges: dict | None = None,
                      packs: tuple | None = None, shardings: tuple | None = None) -> dict[str, QuantizedTensor]:
    pack_of = dict(packs or ())
    sh = dict(shardings or ())
    out = {}
    for p, x in deltas.items():
        qt = quantize_tensor(
            x, bits, scheme=scheme, axis=axis, value_range=None if ranges is None else ranges[p], pack=pack_of.get(p)
        )
        if p in sh:
            data_sh, param_sh = sh[p]
            qt = qt.replace(
                data=tree_paths.constrain(qt.data, data_sh),
                scale=tree_paths.constrain(qt.scale, param_sh),
                offset=tree_paths.constrain(qt.offset, param_sh),
            )
        out[p] = qt
    return out


def _quantize_all(deltas: dict, bits: int, scheme: str, axis: int | None,
                  ranges: dict | None = None) -> dict[str, QuantizedTensor]:
    """Quantizes every delta; sharded deltas stay sharded (codes packed per shard)."""
    packs, shardings = [], {}
    for p, x in deltas.items():
        shape = tuple(int(d) for d in x.shape)
        packs.append((p, can_pack_last_axis(shape, bits, tree_paths.shard_shape(x))))
        s = tree_paths.device_sharding(x)
        if s is not None:
            ndim = len(shape)
            ax = None if axis is None or ndim < 2 else axis % ndim
            param_sh = tree_paths.derived_sharding(s, ndim if ax is not None else 0, () if ax is None else (ax,))
            data_sh = tree_paths.derived_sharding(s, ndim)
            shardings[p] = (data_sh, param_sh)
    return _quantize_all_jit(
        deltas, bits=bits, scheme=scheme, axis=axis, ranges=ranges, packs=tuple(sorted(packs)),
        shardings=tree_paths.static_shardings(shardings),
    )


def quantize(
    sig: Signature, bits: int = 8, *, scheme: str | None = None, per_channel: bool = False, axis: int = -1
) -> Signature:
    """Quantizes every delta of ``sig`` (one jitted pass).

    Args:
      sig: a float signature.
      bits: 8, 4, 2 or 1.
      scheme: ``'asymmetric'`` (min–max), ``'symmetric'`` (max-abs, exact zero),
        ``'log2'`` (sign + log-magnitude), ``'tanh'``, or ``'sign'`` (1 bit: sign and
        a mean-``|x|`` scale; the only 1-bit scheme) (see the module doc). ``None``
        (default): ``'sign'`` at ``bits=1``, else ``'asymmetric'``.
      per_channel: one scale per slice along ``axis`` instead of per tensor.

    Returns:
      A ``Signature`` whose deltas are :class:`QuantizedTensor`; ``meta.quantization``
      is e.g. ``'asymmetric/per_tensor/8'`` or ``'sign/per_channel/1'``.
    """
    scheme = _check(bits, scheme)
    if sig.is_quantized:
        raise RWSError(f"signature {sig.name!r} is already quantized ({sig.meta.quantization})")
    q = _quantize_all(sig.deltas, bits=bits, scheme=scheme, axis=axis if per_channel else None)
    return sig.replace(
        deltas=dict(q), meta=dataclasses.replace(sig.meta, quantization=describe(bits, scheme, per_channel))
    )


@jax.jit(static_argnames=("scheme",))
def _shared_ranges(deltas: tuple, scheme: str) -> dict:
    """``{path: (lo, hi)}``: each path's code-space min/max over all ``deltas`` holding it."""
    out = {}
    for p in sorted({p for d in deltas for p in d}):
        bounds = [code_range(*code_space(d[p], scheme)) for d in deltas if p in d]
        out[p] = (jnp.min(jnp.stack([b[0] for b in bounds])), jnp.max(jnp.stack([b[1] for b in bounds])))
    return out


def quantize_reference(sigs: Sequence[Signature], levels: int = 256, method: str = "linear") -> list[Signature]:
    """The reference code's quantizers for signatures applied together.

    One ``(scale, offset)`` per tensor, with each tensor's min and max (in code
    space) shared across all of ``sigs`` that hold it, as the reference quantizes the
    stacked ``[N, d]`` tensor of the N signatures at once.

    Args:
      sigs: the float signatures that will be applied together.
      levels: the reference's ``--quantization`` flag: 256, 16 or 4 (8, 4, 2 bit).
      method: its ``--quantization_type``: ``'linear'`` (min–max, scheme
        ``'asymmetric'``; codes agree exactly with its ``linear_quant``), ``'log'``
        (sign bit + ``levels/2``-level codes of ``log2|x|``, scheme ``'log2'``) or
        ``'tanh'`` (``levels``-level codes of ``tanh(x)``, scheme ``'tanh'``). See the
        module doc for exact zeros, saturation and the 2-bit log case.

    Returns:
      The quantized signatures, in order; ``meta.quantization`` is e.g.
      ``'log2/per_tensor/8/shared_range'``.

    Note: the reference quantizes ``w_k · RWS_k`` (its weights are applied before
    the projection), not ``RWS_k``. For ``'linear'`` and ``'log'`` with one weight
    for all (its ``--alpha`` path) that gives the same codes (both are
    scale-equivariant; up to float rounding at near-ties), so
    ``patch(θ, quantize_reference(sigs, L, m), α, mode='reference')`` is the
    reference. For ``'tanh'``, or per-signature weights, quantize the weighted
    signatures as the reference does and apply ``w_k`` once more, linearly:
    ``patch(θ, quantize_reference([scale(s, w) for s, w in zip(sigs, ws)], L, m),
    ws, mode='linear')``.
    """
    bits = {256: 8, 16: 4, 4: 2}.get(int(levels))
    if bits is None:
        raise RWSError(f"levels must be one of 256, 16, 4 (8/4/2 bit), got {levels}")
    if method not in REFERENCE_METHODS:
        raise RWSError(f"unknown reference quantization method {method!r}: choose one of {tuple(REFERENCE_METHODS)}")
    scheme = REFERENCE_METHODS[method]
    for s in sigs:
        if s.is_quantized:
            raise RWSError(f"signature {s.name!r} is already quantized ({s.meta.quantization})")
    ranges = _shared_ranges(tuple(s.deltas for s in sigs), scheme=scheme)
    out = []
    for s in sigs:
        q = _quantize_all(s.deltas, bits=bits, scheme=scheme, axis=None, ranges={p: ranges[p] for p in s.deltas})
        out.append(
            s.replace(deltas=dict(q), meta=dataclasses.replace(s.meta, quantization=describe(bits, scheme, False, True)))
        )
    return out


@jax.jit(static_argnames=("shardings",))
def _dequantize_all_jit(deltas: dict, shardings: tuple | None = None) -> dict:
    sh = dict(shardings or ())
    return {p: tree_paths.constrain(as_float(v), sh.get(p)) for p, v in deltas.items()}


def _dequantize_all(deltas: dict) -> dict:
    shardings = tree_paths.static_shardings({p: delta_sharding(v) for p, v in deltas.items()})
    return _dequantize_all_jit(deltas, shardings=shardings)


def dequantize(sig: Signature) -> Signature:
    """A float signature from a quantized one (no-op for a float signature)."""
    if not sig.is_quantized:
        return sig
    return sig.replace(deltas=dict(_dequantize_all(sig.deltas)), meta=dataclasses.replace(sig.meta, quantization=""))
