"""Signature files: orbax-checkpoint directories with checked metadata.

Layout of a signature file (a directory, as every orbax checkpoint)::

    fog.rws/
      arrays/   orbax StandardSave of {'t00000': ..., 't00001_data': ..., ...}
      meta/     orbax JsonSave: format version, labels, layer selection, leaf specs,
                quantization of each tensor, base fingerprint, sha256 checksum

Loading checks, before anything reaches a model: the format version and every
quantization scheme are known; declared sizes are sane and match what orbax
stored; the checksum over metadata and array bytes matches (catches truncation and
bit flips); values are finite (for quantized tensors: scale and offset, and that no
code can dequantize to an overflowing value); and, given ``like=variables``, that
the signature fits that model.

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
file with that same message. Nothing is unpickled: arrays come from tensorstore,
metadata is JSON.

Every metadata field is type-checked on loading (a wrong type is a
:class:`~rws_jax.SignatureFileError` naming the field, also under a recomputed
checksum). Arrays are read synchronously with tensorstore (:func:`read_arrays`), not
with orbax's restore: orbax reads on a private event loop that it closes when the first
read fails while others are still in flight, whose completions then print "Event loop
is closed" tracebacks; a damaged file here is one short error naming it.

Detector files (:mod:`rws_jax.detector`) use the same layout through
:func:`write_checked_dir` and :func:`read_checked_dir`.

Saving is atomic: the new file is written completely under a temporary name next to
the target and then swapped in by rename, so an interrupted save leaves the earlier
file (or nothing) in place, never a half-written one.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from rws_jax import tree_paths
from rws_jax.algebra import check_compatible, check_finite
from rws_jax.errors import FileWriteError, NonFiniteError, OutputExistsError, SignatureFileError, one_line
from rws_jax.quantization import (
    BITS,
    SCHEMES,
    SIGN,
    QuantizedTensor,
    from_flat_packed,
    largest_magnitude,
    to_flat_packed,
)
from rws_jax.signature import Signature, SignatureMeta, mark_finite

FORMAT = "rws_jax.signature"
#: the ``format`` of a model directory written by :func:`save_variables`
VARIABLES_FORMAT = "rws_jax.variables"
FORMAT_VERSION = 2  # 2: 1-bit 'sign' tensors; 1: everything else, still read
#: the first format version that may hold 1-bit ``'sign'`` tensors.
SIGN_SINCE_VERSION = 2
MAX_DECLARED_BYTES = 64 << 30  # refuse files declaring more than 64 GiB of arrays
#: the two parts of a checked directory: orbax ``StandardSave`` arrays, orbax ``JsonSave`` metadata
ARRAYS, META = "arrays", "meta"
_DTYPES = ("float16", "bfloat16", "float32", "float64", "uint8")
_KEY_RE = re.compile(r"t\d{5,}")


def _is_shape(shape) -> bool:
    return isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)


# ----------------------------------------------------------------------------- saving


def _entries(sig: Signature) -> tuple[list[dict], dict[str, np.ndarray]]:
    entries, arrays = [], {}
    for i, p in enumerate(sorted(sig.deltas)):
        v = sig.deltas[p]
        key = f"t{i:05d}"
        if isinstance(v, QuantizedTensor):
            # On disk the codes are always packed flat (compact whatever the in-memory layout).
            parts = {"data": to_flat_packed(v), "scale": v.scale, "offset": v.offset}
            entry = {
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


def checksum(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """sha256 (hex) over ``meta`` without its ``checksum`` field (canonical JSON) and every
    array's name, dtype, shape and bytes, in name order: the ``checksum`` field of
    signature and detector files."""
    h = hashlib.sha256()
    body = {k: v for k, v in meta.items() if k != "checksum"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(repr(tuple(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _meta_dict(sig: Signature, entries: list[dict]) -> dict:
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


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths (Linux renameat2 RENAME_EXCHANGE). False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _write_dir(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict, *, overwrite: bool) -> Path:
    """``arrays`` (orbax ``StandardSave``) and ``meta`` (``JsonSave``) under ``path``, atomically."""
    items = ocp.args.Composite(**{ARRAYS: ocp.args.StandardSave(arrays), META: ocp.args.JsonSave(meta)})

    def write(tmp: Path) -> None:
        handler = ocp.CompositeCheckpointHandler(
            **{ARRAYS: ocp.StandardCheckpointHandler(), META: ocp.JsonCheckpointHandler()}
        )
        ckptr = ocp.Checkpointer(handler)
        try:
            ckptr.save(tmp, items)
        finally:
            ckptr.close()

    return atomic_write_dir(path, write, overwrite=overwrite)


def write_checked_dir(
    path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict, *, overwrite: bool = False
) -> Path:
    """Writes ``arrays`` and the JSON ``meta`` with its :func:`checksum` added (as the last
    field ``checksum``) to the directory ``path``, atomically (see :func:`atomic_write_dir`).

    The layout of signature and detector files; :func:`read_checked_dir` reads it back.
    Raises :class:`~rws_jax.errors.OutputExistsError` for an existing ``path`` unless
    ``overwrite``, :class:`~rws_jax.errors.FileWriteError` where the OS refuses."""
    return _write_dir(path, arrays, {**meta, "checksum": checksum(meta, arrays)}, overwrite=overwrite)


def atomic_write_dir(path: str | os.PathLike, write_fn, *, overwrite: bool = False) -> Path:
    """Runs ``write_fn(tmp_dir)`` and moves the finished directory to ``path``.

    The old ``path`` (if ``overwrite``) is replaced only once the new one is
    complete: by an atomic exchange where the OS offers it, else by two renames
    with the old copy kept under ``<path>.old-*`` until the new one is in place.
    Creates the missing parent folders. Raises :class:`~rws_jax.errors.OutputExistsError`
    (a ``FileExistsError``) for an existing ``path`` unless ``overwrite``, and
    :class:`~rws_jax.errors.FileWriteError` naming ``path`` where the OS refuses to write.
    """
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass overwrite=True to replace it")
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_fn(tmp)
        if path.exists():
            if _exchange(tmp, path):
                shutil.rmtree(tmp)
            else:
                old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
                os.rename(path, old)
                os.rename(tmp, path)
                shutil.rmtree(old)
        else:
            os.rename(tmp, path)
    except OSError as e:
        raise FileWriteError(f"{path}: cannot write it: {one_line(e)}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


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
    entries, arrays = _entries(sig)
    return write_checked_dir(path, arrays, _meta_dict(sig, entries), overwrite=overwrite)


# ----------------------------------------------------------------------------- loading


def _fail(path, msg) -> SignatureFileError:
    return SignatureFileError(f"{path}: {msg}")


def _json_meta(path: Path, what: str) -> dict:
    """The JSON metadata of the checked directory ``path`` (a ``what`` file); else a
    :class:`SignatureFileError` naming ``path``."""
    meta_file = path / META / "metadata"
    if not path.exists():
        raise _fail(path, f"no such {what} file: not a {what} directory (one written by save_{what})")
    if not path.is_dir():
        raise _fail(path, f"not a {what} file: a {what} is a directory written by save_{what}")
    if not meta_file.is_file():
        raise _fail(path, f"not a {what} file, or an incomplete one: its {META}/ part is missing")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"metadata is not valid JSON (truncated or tampered): {one_line(e)}") from None
    if not isinstance(meta, dict):
        raise _fail(path, f"metadata does not describe an rws_jax {what}")
    return meta


def _read_meta(path: Path) -> dict:
    meta = _json_meta(path, "signature")
    if meta.get("format") != FORMAT:
        raise _fail(path, f"metadata does not describe an rws_jax signature (its field 'format' is "
                    f"{str(meta.get('format'))[:40]!r})")
    return meta


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: top-level metadata fields of a signature file that hold a string (each may be absent)
_STR_FIELDS = ("name", "kind", "selection", "quantization", "base_fingerprint", "checksum")


def _validate_fields(path: Path, meta: dict) -> None:
    """Each top-level field of the metadata has its type (a file with a recomputed checksum can lie)."""
    def bad(field, want):
        v = meta[field]
        return _fail(path, f"metadata field {field!r} must be {want}, got {type(v).__name__} {str(v)[:40]}")

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
            raise _fail(path, f"metadata field 'leaf_specs' holds a malformed entry {str(spec)[:80]} "
                        "(want [path, shape, dtype])")


def _validate_meta(path: Path, meta: dict) -> None:
    version = meta.get("format_version")
    if not _is_int(version) or version < 1:
        raise _fail(path, f"format_version missing or invalid: {version!r}")
    if version > FORMAT_VERSION:
        raise _fail(
            path,
            f"written by a newer rws_jax (format version {version}, this one reads up to {FORMAT_VERSION}); upgrade rws_jax",
        )
    _validate_fields(path, meta)
    tensors = meta.get("tensors")
    if not isinstance(tensors, list) or not tensors:
        raise _fail(path, "metadata lists no tensors (field 'tensors')")
    total = 0
    for t in tensors:
        if not isinstance(t, dict) or not all(k in t for k in ("path", "key", "shape", "dtype", "arrays")):
            raise _fail(path, f"malformed tensor entry {str(t)[:80]}")
        if not isinstance(t["path"], str) or not isinstance(t["key"], str) or not _KEY_RE.fullmatch(t["key"]):
            raise _fail(path, f"malformed tensor entry {str(t)[:80]}: bad path or key")
        if not _is_shape(t["shape"]):
            raise _fail(path, f"tensor {t['path']!r} declares an invalid shape {t['shape']!r}")
        if t["dtype"] not in _DTYPES:
            raise _fail(path, f"tensor {t['path']!r} has unsupported dtype {t['dtype']!r}")
        q = t.get("quant")
        if q is not None:
            if not isinstance(q, dict):
                raise _fail(path, f"tensor {t['path']!r} has malformed quantization {q!r}")
            if q.get("scheme") not in SCHEMES:
                raise _fail(
                    path,
                    f"tensor {t['path']!r} uses unknown quantization scheme {q.get('scheme')!r} (known: {', '.join(SCHEMES)})",
                )
            if t["dtype"] == "uint8":
                raise _fail(path, f"tensor {t['path']!r} is quantized but declares the non-float dtype {t['dtype']!r}")
            if not _is_int(q.get("bits")) or q["bits"] not in BITS:
                raise _fail(path, f"tensor {t['path']!r} uses unsupported bit width {q.get('bits')!r}")
            if (q["bits"] == 1) != (q["scheme"] == SIGN):
                raise _fail(path, f"tensor {t['path']!r} declares {q['bits']}-bit {q['scheme']!r} quantization: "
                            f"1 bit goes only with the {SIGN!r} scheme and {SIGN!r} only with 1 bit")
            if q["scheme"] == SIGN and version < SIGN_SINCE_VERSION:
                raise _fail(path, f"tensor {t['path']!r} uses the 1-bit {SIGN!r} scheme, which format version "
                            f"{version} does not have (since version {SIGN_SINCE_VERSION})")
            axis = q.get("axis")
            if axis is not None and (
                not isinstance(axis, int) or isinstance(axis, bool) or not 0 <= axis < len(t["shape"])
            ):
                raise _fail(path, f"tensor {t['path']!r} declares an invalid channel axis {axis!r}")
        want_parts = {"value"} if q is None else {"data", "scale", "offset"}
        if not isinstance(t["arrays"], dict) or set(t["arrays"]) != want_parts:
            raise _fail(path, f"tensor {t['path']!r} must hold arrays {sorted(want_parts)}, metadata lists {str(t['arrays'])[:80]}")
        for part in t["arrays"].values():
            if not isinstance(part, dict):
                raise _fail(path, f"tensor {t['path']!r} has a malformed array entry {str(part)[:80]}")
            shape = part.get("shape")
            if not _is_shape(shape):
                raise _fail(path, f"tensor {t['path']!r} declares an invalid shape {shape!r}")
            if part.get("dtype") not in _DTYPES:
                raise _fail(path, f"tensor {t['path']!r} declares an array of unsupported dtype {part.get('dtype')!r}")
            total += int(np.prod(shape, dtype=np.float64)) * np.dtype(part["dtype"]).itemsize
        # the tensor itself (what it dequantizes to) must also be of a sane size
        total_elems = float(np.prod(t["shape"], dtype=np.float64))
        if total_elems * np.dtype(t["dtype"]).itemsize > MAX_DECLARED_BYTES:
            raise _fail(path, f"tensor {t['path']!r} declares {total_elems:.3g} elements, over the "
                        f"{MAX_DECLARED_BYTES >> 30} GiB limit")
    if total > MAX_DECLARED_BYTES:
        raise _fail(path, f"declares {total / 2**30:.1f} GiB of arrays, over the {MAX_DECLARED_BYTES >> 30} GiB limit")
    for field in ("path", "key"):
        if len({t[field] for t in tensors}) != len(tensors):
            raise _fail(path, f"metadata lists a tensor {field} twice")


def _short_reason(e: BaseException) -> str:
    """A tensorstore error in a few words: the array key (else the file) it read and the
    innermost cause; its JSON spec and source locations cut."""
    text = re.split(r" \[(?:tensorstore_spec|source locations)=", one_line(e))[0]
    key = re.search(r'Error reading "([^"]+)" in', text)
    files = re.findall(r'"([^"]+)": ', text)
    where = key.group(1) if key else "/".join(Path(files[-1]).parts[-2:]) if files else ""
    cause = text.rsplit('": ', 1)[-1]
    return one_line(f"{where}: {cause}" if where and where not in cause else cause, 200)


def _unreadable(error: type[Exception], label: Any, reason: str) -> Exception:
    return error(f"{label}: cannot read the arrays (truncated or corrupt file: {reason})")


def _open_arrays(directory: Path, error: type[Exception], label: Any) -> dict[str, ts.TensorStore]:
    """Every array orbax stored under ``directory``, opened (metadata only), by name."""
    def fail(reason):
        return _unreadable(error, label, reason)

    if not directory.is_dir():
        raise fail(f"its {directory.name}/ part is missing")
    try:
        layout = json.loads((directory / "_METADATA").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        layout = None  # orbax's own bookkeeping; the arrays may still be all there
    layout = layout if isinstance(layout, dict) else {}
    driver, marker = ("zarr3", "zarr.json") if layout.get("use_zarr3") is True else ("zarr", ".zarray")
    context = ts.Context()
    try:
        if layout.get("use_ocdbt", True) is not False:
            kvstore = {"driver": "ocdbt", "base": {"driver": "file", "path": f"{directory}/"}}
            keys = [k.decode() for k in ts.KvStore.open(kvstore, context=context).result().list().result()]
            spec = lambda name: {**kvstore, "path": f"{name}/"}  # noqa: E731
        else:
            keys = [str(f.relative_to(directory)) for f in directory.glob(f"*/{marker}")]
            spec = lambda name: {"driver": "file", "path": f"{directory / name}/"}  # noqa: E731
        names = sorted({k[: -len(marker) - 1] for k in keys if k.endswith(f"/{marker}")})
        opening = {n: ts.open({"driver": driver, "kvstore": spec(n)}, open=True, read=True, context=context)
                   for n in names}
        return {n: f.result() for n, f in opening.items()}
    except Exception as e:  # noqa: BLE001 - tensorstore raises many types for broken files
        raise fail(_short_reason(e)) from None


def _read_stores(stores: dict[str, ts.TensorStore], error: type[Exception], label: Any) -> dict[str, np.ndarray]:
    try:
        reading = {n: s.read() for n, s in stores.items()}
        return {n: np.asarray(f.result()) for n, f in reading.items()}
    except Exception as e:  # noqa: BLE001
        raise _unreadable(error, label, _short_reason(e)) from None


def read_arrays(
    directory: str | os.PathLike, *, error: type[Exception] = SignatureFileError, label: Any = None
) -> dict[str, np.ndarray]:
    """Every array orbax's ``StandardSave`` stored under ``directory``, by name (e.g. the
    ``arrays/`` part of a checked directory, or a whole orbax pytree checkpoint).

    Read synchronously with tensorstore (zarr or zarr3, OCDBT or not, as orbax's
    ``_METADATA`` says). Orbax's restore reads on a private event loop that it closes as
    soon as one read fails, while the others are still in flight: their completions land
    on the closed loop and print "RuntimeError: Event loop is closed" tracebacks. Without
    an event loop, a truncated or damaged file is one ``error`` naming ``label`` (default:
    ``directory``) with a short reason.
    """
    directory = Path(directory).absolute()
    label = directory if label is None else label
    return _read_stores(_open_arrays(directory, error, label), error, label)


def _restore_arrays(path: Path, meta: dict) -> dict[str, np.ndarray]:
    stores = _open_arrays(path / ARRAYS, SignatureFileError, path)
    declared = {f"{t['key']}_{part}": a for t in meta["tensors"] for part, a in t["arrays"].items()}
    if set(stores) != set(declared):
        raise _fail(path, f"metadata lists arrays {sorted(declared)[:4]}..., the file holds {sorted(stores)[:4]}...")
    for k, a in declared.items():
        shape, dtype = list(stores[k].shape), np.dtype(stores[k].dtype.numpy_dtype)
        if shape != a["shape"] or str(dtype) != a["dtype"]:
            raise _fail(path, f"metadata says array {k} is {a['dtype']}{a['shape']}, the file holds "
                        f"{dtype}{shape}: metadata and contents disagree")
    return _read_stores(stores, SignatureFileError, path)


def read_checked_dir(path: str | os.PathLike, *, format: str, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a directory written by :func:`write_checked_dir` whose metadata
    says ``format``, its checksum verified.

    Raises :class:`SignatureFileError` naming ``path`` (a ``what`` file, e.g.
    ``'detector'``): missing, not a ``what``, truncated or damaged, or changed since it was
    written (checksum mismatch)."""
    path = Path(path).absolute()  # tensorstore and orbax want absolute paths
    meta = _json_meta(path, what)
    if meta.get("format") != format:
        raise _fail(path, f"not a {what} file: format {meta.get('format')!r} is not {format!r}")
    arrays = read_arrays(path / ARRAYS, label=path)
    if checksum(meta, arrays) != meta.get("checksum"):
        raise _fail(path, f"checksum mismatch: the {what} file was changed or damaged after it was written")
    return meta, arrays


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
    meta = _read_meta(path)
    _validate_meta(path, meta)
    arrays = _restore_arrays(path, meta)
    if verify and checksum(meta, arrays) != meta.get("checksum"):
        raise _fail(path, "checksum mismatch: the file was modified or corrupted after it was written")
    deltas = {}
    for t in meta["tensors"]:
        get = lambda part: arrays[f"{t['key']}_{part}"]  # noqa: E731
        q = t.get("quant")
        if q is None:
            v = get("value")
            if list(v.shape) != t["shape"] or str(v.dtype) != t["dtype"]:
                raise _fail(path, f"tensor {t['path']!r}: metadata says {t['dtype']}{t['shape']}, data is {v.dtype}{list(v.shape)}")
            if not np.all(np.isfinite(v)):
                raise NonFiniteError(f"{path}: tensor {t['path']!r} holds NaN/inf")
            deltas[t["path"]] = jax.numpy.asarray(v)
        else:
            n = int(np.prod(t["shape"]))
            expect = n if q["bits"] == 8 else -(-n * q["bits"] // 8)
            data = get("data")
            if data.dtype != np.uint8 or data.size != expect:
                raise _fail(path, f"tensor {t['path']!r}: {data.size} code bytes for {t['shape']} at {q['bits']} bit (want {expect})")
            scale, offset = get("scale"), get("offset")
            nd = len(t["shape"])
            want = () if q.get("axis") is None else tuple(t["shape"][i] if i == q.get("axis") else 1 for i in range(nd))
            if tuple(scale.shape) != want or tuple(offset.shape) != want or scale.dtype != np.float32 or offset.dtype != np.float32:
                raise _fail(path, f"tensor {t['path']!r}: scale/offset are {scale.dtype}{list(scale.shape)}, "
                            f"{offset.dtype}{list(offset.shape)}; want float32{list(want)}")
            if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(offset))):
                raise NonFiniteError(f"{path}: tensor {t['path']!r} has NaN/inf quantization scale or offset")
            if q["scheme"] == SIGN and (np.any(offset != 0) or np.any(scale < 0)):
                raise _fail(path, f"tensor {t['path']!r}: a {SIGN!r} tensor has offset 0 and scale = mean |x| >= 0; "
                            f"the file holds offsets in [{offset.min()}, {offset.max()}], scales from {scale.min()}")
            # finite scale/offset can still dequantize to inf ('log2': 2**offset); keep a
            # factor-2 margin below the dtype's largest value for float rounding in exp2/the cast
            if largest_magnitude(q["scheme"], q["bits"], scale, offset) > float(jax.numpy.finfo(t["dtype"]).max) / 2:
                raise NonFiniteError(f"{path}: tensor {t['path']!r} has a quantization scale/offset that dequantizes "
                                     f"to values overflowing {t['dtype']}")
            deltas[t["path"]] = QuantizedTensor(
                data=jax.numpy.asarray(from_flat_packed(data, q["bits"], tuple(t["shape"]))),
                scale=jax.numpy.asarray(scale),
                offset=jax.numpy.asarray(offset),
                shape=tuple(t["shape"]),
                dtype=t["dtype"],
                bits=q["bits"],
                scheme=q["scheme"],
                axis=q.get("axis"),
            )
    specs = tuple((p, tuple(s), d) for p, s, d in meta.get("leaf_specs", []))
    if {p for p, _, _ in specs} != set(deltas):
        raise _fail(path, "leaf_specs and tensors name different leaves")
    sig = Signature(
        deltas=deltas,
        meta=SignatureMeta(
            base_fingerprint=str(meta.get("base_fingerprint", "")),
            leaf_specs=specs,
            name=str(meta.get("name", "")),
            severity=meta.get("severity"),
            kind=str(meta.get("kind", "")),
            selection=str(meta.get("selection", "")),
            quantization=str(meta.get("quantization", "")),
        ),
    )
    if like is not None:
        check_compatible(sig, like, check_base=check_base)
    return mark_finite(sig)  # every value was checked finite above


