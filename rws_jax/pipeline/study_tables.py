"""The numbers and tables of a study's report (:mod:`rws_jax.pipeline.study_report`): the
main cells of a run, seed means ± std, the claims judged on them, the runs of a study
directory (its seed group, its same-domain run, the earlier designs kept beside it), and the
tables built from them. Everything is read from the runs' ``metrics/`` and ``config.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from rws_jax.pipeline.claims import NOT_MEASURED, claim_verdicts
from rws_jax.pipeline.config import Study
from rws_jax.pipeline.metrics_files import read_metrics
from rws_jax.pipeline.run_metrics import RunMetrics, all_measured, seed_mean
from rws_jax.pipeline.tables import both_verdicts, fixed, kept_mean, pct

MAIN_ROWS = (("θ_std", "standard"), ("θ_rob,c", "robust/{c}"), ("θ_std + RWS_c", "patched/{c}/alpha=1"))


# ----------------------------------------------------------------------------- numbers

def severities(cfg) -> list[int]:
    """The severities the main rows were tested at (the config's own one included)."""
    return sorted({int(cfg.severity), *map(int, cfg.eval_severities)})


def test_name(cfg, c: str, s: int) -> str:
    """Accuracy key of corruption ``c`` at severity ``s`` (the plain name at the config's)."""
    return c if s == cfg.severity else f"{c}@{s}"


def main_cells(run: RunMetrics) -> dict:
    """One run's main rows: ``{row: {c: {"ta", "ra5", "ra_mean", "by_severity": [..]}}}``
    (``ra5`` at the config's severity, ``ra_mean`` over its tested severities) plus a
    ``"mean"`` entry per row averaging the corruptions. Missing numbers are None."""
    acc, cfg = run.accuracies, run.cfg
    sevs = severities(cfg)
    out = {}
    for label, pattern in MAIN_ROWS:
        row: dict[str, dict[str, Any]] = {}
        for c in cfg.corruptions:
            a = acc.get(pattern.format(c=c), {})
            by = [a.get(test_name(cfg, c, s)) for s in sevs]
            row[c] = {"ta": a.get("clean"), "ra5": a.get(c), "by_severity": by,
                      "ra_mean": None if not all_measured(by) else float(np.mean(by))}
        cells = list(row.values())
        row["mean"] = {k: (None if any(x[k] is None for x in cells) else float(np.mean([x[k] for x in cells])))
                       for k in ("ta", "ra5", "ra_mean")}
        row["mean"]["by_severity"] = [None if any(x["by_severity"][i] is None for x in cells)
                                      else float(np.mean([x["by_severity"][i] for x in cells]))
                                      for i in range(len(sevs))]
        out[label] = row
    return out


def mean_std(values: list) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; None for one value) of the non-None values."""
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def fmt(m: float | None, s: float | None = None) -> str:
    """``m ± s`` in percent with one decimal (``–`` when missing)."""
    return pct(m) + ("" if m is None or s is None else f" ± {100 * s:.1f}")


# Claims whose every number is measured by each seed are judged on the means over all seeds;
# the others on the mean over the seeds that measured them (today only seed 0 measures the α
# sweep, the compositions, the transfer and the quantized rows), so that no rule compares a
# mean over some seeds with a number of fewer.
SEED_MEAN_CLAIMS = ("1.", "2.", "3.")


def study_similarity(out: Path) -> dict | None:
    """The study's signature similarity (the seeds as replicates), or None."""
    return read_metrics(out, "similarity")


