"""The metric files of a run or a study directory: ``<dir>/metrics/<name>.json``.

Stages write them (:func:`write_metrics`); everything that reads them — the reports, the
claim rules, a stage that resumes — goes through :func:`read_metrics` or
:func:`read_all_metrics`, the one reader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ACCURACY = "accuracy"  # metrics/accuracy.json: {variant: {test set: accuracy}}


def metrics_path(directory: str | Path, name: str) -> Path:
    """``<directory>/metrics/<name>.json``."""
    return Path(directory) / "metrics" / f"{name}.json"


def write_metrics(directory: str | Path, name: str, data: Any, *, sort_keys: bool = False) -> Path:
    """Writes ``data`` as ``<directory>/metrics/<name>.json`` (indent 1); returns the path."""
    path = metrics_path(directory, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=sort_keys))
    return path


def read_metrics(directory: str | Path, name: str) -> Any:
    """``<directory>/metrics/<name>.json`` as written, or None when it is not there."""
    path = metrics_path(directory, name)
    return json.loads(path.read_text()) if path.exists() else None


def read_all_metrics(directory: str | Path) -> dict[str, Any]:
    """Every ``<directory>/metrics/*.json`` by name (sorted), empty when there are none."""
    return {f.stem: json.loads(f.read_text()) for f in sorted((Path(directory) / "metrics").glob("*.json"))}
