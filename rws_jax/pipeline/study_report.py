"""The report of a study (:mod:`rws_jax.pipeline.study`): seed means ± std, severities
1–5, the claims judged on the seed means, transfer pairs, the BatchNorm model.

Everything is computed from the runs' ``metrics/`` and ``config.yaml`` and the study's
``metrics/``: :func:`study_summary_markdown` (the "what to expect" tables of
docs/results/reproduction.md; README's headline is its first table,
:func:`study_headline_markdown`) needs no checkpoint, so it can be recomputed from the committed ``docs/reproduce``.
"""

from __future__ import annotations

import datetime
import platform
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rws_jax.pipeline.markdown_blocks import read_block, write_block  # noqa: E402
from rws_jax.pipeline.autopatch_report import autopatch_markdown  # noqa: E402
from rws_jax.pipeline.claims import NOT_MEASURED, claim_verdicts  # noqa: E402
from rws_jax.pipeline.claims_before import claim_verdicts_before  # noqa: E402
from rws_jax.pipeline.config import Study  # noqa: E402
from rws_jax.pipeline.metrics_files import read_metrics  # noqa: E402
from rws_jax.pipeline.report import write_report  # noqa: E402
from rws_jax.pipeline.run_metrics import RunMetrics, all_measured, seed_mean  # noqa: E402
from rws_jax.pipeline.tables import (VERDICT_KEY, both_verdicts, fixed, kept_mean, mechanism_tables,  # noqa: E402
                                    pct, per_seed_cells, second_rule_cell, study_claims_table,
                                    transfer_by_corruption, transfer_table, verdict_cell)

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


def _kept_removed(m: RunMetrics, c: str) -> float | None:
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
            f"{fixed(mean(_kept_removed(m, c) for c in shared))} | "
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

def _open(out: Path, name: str | None) -> RunMetrics | None:
    if name is None or not (out / name / "config.yaml").exists():
        return None
    return RunMetrics.from_dir(out / name)


def _seed_runs(study: Study, out: Path) -> list[RunMetrics]:
    opened = [_open(out, n) for n in study.seed_group]
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


def _headline_lines(study: Study, out: Path, runs: list[RunMetrics]) -> list[str]:
    """The seed-mean main rows (mean over corruptions, per severity), the seed spread and the
    study's wall time: the first lines of the summary, and README's headline."""
    cells = [main_cells(r) for r in runs]
    sevs = severities(runs[0].cfg)
    sp = spread(runs)
    lines = [f"{len(runs)} training seeds of VGG-16 ({runs[0].cfg.model_kwargs.get('width', 1):g} width) on "
             f"Fashion-MNIST, {len(runs[0].cfg.corruptions)} corruptions, full 10k test set; mean ± std over seeds "
             f"(`rws-jax report --preset {study.name} --out docs/{study.name} --summary`):", "",
             "| model | TA | mean RA, severities " + f"{sevs[0]}–{sevs[-1]} | mean RA, severity {runs[0].cfg.severity} |",
             "|---|---|---|---|"]
    for label, _ in MAIN_ROWS:
        lines.append(f"| {label} | " + " | ".join(fmt(*mean_std([x[label]["mean"][k] for x in cells]))
                                                  for k in ("ta", "ra_mean", "ra5")) + " |")
    lines += ["", f"Seed spread over every cell of the per-corruption table: median std {fmt(sp['median'])} pp, "
                  f"largest {fmt(sp['max'])} pp.", ""]
    timing = read_metrics(out, "timing")
    if timing is not None:
        lines += [f"Wall time of the whole study on the 2-core CPU that made it: "
                  f"{sum(t['seconds'] for t in timing.values()) / 60:.0f} min (`metrics/timing.json`).", ""]
    return lines


def study_headline_markdown(study: Study, out: str | Path) -> str:
    """README's headline table from a study directory: the first lines of
    :func:`study_summary_markdown` (the seed-mean main rows, the seed spread, the wall time)."""
    out = Path(out)
    return "\n".join(_headline_lines(study, out, _seed_runs(study, out))).rstrip("\n") + "\n"


