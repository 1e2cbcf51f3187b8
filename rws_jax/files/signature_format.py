"""The on-disk format of signature files: what their metadata holds and may hold.

Layout of a signature file (a checked directory, :mod:`rws_jax.files.checked_dirs`)::

    fog.rws/
      arrays/   orbax StandardSave of {'t00000': ..., 't00001_data': ..., ...}
      meta/     orbax JsonSave: format version, labels, layer selection, leaf specs,
                quantization of each tensor, base fingerprint, sha256 checksum

:func:`signature_parts` builds the metadata and arrays of a signature;
:func:`validate_meta` checks, before anything reaches a model, that the format version
and every quantization scheme are known, that every metadata field has its type (a wrong
type is a :class:`~rws_jax.SignatureFileError` naming the field, also under a recomputed
checksum) and that declared sizes are sane.

Quantization schemes: ``asymmetric`` and ``symmetric`` (uniform) and, since the
reference quantizers, ``log2`` and ``tanh`` (see :mod:`rws_jax.quantization`);
adding those two changed nothing else in the layout and left the version at 1.

Format versions: 1 (8/4/2 bit; schemes asymmetric, symmetric, log2, tanh) and 2,
which adds 1-bit ``sign`` tensors (``bits: 1``; codes packed 8 per byte flat, i.e.
``ceil(n/8)`` data bytes; ``scale`` = mean |Δ| per tensor or channel, ``offset``
all zeros). The arrays, their names, the flat packing and the checksum are the
same in both, so this code writes version 2 and still reads version 1 files
(tests/data/signature_v1 holds some, written by the version-1 writer); a version-1
file that declares a 1-bit or ``sign`` tensor is refused (no version-1 writer
could have written it), and a file declaring a version newer than 2 is refused
with "written by a newer rws_jax". An rws_jax of version 1 refuses every version-2
file with that same message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeGuard

import jax
import numpy as np

from rws_jax.errors import SignatureFileError
from rws_jax.files.checked_dirs import file_error
from rws_jax.quantization import BITS, SCHEMES, SIGN, QuantizedTensor, to_flat_packed
from rws_jax.signature import Signature

FORMAT = "rws_jax.signature"
FORMAT_VERSION = 2  # 2: 1-bit 'sign' tensors; 1: everything else, still read
#: the first format version that may hold 1-bit ``'sign'`` tensors.
SIGN_SINCE_VERSION = 2
MAX_DECLARED_BYTES = 64 << 30  # refuse files declaring more than 64 GiB of arrays
_DTYPES = ("float16", "bfloat16", "float32", "float64", "uint8")
_KEY_RE = re.compile(r"t\d{5,}")
#: top-level metadata fields of a signature file that hold a string (each may be absent)
_STR_FIELDS = ("name", "kind", "selection", "quantization", "base_fingerprint", "checksum")


def _is_shape(shape: Any) -> TypeGuard[list[int]]:
    return isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


# ----------------------------------------------------------------------------- writing


def tensor_entries(sig: Signature) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The metadata entry of each tensor of ``sig`` (in path order) and the arrays they name."""
    entries, arrays = [], {}
    for i, p in enumerate(sorted(sig.deltas)):
        v = sig.deltas[p]
        key = f"t{i:05d}"
        if isinstance(v, QuantizedTensor):
            # On disk the codes are always packed flat (compact whatever the in-memory layout).
            parts = {"data": to_flat_packed(v), "scale": v.scale, "offset": v.offset}
            entry: dict[str, Any] = {
                "path": p,
                "key": key,
                "shape": list(v.shape),
                "dtype": v.dtype,
                "quant": {"bits": v.bits, "scheme": v.scheme, "axis": v.axis},
            }
        else:
            parts = {"value": v}
            entry = {"path": p, "key": key, "shape": list(v.shape), "dtype": str(v.dtype), "quant": None}
        entry["arrays"] = {}
        for part, arr in parts.items():
            a = np.asarray(jax.device_get(arr))
            arrays[f"{key}_{part}"] = a
            entry["arrays"][part] = {"shape": list(a.shape), "dtype": str(a.dtype)}
        entries.append(entry)
    return entries, arrays


def signature_meta(sig: Signature, entries: list[dict]) -> dict:
    """The metadata of a signature file of ``sig`` whose tensors are ``entries`` (without its checksum)."""
    m = sig.meta
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": m.name,
        "severity": m.severity,
        "kind": m.kind,
        "selection": m.selection,
        "quantization": m.quantization,
        "base_fingerprint": m.base_fingerprint,
        "leaf_specs": [[p, list(s), d] for p, s, d in m.leaf_specs],
        "tensors": entries,
    }


