"""Signature files: :func:`save_signature`, :func:`load_signature`, :func:`read_signature_info`.

A signature file is a checked directory (:mod:`rws_jax.files.checked_dirs`) in the format
of :mod:`rws_jax.files.signature_format`. Loading checks, before anything reaches a model:
the format version and every quantization scheme are known; declared sizes are sane and
match what orbax stored; the checksum over metadata and array bytes matches (catches
truncation and bit flips); values are finite (for quantized tensors: scale and offset,
and that no code can dequantize to an overflowing value); and, given ``like=variables``,
that the signature fits that model. Nothing is unpickled: arrays come from tensorstore
(:mod:`rws_jax.files.array_reading`), metadata is JSON.

Saving is atomic (:mod:`rws_jax.files.atomic_dirs`): an interrupted save leaves the
earlier file (or nothing) in place, never a half-written one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rws_jax.algebra import check_compatible, check_finite
from rws_jax.errors import NonFiniteError, SignatureFileError
from rws_jax.files.array_reading import open_arrays, read_stores
from rws_jax.files.checked_dirs import ARRAYS, checksum, file_error, read_json_meta, write_checked_dir
from rws_jax.files.signature_format import FORMAT, signature_parts, validate_meta
from rws_jax.quantization import SIGN, QuantizedTensor, from_flat_packed, largest_magnitude
from rws_jax.signature import Signature, SignatureMeta, mark_finite


def save_signature(
    path: str | os.PathLike, sig: Signature, *, overwrite: bool = False, check_values: bool = True
) -> Path:
    """Writes ``sig`` to the directory ``path`` (atomically). Returns the path.

    Refuses (``NonFiniteError``) a signature holding NaN/inf unless ``check_values=False``;
    refuses to replace an existing file unless ``overwrite=True``.
    """
    if not isinstance(sig, Signature):
        raise TypeError(f"expected a Signature, got {type(sig).__name__}")
    if check_values:
        check_finite(sig)
    meta, arrays = signature_parts(sig)
    return write_checked_dir(path, arrays, meta, overwrite=overwrite)


def read_meta(path: Path) -> dict:
    """The metadata of the signature file ``path`` as stored (its ``format`` checked, nothing else)."""
    meta = read_json_meta(path, "signature")
    if meta.get("format") != FORMAT:
        raise file_error(path, f"metadata does not describe an rws_jax signature (its field 'format' is "
                         f"{str(meta.get('format'))[:40]!r})")
    return meta


def read_declared_arrays(path: Path, meta: dict) -> dict[str, np.ndarray]:
    """The arrays of the signature file ``path``, by name, once they are checked to be exactly
    those its (validated) metadata ``meta`` declares, of the declared shapes and dtypes."""
    stores = open_arrays(path / ARRAYS, SignatureFileError, path)
    declared = {f"{t['key']}_{part}": a for t in meta["tensors"] for part, a in t["arrays"].items()}
    if set(stores) != set(declared):
        raise file_error(path, f"metadata lists arrays {sorted(declared)[:4]}..., the file holds {sorted(stores)[:4]}...")
    for k, a in declared.items():
        shape, dtype = list(stores[k].shape), np.dtype(stores[k].dtype.numpy_dtype)
        if shape != a["shape"] or str(dtype) != a["dtype"]:
            raise file_error(path, f"metadata says array {k} is {a['dtype']}{a['shape']}, the file holds "
                             f"{dtype}{shape}: metadata and contents disagree")
    return read_stores(stores, SignatureFileError, path)


def _plain_tensor(path: Path, t: dict, v: np.ndarray) -> jax.Array:
    """The unquantized tensor of the entry ``t`` from its stored ``value`` ``v``, checked."""
    if list(v.shape) != t["shape"] or str(v.dtype) != t["dtype"]:
        raise file_error(path, f"tensor {t['path']!r}: metadata says {t['dtype']}{t['shape']}, data is {v.dtype}{list(v.shape)}")
    if not np.all(np.isfinite(v)):
        raise NonFiniteError(f"{path}: tensor {t['path']!r} holds NaN/inf")
    return jax.numpy.asarray(v)


def _quantized_tensor(path: Path, t: dict, data: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> QuantizedTensor:
    """The quantized tensor of the entry ``t`` from its stored codes, scale and offset, checked."""
    q = t["quant"]
    n = int(np.prod(t["shape"]))
    expect = n if q["bits"] == 8 else -(-n * q["bits"] // 8)
    if data.dtype != np.uint8 or data.size != expect:
        raise file_error(path, f"tensor {t['path']!r}: {data.size} code bytes for {t['shape']} at {q['bits']} bit (want {expect})")
    nd = len(t["shape"])
    want = () if q.get("axis") is None else tuple(t["shape"][i] if i == q.get("axis") else 1 for i in range(nd))
    if tuple(scale.shape) != want or tuple(offset.shape) != want or scale.dtype != np.float32 or offset.dtype != np.float32:
        raise file_error(path, f"tensor {t['path']!r}: scale/offset are {scale.dtype}{list(scale.shape)}, "
                         f"{offset.dtype}{list(offset.shape)}; want float32{list(want)}")
    if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(offset))):
        raise NonFiniteError(f"{path}: tensor {t['path']!r} has NaN/inf quantization scale or offset")
    if q["scheme"] == SIGN and (np.any(offset != 0) or np.any(scale < 0)):
        raise file_error(path, f"tensor {t['path']!r}: a {SIGN!r} tensor has offset 0 and scale = mean |x| >= 0; "
                         f"the file holds offsets in [{offset.min()}, {offset.max()}], scales from {scale.min()}")
    # finite scale/offset can still dequantize to inf ('log2': 2**offset); keep a
    # factor-2 margin below the dtype's largest value for float rounding in exp2/the cast
    if largest_magnitude(q["scheme"], q["bits"], scale, offset) > float(jax.numpy.finfo(t["dtype"]).max) / 2:
        raise NonFiniteError(f"{path}: tensor {t['path']!r} has a quantization scale/offset that dequantizes "
                             f"to values overflowing {t['dtype']}")
    return QuantizedTensor(
        data=jax.numpy.asarray(from_flat_packed(data, q["bits"], tuple(t["shape"]))),
        scale=jax.numpy.asarray(scale),
        offset=jax.numpy.asarray(offset),
        shape=tuple(t["shape"]),
        dtype=t["dtype"],
        bits=q["bits"],
        scheme=q["scheme"],
        axis=q.get("axis"),
    )


def _signature_meta(meta: dict, specs: tuple) -> SignatureMeta:
    return SignatureMeta(
        base_fingerprint=str(meta.get("base_fingerprint", "")),
        leaf_specs=specs,
        name=str(meta.get("name", "")),
        severity=meta.get("severity"),
        kind=str(meta.get("kind", "")),
        selection=str(meta.get("selection", "")),
        quantization=str(meta.get("quantization", "")),
    )


def load_signature(
    path: str | os.PathLike, *, like: Any = None, check_base: bool = True, verify: bool = True
) -> Signature:
    """Reads a signature file written by :func:`save_signature`.

    Args:
      path: the signature directory.
      like: optional model variables; if given, the signature must fit them
        (see :func:`rws_jax.check_compatible`).
      check_base: with ``like``, also require the base-model fingerprint to match.
      verify: check the sha256 checksum (disable only for trusted files).

    Raises:
      SignatureFileError: missing, truncated, tampered, lying or future-format file.
      NonFiniteError: the file holds NaN/inf.
      IncompatibleSignatureError: the signature does not fit ``like``.
    """
    path = Path(path).absolute()  # orbax needs absolute paths
    meta = read_meta(path)
    validate_meta(path, meta)
    arrays = read_declared_arrays(path, meta)
    if verify and checksum(meta, arrays) != meta.get("checksum"):
        raise file_error(path, "checksum mismatch: the file was modified or corrupted after it was written")
    deltas: dict[str, jax.Array | QuantizedTensor] = {}
    for t in meta["tensors"]:
        get = lambda part: arrays[f"{t['key']}_{part}"]  # noqa: E731
        if t.get("quant") is None:
            deltas[t["path"]] = _plain_tensor(path, t, get("value"))
        else:
            deltas[t["path"]] = _quantized_tensor(path, t, get("data"), get("scale"), get("offset"))
    specs = tuple((p, tuple(s), d) for p, s, d in meta.get("leaf_specs", []))
    if {p for p, _, _ in specs} != set(deltas):
        raise file_error(path, "leaf_specs and tensors name different leaves")
    sig = Signature(deltas=deltas, meta=_signature_meta(meta, specs))
    if like is not None:
        check_compatible(sig, like, check_base=check_base)
    return mark_finite(sig)  # every value was checked finite above


def read_signature_info(path: str | os.PathLike, *, checked: bool = True) -> dict:
    """The metadata of a signature file (labels, selection, sizes) without its arrays.

    ``checked=False`` returns the metadata as stored, every field unchecked (for display
    of a broken file: any field may then have any type); the file must still be a
    signature directory with JSON metadata."""
    path = Path(path).absolute()
    meta = read_meta(path)
    if checked:
        validate_meta(path, meta)
    tensors = meta.get("tensors")
    return {k: v for k, v in meta.items() if k != "tensors"} | {
        "num_tensors": len(tensors) if isinstance(tensors, list) else 0}
