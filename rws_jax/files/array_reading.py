"""Reading the arrays of an orbax checkpoint synchronously with tensorstore, with clean errors.

Orbax's restore reads on a private event loop that it closes as soon as one read fails,
while the others are still in flight: their completions land on the closed loop and print
"RuntimeError: Event loop is closed" tracebacks. Read here without an event loop, a
truncated or damaged file is one short error naming it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from rws_jax.errors import SignatureFileError, one_line


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


def open_arrays(directory: Path, error: type[Exception], label: Any) -> dict[str, ts.TensorStore]:
    """Every array orbax stored under ``directory``, opened (metadata only), by name; else an
    ``error`` naming ``label``: "cannot read the arrays" with a short reason."""
    def fail(reason: str) -> Exception:
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


def read_stores(stores: dict[str, ts.TensorStore], error: type[Exception], label: Any) -> dict[str, np.ndarray]:
    """The contents of :func:`open_arrays`' stores, by name; else an ``error`` naming ``label``."""
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
    return read_stores(open_arrays(directory, error, label), error, label)
