"""The end-to-end RWS pipeline: configs and presets, cached stages, reports with plots."""

from rws_jax.pipeline.config import PipelineConfig, Study, apply_overrides
from rws_jax.pipeline.presets import PRESETS, SEEDS, STUDIES, get_study, load_config, preset
from rws_jax.pipeline.report import summary_markdown, write_report
from rws_jax.pipeline.run import run_all, run_study
from rws_jax.pipeline.run_metrics import RunMetrics, seed_mean
from rws_jax.pipeline.stages import STAGES, ConfigMismatchError, Run, run_stages

__all__ = [
    "PRESETS", "SEEDS", "PipelineConfig", "apply_overrides", "load_config", "preset",
    "write_report", "summary_markdown", "STAGES", "ConfigMismatchError", "Run", "run_all", "run_stages",
    "STUDIES", "Study", "get_study", "run_study", "RunMetrics", "seed_mean",
]
