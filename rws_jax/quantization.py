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

Packing layout (chosen so that quantization works on sharded tensors without
gathering them): in memory, codes are packed *along the last axis* —
``data: uint8[*shape[:-1], shape[-1] // (8 // bits)]`` — whenever that axis (and, for
a sharded tensor, each shard of it) divides by the number of codes per byte; the
packed array is then sharded like the tensor and every shard packs its own codes.
Otherwise the codes stay unpacked (``uint8[*shape]``, one code a byte). The layout is
read off ``data.shape``; an older flat layout (``uint8[ceil(n·bits/8)]``) is still
understood. Files always hold the compact flat layout (see :func:`to_flat_packed`),
whatever the layout in memory.
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

from rws_jax import tree_paths
from rws_jax.errors import RWSError
from rws_jax.signature import Signature

SCHEMES = ("asymmetric", "symmetric")
BITS = (2, 4, 8)


@struct.dataclass
class QuantizedTensor:
    """Quantized stand-in for one delta tensor.

    Attributes:
      data: ``uint8`` codes: ``[*shape]`` (8 bit, or unpacked), ``[*shape[:-1],
        shape[-1] // (8 // bits)]`` (packed along the last axis) or the legacy flat
        ``[ceil(n · bits / 8)]`` (see the module doc).
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


def can_pack_last_axis(shape: tuple, bits: int, shard_shape: tuple | None = None) -> bool:
    """Whether ``bits``-bit codes of ``shape`` pack along the last axis (see module doc).

    With ``shard_shape`` (the per-device block of a sharded tensor) each shard's last
    axis must divide too, so that packing needs no communication.
    """
    if bits == 8 or len(shape) == 0:
        return False
    per_byte = 8 // bits
    if shape[-1] % per_byte:
        return False
    return shard_shape is None or (len(shard_shape) == len(shape) and shard_shape[-1] % per_byte == 0)


def pack_last_axis(q: jax.Array, bits: int) -> jax.Array:
    """``uint8[..., C]`` codes -> ``uint8[..., C // (8 // bits)]`` (``C`` must divide)."""
    q = q.astype(jnp.uint8)
    if bits == 8:
        return q
    per_byte = 8 // bits
    grouped = q.reshape(*q.shape[:-1], q.shape[-1] // per_byte, per_byte)
    shifts = jnp.arange(per_byte, dtype=jnp.uint8) * bits
    return jnp.sum(grouped << shifts, axis=-1, dtype=jnp.uint8)


def unpack_last_axis(data: jax.Array, bits: int, shape: tuple) -> jax.Array:
    """Inverse of :func:`pack_last_axis`."""
    if bits == 8:
        return data.reshape(shape)
    per_byte = 8 // bits
    shifts = jnp.arange(per_byte, dtype=jnp.uint8) * bits
    mask = jnp.uint8((1 << bits) - 1)
    codes = (data[..., None] >> shifts) & mask
    return codes.reshape(shape)


def layout_of(data_shape: tuple, bits: int, shape: tuple) -> str:
    """``'codes'`` (one code a byte), ``'last_axis'`` or ``'flat'`` (see module doc)."""
    data_shape, shape = tuple(data_shape), tuple(shape)
    if data_shape == shape:
        return "codes"
    if bits != 8 and len(shape) and shape[-1] % (8 // bits) == 0:
        if data_shape == (*shape[:-1], shape[-1] // (8 // bits)):
            return "last_axis"
    n = int(np.prod(shape))
    if len(data_shape) == 1 and data_shape[0] == (n if bits == 8 else -(-n * bits // 8)):
        return "flat"
    raise RWSError(f"quantized data of shape {data_shape} does not fit a {bits}-bit tensor of shape {shape}")


def codes_of(qt: "QuantizedTensor") -> jax.Array:
    """The unsigned codes of ``qt`` as ``uint8[*qt.shape]``, whatever the packing (traceable)."""
    layout = layout_of(qt.data.shape, qt.bits, qt.shape)
    if layout == "codes":
        return qt.data.astype(jnp.uint8)
    if layout == "last_axis":
        return unpack_last_axis(qt.data, qt.bits, qt.shape)
    return unpack_codes(qt.data.reshape(-1), qt.bits, qt.shape)


def _np_pack_flat(q: np.ndarray, bits: int) -> np.ndarray:
    q = np.asarray(q, np.uint8).reshape(-1)
    if bits == 8:
        return q
    per_byte = 8 // bits
    q = np.pad(q, (0, (-q.size) % per_byte)).reshape(-1, per_byte)
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits).astype(np.uint8)
    return np.bitwise_or.reduce(q << shifts, axis=1).astype(np.uint8)


def _np_unpack_flat(data: np.ndarray, bits: int, n: int) -> np.ndarray:
    data = np.asarray(data, np.uint8).reshape(-1)
    if bits == 8:
        return data[:n]
    per_byte = 8 // bits
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits).astype(np.uint8)
    return ((data[:, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(-1)[:n]


def to_flat_packed(qt: "QuantizedTensor") -> np.ndarray:
    """The on-disk layout: codes packed flat, ``uint8[ceil(n · bits / 8)]`` (host numpy)."""
    data = np.asarray(jax.device_get(qt.data))
    layout = layout_of(data.shape, qt.bits, qt.shape)
    n = int(np.prod(qt.shape))
    if layout == "flat":
        return data.reshape(-1)
    if layout == "codes":
        return _np_pack_flat(data, qt.bits)
    per_byte = 8 // qt.bits
    shifts = (np.arange(per_byte, dtype=np.uint8) * qt.bits).astype(np.uint8)
    codes = ((data[..., None] >> shifts) & np.uint8((1 << qt.bits) - 1)).reshape(-1)
    return _np_pack_flat(codes[:n], qt.bits)


def from_flat_packed(data: np.ndarray, bits: int, shape: tuple) -> np.ndarray:
    """Inverse of :func:`to_flat_packed`: the in-memory layout that :func:`quantize_tensor`
    gives an unsharded tensor of ``shape`` (host numpy)."""
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape))
    codes = _np_unpack_flat(data, bits, n).reshape(shape)
    if not can_pack_last_axis(shape, bits):
        return codes
    per_byte = 8 // bits
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits).astype(np.uint8)
    grouped = codes.reshape(*shape[:-1], shape[-1] // per_byte, per_byte)
    return np.bitwise_or.reduce(grouped << shifts, axis=-1).astype(np.uint8)


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
    pack: bool | None = None,
) -> QuantizedTensor:
    """Quantizes one tensor. ``axis`` selects per-channel; ``value_range=(lo, hi)``
    overrides the min/max (the reference shares it across signatures).

    ``pack``: pack 4/2-bit codes along the last axis (``None``: whenever the last axis
    divides, see the module doc; ``False``: keep one code a byte)."""
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


def dequantize_tensor(qt: QuantizedTensor) -> jax.Array:
    """``q · scale + offset`` in float32, cast to the original dtype."""
    codes = codes_of(qt).astype(jnp.float32)
    return (codes * qt.scale + qt.offset).astype(qt.dtype)


def as_float(value) -> jax.Array:
    """A delta as a float array, dequantizing a ``QuantizedTensor`` (traceable)."""
    return dequantize_tensor(value) if isinstance(value, QuantizedTensor) else value


def describe(bits: int, scheme: str, per_channel: bool, shared: bool = False) -> str:
    return f"{scheme}/{'per_channel' if per_channel else 'per_tensor'}/{bits}" + ("/shared_range" if shared else "")


@jax.jit(static_argnames=("bits", "scheme", "axis", "packs", "shardings"))
def _quantize_all_jit(deltas: dict, bits: int, scheme: str, axis: int | None, ranges: dict | None = None,
                      packs: tuple | None = None, shardings: tuple | None = None):
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


def _quantize_all(deltas: dict, bits: int, scheme: str, axis: int | None, ranges: dict | None = None):
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


@jax.jit(static_argnames=("shardings",))
def _dequantize_all_jit(deltas: dict, shardings: tuple | None = None) -> dict:
    sh = dict(shardings or ())
    return {p: tree_paths.constrain(as_float(v), sh.get(p)) for p, v in deltas.items()}


def delta_sharding(value):
    """The sharding a delta (float or quantized) has, as the sharding of its float value."""
    if isinstance(value, QuantizedTensor):
        s = tree_paths.device_sharding(value.data)
        if s is None or layout_of(value.data.shape, value.bits, value.shape) == "flat":
            return None
        if layout_of(value.data.shape, value.bits, value.shape) == "codes":
            return s
        return tree_paths.derived_sharding(s, len(value.shape))
    return tree_paths.device_sharding(value)


def _dequantize_all(deltas: dict) -> dict:
    shardings = tree_paths.static_shardings({p: delta_sharding(v) for p, v in deltas.items()})
    return _dequantize_all_jit(deltas, shardings=shardings)


def dequantize(sig: Signature) -> Signature:
    """A float signature from a quantized one (no-op for a float signature)."""
    if not sig.is_quantized:
        return sig
    return sig.replace(deltas=dict(_dequantize_all(sig.deltas)), meta=dataclasses.replace(sig.meta, quantization=""))
