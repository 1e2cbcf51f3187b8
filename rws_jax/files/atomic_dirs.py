"""Atomic directory writes: a directory is written completely under a temporary name next
to its target and then swapped in by rename, so an interrupted write leaves the earlier
directory (or nothing) in place, never a half-written one."""

from __future__ import annotations

import ctypes
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

from rws_jax.errors import FileWriteError, OutputExistsError, one_line


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


def atomic_write_dir(path: str | os.PathLike, write_fn: Callable[[Path], None], *, overwrite: bool = False) -> Path:
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
