"""Running a pipeline or a study end to end: compute every stage, then write the report.

The stages (:mod:`rws_jax.pipeline.stages`, :mod:`rws_jax.pipeline.study`) only compute
and write metrics; the reports (:mod:`rws_jax.pipeline.report`,
:mod:`rws_jax.pipeline.study_report`) only read them. This module is the one place that
does both, in that order (the CLI's ``run``/``demo``/``reproduce`` call it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from rws_jax.pipeline.config import Study
from rws_jax.pipeline.report import write_report
from rws_jax.pipeline.run import Run
from rws_jax.pipeline.stages import run_stages
from rws_jax.pipeline.study import run_study_runs
from rws_jax.pipeline.study_report import write_study_reports


def run_all(run: Run) -> Path:
    """Every stage of ``run`` (each skips what is on disk), then its report; returns the report's path."""
    t0 = time.time()
    run_stages(run)
    path = write_report(run.dir)
    run.log(f"[report] {path}  (total {time.time() - t0:.0f}s)")
    return path


def run_study(study: Study, out: str | Path, *, progress: bool = True,
              log: Callable[[str], None] = print, only: list[str] | None = None) -> Path:
    """Every run of ``study`` (or ``only`` these) and the study's metrics, then each run's
    report and the study's; returns the study report's path."""
    run_study_runs(study, out, progress=progress, log=log, only=only)
    return write_study_reports(study, out, log=log, only=only)