def study_verdicts(out: Path, runs: list[RunMetrics], same_domain: RunMetrics | None,
                   rules: Callable[[RunMetrics], list[dict]] = claim_verdicts) -> list[dict]:
    """``rules`` (:func:`claim_verdicts`, or the rules before this change) on the study:
    claims 1–3 on the means over all seeds, 4–7 on the mean over the seeds whose own verdict
    is measured (seed 0 when none is), plus the same-domain pair for claim 6; each row gets a
    ``basis``. A seed mean carries its seeds, so a rule reads the seed noise of its margins."""
    sim = study_similarity(out)
    per_seed = [rules(r) for r in runs]
    judged: dict[tuple[int, ...], list[dict]] = {}
    out_rows = []
    for k, row in enumerate(per_seed[0]):
        if row["claim"].startswith(SEED_MEAN_CLAIMS):
            idx = tuple(range(len(runs)))
        else:
            idx = tuple(i for i, p in enumerate(per_seed) if p[k]["verdict"] != NOT_MEASURED) or (0,)
        if idx not in judged:
            judged[idx] = rules(seed_mean([runs[i] for i in idx], similarity=sim, same_domain=same_domain))
        basis = f"mean of {len(idx)} seeds" if len(idx) > 1 else f"seed {runs[idx[0]].cfg.fine_tuning_seed}"
        out_rows.append({**judged[idx][k], "basis": basis})
    return out_rows


# ----------------------------------------------------------------------------- tables

