"""The quantized tensor type and its packed storage layout.

A :class:`QuantizedTensor` stands for one delta tensor ``x: dtype[*shape]`` as
unsigned ``bits``-bit codes ``q`` in ``[0, 2**bits − 1]`` plus one ``(scale,
offset)`` per tensor (or per channel). How the codes are made is the business of
the schemes in :mod:`rws_jax.quantization`; this module holds what every holder of a
quantized tensor needs: the type, how its codes are packed in memory and on disk,
and how it dequantizes (``dequantize_tensor``), float32 then cast:

- ``'asymmetric'``, ``'symmetric'``: ``x̂ = q · scale + offset``;
- ``'log2'``: the top bit of ``q`` is the sign, the rest a magnitude code ``m``:
  ``x̂ = ±2**(m · scale + offset)``;
- ``'tanh'``: ``x̂ = atanh(clip(q · scale + offset, ±TANH_LIMIT))``;
- ``'sign'`` (1 bit): ``x̂ = (2q − 1) · scale + offset`` (offset 0: ``±scale``).

4-, 2- and 1-bit codes are packed 2, 4 and 8 to a byte, so a 4-bit signature takes
half the bytes of an 8-bit one and a 1-bit one an eighth (plus its scales).

Packing layout (chosen so that quantization works on sharded tensors without
gathering them): in memory, codes are packed *along the last axis* —
``data: uint8[*shape[:-1], shape[-1] // (8 // bits)]`` — whenever that axis (and, for
a sharded tensor, each shard of it) divides by the number of codes per byte; the
packed array is then sharded like the tensor and every shard packs its own codes.
Otherwise the codes stay unpacked (``uint8[*shape]``, one code a byte). The layout is
read off ``data.shape``; an older flat layout (``uint8[ceil(n·bits/8)]``) is still
understood. Files always hold the compact flat layout (see :func:`to_flat_packed`),
whatever the layout in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rws_jax import tree_paths
from rws_jax.errors import RWSError

#: the quantization schemes a tensor can be stored with (see :mod:`rws_jax.quantization`).
SCHEMES = ("asymmetric", "symmetric", "log2", "tanh", "sign")
#: the supported bit widths.
BITS = (1, 2, 4, 8)
#: the scheme of 1-bit quantization (and the only one at 1 bit).
SIGN = "sign"
#: ``'tanh'`` values are clipped to ``±TANH_LIMIT`` (largest float32 below 1) before ``atanh``.
TANH_LIMIT = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


@struct.dataclass
class QuantizedTensor:
    """Quantized stand-in for one delta tensor.

    Attributes:
      data: ``uint8`` codes: ``[*shape]`` (8 bit, or unpacked), ``[*shape[:-1],
        shape[-1] // (8 // bits)]`` (packed along the last axis) or the legacy flat
        ``[ceil(n · bits / 8)]`` (see the module doc).
      scale: ``f32[]`` (per tensor) or ``f32[1, ..., C, ..., 1]`` (per channel);
        ``mean|x|`` for ``'sign'``.
      offset: same shape as ``scale`` (0 for ``'sign'``).
      shape, dtype: shape and dtype of the dequantized tensor (static).
      bits: 1, 2, 4 or 8 (static).
      scheme: ``'asymmetric'``, ``'symmetric'``, ``'log2'``, ``'tanh'`` or ``'sign'``
        (1 bit) (static; see the module doc).
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

    if TYPE_CHECKING:  # added by ``flax.struct.dataclass``; declared for type checkers
        def replace(self, **updates: Any) -> QuantizedTensor: ...

    def dequantize(self) -> jax.Array:
        return dequantize_tensor(self)

    @property
    def error_bound(self) -> jax.Array:
        """Per channel (shape of ``scale``): ``scale/2``, the largest possible
        ``|x − x̂|`` for the uniform schemes; for ``'log2'`` the bound on
        ``|log2|x̂| − log2|x||`` (nonzero x), for ``'tanh'`` the bound on
        ``|tanh(x̂) − tanh(x)|`` (up to the clip at ±8.66).

        For ``'sign'`` (1 bit): ``(n − 1) · scale`` with ``n`` the number of elements
        sharing a scale, the largest ``|x − x̂|`` that any tensor with this
        ``scale = mean|x|`` can have (attained when one element holds all the mass;
        0 for ``n = 1``). It is tight but says little: 1-bit quantization has no
        per-element bound, only sign preservation and L2 optimality (see
        :mod:`rws_jax.quantization`)."""
        if self.scheme == SIGN:
            n = int(np.prod(self.shape)) // max(1, int(np.prod(np.shape(self.scale))))
            return self.scale * float(max(n - 1, 0))
        return self.scale / 2


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
    """Inverse of :func:`to_flat_packed`: the in-memory layout that
    :func:`~rws_jax.quantization.quantize_tensor`
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


def dequantize_tensor(qt: QuantizedTensor) -> jax.Array:
    """The tensor ``qt`` stands for, ``qt.dtype[*qt.shape]`` (traceable, jit-friendly).

    In float32, then cast: ``q · scale + offset`` (uniform schemes),
    ``±2**(m · scale + offset)`` (``'log2'``: sign bit and magnitude code ``m``),
    ``atanh(clip(q · scale + offset, ±TANH_LIMIT))`` (``'tanh'``),
    ``(2q − 1) · scale + offset`` (``'sign'``, offset 0: ``±scale``).
    """
    codes = codes_of(qt)
    if qt.scheme == SIGN:
        return ((2.0 * codes.astype(jnp.float32) - 1.0) * qt.scale + qt.offset).astype(qt.dtype)
    if qt.scheme == "log2":
        half = 1 << (qt.bits - 1)
        m = (codes & jnp.uint8(half - 1)).astype(jnp.float32)
        mag = jnp.exp2(m * qt.scale + qt.offset)
        return jnp.where(codes >= half, -mag, mag).astype(qt.dtype)
    t = codes.astype(jnp.float32) * qt.scale + qt.offset
    if qt.scheme == "tanh":
        t = jnp.arctanh(jnp.clip(t, -TANH_LIMIT, TANH_LIMIT))
    return t.astype(qt.dtype)


def largest_magnitude(scheme: str, bits: int, scale: np.ndarray, offset: np.ndarray) -> float:
    """Host check: the largest ``|x̂|`` any codes can dequantize to with these
    ``scale``/``offset`` (float64; ``inf`` if it overflows even there).

    Dequantization is monotone in the (magnitude) code, so the extremes are at the
    lowest and highest code. Used by the loader to refuse files whose finite
    scale/offset would still dequantize to inf (e.g. a ``'log2'`` offset of 200).
    """
    scale = np.asarray(scale, np.float64)
    offset = np.asarray(offset, np.float64)
    if scheme == "tanh":
        return float(np.arctanh(np.float64(TANH_LIMIT)))
    if scheme == SIGN:  # (2q − 1) · scale + offset, q in {0, 1}
        with np.errstate(over="ignore", invalid="ignore"):
            vals = np.abs(scale) + np.abs(offset)
        m = float(np.max(vals)) if vals.size else 0.0
        return m if np.isfinite(m) else float("inf")
    top = (1 << (bits - 1)) - 1 if scheme == "log2" else (1 << bits) - 1
    ends = np.stack([offset, offset + top * scale])
    with np.errstate(over="ignore", invalid="ignore"):
        vals = np.exp2(ends) if scheme == "log2" else np.abs(ends)
    m = float(np.max(vals)) if vals.size else 0.0
    return m if np.isfinite(m) else float("inf")


def as_float(value: Any) -> jax.Array:
    """A delta as a float array, dequantizing a ``QuantizedTensor`` (traceable)."""
    return dequantize_tensor(value) if isinstance(value, QuantizedTensor) else value


def delta_sharding(value: Any) -> jax.sharding.Sharding | None:
    """The sharding a delta (float or quantized) has, as the sharding of its float value."""
    if isinstance(value, QuantizedTensor):
        s = tree_paths.device_sharding(value.data)
        if s is None or layout_of(value.data.shape, value.bits, value.shape) == "flat":
            return None
        if layout_of(value.data.shape, value.bits, value.shape) == "codes":
            return s
        return tree_paths.derived_sharding(s, len(value.shape))
    return tree_paths.device_sharding(value)
