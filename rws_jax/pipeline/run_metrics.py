"""What a finished run measured, read-only: the interface the claim rules and the reports
read, so that they never need a checkpoint, a dataset or a :class:`Run`.

A :class:`RunMetrics` holds a run's config, its accuracies (``metrics/accuracy.json``:
``{variant: {test set: accuracy}}``), every other ``metrics/<name>.json`` and the transfer
targets its accuracies hold. :meth:`RunMetrics.from_dir` reads one from a run directory
(or a copy of its ``config.yaml`` and ``metrics/``, as ``docs/reproduce``);
:func:`seed_mean` averages several runs that differ only in their training seed into one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeGuard

import numpy as np

from rws_jax.pipeline.config import PipelineConfig, run_config_from_file
from rws_jax.pipeline.metrics_files import ACCURACY, read_all_metrics


@dataclasses.dataclass(frozen=True)
class RunMetrics:
    """A run's measurements.

    Attributes:
      cfg: the run's :class:`PipelineConfig`.
      accuracies: ``{variant: {test set: accuracy in [0, 1]}}``; variants such as
        ``'standard'``, ``'robust/fog'``, ``'patched/fog/alpha=1'``, ``'transfer/standard'``;
        test sets ``'clean'``, ``'fog'`` (the config's severity), ``'fog@2'``.
      metrics: the other metrics files by name (``'layer_change'``, ``'similarity'``,
        ``'storage'``, ``'alpha_search'``, ...).
      transfer_targets: ``(accuracy-key prefix, label, judged)`` of each model the source
        RWSs were carried to (``'updated'``: the updated backbone; ``'transfer'``: the
        transfer dataset's model; a study adds ``'same_domain'``); ``judged`` is False for a
        far-domain dataset (:data:`FAR_DOMAIN`), which the paper does not claim.
      transfer_sources: per target prefix, the accuracy-key prefix of the rows of the model
        whose RWSs it received (``'<prefix>standard'``, ``'<prefix>patched/<c>/alpha=1'``): a
        target not listed received this run's own RWSs (prefix ``''``); ``None``: the source
        model's own patch was not measured.
      seeds: the runs a seed mean (:func:`seed_mean`) averaged, each as read (empty for a
        single run); the claim rules read the seed spread of their margins from them.
    """

    cfg: PipelineConfig
    accuracies: Mapping[str, Mapping[str, float]]
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    transfer_targets: tuple = ()
    transfer_sources: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    seeds: tuple["RunMetrics", ...] = ()

    @classmethod
    def from_dir(cls, path: str | Path) -> "RunMetrics":
        """Reads ``<path>/config.yaml`` and ``<path>/metrics/*.json``."""
        path = Path(path)
        cfg = run_config_from_file(path / "config.yaml")
        files = read_all_metrics(path)
        acc = files.pop(ACCURACY, {})
        return cls(cfg=cfg, accuracies=acc, metrics=files, transfer_targets=default_transfer_targets(cfg))

    def load_metrics(self, name: str) -> Any:
        """``metrics/<name>.json`` as read (None when the run did not write it)."""
        return self.metrics.get(name)

    def ra(self, variant: str, test: str) -> float | None:
        """``accuracies[variant][test]`` or None."""
        return self.accuracies.get(variant, {}).get(test)

    def ta(self, variant: str) -> float | None:
        """Clean accuracy of ``variant`` or None."""
        return self.ra(variant, "clean")


def all_measured(values: Sequence[float | None]) -> TypeGuard[Sequence[float]]:
    """True when no value of ``values`` is None (every accuracy a rule or a table needs was
    measured); tells the type checker so."""
    return all(v is not None for v in values)


FAR_DOMAIN = ("digits",)  # transfer datasets of another domain than every main dataset (8x8 digits)


def _transfer_dataset_target(cfg: PipelineConfig) -> tuple:
    far = cfg.transfer_dataset in FAR_DOMAIN
    label = f"{cfg.transfer_dataset} (far domain)" if far else (cfg.transfer_dataset or "other dataset")
    return ("transfer", label, not far)


def default_transfer_targets(cfg: PipelineConfig) -> tuple:
    """The transfer targets a single run measures: the updated backbone and the transfer dataset."""
    return (("updated", "updated backbone", True), _transfer_dataset_target(cfg))


def _mean_layer_change(runs: list[RunMetrics]) -> dict | None:
    all_lc = [r.load_metrics("layer_change") for r in runs]
    all_lc = [x for x in all_lc if x]
    if not all_lc:
        return None
    out = {"units": all_lc[0]["units"]}
    for k in all_lc[0]:
        if k != "units" and all(k in x for x in all_lc):  # a measure some seeds did not record is left out
            out[k] = [float(np.mean([x[k][i] or 0.0 for x in all_lc])) for i in range(len(out["units"]))]
    return out


def seed_mean(runs: list[RunMetrics], *, similarity: dict | None = None,
              same_domain: RunMetrics | None = None) -> RunMetrics:
    """The runs of one seed group as one :class:`RunMetrics`: each accuracy is the mean over
    the seeds that measured it, the layer-wise change the mean over the seeds, the rest of
    the metrics the first seed's; ``similarity`` (the study's, with the seeds as
    replicates) replaces the first seed's; ``seeds`` holds the runs. ``same_domain``: a run
    whose transfer dataset is the main dataset's other classes; its transfer rows become the
    target ``'same_domain'`` (its own main rows, those of the RWSs' source, the rows
    ``'same_domain_source/...'``), its reverse rows the target ``'same_domain_reverse'``
    (whose source, the other classes' θ_std, was not patched with its own RWSs)."""
    if not runs:
        raise ValueError("seed_mean needs at least one run")
    first = runs[0]
    acc: dict = {}
    keys = {(v, t) for r in runs for v, d in r.accuracies.items() for t in d}
    for v, t in sorted(keys):
        vals = [r.accuracies[v][t] for r in runs if t in r.accuracies.get(v, {})]
        acc.setdefault(v, {})[t] = float(np.mean(vals))
    metrics = dict(first.metrics)
    if len(runs) > 1:
        metrics["layer_change"] = _mean_layer_change(runs)
    if similarity is not None:
        metrics["similarity"] = similarity
    targets = list(default_transfer_targets(first.cfg))
    sources: dict[str, str | None] = {}
    if same_domain is not None:
        sd = same_domain.accuracies
        for v, d in sd.items():
            if v == "standard" or (v.startswith("patched/") and v.endswith("/alpha=1")):
                acc["same_domain_source/" + v] = dict(d)
            if v.startswith("transfer/"):  # the other classes' models, patched with this side's RWSs
                acc["same_domain/" + v.split("/", 1)[1]] = dict(d)
            if v.startswith("reverse/patched/"):  # this side's θ_std patched with the other side's RWSs
                acc["same_domain_reverse/" + v.split("/", 1)[1]] = dict(d)
            if v == "standard" or v.startswith("robust/"):
                acc["same_domain_reverse/" + v] = dict(d)
        src, dst = same_domain.cfg.classes, same_domain.cfg.transfer_classes
        assert src is not None and dst is not None, "the same-domain run is defined by its two class subsets"
        targets.append(("same_domain", f"classes {dst[0]}–{dst[-1]} (same domain)", True))
        sources["same_domain"] = "same_domain_source/"
        if any(v.startswith("reverse/patched/") for v in sd):
            targets.append(("same_domain_reverse", f"classes {src[0]}–{src[-1]} (same domain, the other way)", True))
            sources["same_domain_reverse"] = None
    return RunMetrics(cfg=first.cfg, accuracies=acc, metrics=metrics, transfer_targets=tuple(targets),
                      transfer_sources=sources, seeds=tuple(runs))