def main_table(runs: list[RunMetrics]) -> list[str]:
    """Per corruption: TA, RA at the config's severity and RA over severities 1–5 of θ_std,
    θ_rob,c and θ_std + RWS_c, mean ± std over the seeds."""
    cells = [main_cells(r) for r in runs]
    cfg = runs[0].cfg
    sevs = severities(cfg)
    cols = [(label, k) for label, _ in MAIN_ROWS for k in ("ta", "ra_mean", "ra5")]
    names = {"ta": "TA", "ra_mean": f"RA sev {sevs[0]}–{sevs[-1]}", "ra5": f"RA sev {cfg.severity}"}
    lines = ["| corruption | " + " | ".join(f"{label} {names[k]}" for label, k in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for c in [*cfg.corruptions, "mean"]:
        vals = [fmt(*mean_std([x[label][c][k] for x in cells])) for label, k in cols]
        name = "**mean**" if c == "mean" else c
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return lines


def severity_table(runs: list[RunMetrics]) -> list[str]:
    """Mean RA over the corruptions at each severity (mean ± std over seeds)."""
    cells = [main_cells(r) for r in runs]
    sevs = severities(runs[0].cfg)
    lines = ["| model | " + " | ".join(f"severity {s}" for s in sevs) + " |", "|---|" + "---|" * len(sevs)]
    for label, _ in MAIN_ROWS:
        lines.append(f"| {label} | " + " | ".join(
            fmt(*mean_std([x[label]["mean"]["by_severity"][i] for x in cells])) for i in range(len(sevs))) + " |")
    return lines


def kept_removed(m: RunMetrics, c: str) -> float | None:
    mech = m.load_metrics("mechanism")
    return kept_mean(mech, c, "removed") if mech else None


def init_comparison_table(runs: dict[str, RunMetrics]) -> list[str]:
    """Runs of one task whose θ_init differ: means over the corruptions they share of TA/RA of
    θ_std, θ_rob,c and θ_std + RWS_c, what the projection removes, and claim 3 on each."""
    shared = [c for c in next(iter(runs.values())).cfg.corruptions if all(c in r.cfg.corruptions for r in runs.values())]

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None

    lines = [f"Over the corruptions both runs have ({', '.join(shared)}):", "",
             "| run | θ_init | TA θ_std | TA θ_rob,c | TA θ_std + RWS_c | RA θ_std | RA θ_rob,c | RA θ_std + RWS_c | "
             "share of Δ_c removed | claim 3 (TA vs θ_rob,c / vs θ_std) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in runs.items():
        c3 = next(r for r in claim_verdicts(m) if r["claim"].startswith("3."))
        init = m.cfg.init
        kind = init["kind"] + (f" (classes {init['classes'][0]}–{init['classes'][-1]})" if isinstance(init.get("classes"), (list, tuple)) else "")
        if m.cfg.init_from:
            kind += f", from {m.cfg.init_from}"
        lines.append(
            f"| {name} | {kind} | {fmt(m.ta('standard'))} | {fmt(mean(m.ta(f'robust/{c}') for c in shared))} | "
            f"{fmt(mean(m.ta(f'patched/{c}/alpha=1') for c in shared))} | "
            f"{fmt(mean(m.ra('standard', c) for c in shared))} | {fmt(mean(m.ra(f'robust/{c}', c) for c in shared))} | "
            f"{fmt(mean(m.ra(f'patched/{c}/alpha=1', c) for c in shared))} | "
            f"{fixed(mean(kept_removed(m, c) for c in shared))} | "
            f"{both_verdicts(c3)} |")
    return lines


def single_run_table(run: RunMetrics) -> list[str]:
    """Main rows of one run at the config's severity (the BatchNorm model)."""
    cells = main_cells(run)
    cs = [*run.cfg.corruptions, "mean"]
    lines = ["| model | " + " | ".join(f"RA {c}" for c in cs) + " | TA |", "|---|" + "---|" * (len(cs) + 1)]
    for label, _ in MAIN_ROWS:
        lines.append(f"| {label} | " + " | ".join(fmt(cells[label][c]["ra5"]) for c in cs)
                     + f" | {fmt(cells[label]['mean']['ta'])} |")
    return lines


# ----------------------------------------------------------------------------- summary

def open_run(out: Path, name: str | None) -> RunMetrics | None:
    if name is None or not (out / name / "config.yaml").exists():
        return None
    return RunMetrics.from_dir(out / name)


def seed_runs(study: Study, out: Path) -> list[RunMetrics]:
    opened = [open_run(out, n) for n in study.seed_group]
    runs = [r for r in opened if r is not None and r.accuracies]
    if not runs:
        raise FileNotFoundError(f"{out} holds no evaluated run of {study.name!r} "
                                f"(expected {', '.join(study.seed_group)}): run `rws-jax {study.name}` first")
    return runs


def spread(runs: list[RunMetrics]) -> dict:
    """Seed spread of the main table: the largest and the median std over its cells (pp)."""
    cells = [main_cells(r) for r in runs]
    all_stds = [mean_std([x[label][c][k] for x in cells])[1]
                for label, _ in MAIN_ROWS for c in [*runs[0].cfg.corruptions, "mean"] for k in ("ta", "ra5", "ra_mean")]
    stds = [s for s in all_stds if s is not None]
    return {"max": max(stds) if stds else None, "median": float(np.median(stds)) if stds else None}


def same_domain_run(out: Path) -> RunMetrics | None:
    """The same-domain transfer run of a study directory (a run whose transfer dataset is its
    own dataset's other classes), read off the runs' configs: earlier designs name their own."""
    for cfg_file in sorted(out.glob("*/config.yaml")):
        m = RunMetrics.from_dir(cfg_file.parent)
        if m.cfg.transfer_classes and m.cfg.transfer_dataset == m.cfg.dataset and m.accuracies:
            return m
    return None


def earlier_designs(out: Path) -> list[Path]:
    """The study's earlier designs kept beside ``out``: ``<out>_<label>`` directories holding a
    seed-0 run (``docs/reproduce_4_epochs``, ``docs/reproduce_previous``), in the order of
    :data:`EARLIER_DESIGNS` (newest first), then any other by name."""
    found = [d for d in sorted(out.parent.glob(out.name + "_*")) if (d / "vgg16_seed0" / "config.yaml").exists()]
    order = {n: i for i, n in enumerate(EARLIER_DESIGNS)}
    return sorted(found, key=lambda d: (order.get(d.name[len(out.name) + 1:], len(order)), d.name))


# Earlier designs of the reproduce study, newest first (their directories: docs/reproduce_<label>).
EARLIER_DESIGNS = ("4_epochs", "previous")