def signature_parts(sig: Signature) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a signature file of ``sig`` (the metadata without its checksum)."""
    entries, arrays = tensor_entries(sig)
    return signature_meta(sig, entries), arrays


# ----------------------------------------------------------------------------- checking


def _validate_fields(path: Path, meta: dict) -> None:
    """Each top-level field of the metadata has its type (a file with a recomputed checksum can lie)."""
    def bad(field: str, want: str) -> SignatureFileError:
        v = meta[field]
        return file_error(path, f"metadata field {field!r} must be {want}, got {type(v).__name__} {str(v)[:40]}")

    for field in _STR_FIELDS:
        if field in meta and not isinstance(meta[field], str):
            raise bad(field, "a string")
    if meta.get("severity") is not None and not _is_int(meta["severity"]):
        raise bad("severity", "an integer or null")
    specs = meta.get("leaf_specs", [])
    if not isinstance(specs, list):
        raise bad("leaf_specs", "a list of [path, shape, dtype]")
    for spec in specs:
        if not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str) and _is_shape(spec[1])
                and isinstance(spec[2], str)):
            raise file_error(path, f"metadata field 'leaf_specs' holds a malformed entry {str(spec)[:80]} "
                             "(want [path, shape, dtype])")


def _validate_quant(path: Path, t: dict, q: Any, version: int) -> None:
    """The quantization ``q`` of the tensor entry ``t`` (a file of format ``version``) is known and fits it."""
    if not isinstance(q, dict):
        raise file_error(path, f"tensor {t['path']!r} has malformed quantization {q!r}")
    if q.get("scheme") not in SCHEMES:
        raise file_error(
            path,
            f"tensor {t['path']!r} uses unknown quantization scheme {q.get('scheme')!r} (known: {', '.join(SCHEMES)})",
        )
    if t["dtype"] == "uint8":
        raise file_error(path, f"tensor {t['path']!r} is quantized but declares the non-float dtype {t['dtype']!r}")
    if not _is_int(q.get("bits")) or q["bits"] not in BITS:
        raise file_error(path, f"tensor {t['path']!r} uses unsupported bit width {q.get('bits')!r}")
    if (q["bits"] == 1) != (q["scheme"] == SIGN):
        raise file_error(path, f"tensor {t['path']!r} declares {q['bits']}-bit {q['scheme']!r} quantization: "
                         f"1 bit goes only with the {SIGN!r} scheme and {SIGN!r} only with 1 bit")
    if q["scheme"] == SIGN and version < SIGN_SINCE_VERSION:
        raise file_error(path, f"tensor {t['path']!r} uses the 1-bit {SIGN!r} scheme, which format version "
                         f"{version} does not have (since version {SIGN_SINCE_VERSION})")
    axis = q.get("axis")
    if axis is not None and (
        not isinstance(axis, int) or isinstance(axis, bool) or not 0 <= axis < len(t["shape"])
    ):
        raise file_error(path, f"tensor {t['path']!r} declares an invalid channel axis {axis!r}")


def _tensor_bytes(path: Path, t: Any, version: int) -> int:
    """Bytes of the arrays the tensor entry ``t`` declares, once the entry is checked well-formed."""
    if not isinstance(t, dict) or not all(k in t for k in ("path", "key", "shape", "dtype", "arrays")):
        raise file_error(path, f"malformed tensor entry {str(t)[:80]}")
    if not isinstance(t["path"], str) or not isinstance(t["key"], str) or not _KEY_RE.fullmatch(t["key"]):
        raise file_error(path, f"malformed tensor entry {str(t)[:80]}: bad path or key")
    if not _is_shape(t["shape"]):
        raise file_error(path, f"tensor {t['path']!r} declares an invalid shape {t['shape']!r}")
    if t["dtype"] not in _DTYPES:
        raise file_error(path, f"tensor {t['path']!r} has unsupported dtype {t['dtype']!r}")
    q = t.get("quant")
    if q is not None:
        _validate_quant(path, t, q, version)
    want_parts = {"value"} if q is None else {"data", "scale", "offset"}
    if not isinstance(t["arrays"], dict) or set(t["arrays"]) != want_parts:
        raise file_error(path, f"tensor {t['path']!r} must hold arrays {sorted(want_parts)}, metadata lists "
                         f"{str(t['arrays'])[:80]}")
    total = 0
    for part in t["arrays"].values():
        if not isinstance(part, dict):
            raise file_error(path, f"tensor {t['path']!r} has a malformed array entry {str(part)[:80]}")
        shape = part.get("shape")
        if not _is_shape(shape):
            raise file_error(path, f"tensor {t['path']!r} declares an invalid shape {shape!r}")
        if part.get("dtype") not in _DTYPES:
            raise file_error(path, f"tensor {t['path']!r} declares an array of unsupported dtype "
                             f"{part.get('dtype')!r}")
        total += int(np.prod(shape, dtype=np.float64)) * np.dtype(part["dtype"]).itemsize
    # the tensor itself (what it dequantizes to) must also be of a sane size
    total_elems = float(np.prod(t["shape"], dtype=np.float64))
    if total_elems * np.dtype(t["dtype"]).itemsize > MAX_DECLARED_BYTES:
        raise file_error(path, f"tensor {t['path']!r} declares {total_elems:.3g} elements, over the "
                         f"{MAX_DECLARED_BYTES >> 30} GiB limit")
    return total


def validate_meta(path: Path, meta: dict) -> None:
    """The metadata of the signature file ``path`` is of a known version, every field of its
    type, every tensor entry well-formed and of a sane size; else a
    :class:`~rws_jax.errors.SignatureFileError` naming ``path`` and the problem."""
    version = meta.get("format_version")
    if not _is_int(version) or version < 1:
        raise file_error(path, f"format_version missing or invalid: {version!r}")
    if version > FORMAT_VERSION:
        raise file_error(
            path,
            f"written by a newer rws_jax (format version {version}, this one reads up to {FORMAT_VERSION}); upgrade rws_jax",
        )
    _validate_fields(path, meta)
    tensors = meta.get("tensors")
    if not isinstance(tensors, list) or not tensors:
        raise file_error(path, "metadata lists no tensors (field 'tensors')")
    total = sum(_tensor_bytes(path, t, version) for t in tensors)
    if total > MAX_DECLARED_BYTES:
        raise file_error(path, f"declares {total / 2**30:.1f} GiB of arrays, over the {MAX_DECLARED_BYTES >> 30} GiB limit")
    for field in ("path", "key"):
        if len({t[field] for t in tensors}) != len(tensors):
            raise file_error(path, f"metadata lists a tensor {field} twice")
