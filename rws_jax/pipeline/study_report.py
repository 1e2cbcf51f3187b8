"""The report of a study (:mod:`rws_jax.pipeline.study`): seed means ± std, severities
1–5, the claims judged on the seed means, transfer pairs, the BatchNorm model (the numbers and tables:
:mod:`rws_jax.pipeline.study_tables`).

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
from typing import Callable, Sequence

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
from rws_jax.pipeline.report import premise_lines, write_report  # noqa: E402
from rws_jax.pipeline.run_metrics import RunMetrics, seed_mean  # noqa: E402
from rws_jax.pipeline.study_tables import (MAIN_ROWS, earlier_designs, fmt, init_comparison_table,  # noqa: E402
                                          main_cells, main_table, mean_std, open_run, same_domain_run, seed_runs,
                                          severities, severity_table, single_run_table, spread, study_similarity,
                                          study_verdicts)
from rws_jax.pipeline.tables import (VERDICT_KEY, both_verdicts, fixed, mechanism_tables,  # noqa: E402
                                    per_seed_cells, second_rule_cell, study_claims_table,
                                    transfer_by_corruption, transfer_table, verdict_cell)


# ----------------------------------------------------------------------------- summary

def headline_lines(study: Study, out: Path, runs: list[RunMetrics]) -> list[str]:
    """The seed-mean main rows (mean over corruptions, per severity), the seed spread, the
    study's wall time and the premise of every seed run: the first lines of the summary, and
    README's headline."""
    cells = [main_cells(r) for r in runs]
    sevs = severities(runs[0].cfg)
    sp = spread(runs)
    cfg0 = runs[0].cfg
    facts = runs[0].load_metrics("run_facts") or {}
    n_test = facts.get("data", {}).get("test")
    task = "all ten classes" if cfg0.classes is None else f"classes {cfg0.classes[0]}–{cfg0.classes[-1]}"
    lines = [f"{len(runs)} training seeds of VGG-16 ({cfg0.model_kwargs.get('width', 1):g} width) on "
             f"Fashion-MNIST ({task}) fine-tuned for {cfg0.finetune['epochs']} epochs, {len(cfg0.corruptions)} corruptions, "
             + (f"the full test set of those classes ({n_test:,} images)" if n_test else "the full test set")
             + f"; mean ± std over seeds (`rws-jax report --preset {study.name} --out docs/{study.name} --summary`):",
             "",
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
    lines += ["The premise (the models lie in one linear basin), measured in every seed run:", "",
              *study_premise_lines(runs), ""]
    return lines


def study_headline_markdown(study: Study, out: str | Path) -> str:
    """README's headline from a study directory: the first lines of
    :func:`study_summary_markdown` (the seed-mean main rows, the seed spread, the wall time,
    the premise), then the claims' verdicts beside those of every earlier design
    (:func:`design_verdicts`), by today's rules."""
    out = Path(out)
    runs = seed_runs(study, out)
    rows, _, prevs = design_verdicts(study, out, runs)
    lines = headline_lines(study, out, runs)
    head = ["claim", "this design", *(f"earlier: {d.name}" for d, _, _ in prevs)]
    lines += ["The paper's claims, each judged by a rule that follows its words, on this design and on the "
              "earlier designs' metrics by the same rules ([the reproduction study](docs/results/reproduction.md) "
              "gives each rule and its numbers):",
              "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows):
        lines.append("| " + " | ".join([r["claim"], both_verdicts(r), *(both_verdicts(p[i]) for _, p, _ in prevs)]) + " |")
    return "\n".join(lines).rstrip("\n") + "\n"


def design_verdicts(study: Study, out: Path, runs: list[RunMetrics],
                    previous: str | Path | Sequence[str | Path] | None = None) -> tuple[list, list, list]:
    """The claims' verdicts on the study in ``out`` (``runs``: its seed runs) by today's rules
    and by the rules before this change, and for each earlier design directory (``previous``;
    default every :func:`earlier_designs` directory beside ``out``) ``(dir, verdicts,
    verdicts by the rules before)``, each on that design's own seed runs and same-domain run."""
    same = open_run(out, study.same_domain) or same_domain_run(out)
    rows = study_verdicts(out, runs, same)
    before = study_verdicts(out, runs, same, claim_verdicts_before)
    if previous is None:
        prev_dirs = earlier_designs(out)
    else:
        prev_dirs = [Path(previous)] if isinstance(previous, (str, Path)) else [Path(p) for p in previous]
    prevs = []
    for d in prev_dirs:
        prev_runs = seed_runs(study, d)
        prev_same = same_domain_run(d)
        prevs.append((d, study_verdicts(d, prev_runs, prev_same),
                      study_verdicts(d, prev_runs, prev_same, claim_verdicts_before)))
    return rows, before, prevs


def study_summary_markdown(study: Study, out: str | Path, previous: str | Path | Sequence[str | Path] | None = None
                           ) -> str:
    """The study's "what to expect" tables (docs/results/reproduction.md) from a study directory:
    the headline (:func:`study_headline_markdown`), the claims' verdicts (with, given
    ``previous`` (one directory or several), the same rules on earlier study directories'
    metrics beside them; by default every :func:`earlier_designs` directory beside ``out``,
    e.g. ``docs/reproduce_4_epochs`` and ``docs/reproduce_previous``) and the transfer table."""
    out = Path(out)
    runs = seed_runs(study, out)
    same = open_run(out, study.same_domain) or same_domain_run(out)
    mean_run = seed_mean(runs, similarity=study_similarity(out), same_domain=same)
    lines = headline_lines(study, out, runs)
    rows, before, prevs = design_verdicts(study, out, runs, previous)
    head = ["claim", "verdict", "second rule: verdict", "rules before this change", "judged on", "per seed", "numbers"]
    for j, (d, _, _) in enumerate(prevs):
        head.insert(4 + j, f"earlier design ({d.name}): these rules (rules before)")
    lines += [VERDICT_KEY, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    seeds = per_seed_cells(runs)
    for i, r in enumerate(rows):
        row_cells = [r["claim"], verdict_cell(r), second_rule_cell(r),
                     both_verdicts({**before[i], "premise_met": r.get("premise_met")}), r["basis"], seeds[i],
                     r["evidence"]]
        for j, (_, prev, prev_before) in enumerate(prevs):
            p, pb = prev[i], prev_before[i]
            row_cells.insert(4 + j, f"{both_verdicts(p)} ({both_verdicts({**pb, 'premise_met': p.get('premise_met')})})")
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

def _test_images(run: RunMetrics) -> str:
    n = (run.load_metrics("run_facts") or {}).get("data", {}).get("test")
    classes = run.cfg.classes
    what = "all" if classes is None else f"classes {classes[0]}–{classes[-1]},"
    return f"{what} {n:,} test images" if n else "the whole test split"


def study_premise_lines(runs: list[RunMetrics]) -> list[str]:
    """The premise of each seed run (its ``metrics/premise.json``): the gate every verdict
    below is read through."""
    return [line.replace("- ", f"- `{r.cfg.name.split('/')[-1]}`: ", 1)
            for r in runs for line in premise_lines(r.load_metrics("premise"))]


def design_lines(run: RunMetrics) -> list[str]:
    """The design the study ran on, and the shrink factor its fine-tuning reached (seed 0's
    ``run_facts``) against the reference's."""
    cfg = run.cfg
    shrink = (run.load_metrics("run_facts") or {}).get("shrink") or {}
    line = (f"- design: θ_init kind {cfg.init.get('kind')}"
            + (f" (classes {cfg.init['classes'][0]}–{cfg.init['classes'][-1]})" if cfg.init.get("classes") else "")
            + f", VGG-16 width {cfg.model_kwargs.get('width', 1):g}, {cfg.finetune['epochs']} fine-tuning epochs "
            "(chosen by the rule of `rws_jax.pipeline.study_design`, see docs/regime/report.md)")
    if shrink.get("finetune") is not None:
        line += (f"; the fine-tune's shrink factor {fixed(shrink['finetune'])}"
                 + (f" against the reference's {fixed(shrink['reference'])}" if shrink.get("reference") else ""))
    return [line]


def write_study_report(study: Study, out: str | Path, *, log: Callable[[str], None] = print,
                       command: str | None = None) -> Path:
    """Writes ``<out>/report.md`` and ``<out>/figures/`` from the runs' and the study's metrics."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "metrics").mkdir(exist_ok=True)
    runs = seed_runs(study, out)
    same = open_run(out, study.same_domain)
    bn = open_run(out, study.batch_norm)
    mean_run = seed_mean(runs, similarity=study_similarity(out), same_domain=same)
    cfg = runs[0].cfg
    timing = read_metrics(out, "timing") or {}
    if command is None and (out / "command.txt").exists():
        command = (out / "command.txt").read_text().strip()
    sp = spread(runs)
    lines = [
        f"# Robust Weight Signatures: study `{study.name}`", "",
        study.description, "",
        "## The premise: one linear basin", "",
        *study_premise_lines(runs), "",
        f"- generated {datetime.datetime.now().isoformat(timespec='seconds')} on {platform.node()} "
        f"(Python {sys.version.split()[0]}); command: `{command or '(library call)'}`",
        "- runs (each a full pipeline run directory with its own report): "
        + ", ".join(f"[`{n}`]({n}/report.md)" for n in study.run_names if (out / n / "report.md").exists()),
        "- wall time per run on this machine (summed over resumed sessions): "
        + ", ".join(f"{n} {t['seconds'] / 60:.1f} min" for n, t in timing.items())
        + (f"; total {sum(t['seconds'] for t in timing.values()) / 60:.0f} min" if timing else ""),
        *design_lines(runs[0]),
        f"- TA = clean test accuracy ({_test_images(runs[0])}), RA = accuracy on the test set corrupted by "
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
                      "The same fine-tuning task (classes 0–4) from two θ_init that never saw its labels, made "
                      "differently (the θ_init column); the first is the study's design "
                      "(`rws_jax.pipeline.study_design`).", "",
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
