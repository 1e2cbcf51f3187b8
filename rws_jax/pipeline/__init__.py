"""The end-to-end RWS pipeline: configs and presets, a run's parts and stages, the studies,
and the reports written from the metrics the stages record."""

from rws_jax.pipeline.config import PipelineConfig, Study, apply_overrides
from rws_jax.pipeline.presets import PRESETS, SEEDS, STUDIES, get_study, load_config, preset
from rws_jax.pipeline.report import summary_markdown, write_report
from rws_jax.pipeline.run import Run
from rws_jax.pipeline.run_and_report import run_all, run_study
from rws_jax.pipeline.run_dir import ConfigMismatchError
from rws_jax.pipeline.run_metrics import RunMetrics, seed_mean
from rws_jax.pipeline.stages import STAGES, Stage, run_stage, run_stages

__all__ = [
    # configs and presets
    "PipelineConfig",
    "Study",
    "apply_overrides",
    "load_config",
    "preset",
    "get_study",
    "PRESETS",
    "STUDIES",
    "SEEDS",
    # computing: a run and its stages
    "Run",
    "ConfigMismatchError",
    "STAGES",
    "Stage",
    "run_stage",
    "run_stages",
    # reading: metrics and reports
    "RunMetrics",
    "seed_mean",
    "summary_markdown",
    "write_report",
    # both, in that order
    "run_all",
    "run_study",
]
