"""The premise of weight arithmetic, measured on a run: do the models lie in one linear basin?

A patch θ_std + α·RWS_c is a point near the straight line between models fine-tuned from
one θ_init; it can carry θ_rob,c's robustness only where that line has no barrier (linear
mode connectivity, Frankle et al. 2020). Two measurements, each along θ(t) = (1 − t)·θ_a +
t·θ_b at ``cfg.premise_points`` evenly spaced t (:func:`rws_jax.evaluate_path`):

- after θ_std exists for two training seeds, before any robust model: the clean test
  accuracy (TA) barrier between θ_std seed 0 and seed 1;
- after the robust models: the TA barrier and the RA_c barrier (accuracy on the corrupted
  test set of c) between θ_std and each θ_rob,c.

A barrier is the largest drop of the accuracy below the straight line joining its endpoint
values, in accuracy units. The premise is met when every barrier is under
:data:`THRESHOLD` (2 pp). BatchNorm models get their statistics re-estimated at every t (the
reference's ``bn_update``), on clean fine-tuning images for TA and on images corrupted with c
for RA_c, since interpolated statistics are not those of the interpolated network.
Written to ``metrics/premise.json``; the run goes on either way.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

import rws_jax as rws
from rws_jax.pipeline.config import PipelineConfig
from rws_jax.pipeline.evaluation import Evaluator
from rws_jax.pipeline.model_store import ModelStore
from rws_jax.pipeline.run_data import RunData
from rws_jax.pipeline.run_patching import RunPatcher

Variables = dict[str, Any]
THRESHOLD = 0.02  # a barrier of 2 pp or more: the premise is not met
STATS_IMAGES = 1024  # images the BatchNorm statistics are re-estimated on at each t


def _stats_fn(cfg: PipelineConfig, models: ModelStore, patcher: RunPatcher,
              images: np.ndarray) -> Callable[[Variables], Variables] | None:
    """Re-estimates BatchNorm statistics on ``images`` (None for a model without BatchNorm)."""
    if not patcher.has_batch_norm:
        return None
    bs = int(cfg.finetune.get("batch_size", 128))
    batches = [images[i:i + bs] for i in range(0, min(len(images), STATS_IMAGES), bs)]
    # patcher.stats_step normalises the images as the fine-tune did
    return lambda v: rws.recalibrate_batch_stats(models.model.apply, v, batches, step=patcher.stats_step)


def _path(cfg: PipelineConfig, evaluator: Evaluator, theta_a: Variables, theta_b: Variables, which: str,
          recompute: Callable[[Variables], Variables] | None) -> dict:
    """Accuracy on the test set ``which`` along the line from ``theta_a`` to ``theta_b``."""
    res = rws.evaluate_path(theta_a, theta_b, lambda v: evaluator.test_accuracy(v, which), higher_is_better=True,
                            num_points=int(cfg.premise_points), recompute_stats=recompute)
    return {"ts": list(res.ts), "values": list(res.values), "barrier": res.barrier, "argmax_t": res.argmax_t}


def _verdict(record: dict) -> dict:
    barriers = [record["standard_seeds"]["clean"]["barrier"]] if "standard_seeds" in record else []
    barriers += [p["barrier"] for paths in record.get("robust", {}).values() for p in paths.values()]
    record["max_barrier"] = max(barriers) if barriers else None
    record["met"] = bool(barriers) and max(barriers) < THRESHOLD
    return record


def premise_between_seeds(cfg: PipelineConfig, models: ModelStore, data: RunData, patcher: RunPatcher,
                          evaluator: Evaluator, record: dict | None = None) -> dict:
    """``record`` (metrics/premise.json, or a new one) with the TA path between θ_std seed 0
    and seed 1 (trained here when missing)."""
    record = dict(record or {})
    record.update(threshold=THRESHOLD, points=int(cfg.premise_points))
    recompute = _stats_fn(cfg, models, patcher, data.halves[1].images)
    record["standard_seeds"] = {"clean": _path(cfg, evaluator, models.standard(), models.standard(1), "clean",
                                               recompute)}
    return _verdict(record)


def premise_robust(cfg: PipelineConfig, models: ModelStore, data: RunData, patcher: RunPatcher,
                   evaluator: Evaluator, record: dict | None = None) -> dict:
    """``record`` with the TA and RA_c paths between θ_std and each θ_rob,c."""
    record = dict(record or {})
    record.update(threshold=THRESHOLD, points=int(cfg.premise_points))
    std = models.standard()
    clean_stats = _stats_fn(cfg, models, patcher, data.halves[1].images)
    robust = dict(record.get("robust", {}))
    for c in cfg.corruptions:
        if c in robust:
            continue
        rob = models.robust(c)
        c_stats = _stats_fn(cfg, models, patcher, data.recalibration_split(c).images) if patcher.has_batch_norm else None
        robust[c] = {"clean": _path(cfg, evaluator, std, rob, "clean", clean_stats),
                     c: _path(cfg, evaluator, std, rob, c, c_stats)}
    record["robust"] = robust
    return _verdict(record)
