"""Uniform quantization of signatures: 8, 4 and 2 bit; per tensor or per channel;
symmetric or asymmetric; plus the reference code's scheme.

Every scheme stores unsigned codes ``q`` in ``[0, 2**bits − 1]`` and dequantizes as
``x̂ = q · scale + offset``:

- asymmetric (min–max): ``scale = (max − min)/(2**bits − 1)``, ``offset = min``;
- symmetric: ``scale = max|x| / (2**(bits−1) − 1)``, codes centred on
  ``L = 2**(bits−1) − 1`` so that ``offset = −L·scale`` and 0 is exact.

Rounding is half-to-even (``jnp.round``), as in the reference. The error of every
element is at most ``scale/2`` (plus float rounding). 4- and 2-bit codes are packed
2 and 4 to a byte, so a 4-bit signature takes half the bytes of an 8-bit one.
Per-channel quantization uses one (scale, offset) per slice along ``axis``
(default −1, the output features of Flax ``Conv``/``Dense`` kernels); leaves with
fewer than 2 dimensions (biases) fall back to per-tensor.

The reference scheme (``quantize_reference``) is asymmetric per tensor with the
min/max *shared across the signatures applied together*, and counts levels:
``levels = 2**bits`` (its flag 256 = 8 bit, 16 = 4 bit).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rws_jax.errors import RWSError
from rws_jax.signature import Signature

SCHEMES = ("asymmetric", "symmetric")
BITS = (2, 4, 8)


@struct.dataclass
class QuantizedTensor:
    """Quantized stand-in for one delta tensor.

    Attributes:
      data: ``uint8[ceil(n · bits / 8)]`` packed codes (``uint8[*shape]`` for 8 bit).
      scale: ``f32[]`` (per tensor) or ``f32[1, ..., C, ..., 1]`` (per channel).
      offset: same shape as ``scale``.
      shape, dtype: shape and dtype of the dequantized tensor (static).
      bits: 2, 4 or 8 (static).
      scheme: ``'asymmetric'`` or ``'symmetric'`` (static).
      axis: channel axis, or ``None`` for per tensor (static).
    """

    data: jax.Array
    scale: jax.Array
    offset: jax.Array
    shape: tuple = struct.field(pytree_node=False)
    dtype: str = struct.field(pytree_node=False, default="float32")
    bits: int = struct.field(pytree_node=False, default=8)
    scheme: str = struct.field(pytree_node=False, default="asymmetric")
    axis: int | None = struct.field(pytree_node=False, default=None)

    def dequantize(self) -> jax.Array:
        return dequantize_tensor(self)

    @property
    def error_bound(self) -> jax.Array:
        """Largest possible ``|x − x̂|`` per channel (``scale/2``)."""
        return self.scale / 2


def _check(bits: int, scheme: str) -> None:
    if bits not in BITS:
        raise RWSError(f"unsupported bit width {bits}: choose one of {BITS}")
    if scheme not in SCHEMES:
        raise RWSError(f"unknown quantization scheme {scheme!r}: choose one of {SCHEMES}")


def pack_codes(q: jax.Array, bits: int) -> jax.Array:
    """Packs unsigned ``bits``-bit codes (any shape) into a flat ``uint8`` array."""
    q = q.astype(jnp.uint8)
    if bits == 8:
        return q
    per_byte = 8 // bits
    flat = q.reshape(-1)
    pad = (-flat.size) % per_byte
    flat = jnp.pad(flat, (0, pad)).reshape(-1, per_byte)
    shifts = jnp.arange(per_byte, dtype=jnp.uint8) * bits
    # The shifted codes occupy disjoint bits, so their sum is their bitwise or.
    return jnp.sum(flat << shifts, axis=1, dtype=jnp.uint8)


def unpack_codes(data: jax.Array, bits: int, shape: tuple) -> jax.Array:
    """Inverse of :func:`pack_codes`: ``uint8`` codes of ``shape``."""
    if bits == 8:
        return data.reshape(shape)
    per_byte = 8 // bits
    n = int(np.prod(shape))
    shifts = jnp.arange(per_byte, dtype=jnp.uint8) * bits
    mask = jnp.uint8((1 << bits) - 1)
    codes = (data[:, None] >> shifts) & mask
    return codes.reshape(-1)[:n].reshape(shape)


def _reduce_axes(ndim: int, axis: int | None) -> tuple[int, ...] | None:
    if axis is None:
        return None
    return tuple(i for i in range(ndim) if i != axis)


def quantize_tensor(
    x: jax.Array,
    bits: int = 8,
    *,
    scheme: str = "asymmetric",
    axis: int | None = None,
    value_range: tuple[jax.Array, jax.Array] | None = None,
) -> QuantizedTensor:
    """Quantizes one tensor. ``axis`` selects per-channel; ``value_range=(lo, hi)``
    overrides the min/max (the reference shares it across signatures)."""
    _check(bits, scheme)
    x = jnp.asarray(x)
    out_dtype = str(x.dtype)
    xf = x.astype(jnp.float32)
    if axis is not None:
        axis = axis % x.ndim
        if x.ndim < 2:
            axis = None
    red = _reduce_axes(x.ndim, axis)
    keep = axis is not None
    if scheme == "asymmetric":
        lo = jnp.min(xf, axis=red, keepdims=keep) if value_range is None else jnp.asarray(value_range[0], jnp.float32)
        hi = jnp.max(xf, axis=red, keepdims=keep) if value_range is None else jnp.asarray(value_range[1], jnp.float32)
        levels = (1 << bits) - 1
        scale = (hi - lo) / levels
        safe = jnp.where(scale > 0, scale, 1.0)
        q = jnp.clip(jnp.round((xf - lo) / safe), 0, levels)
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
    return QuantizedTensor(
        data=pack_codes(q, bits),
        scale=scale.astype(jnp.float32),
        offset=offset.astype(jnp.float32),
        shape=tuple(int(d) for d in x.shape),
        dtype=out_dtype,
        bits=bits,
        scheme=scheme,
        axis=axis,
    )


def dequantize_tensor(qt: QuantizedTensor) -> jax.Array:
    """``q · scale + offset`` in float32, cast to the original dtype."""
    codes = unpack_codes(qt.data, qt.bits, qt.shape).astype(jnp.float32)
    return (codes * qt.scale + qt.offset).astype(qt.dtype)


def as_float(value) -> jax.Array:
    """A delta as a float array, dequantizing a ``QuantizedTensor`` (traceable)."""
    return dequantize_tensor(value) if isinstance(value, QuantizedTensor) else value


def describe(bits: int, scheme: str, per_channel: bool, shared: bool = False) -> str:
    return f"{scheme}/{'per_channel' if per_channel else 'per_tensor'}/{bits}" + ("/shared_range" if shared else "")


@jax.jit(static_argnames=("bits", "scheme", "axis"))
def _quantize_all(deltas: dict, bits: int, scheme: str, axis: int | None, ranges: dict | None = None):
    return {
        p: quantize_tensor(x, bits, scheme=scheme, axis=axis, value_range=None if ranges is None else ranges[p])
        for p, x in deltas.items()
    }


def quantize(
    sig: Signature, bits: int = 8, *, scheme: str = "asymmetric", per_channel: bool = False, axis: int = -1
) -> Signature:
    """Quantizes every delta of ``sig`` (one jitted pass).

    Args:
      sig: a float signature.
      bits: 8, 4 or 2.
      scheme: ``'asymmetric'`` (min–max) or ``'symmetric'`` (max-abs, exact zero).
      per_channel: one scale per slice along ``axis`` instead of per tensor.

    Returns:
      A ``Signature`` whose deltas are :class:`QuantizedTensor`.
    """
    _check(bits, scheme)
    if sig.is_quantized:
        raise RWSError(f"signature {sig.name!r} is already quantized ({sig.meta.quantization})")
    q = _quantize_all(sig.deltas, bits=bits, scheme=scheme, axis=axis if per_channel else None)
    return sig.replace(
        deltas=dict(q), meta=dataclasses.replace(sig.meta, quantization=describe(bits, scheme, per_channel))
    )


def quantize_reference(sigs: Sequence[Signature], levels: int = 256) -> list[Signature]:
    """The reference code's quantizer for signatures applied together.

    Uniform min–max, asymmetric, one scale per tensor, with each tensor's min and
    max shared across all of ``sigs`` that hold it; ``levels`` counts levels as the
    reference flag does (256 = 8 bit, 16 = 4 bit, 4 = 2 bit).
    """
    bits = {256: 8, 16: 4, 4: 2}.get(int(levels))
    if bits is None:
        raise RWSError(f"levels must be one of 256, 16, 4 (8/4/2 bit), got {levels}")
    paths = sorted({p for s in sigs for p in s.deltas})
    ranges = {}
    for p in paths:
        xs = [s.deltas[p] for s in sigs if p in s.deltas]
        ranges[p] = (min(jnp.min(x) for x in xs), max(jnp.max(x) for x in xs))
    out = []
    for s in sigs:
        q = _quantize_all(s.deltas, bits=bits, scheme="asymmetric", axis=None, ranges={p: ranges[p] for p in s.deltas})
        out.append(
            s.replace(deltas=dict(q), meta=dataclasses.replace(s.meta, quantization=describe(bits, "asymmetric", False, True)))
        )
    return out


@jax.jit
def _dequantize_all(deltas: dict) -> dict:
    return {p: as_float(v) for p, v in deltas.items()}


def dequantize(sig: Signature) -> Signature:
    """A float signature from a quantized one (no-op for a float signature)."""
    if not sig.is_quantized:
        return sig
    return sig.replace(deltas=dict(_dequantize_all(sig.deltas)), meta=dataclasses.replace(sig.meta, quantization=""))
