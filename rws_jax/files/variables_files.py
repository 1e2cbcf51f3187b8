"""Full-model variables files: :func:`save_variables`, :func:`load_variables`.

A variables file is written like a signature file (orbax ``StandardSave`` arrays ``t00000``,
``t00001``, ... and JSON metadata, atomically: :mod:`rws_jax.files.checked_dirs`), its
metadata ``{'format': 'rws_jax.variables', 'paths': [...], 'fingerprint': ...}``, so that
the two compare on disk. :func:`rws_jax.load_model` also reads it, without a template.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rws_jax import tree_paths
from rws_jax.errors import SignatureFileError
from rws_jax.files.array_reading import read_arrays
from rws_jax.files.checked_dirs import ARRAYS, read_json_meta, write_orbax_dir

#: the ``format`` of a model directory written by :func:`save_variables`
VARIABLES_FORMAT = "rws_jax.variables"


def save_variables(path: str | os.PathLike, variables: Any, *, overwrite: bool = False) -> Path:
    """Saves a full model the same way (orbax StandardSave, atomic) for comparison."""
    flat, _ = tree_paths.flatten(variables)
    arrays = {f"t{i:05d}": np.asarray(jax.device_get(flat[p])) for i, p in enumerate(sorted(flat))}
    meta = {"format": VARIABLES_FORMAT, "paths": sorted(flat), "fingerprint": tree_paths.fingerprint(variables)}
    return write_orbax_dir(path, arrays, meta, overwrite=overwrite)


def load_variables(path: str | os.PathLike, like: Any) -> Any:
    """Loads variables saved by :func:`save_variables` into the structure of ``like``.

    Raises :class:`SignatureFileError` naming ``path``: missing, unreadable or damaged, or
    saved from another structure than ``like``'s. (:func:`rws_jax.load_model` reads it
    without ``like``.)"""
    path = Path(path).absolute()
    meta = read_json_meta(path, "variables")
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
