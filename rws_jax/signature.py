"""The ``Signature`` pytree: per-leaf weight deltas plus descriptive metadata.

A signature is ``Signature(deltas={path: array}, meta=SignatureMeta(...))``.
``deltas`` holds one array per kept weight tensor, keyed by the leaf path in the
model's variable tree (see :mod:`rws_jax.tree_paths`), with that leaf's shape:
e.g. ``{'params/conv_0/kernel': f32[3, 3, 1, 64], 'params/conv_0/bias': f32[64]}``.
A quantized signature holds :class:`~rws_jax.quantized_tensor.QuantizedTensor` values.

It is an ordinary pytree: ``jax.tree_util.tree_map(lambda a, b: a + b, sig1, sig2)``
returns a ``Signature``. Only ``meta.base_fingerprint`` is part of the tree
structure, so signatures of the same base model combine under ``tree_map`` whatever
their names; the result carries the first argument's descriptive labels (use
``sig.relabel(name=...)`` to rename it, or :func:`rws_jax.compose`, which labels
the result itself).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, TypeAlias, Union

import jax
import numpy as np
from flax import struct

from rws_jax.errors import RWSError
from rws_jax.quantized_tensor import QuantizedTensor, to_flat_packed


@dataclasses.dataclass(frozen=True)
class SignatureMeta:
    """Static description of a signature (never traced).

    Attributes:
      base_fingerprint: fingerprint of the full variable tree the signature was
        extracted from (paths, shapes, dtypes; see ``tree_paths.fingerprint``).
      leaf_specs: ``((path, shape, dtype), ...)`` of the *model* leaves it patches.
      name: e.g. the corruption (``'fog'``) or ``'fog+snow'`` for a composition.
      severity: corruption severity the robust model was trained at, if any.
      kind: ``'projected'`` (the paper's RWS), ``'difference'`` (no projection),
        ``'composed'``, ``'dequantized'``...
      selection: JSON string of the layer selection rule used.
      quantization: ``''`` for float deltas, else e.g. ``'asymmetric/per_tensor/8'``.
    """

    base_fingerprint: str
    leaf_specs: tuple = dataclasses.field(default=(), compare=False)
    name: str = dataclasses.field(default="", compare=False)
    severity: int | None = dataclasses.field(default=None, compare=False)
    kind: str = dataclasses.field(default="projected", compare=False)
    selection: str = dataclasses.field(default="", compare=False)
    quantization: str = dataclasses.field(default="", compare=False)

    def spec_of(self, path: str) -> tuple[tuple[int, ...], str] | None:
        for p, shape, dtype in self.leaf_specs:
            if p == path:
                return tuple(shape), dtype
        return None


@struct.dataclass
class Signature:
    """Per-tensor weight deltas of one robust weight signature.

    Attributes:
      deltas: ``{leaf_path: array}``; each array has the shape of the model leaf it
        patches (float32 by default), or is a ``QuantizedTensor``.
      meta: :class:`SignatureMeta` (static).
    """

    deltas: dict[str, Any]
    meta: SignatureMeta = struct.field(pytree_node=False)

    if TYPE_CHECKING:  # added by ``flax.struct.dataclass``; declared for type checkers
        def replace(self, **updates: Any) -> Signature: ...

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(sorted(self.deltas))

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def is_quantized(self) -> bool:
        return bool(self.meta.quantization)

    def relabel(self, **changes: Any) -> Signature:
        """A copy with ``meta`` fields changed, e.g. ``sig.relabel(name='fog-v2')``."""
        return self.replace(meta=dataclasses.replace(self.meta, **changes))

    def num_elements(self) -> int:
        return int(sum(int(np.prod(s)) for _, s, _ in self.meta.leaf_specs))

    def nbytes(self) -> int:
        """Bytes held by the arrays of this signature (in memory)."""
        return int(sum(np.dtype(x.dtype).itemsize * int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self)))

    def __repr__(self) -> str:  # keep it short: signatures can hold hundreds of leaves
        q = f", quantized={self.meta.quantization}" if self.meta.quantization else ""
        sev = f", severity={self.meta.severity}" if self.meta.severity is not None else ""
        return (
            f"Signature(name={self.meta.name!r}{sev}, kind={self.meta.kind}, "
            f"tensors={len(self.deltas)}, elements={self.num_elements()}{q})"
        )


#: One signature or a sequence of them (the one-or-many argument of ``patch``, ``compose``...).
SignatureLike: TypeAlias = Union[Signature, Sequence[Signature]]


def signature_list(signatures: SignatureLike) -> list[Signature]:
    """``[sig]`` for one ``Signature``, else the signatures of a non-empty sequence as a
    list (the one-or-many argument of ``patch``, ``compose``, ``patch_plan``...).

    Raises:
      RWSError: an empty sequence, or an element that is not a ``Signature``.
    """
    if isinstance(signatures, Signature):
        return [signatures]
    sigs = list(signatures)
    if not sigs:
        raise RWSError("need at least one signature")
    for s in sigs:
        if not isinstance(s, Signature):
            raise RWSError(f"expected a Signature, got {type(s).__name__}")
    return sigs


_FINITE_FLAG = "_rws_checked_finite"


def mark_finite(signature: Signature) -> Signature:
    """Records on this signature object that its values were checked finite, so that
    later checks of the same object (``rws.patch(..., check_values=True)``) are free.
    Any new signature (from ``tree_map``, ``replace``...) is a new object, checked anew."""
    object.__setattr__(signature, _FINITE_FLAG, True)
    return signature


def is_marked_finite(signature: Signature) -> bool:
    return bool(getattr(signature, _FINITE_FLAG, False))


def leaf_specs_for(flat: Mapping[str, Any], paths: Iterable[str]) -> tuple:
    """``((path, shape, dtype), ...)`` for ``paths`` of a flattened model."""
    return tuple(
        (p, tuple(int(d) for d in np.shape(flat[p])), str(np.dtype(flat[p].dtype))) for p in sorted(paths)
    )


def signature_fingerprint(sig: Signature) -> str:
    """sha256 (hex) of a signature's *content*: its delta values plus the metadata
    that decides what it does (base fingerprint, leaf specs, quantization).

    Descriptive labels (name, severity, kind, selection) are left out, so a renamed
    copy of a signature has the same fingerprint. A quantized tensor is hashed in the
    on-disk (flat packed) layout, so the fingerprint does not depend on how its codes
    are packed in memory or sharded; a saved and reloaded signature keeps it.
    """
    m = sig.meta
    h = hashlib.sha256()
    head = {
        "base_fingerprint": m.base_fingerprint,
        "leaf_specs": [[p, list(s), d] for p, s, d in m.leaf_specs],
        "quantization": m.quantization,
    }
    h.update(json.dumps(head, sort_keys=True, separators=(",", ":")).encode())

    def arr(a: Any) -> None:
        a = np.ascontiguousarray(np.asarray(jax.device_get(a)))
        h.update(f"{a.dtype}{list(a.shape)}".encode())
        h.update(a.tobytes())

    for p in sorted(sig.deltas):
        v = sig.deltas[p]
        h.update(p.encode() + b"\0")
        if isinstance(v, QuantizedTensor):
            h.update(json.dumps([list(v.shape), v.dtype, v.bits, v.scheme, v.axis]).encode())
            arr(to_flat_packed(v))
            arr(v.scale)
            arr(v.offset)
        else:
            arr(v)
    return h.hexdigest()
