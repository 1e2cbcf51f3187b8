"""Checked directories: the layout that signature and detector files share (variables files
too, without the checksum: :func:`write_orbax_dir`).

A checked directory (as every orbax checkpoint, a directory)::

    fog.rws/
      arrays/   orbax StandardSave of named numpy arrays
      meta/     orbax JsonSave of a JSON dict: its ``format`` and, last, a sha256 ``checksum``
                over the metadata and every array (:func:`checksum`)

:func:`write_checked_dir` writes one atomically (:mod:`rws_jax.files.atomic_dirs`);
:func:`read_checked_dir` reads it back with tensorstore
(:mod:`rws_jax.files.array_reading`), its checksum verified.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

from rws_jax.errors import SignatureFileError, one_line
from rws_jax.files.array_reading import read_arrays
from rws_jax.files.atomic_dirs import atomic_write_dir

#: the two parts of a checked directory: orbax ``StandardSave`` arrays, orbax ``JsonSave`` metadata
ARRAYS, META = "arrays", "meta"


def file_error(path: str | os.PathLike[str], msg: str) -> SignatureFileError:
    """The :class:`~rws_jax.errors.SignatureFileError` ``"<path>: <msg>"``."""
    return SignatureFileError(f"{path}: {msg}")


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


def write_orbax_dir(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict, *, overwrite: bool) -> Path:
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
    field ``checksum``) to the directory ``path``, atomically (see
    :func:`~rws_jax.files.atomic_dirs.atomic_write_dir`).

    The layout of signature and detector files; :func:`read_checked_dir` reads it back.
    Raises :class:`~rws_jax.errors.OutputExistsError` for an existing ``path`` unless
    ``overwrite``, :class:`~rws_jax.errors.FileWriteError` where the OS refuses."""
    return write_orbax_dir(path, arrays, {**meta, "checksum": checksum(meta, arrays)}, overwrite=overwrite)


def read_json_meta(path: Path, what: str) -> dict:
    """The JSON metadata of the checked directory ``path`` (a ``what`` file); else a
    :class:`~rws_jax.errors.SignatureFileError` naming ``path``."""
    meta_file = path / META / "metadata"
    if not path.exists():
        raise file_error(path, f"no such {what} file: not a {what} directory (one written by save_{what})")
    if not path.is_dir():
        raise file_error(path, f"not a {what} file: a {what} is a directory written by save_{what}")
    if not meta_file.is_file():
        raise file_error(path, f"not a {what} file, or an incomplete one: its {META}/ part is missing")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise file_error(path, f"metadata is not valid JSON (truncated or tampered): {one_line(e)}") from None
    if not isinstance(meta, dict):
        raise file_error(path, f"metadata does not describe an rws_jax {what}")
    return meta


def read_checked_dir(path: str | os.PathLike, *, format: str, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a directory written by :func:`write_checked_dir` whose metadata
    says ``format``, its checksum verified.

    Raises :class:`~rws_jax.errors.SignatureFileError` naming ``path`` (a ``what`` file, e.g.
    ``'detector'``): missing, not a ``what``, truncated or damaged, or changed since it was
    written (checksum mismatch)."""
    path = Path(path).absolute()  # tensorstore and orbax want absolute paths
    meta = read_json_meta(path, what)
    if meta.get("format") != format:
        raise file_error(path, f"not a {what} file: format {meta.get('format')!r} is not {format!r}")
    arrays = read_arrays(path / ARRAYS, label=path)
    if checksum(meta, arrays) != meta.get("checksum"):
        raise file_error(path, f"checksum mismatch: the {what} file was changed or damaged after it was written")
    return meta, arrays
