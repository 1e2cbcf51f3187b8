"""Patching a run's models with its signatures, as the run's config says: the BatchNorm mode
(pure weight patch, or the reference's scheme for BatchNorm models) and the merge
parameters (TIES density, DARE drop rate and key)."""

from __future__ import annotations

import functools
from typing import Any, Iterator, Sequence

import jax

import rws_jax as rws
from rws_jax.models import uses_batch_norm
from rws_jax.pipeline.config import PipelineConfig
from rws_jax.pipeline.model_store import ModelStore, train_config
from rws_jax.pipeline.presets import SEEDS
from rws_jax.pipeline.run_data import RunData
from rws_jax.training.augment import normalize_images

Variables = dict[str, Any]


class RunPatcher:
    """``base + Σ α·RWS`` for the run's models, with the run's BatchNorm mode."""

    def __init__(self, cfg: PipelineConfig, models: ModelStore, data: RunData):
        self.cfg = cfg
        self.models = models
        self.data = data

    @functools.cached_property
    def has_batch_norm(self) -> bool:
        return uses_batch_norm(self.models.model)

    @functools.cached_property
    def bn_mode(self) -> str:
        """How patching treats BatchNorm: ``cfg.bn`` resolved for this model (see
        :func:`rws_jax.patch_batch_norm`); 'patch' for models without BatchNorm."""
        return self.cfg.bn_mode(True) if self.has_batch_norm else "patch"

    @functools.cached_property
    def stats_step(self):
        """One compiled BatchNorm-statistics step on the run's input normalisation."""
        tc = train_config(self.cfg, "finetune")
        return rws.make_batch_stats_step(self.models.model.apply, lambda x: normalize_images(x, tc.mean, tc.std))

    def recalibration_batches(self, corruptions: Sequence[str], transfer: bool = False) -> Iterator:
        """Batches of the fine-tuning data corrupted with each of ``corruptions`` in turn."""
        bs = int(self.cfg.finetune.get("batch_size", 128))
        for c in corruptions:
            images = self.data.recalibration_split(c, transfer=transfer).images
            for i in range(0, len(images), bs):
                yield images[i:i + bs]

    def patched(self, base: Variables, corruptions: Sequence[str], sigs, alphas=1.0, *, mode: str = "linear",
                transfer: bool = False) -> Variables:
        """``base + Σ α·RWS`` with the run's BatchNorm mode (:attr:`bn_mode`).

        ``corruptions`` names the signatures' corruptions: with ``bn='reference'`` the
        BN/shortcut tensors become the mean over those robust models θ_rob,c and the
        statistics are re-estimated on the fine-tuning data corrupted with them (the
        transfer dataset's training data for ``transfer``), mixed with the reference's
        weight (:func:`rws_jax.reference_mix`)."""
        if self.bn_mode != "reference":
            return rws.patch_batch_norm(base, sigs, alphas, bn=self.bn_mode, mode=mode)
        return rws.patch_batch_norm(
            base, sigs, alphas, bn="reference", robust=[self.models.robust(c) for c in corruptions],
            apply_fn=self.models.model.apply, batches=self.recalibration_batches(list(corruptions), transfer),
            mode=mode, step=self.stats_step)

    def merged(self, method: str, sigs: list, alphas=1.0) -> rws.Signature:
        """``rws.compose`` of ``sigs`` (``'sum'`` or a merge method) with the config's
        parameters (DARE keyed by the run's seed)."""
        c = self.cfg
        return rws.compose(sigs, alphas, method=method, density=float(c.ties_density),
                           drop_rate=float(c.dare_drop_rate), key=jax.random.key(c.seed + SEEDS.dare),
                           name=f"{method}({'+'.join(s.name for s in sigs)})")
