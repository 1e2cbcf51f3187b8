"""Model checkpoint files in any supported format: what a path holds, load it without a
template, save it.

Formats (:data:`FORMATS`), detected from the path (directory or file) and the file's
content, never its extension:

- ``'orbax'``: a directory written by :func:`rws_jax.save_variables` (restored without a
  template: its stored leaf paths rebuild the nested dict, in sorted path order);
- ``'orbax-pytree'``: a generic orbax pytree checkpoint (e.g. ``StandardCheckpointer().save``
  of a variables dict), restored raw;
- ``'msgpack'``: ``flax.serialization.to_bytes`` of a variables dict, restored with
  ``msgpack_restore`` (the dicts keep their order: module creation order).

Anything else is refused with a :class:`~rws_jax.errors.ModelFileError` saying what it is
(:func:`file_kind`, :func:`describe`): signature and detector files, Python pickles
(never unpickled), zip archives (PyTorch checkpoints: see ``rws-jax import-torch``), empty
or unknown files. Arrays of orbax directories are read with tensorstore, without orbax's
event loop (see :func:`rws_jax.files.array_reading.read_arrays`), so a damaged file is one short error.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from rws_jax import tree_paths
from rws_jax.errors import FileWriteError, ModelFileError, OutputExistsError, one_line
from rws_jax.files.array_reading import read_arrays
from rws_jax.files.checked_dirs import ARRAYS, META
from rws_jax.files.signature_format import FORMAT
from rws_jax.files.variables_files import VARIABLES_FORMAT, save_variables, variables_arrays

FORMATS = ("orbax", "orbax-pytree", "msgpack")
_ORBAX_MARKERS = ("_METADATA", "manifest.ocdbt", "_CHECKPOINT_METADATA")
_ARRAY_TYPES = ("np.ndarray", "jax.Array")
_DESCRIPTIONS = {
    "orbax": "a model directory written by save_variables",
    "orbax-pytree": "an orbax checkpoint (no rws_jax metadata)",
    "msgpack": "a Flax msgpack file",
    "signature": "a signature file",
    "detector": "a corruption detector file (save_detector)",
    "rws_jax-dir": "a directory with metadata of an unknown format",
    "directory": "a directory of unknown content",
    "pickle": "a Python pickle",
    "zip": "a zip archive (a PyTorch checkpoint?)",
    "empty": "an empty file",
    "file": "a file of unknown format",
    "unreadable": "a file it cannot read",
    "missing": "nothing (no such file or directory)",
}
_REFUSALS = {  # why load_model refuses each kind that is not a model
    "missing": "no such model file or directory",
    "signature": "is a signature file, not a model",
    "detector": "not a model directory written by rws_jax.save_variables (it is a corruption detector)",
    "rws_jax-dir": "not a model directory written by rws_jax.save_variables",
    "directory": "not a model directory (neither rws_jax.save_variables nor an orbax checkpoint)",
    "empty": "empty file",
    "pickle": "is a Python pickle; refusing to unpickle it (save variables with flax.serialization.to_bytes or "
              "rws_jax.save_variables)",
    "zip": "is a zip archive (a PyTorch checkpoint? convert it with `rws-jax import-torch`)",
    "file": "unknown model format (expected an rws_jax.save_variables directory or a Flax msgpack file)",
    "unreadable": "cannot be read (permissions?)",
}


def file_kind(path: str | os.PathLike) -> str:
    """What ``path`` holds, from its layout and first bytes (nothing is parsed beyond that):
    one of :data:`FORMATS`, or ``'signature'``, ``'detector'``, ``'rws_jax-dir'`` (a
    ``meta/metadata`` directory of another format, e.g. damaged), ``'directory'``,
    ``'pickle'``, ``'zip'``, ``'empty'``, ``'file'`` (unknown), ``'unreadable'`` or ``'missing'``."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if path.is_dir():
        meta_file = path / META / "metadata"
        if meta_file.is_file():
            try:
                fmt = json.loads(meta_file.read_text()).get("format")
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                fmt = None
            kinds = {VARIABLES_FORMAT: "orbax", FORMAT: "signature"}
            return kinds.get(fmt, "detector" if str(fmt).startswith("rws_jax.detector") else "rws_jax-dir")
        return "orbax-pytree" if any((path / n).exists() for n in _ORBAX_MARKERS) else "directory"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return "unreadable"
    if not head:
        return "empty"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if 0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF):  # a msgpack map
        return "msgpack"
    return "file"


def describe(kind: str) -> str:
    """A :func:`file_kind` in words, e.g. ``'a Flax msgpack file'``."""
    return _DESCRIPTIONS[kind]


def model_format(path: str | os.PathLike) -> str:
    """``'orbax'``, ``'orbax-pytree'`` or ``'msgpack'`` (see the module doc); raises
    :class:`~rws_jax.errors.ModelFileError` naming ``path`` and what it is otherwise."""
    kind = file_kind(path)
    if kind not in FORMATS:
        raise ModelFileError(f"{Path(path)}: {_REFUSALS[kind]}")
    return kind


def load_model(path: str | os.PathLike) -> dict:
    """The variables (a nested dict of jax arrays) of a model checkpoint in any format of
    :data:`FORMATS`, without a template.

    Raises :class:`~rws_jax.errors.ModelFileError` naming ``path``: missing, another kind
    of file (:func:`model_format`), truncated or damaged, or holding something other than a
    dict of numeric arrays."""
    path = Path(path).absolute()  # tensorstore and orbax want absolute paths
    fmt = model_format(path)
    if fmt == "orbax":
        return _restore_variables(path)
    if fmt == "orbax-pytree":
        return _restore_pytree(path)
    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - msgpack raises many types for broken input
        raise ModelFileError(f"{path}: not a valid Flax msgpack file (truncated or corrupt): {one_line(e)}") from None
    return _to_jax(_check_tree(path, tree))


