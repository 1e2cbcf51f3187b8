"""Sizes on disk: :func:`bytes_on_disk` of a file or directory, :func:`storage_ratio` of a
full model file to a signature file."""

from __future__ import annotations

import os
from pathlib import Path


def bytes_on_disk(path: str | os.PathLike) -> int:
    """Total size of the files under ``path``."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def storage_ratio(signature_path: str | os.PathLike, model_path: str | os.PathLike) -> float:
    """Bytes on disk of the full model file / bytes of the signature file."""
    return bytes_on_disk(model_path) / bytes_on_disk(signature_path)
