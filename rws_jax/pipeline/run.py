"""A run: one config, one run directory, and the parts that compute in it.

``Run`` only bundles the parts; each part does one job in its own module:

- ``run.data`` (:class:`RunData`): the datasets, halves and corrupted copies;
- ``run.models`` (:class:`ModelStore`): θ_init and every fine-tuned model, trained once;
- ``run.signatures`` (:class:`SignatureStore`): RWS_c files, extracted once;
- ``run.patcher`` (:class:`RunPatcher`): patches with the run's BatchNorm mode and merges;
- ``run.evaluator`` (:class:`Evaluator`): accuracies, cached in ``metrics/accuracy.json``.

The stages (:mod:`rws_jax.pipeline.stages`) take these parts and write metrics; the reports
read the metrics only (:mod:`rws_jax.pipeline.report`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from rws_jax.pipeline.config import PipelineConfig
from rws_jax.pipeline.evaluation import Evaluator
from rws_jax.pipeline.model_store import ModelStore
from rws_jax.pipeline.run_data import RunData
from rws_jax.pipeline.run_dir import open_run_dir
from rws_jax.pipeline.run_patching import RunPatcher
from rws_jax.pipeline.signature_store import SignatureStore


class Run:
    """The run directory ``out`` for ``cfg`` and its parts (data, models, signatures,
    patcher, evaluator), each computing on first use and caching on disk.

    Args:
      cfg: the run's config; ``out/config.yaml`` must match it unless ``force_config``.
      out: the run directory (made when missing).
      progress: progress bars while training.
      log: where progress lines go.
      test_sets: a dict to keep the corrupted test and validation sets in, shared by runs
        with the same data (a study's seeds); default: this run's own.
    """

    def __init__(self, cfg: PipelineConfig, out: str | Path, *, progress: bool = True,
                 log: Callable[[str], None] = print, force_config: bool = False, test_sets: dict | None = None):
        self.cfg = cfg
        self.dir = open_run_dir(cfg, out, force_config=force_config)
        self.log = log
        self.data = RunData(cfg, corrupted_cache=test_sets, log=log)
        self.models = ModelStore(cfg, self.dir, self.data, progress=progress, log=log)
        self.signatures = SignatureStore(cfg, self.dir, self.models)
        self.patcher = RunPatcher(cfg, self.models, self.data)
        self.evaluator = Evaluator(cfg, self.dir, self.models, self.data)