def save_model(path: str | os.PathLike, variables: Any, *, overwrite: bool = False) -> Path:
    """Writes ``variables`` as an orbax directory (:func:`rws_jax.save_variables`), or as a
    Flax msgpack file if ``path`` ends with ``.msgpack``; atomically, creating missing parent
    folders. Returns the absolute path.

    Raises :class:`~rws_jax.errors.OutputExistsError` for an existing ``path`` unless
    ``overwrite`` (a directory is never replaced by a msgpack file), and
    :class:`~rws_jax.errors.FileWriteError` where the OS refuses."""
    path = Path(path).absolute()
    if path.suffix != ".msgpack":
        return save_variables(path, variables, overwrite=overwrite)
    if path.exists() and (not overwrite or path.is_dir()):
        raise OutputExistsError(f"{path} exists; " + ("a directory is not replaced by a msgpack file" if overwrite
                                                      else "pass overwrite=True to replace it"))
    data = serialization.to_bytes(variables)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise FileWriteError(f"{path}: cannot write it: {one_line(e)}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ------------------------------------------------------------------------ restoring


def _nest(path: Path, leaves: Iterable[tuple[Sequence[str], Any]]) -> dict:
    """A nested dict from ``(keys, array)`` pairs, refusing clashing paths."""
    tree: dict = {}
    for keys, value in leaves:
        node = tree
        for name in keys[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ModelFileError(f"{path}: leaf paths clash at {'/'.join(keys)!r}")
        if keys[-1] in node:
            raise ModelFileError(f"{path}: leaf paths clash at {'/'.join(keys)!r}")
        node[keys[-1]] = value
    return tree


def _restore_variables(path: Path) -> dict:
    """Variables written by ``rws_jax.save_variables``, without a template tree."""
    try:
        meta = json.loads((path / META / "metadata").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: unreadable model metadata (truncated or corrupt): {one_line(e)}") from None
    paths = meta.get("paths") if isinstance(meta, dict) else None
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise ModelFileError(f"{path}: model metadata lists no valid leaf paths")
    arrays = read_arrays(path / ARRAYS, error=ModelFileError, label=path)
    leaves = variables_arrays(path, paths, arrays, error=ModelFileError)
    variables = _to_jax(_nest(path, [(p.split("/"), a) for p, a in leaves.items()]))
    fp = meta.get("fingerprint")
    if fp is not None and fp != tree_paths.fingerprint(variables):
        raise ModelFileError(f"{path}: the restored arrays do not match the stored fingerprint (corrupt file)")
    return variables


def _restore_pytree(path: Path) -> dict:
    """A generic orbax pytree checkpoint, raw: with tensorstore where ``_METADATA`` lists only
    arrays under dict keys (a variables dict), else with orbax's ``PyTreeCheckpointer``."""
    try:
        entries = json.loads((path / "_METADATA").read_text())["tree_metadata"].values()
        leaves = [[k["key"] for k in e["key_metadata"]] for e in entries
                  if e["value_metadata"]["value_type"] in _ARRAY_TYPES
                  and all(k["key_type"] == 2 and isinstance(k["key"], str) for k in e["key_metadata"])]
        simple = len(leaves) == len(entries) > 0
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        simple = False  # another layout (an older orbax, scalars, lists...): orbax restores it
    if simple:
        arrays = read_arrays(path, error=ModelFileError, label=path)
        if set(arrays) != {".".join(keys) for keys in leaves}:
            raise ModelFileError(f"{path}: orbax's metadata lists {len(leaves)} arrays, the checkpoint holds "
                                 f"{len(arrays)}")
        return _to_jax(_check_tree(path, _nest(path, [(keys, arrays[".".join(keys)]) for keys in leaves])))
    ckptr = ocp.PyTreeCheckpointer()
    try:
        with warnings.catch_warnings():  # "Sharding info not provided": expected without a template
            warnings.filterwarnings("ignore", message="Sharding info not provided")
            tree = ckptr.restore(path)
    except Exception as e:  # noqa: BLE001 - orbax raises many types for broken files
        raise ModelFileError(f"{path}: cannot restore this orbax checkpoint without a template: "
                             f"{one_line(e, 200)}") from None
    finally:
        ckptr.close()
    return _to_jax(_check_tree(path, tree))


def _check_tree(path: Path, tree: Any) -> dict:
    if not isinstance(tree, dict) or not tree:
        raise ModelFileError(f"{path}: does not hold a variables dict (got {type(tree).__name__})")

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            p = f"{prefix}/{k}" if prefix else str(k)
            if not isinstance(k, str) or not k or "/" in k:  # leaf paths join names with '/'
                raise ModelFileError(f"{path}: key {k!r} at {prefix or 'the top'!r} is not a module or variable name")
            if isinstance(v, dict):
                walk(v, p)
            elif not (isinstance(v, np.ndarray) or hasattr(v, "dtype") and hasattr(v, "shape")) or not (
                np.issubdtype(np.dtype(v.dtype), np.number) or np.dtype(v.dtype) == np.bool_
            ):
                raise ModelFileError(f"{path}: leaf {p!r} is not a numeric array ({type(v).__name__})")

    walk(tree, "")
    return tree


def _to_jax(tree: Any) -> Any:
    """jax arrays, keeping each dict's key order (``first_k`` reads forward order from it;
    ``jax.tree_util.tree_map`` would sort the keys)."""
    if isinstance(tree, dict):
        return {k: _to_jax(v) for k, v in tree.items()}
    return jnp.asarray(tree)
