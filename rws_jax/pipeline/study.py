"""Running a study (:class:`rws_jax.pipeline.config.Study`): several pipeline runs that answer
the paper's questions together, plus the study's own metrics.

Each run is its own run directory under the study's directory, resumable like any run;
runs with the same data share their corrupted test and validation sets in memory. After
the runs, the study writes the cosine similarity of the seeds' signatures and, when it
names one, evaluates auto-patching on a run. The report is written from these metrics by
:mod:`rws_jax.pipeline.study_report` (``rws_jax.pipeline.run_and_report.run_study`` does both).

The one study is ``reproduce`` (:mod:`rws_jax.pipeline.presets`)::

    rws-jax reproduce --out results/reproduce      # or: make reproduce

Layout::

    <out>/<run>/                     one pipeline run directory per run (see run_dir.py)
    <out>/metrics/timing.json        wall seconds per run, summed over resumed sessions
    <out>/metrics/similarity.json    cosine similarity of the seeds' signatures (claim 2)
    <out>/report.md, figures/        the study's report
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Callable

from rws_jax.pipeline.autopatch_eval import evaluate_autopatching
from rws_jax.pipeline.config import PipelineConfig, Study
from rws_jax.pipeline.metrics_files import metrics_path, read_metrics, write_metrics
from rws_jax.pipeline.run import Run
from rws_jax.pipeline.stages import run_stages, signature_cosines


def _data_key(cfg: PipelineConfig) -> tuple:
    """The fields that decide a run's test and validation sets."""
    return (cfg.dataset, cfg.dataset_source, cfg.data_dir, cfg.val_size, cfg.test_examples, cfg.seed,
            cfg.severity, cfg.corruption_preset, cfg.classes, cfg.corrupted_test_mode)


def open_study_run(study: Study, out: str | Path, run_name: str, **kwargs) -> Run:
    """The :class:`Run` of ``run_name`` in the study directory ``out``."""
    return Run(study.config(run_name), Path(out) / run_name, **kwargs)


def _timed(timing: dict, out: Path, name: str, fn: Callable[[], object]) -> None:
    """Runs ``fn``, adding its wall time to ``timing[name]`` in ``<out>/metrics/timing.json``
    (an interrupted session counts too)."""
    t0 = time.time()
    try:
        fn()
    finally:
        rec = timing.setdefault(name, {"seconds": 0.0, "sessions": 0})
        rec["seconds"] += time.time() - t0
        rec["sessions"] += 1
        write_metrics(out, "timing", timing)


def write_similarity(study: Study, out: str | Path, runs: list[Run]) -> None:
    """Cosine similarity of every seed's RWS_c (claim 2 with the seeds as replicates),
    into ``<out>/metrics/similarity.json``."""
    ds = runs[0].cfg.dataset
    sigs = {f"{ds}:{c} (seed {k + 1})": r.signatures.signature(c)
            for c in runs[0].cfg.corruptions for k, r in enumerate(runs)}
    cos = signature_cosines(list(sigs.values()))
    write_metrics(out, "similarity", {"names": list(sigs), "cosine": cos})


def run_study_runs(study: Study, out: str | Path, *, progress: bool = True,
                   log: Callable[[str], None] = print, only: list[str] | None = None) -> Path:
    """Runs every run of ``study`` (or ``only`` these) in order, each resuming what its
    directory already holds, then the study's metrics (signature similarity of the seeds,
    auto-patching); returns the study directory. Writes no report."""
    out = Path(out)
    timing = read_metrics(out, "timing") or {}
    shared: dict = {}  # corrupted test/val sets, shared by runs with the same data
    for name in study.run_names:
        if only and name not in only:
            continue
        cfg = study.config(name)
        run = Run(cfg, out / name, progress=progress, log=log, test_sets=shared.setdefault(_data_key(cfg), {}))
        log(f"=== {study.name}: run {name} ({run.cfg.description})")
        _timed(timing, out, name, functools.partial(run_stages, run))
        run.data.forget_transfer_test_sets()  # they belong to this run only
    seeds = [open_study_run(study, out, n, progress=progress, log=log) for n in study.seed_group
             if (out / n / "config.yaml").exists()]
    if seeds and all(r.signatures.path(c).exists() for r in seeds for c in r.cfg.corruptions):
        write_similarity(study, out, seeds)
    for name in study.autopatch_runs:
        if only and name not in only:
            continue
        run = open_study_run(study, out, name, progress=progress, log=log)
        if not metrics_path(run.dir, "autopatch").exists():
            label = "autopatch" if name == study.autopatch_runs[0] else f"autopatch {name}"
            _timed(timing, out, label, functools.partial(evaluate_autopatching, run))
    return out
