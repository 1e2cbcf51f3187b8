"""The end-to-end RWS pipeline: configs and presets, cached stages, report with plots."""

from rws_jax.pipeline.config import PRESETS, PipelineConfig, apply_overrides, load_config, preset
from rws_jax.pipeline.report import summary_markdown, write_report
from rws_jax.pipeline.stages import STAGES, ConfigMismatchError, Run, run_all
from rws_jax.pipeline.study import STUDIES, Study, get_study, run_study

__all__ = [
    "PRESETS", "PipelineConfig", "apply_overrides", "load_config", "preset",
    "write_report", "summary_markdown", "STAGES", "ConfigMismatchError", "Run", "run_all",
    "STUDIES", "Study", "get_study", "run_study",
]