def read_signature_info(path: str | os.PathLike, *, checked: bool = True) -> dict:
    """The metadata of a signature file (labels, selection, sizes) without its arrays.

    ``checked=False`` returns the metadata as stored, every field unchecked (for display
    of a broken file: any field may then have any type); the file must still be a
    signature directory with JSON metadata."""
    path = Path(path).absolute()
    meta = _read_meta(path)
    if checked:
        _validate_meta(path, meta)
    tensors = meta.get("tensors")
    return {k: v for k, v in meta.items() if k != "tensors"} | {
        "num_tensors": len(tensors) if isinstance(tensors, list) else 0}


# ------------------------------------------------------------------- full models, sizes


def save_variables(path: str | os.PathLike, variables: Any, *, overwrite: bool = False) -> Path:
    """Saves a full model the same way (orbax StandardSave, atomic) for comparison."""
    flat, _ = tree_paths.flatten(variables)
    arrays = {f"t{i:05d}": np.asarray(jax.device_get(flat[p])) for i, p in enumerate(sorted(flat))}
    meta = {"format": VARIABLES_FORMAT, "paths": sorted(flat), "fingerprint": tree_paths.fingerprint(variables)}
    return _write_dir(path, arrays, meta, overwrite=overwrite)


def load_variables(path: str | os.PathLike, like: Any) -> Any:
    """Loads variables saved by :func:`save_variables` into the structure of ``like``.

    Raises :class:`SignatureFileError` naming ``path``: missing, unreadable or damaged, or
    saved from another structure than ``like``'s. (:func:`rws_jax.load_model` reads it
    without ``like``.)"""
    path = Path(path).absolute()
    meta = _json_meta(path, "variables")
    flat, rebuild = tree_paths.flatten(like)
    if meta.get("fingerprint") != tree_paths.fingerprint(like):
        raise SignatureFileError(f"{path}: saved variables do not match the structure of `like`")
    if meta.get("paths") != sorted(flat):
        raise SignatureFileError(f"{path}: the metadata lists other leaves than `like` has")
    leaves = variables_arrays(path, meta["paths"], read_arrays(path / ARRAYS, label=path), error=SignatureFileError)
    return rebuild({p: jax.numpy.asarray(a) for p, a in leaves.items()})


def variables_arrays(path: Path, paths: list[str], arrays: dict[str, np.ndarray], *,
                     error: type[Exception]) -> dict[str, np.ndarray]:
    """``{leaf path: array}`` of a :func:`save_variables` directory from its metadata's
    ``paths`` and its stored ``arrays`` (keys ``t00000``, ``t00001``, ... in ``paths``
    order); an ``error`` naming ``path`` when the two do not match."""
    keys = [f"t{i:05d}" for i in range(len(paths))]
    if set(arrays) != set(keys):
        raise error(f"{path}: the metadata lists {len(paths)} leaves, the file holds {len(arrays)} arrays")
    return {p: arrays[k] for p, k in zip(paths, keys)}


def bytes_on_disk(path: str | os.PathLike) -> int:
    """Total size of the files under ``path``."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def storage_ratio(signature_path: str | os.PathLike, model_path: str | os.PathLike) -> float:
    """Bytes on disk of the full model file / bytes of the signature file."""
    return bytes_on_disk(model_path) / bytes_on_disk(signature_path)
