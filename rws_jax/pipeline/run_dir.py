"""A run directory and the config it was made with.

Layout of a run directory::

    <out>/config.yaml             the config the run was made with (a rerun must match)
    <out>/checkpoints/<model>/    orbax checkpoints of every trained model (fit resumes)
    <out>/signatures/<c>.rws      RWS_c (float32); <c>.q8.rws, <c>.q4.rws ... quantized
    <out>/signatures/transfer/    RWSs of the transfer dataset (for the similarity plot)
    <out>/storage/model           the standard model saved like a signature (size ratio)
    <out>/metrics/*.json          what the stages measured (:mod:`rws_jax.pipeline.metrics_files`)
    <out>/report.md, figures/     written from the metrics by :mod:`rws_jax.pipeline.report`
"""

from __future__ import annotations

from pathlib import Path

import yaml

from rws_jax.pipeline.config import PipelineConfig


class ConfigMismatchError(RuntimeError):
    """The run directory was made with another config."""


def open_run_dir(cfg: PipelineConfig, out: str | Path, *, force_config: bool = False) -> Path:
    """The run directory ``out`` for ``cfg``, made when missing; its ``config.yaml`` is written
    once and must match ``cfg`` afterwards (fields added since it was written count as their
    defaults; ``force_config`` skips the check).

    Raises:
      ConfigMismatchError: ``out`` was made with another config.
    """
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    saved = directory / "config.yaml"
    if saved.exists() and not force_config:
        old = {**PipelineConfig().to_dict(), **(yaml.safe_load(saved.read_text()) or {})}
        new = cfg.to_dict()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k != "description")
        if diff:
            raise ConfigMismatchError(
                f"{directory} was made with another config (fields {diff} differ); "
                "use another --out, delete it, or pass --force-config to reuse its stages anyway"
            )
        return directory  # the same config (fields added since at their defaults): the file stays as it is
    saved.write_text(cfg.to_yaml())
    return directory


def run_path(run_dir: Path, *parts: str) -> Path:
    """``run_dir/parts...`` with its parent directories made."""
    p = run_dir.joinpath(*parts)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