def study_summary_markdown(study: Study, out: str | Path, previous: str | Path | None = None) -> str:
    """The study's "what to expect" tables (docs/results/reproduction.md) from a study directory:
    the headline (:func:`study_headline_markdown`), the claims' verdicts (with, given
    ``previous``, the same rules on an earlier study directory's metrics beside them; by
    default the directory ``<out>_previous`` when there is one, e.g. ``docs/reproduce_previous``)
    and the transfer table."""
    out = Path(out)
    runs = _seed_runs(study, out)
    same = _open(out, study.same_domain)
    mean_run = seed_mean(runs, similarity=study_similarity(out), same_domain=same)
    lines = _headline_lines(study, out, runs)
    rows = study_verdicts(out, runs, same)
    before = study_verdicts(out, runs, same, claim_verdicts_before)
    prev = prev_before = None
    sibling = out.with_name(out.name + "_previous")
    if previous is None and (sibling / study.seed_group[0] / "config.yaml").exists():
        previous = sibling
    if previous is not None:
        prev_runs = _seed_runs(study, Path(previous))
        prev_same = _open(Path(previous), study.same_domain)
        prev = study_verdicts(Path(previous), prev_runs, prev_same)
        prev_before = study_verdicts(Path(previous), prev_runs, prev_same, claim_verdicts_before)
    head = ["claim", "verdict", "second rule: verdict", "rules before this change", "judged on", "per seed", "numbers"]
    if prev is not None:
        assert previous is not None, "prev is read from it"
        head.insert(4, f"previous design ({Path(previous).name}): these rules (rules before)")
    lines += [VERDICT_KEY, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    seeds = per_seed_cells(runs)
    for i, r in enumerate(rows):
        row_cells = [r["claim"], verdict_cell(r), second_rule_cell(r),
                     both_verdicts({**before[i], "premise_met": r.get("premise_met")}), r["basis"], seeds[i],
                     r["evidence"]]
        if prev is not None and prev_before is not None:
            p, pb = prev[i], prev_before[i]
            row_cells.insert(4, f"{both_verdicts(p)} ({both_verdicts({**pb, 'premise_met': p.get('premise_met')})})")
        lines.append("| " + " | ".join(row_cells) + " |")
    lines += ["", "Transfer (claim 6): the RWSs of seed 0 (of each side for the same-domain pair) on other models "
                  "from the same θ_init:", "", *transfer_table(mean_run)]
    return "\n".join(lines) + "\n"


# The study's generated blocks: README holds the headline; docs/results/reproduction.md the
# summary; docs/results/autopatching.md the auto-patching tables (`make reproduce-docs` splices all).
HEADLINE_BEGIN = "<!-- reproduce-headline:begin (rws-jax report --preset reproduce --out docs/reproduce --summary) -->"
HEADLINE_END = "<!-- reproduce-headline:end -->"

SUMMARY_BEGIN = "<!-- reproduce-summary:begin (rws-jax report --preset reproduce --out docs/reproduce --summary) -->"
SUMMARY_END = "<!-- reproduce-summary:end -->"


AUTOPATCH_BEGIN = "<!-- autopatch-summary:begin (rws-jax report --preset reproduce --out docs/reproduce --summary) -->"
AUTOPATCH_END = "<!-- autopatch-summary:end -->"


def autopatch_summary_markdown(study: Study, out: str | Path) -> str | None:
    """The auto-patching tables (docs/results/autopatching.md) (each of the study's auto-patching runs), or None before they ran."""
    parts = []
    for name in study.autopatch_runs:
        m = read_metrics(Path(out) / name, "autopatch")
        if m is None:
            continue
        parts.append(f"`{name}` of the `{study.name}` study (`rws-jax autopatch --preset {study.name}`; printed by "
                     f"`rws-jax report --preset {study.name} --out docs/{study.name} --summary`):\n\n"
                     + "\n".join(autopatch_markdown(m)) + "\n")
    return "\n".join(parts) if parts else None


def splice_study_summary(doc: Path, summary: str, autopatch: str | None = None,
                         headline: str | None = None) -> list[str]:
    """Writes each of the study's blocks whose markers ``doc`` holds (the headline, the
    summary and, when given, the auto-patching tables) between those markers; returns the
    names of the blocks written. Exits naming the file, and writes nothing, when ``doc``
    holds none of them."""
    text = Path(doc).read_text()
    blocks = [("headline", HEADLINE_BEGIN, HEADLINE_END, headline), ("summary", SUMMARY_BEGIN, SUMMARY_END, summary),
              ("autopatch", AUTOPATCH_BEGIN, AUTOPATCH_END, autopatch)]
    present = [(name, begin, end, inner) for name, begin, end, inner in blocks
               if inner is not None and read_block(text, begin, end) is not None]
    if not present:
        raise SystemExit(f"{doc}: none of the study's reproduce-headline, reproduce-summary or autopatch-summary "
                         "markers to replace")
    for _, begin, end, inner in present:
        write_block(doc, begin, end, "\n\n" + inner + "\n")
    return [name for name, *_ in present]


# ----------------------------------------------------------------------------- figures

def fig_severity(runs: list[RunMetrics], path: Path) -> str:
    """RA against severity, one panel per corruption plus the mean; seed mean ± std."""
    cells = [main_cells(r) for r in runs]
    cfg = runs[0].cfg
    sevs = severities(cfg)
    cs = [*cfg.corruptions, "mean"]
    ncol = 3
    nrow = -(-len(cs) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.6 * nrow), squeeze=False)
    for ax, c in zip(axes.flat, cs):
        for label, _ in MAIN_ROWS:
            m = [mean_std([x[label][c]["by_severity"][i] for x in cells]) for i in range(len(sevs))]
            ys = np.array([100 * (v[0] if v[0] is not None else np.nan) for v in m])
            es = np.array([100 * (v[1] or 0.0) for v in m])
            ax.errorbar(sevs, ys, yerr=es, marker="o", ms=3, capsize=2, label=label)
        ax.set_title(c, fontsize=9)
        ax.set_xticks(sevs)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cs):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("RA (%)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"RA vs. severity, mean ± std over {len(runs)} seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"figures/{path.name}"


# ----------------------------------------------------------------------------- report

def write_study_report(study: Study, out: str | Path, *, log: Callable[[str], None] = print,
                       command: str | None = None) -> Path:
    """Writes ``<out>/report.md`` and ``<out>/figures/`` from the runs' and the study's metrics."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "metrics").mkdir(exist_ok=True)
    runs = _seed_runs(study, out)
    same = _open(out, study.same_domain)
    bn = _open(out, study.batch_norm)
    mean_run = seed_mean(runs, similarity=study_similarity(out), same_domain=same)
    cfg = runs[0].cfg
    timing = read_metrics(out, "timing") or {}
    if command is None and (out / "command.txt").exists():
        command = (out / "command.txt").read_text().strip()
    sp = spread(runs)
    lines = [
        f"# Robust Weight Signatures: study `{study.name}`", "",
        study.description, "",
        f"- generated {datetime.datetime.now().isoformat(timespec='seconds')} on {platform.node()} "
        f"(Python {sys.version.split()[0]}); command: `{command or '(library call)'}`",
        "- runs (each a full pipeline run directory with its own report): "
        + ", ".join(f"[`{n}`]({n}/report.md)" for n in study.run_names if (out / n / "report.md").exists()),
        "- wall time per run on this machine (summed over resumed sessions): "
        + ", ".join(f"{n} {t['seconds'] / 60:.1f} min" for n, t in timing.items())
        + (f"; total {sum(t['seconds'] for t in timing.values()) / 60:.0f} min" if timing else ""),
        "- TA = clean test accuracy (all 10,000 test images), RA = accuracy on the test set corrupted by "
        f"rws_jax's corruptions (preset {cfg.corruption_preset!r}, seeded); robust models are trained at severity "
        f"{cfg.severity}; ± is the sample standard deviation over the {len(runs)} training seeds "
        "(θ_init shared; data order, augmentation and corruption keys differ)",
        "", "## What was cut to fit the budget", "",
        *[f"- {c}" for c in study.cut], "",
        "## Main rows: θ_std, θ_rob,c, θ_std + RWS_c (α = 1), mean ± std over seeds", "",
        *main_table(runs), "",
        f"Seed spread over these cells: median std {fmt(sp['median'])} pp, largest {fmt(sp['max'])} pp.", "",
        "### Mean RA over the corruptions, per severity", "",
        *severity_table(runs), "",
        f"![RA vs severity]({fig_severity(runs, out / 'figures' / 'severity.png')})", "",
        "## The paper's claims", "",
        *study_claims_table(study_verdicts(out, runs, same), runs,
                            study_verdicts(out, runs, same, claim_verdicts_before)), "",
        "## The mechanism (seed 0)", "",
        *mechanism_tables(runs[0]), "",
    ]
    if same is not None:
        assert same.cfg.classes is not None and same.cfg.transfer_classes is not None, \
            "the same-domain run is defined by its two class subsets"
        lines += [
        "## Transfer: updated backbone, same domain, far domain", "",
        *transfer_table(mean_run), "",
        "Per corruption (seed 0's RWSs; the same-domain pair in both directions):", "",
        *transfer_by_corruption(seed_mean(runs[:1], same_domain=same)), "",
        "The same-domain pair fine-tunes two 5-way heads from one θ_init on disjoint classes of the "
        "fine-tuning half (the paper's CIFAR-10 → CIFAR-100 on one dataset): RWSs from classes "
        f"{same.cfg.classes[0]}–{same.cfg.classes[-1]} patch the θ_std of classes "
        f"{same.cfg.transfer_classes[0]}–{same.cfg.transfer_classes[-1]}. The far-domain pair (scikit-learn's "
        "8×8 digits upscaled to 32×32) shares θ_init but neither the classes nor the image statistics. "
        "Compare the rows: the updated backbone shares the classes and the domain, the same-domain pair only "
        "the domain, digits neither.", "",
        ]
    if study.init_comparison and all((out / n / "config.yaml").exists() for n in study.init_comparison):
        cmp_runs = {n: RunMetrics.from_dir(out / n) for n in study.init_comparison}
        if all(r.accuracies for r in cmp_runs.values()):
            lines += ["## Two generic θ_init on one task", "",
                      "The same fine-tuning task (classes 0–4) from two θ_init that never saw its labels: rotation "
                      "prediction (the study's default: the only one that also serves the 10-class task) and "
                      "supervised pre-training on the other classes (5–9) of the pre-training half.", "",
                      *init_comparison_table(cmp_runs), ""]
    if bn is not None and bn.accuracies:
        lines += [f"## BatchNorm model: {bn.cfg.model}, one seed, severity {bn.cfg.severity}", "",
                  "BatchNorm as the reference code: a patched model's BN parameters and shortcut convs are the mean "
                  "over the robust models of the signatures applied, and its BN statistics are re-estimated on the "
                  "corrupted fine-tuning data.", "", *single_run_table(bn), ""]
        rows, before = claim_verdicts(bn), claim_verdicts_before(bn)
        lines += ["| claim (this model alone) | verdict | rules before this change | numbers |", "|---|---|---|---|"]
        lines += [f"| {r['claim']} | {verdict_cell(r)} | {both_verdicts({**b, 'premise_met': r.get('premise_met')})} | "
                  f"{r['evidence']} |" for r, b in zip(rows, before)
                  if r["verdict"] != NOT_MEASURED or b["verdict"] != NOT_MEASURED]
        lines.append("")
    for name in study.autopatch_runs:
        m = read_metrics(out / name, "autopatch")
        if m:
            lines += [f"## Auto-patching an unknown corruption ({name})", "", *autopatch_markdown(m), ""]
    lines += ["## Configs", ""] + [f"- [`{n}/config.yaml`]({n}/config.yaml)" for n in study.run_names
                                   if (out / n / "config.yaml").exists()] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    log(f"[study report] {path}")
    return path


def write_study_reports(study: Study, out: str | Path, *, log: Callable[[str], None] = print,
                        only: list[str] | None = None) -> Path:
    """Each run's report (of the runs that are there) and the study's, from their metrics;
    returns the study report's path."""
    out = Path(out)
    for name in study.run_names:
        if (not only or name in only) and (out / name / "config.yaml").exists():
            write_report(out / name)
    return write_study_report(study, out, log=log)


def export_study(study: Study, out: str | Path, dest: str | Path) -> Path:
    """Copies what the report and summary need (reports, figures, metrics, configs; no
    checkpoints or signatures) from the study directory ``out`` to ``dest`` (docs/)."""
    out, dest = Path(out), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for item in ("report.md", "command.txt"):
        if (out / item).exists():
            shutil.copy2(out / item, dest / item)
    for sub in ("figures", "metrics"):
        if (out / sub).exists():
            shutil.copytree(out / sub, dest / sub, dirs_exist_ok=True)
    for n in study.run_names:
        src = out / n
        if not src.exists():
            continue
        (dest / n).mkdir(exist_ok=True)
        for item in ("report.md", "config.yaml", "command.txt"):
            if (src / item).exists():
                shutil.copy2(src / item, dest / n / item)
        for sub in ("figures", "metrics"):
            if (src / sub).exists():
                shutil.copytree(src / sub, dest / n / sub, dirs_exist_ok=True)
    return dest
