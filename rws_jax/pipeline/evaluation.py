"""Accuracy of a run's model variants: on the clean and corrupted test sets, cached in
``metrics/accuracy.json`` (a variant's test set is evaluated once), and on the validation
split (what α is chosen on, never cached: the searches ask for new variants)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Sequence

from rws_jax.pipeline.config import PipelineConfig
from rws_jax.pipeline.metrics_files import ACCURACY, read_metrics, write_metrics
from rws_jax.pipeline.model_store import ModelStore, train_config
from rws_jax.data import ArraySplit
from rws_jax.pipeline.run_data import RunData
from rws_jax.training import evaluate, make_eval_step

Variables = dict[str, Any]


class Evaluator:
    """Evaluates variables of the run's model on the run's test and validation sets."""

    def __init__(self, cfg: PipelineConfig, run_dir: Path, models: ModelStore, data: RunData):
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.models = models
        self.data = data

    @functools.cached_property
    def eval_step(self):
        """One compiled evaluation step, with the input normalisation the models were trained with."""
        tc = train_config(self.cfg, "finetune")
        return make_eval_step(self.models.model.apply, mean=tc.mean, std=tc.std)

    @functools.cached_property
    def accuracies(self) -> dict:
        """``{variant: {test set: accuracy}}`` measured so far (metrics/accuracy.json)."""
        return read_metrics(self.dir, ACCURACY) or {}

    def split_accuracy(self, variables: Variables, split: ArraySplit) -> float:
        """Accuracy of ``variables`` on the images and labels of ``split``."""
        return evaluate(variables, self.models.model.apply, split, self.cfg.eval_batch_size,
                        eval_step=self.eval_step)["accuracy"]

    def test_accuracy(self, variables: Variables, which: str, *, transfer: bool = False) -> float:
        """Accuracy of ``variables`` on the test set ``which`` (see :meth:`RunData.test_set`)."""
        return self.split_accuracy(variables, self.data.test_set(which, transfer=transfer))

    def accuracy(self, variant: str, variables_fn: Callable[[], Variables], test_sets: Sequence[str], *,
                 transfer: bool = False) -> dict[str, float]:
        """Accuracy of a model variant on test sets, cached in metrics/accuracy.json;
        ``variables_fn`` is called only when a test set is missing."""
        have = self.accuracies.setdefault(variant, {})
        missing = [t for t in test_sets if t not in have]
        if missing:
            variables = variables_fn()
            for t in missing:
                have[t] = self.test_accuracy(variables, t, transfer=transfer)
            write_metrics(self.dir, ACCURACY, self.accuracies, sort_keys=True)
        return {t: have[t] for t in test_sets}

    def val_accuracy(self, variables: Variables, which: Sequence[str]) -> dict[str, float]:
        """Validation accuracy of ``variables`` on the clean and corrupted validation sets
        (the first ``alpha_search_examples`` images of each)."""
        n = self.cfg.alpha_search_examples
        return {t: self.split_accuracy(variables, self.data.val_set(t).head(n)) for t in which}
