"""The run's Markdown report and PNG figures, one per claim of the paper.

Everything is read from the run directory's ``config.yaml`` and ``metrics/`` (written by
the stages) through :class:`RunMetrics`, so the report can be regenerated (``rws-jax
report``) without a dataset, a checkpoint or any computing module.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import platform
import sys
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rws_jax.pipeline.markdown_blocks import read_block, write_block  # noqa: E402
from rws_jax.pipeline.autopatch_report import autopatch_markdown  # noqa: E402
from rws_jax.pipeline.claims import claim_verdicts  # noqa: E402
from rws_jax.pipeline.claims_before import claim_verdicts_before  # noqa: E402
from rws_jax.pipeline.run_metrics import RunMetrics, all_measured  # noqa: E402
from rws_jax.pipeline.tables import (VERDICT_KEY, alpha_search_note, before_cells, claims_table,  # noqa: E402
                                    mechanism_tables, pct, transfer_by_corruption)


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"figures/{path.name}"


def fig_layer_change(run: RunMetrics, out: Path) -> str | None:
    d = run.load_metrics("layer_change")
    if d is None:
        return None
    units = d["units"]
    x = np.arange(len(units))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.plot(x, [v or 0 for v in d["standard_vs_init"]], "k--", marker=".", label="θ_std vs θ_init (clean fine-tuning)")
    for c in run.cfg.corruptions:
        ax.plot(x, [v or 0 for v in d[c]], marker="o", ms=3, label=f"θ_rob,{c} vs θ_std")
    ax.axvspan(-0.5, run.cfg.keep_units - 0.5, color="tab:green", alpha=0.08, label=f"kept units (k={run.cfg.keep_units})")
    ax.set_xticks(x, units, rotation=60, fontsize=7)
    ax.set_ylabel("‖Δθ‖ / ‖θ‖ per unit")
    ax.set_title("Layer-wise relative weight change (claim 1)")
    ax.legend(fontsize=7)
    return _save(fig, out / "layer_change.png")


def fig_similarity(run: RunMetrics, out: Path) -> str | None:
    d = run.load_metrics("similarity")
    if d is None:
        return None
    sim = np.asarray(d["cosine"])
    names = d["names"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(names), 1.0 + 0.5 * len(names)))
    im = ax.imshow(sim, cmap="viridis", vmin=min(0.0, sim.min()), vmax=1.0)
    ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if sim[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax.set_title("Cosine similarity of the RWSs (claim 2)", fontsize=9)
    return _save(fig, out / "similarity.png")


def fig_alpha(run: RunMetrics, out: Path) -> str | None:
    acc = run.accuracies
    cs = run.cfg.corruptions
    fig, axes = plt.subplots(1, len(cs), figsize=(3.0 * len(cs), 3.0), squeeze=False)
    for ax, c in zip(axes[0], cs):
        al = [a for a in run.cfg.alphas if f"patched/{c}/alpha={a:g}" in acc]
        if not al:
            continue
        ra = [acc[f"patched/{c}/alpha={a:g}"][c] for a in al]
        ta = [acc[f"patched/{c}/alpha={a:g}"]["clean"] for a in al]
        ax.plot(al, [100 * v for v in ra], "o-", label=f"RA ({c})")
        ax.plot(al, [100 * v for v in ta], "s--", label="TA (clean)")
        if f"robust/{c}" in acc:
            ax.axhline(100 * acc[f"robust/{c}"][c], color="tab:red", lw=0.8, ls=":", label="θ_rob RA")
        ax.set_xlabel("α")
        ax.set_title(c, fontsize=9)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("accuracy (%)")
    fig.suptitle("Accuracy vs. α (claim 4)", fontsize=9)
    return _save(fig, out / "alpha.png")


def fig_transfer(run: RunMetrics, out: Path) -> str | None:
    acc = run.accuracies
    cs = run.cfg.corruptions
    groups: list[tuple[str, str, str, str | None]] = []
    if "transfer/standard" in acc:
        groups.append((f"another dataset ({run.cfg.transfer_dataset})", "transfer/standard", "transfer/patched",
                       "transfer/robust"))
    if "updated/standard" in acc:
        groups.append(("updated backbone", "updated/standard", "updated/patched", None))
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.2), squeeze=False)
    x = np.arange(len(cs))
    for ax, (title, std, patched, robust) in zip(axes[0], groups):
        bars = [("standard", [acc[std][c] for c in cs]),
                ("standard + RWS (from the first model)", [acc[f"{patched}/{c}"][c] for c in cs])]
        if robust:
            bars.append(("robust (trained here)", [acc[f"{robust}/{c}"][c] for c in cs]))
        w = 0.8 / len(bars)
        for i, (label, vals) in enumerate(bars):
            ax.bar(x + i * w, [100 * v for v in vals], w, label=label)
        ax.set_xticks(x + w * (len(bars) - 1) / 2, cs, rotation=30, fontsize=7)
        ax.set_ylabel("RA (%)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle("Transfer of RWSs (claim 6)", fontsize=9)
    return _save(fig, out / "transfer.png")


def fig_premise(run: RunMetrics, out: Path) -> str | None:
    """Accuracy along each straight line the premise measured (metrics/premise.json)."""
    d = run.load_metrics("premise")
    if not d:
        return None
    paths = []
    if "standard_seeds" in d:
        paths.append(("θ_std seed 0 → seed 1, TA", d["standard_seeds"]["clean"], "k--"))
    for c, p in d.get("robust", {}).items():
        paths += [(f"θ_std → θ_rob,{c}, TA", p["clean"], "-"), (f"θ_std → θ_rob,{c}, RA {c}", p[c], ":")]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for label, p, style in paths:
        ax.plot(p["ts"], [100 * v for v in p["values"]], style, marker=".", label=f"{label} (barrier {100 * p['barrier']:.1f} pp)")
    ax.set_xlabel("t on θ(t) = (1 − t)·θ_a + t·θ_b")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("The premise: accuracy along the straight lines between the models", fontsize=9)
    ax.legend(fontsize=6)
    return _save(fig, out / "premise.png")


def fig_storage(run: RunMetrics, out: Path) -> str | None:
    d = run.load_metrics("storage")
    if d is None:
        return None
    rows = d["rows"]
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.bar([f"{r['bits']}-bit" for r in rows], [r["ratio"] for r in rows], color="tab:purple")
    for i, r in enumerate(rows):
        ax.text(i, r["ratio"], f"{r['ratio']:.1f}×", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("full model bytes / signature bytes")
    ax.set_title("Storage ratio on disk (claim 7)", fontsize=9)
    return _save(fig, out / "storage.png")


# A row of the accuracy table reads a variant's accuracy on a corruption (RA) or its clean
# accuracy (TA) given the corruption: None when not measured.
_Accuracy = Callable[[str], float | None]


def _accuracy_table(run: RunMetrics) -> list[str]:
    acc = run.accuracies
    cs = run.cfg.corruptions
    rows: list[tuple[str, _Accuracy, _Accuracy]] = [
        ("Standard θ_std", lambda c: acc.get("standard", {}).get(c), lambda c: acc.get("standard", {}).get("clean")),
        ("Robust θ_rob,c (one model per column)", lambda c: acc.get(f"robust/{c}", {}).get(c),
         lambda c: acc.get(f"robust/{c}", {}).get("clean")),
        ("θ_std + RWS_c (α=1)", lambda c: acc.get(f"patched/{c}/alpha=1", {}).get(c),
         lambda c: acc.get(f"patched/{c}/alpha=1", {}).get("clean"))]

    def quantized_ra(b: int, c: str) -> float | None:
        return acc.get(f"patched_q{b}/{c}", {}).get(c)

    def quantized_ta(b: int, c: str) -> float | None:
        return acc.get(f"patched_q{b}/{c}", {}).get("clean")

    for b in run.cfg.quant_bits:
        rows.append((f"θ_std + {b}-bit RWS_c", functools.partial(quantized_ra, b), functools.partial(quantized_ta, b)))
    rows += [("θ_std + Σ_c RWS_c (all composed, α=1)", lambda c: acc.get("composed", {}).get(c),
              lambda c: acc.get("composed", {}).get("clean")),
             ("θ_std + (1/N) Σ_c RWS_c (average)", lambda c: acc.get("composed_average", {}).get(c),
              lambda c: acc.get("composed_average", {}).get("clean")),
             ("θ_std + Σ_c RWS_c, reference weighting (α/N)² with α=1", lambda c: acc.get("composed_reference_mode", {}).get(c),
              lambda c: acc.get("composed_reference_mode", {}).get("clean")),
             ("θ_std + Σ_c RWS_c, 8-bit reference quantizer (shared range)",
              lambda c: acc.get("composed_q8_shared_range", {}).get(c),
              lambda c: acc.get("composed_q8_shared_range", {}).get("clean"))]
    cfg = run.cfg
    get = lambda key: (lambda c: acc.get(key, {}).get(c), lambda c: acc.get(key, {}).get("clean"))  # noqa: E731
    labels = {"ties": f"TIES merge (density {cfg.ties_density:g})", "dare": f"DARE merge (drop rate {cfg.dare_drop_rate:g})"}
    for m in cfg.merge_methods:
        rows.append((f"θ_std + {labels[m]} of all RWS_c, α=1", *get(f"composed_{m}")))
    if any(k.startswith("searched/") for k in acc):
        rows.append(("θ_std + α_c·RWS_c, α_c searched on validation (one model per column)",
                     lambda c: acc.get(f"searched/{c}", {}).get(c), lambda c: acc.get(f"searched/{c}", {}).get("clean")))
        for m in ("sum", *cfg.merge_methods):
            if f"composed_searched_{m}" in acc:
                what = "Σ_c α_c RWS_c" if m == "sum" else labels[m] + " of α_c·RWS_c"
                rows.append((f"θ_std + {what}, α searched on validation", *get(f"composed_searched_{m}")))
    if run.cfg.mixture:
        rows.append(("Mixture-trained (\"data augmentation\")", lambda c: acc.get("mixture", {}).get(c),
                     lambda c: acc.get("mixture", {}).get("clean")))
    head = "| model | " + " | ".join(f"RA {c}" for c in cs) + " | mean RA | mean TA |"
    lines = [head, "|" + "---|" * (len(cs) + 3)]
    for label, ra, ta in rows:
        ras = [ra(c) for c in cs]
        tas = [ta(c) for c in cs]
        mean_ra = np.mean(ras) if all_measured(ras) else None
        mean_ta = np.mean([t for t in tas if t is not None]) if any(t is not None for t in tas) else None
        lines.append(f"| {label} | " + " | ".join(pct(v) for v in ras) + f" | {pct(mean_ra)} | {pct(mean_ta)} |")
    return lines


def _alpha_table(run: RunMetrics) -> list[str]:
    """The α chosen on the validation split, per corruption and for the set, with test results."""
    found = run.load_metrics("alpha_search")
    if not found:
        return []
    acc = run.accuracies
    cs = run.cfg.corruptions
    lines = [f"α chosen on the validation split only (grid {', '.join(f'{a:g}' for a in found['grid'])}; at most "
             f"{found['budget']} validation evaluations per search; clean validation accuracy may drop by at most "
             f"{100 * found['max_ta_drop']:g} points), and the test accuracy of that choice:", "",
             "| corruption | α (alone) | val RA | val TA | test RA | test TA | "
             + " | ".join(f"α in the set ({m})" for m in found["set"]) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(found["set"])]
    for c in cs:
        rec = found["single"][c]
        score = rec["metrics"] or {}
        test = acc.get(f"searched/{c}", {})
        lines.append(f"| {c} | {rec['alphas'][c]:g} | {pct(score.get('ra', {}).get(c))} | {pct(score.get('ta'))} | "
                     f"{pct(test.get(c))} | {pct(test.get('clean'))} | "
                     + " | ".join(f"{rec_m['alphas'][c]:g}" for rec_m in found["set"].values()) + " |")
    return lines


def _transfer_table(run: RunMetrics) -> list[str]:
    acc = run.accuracies
    cs = run.cfg.corruptions
    lines = []
    if "transfer/standard" in acc:
        lines += [f"**Another dataset: {run.cfg.transfer_dataset}** (models fine-tuned from the same θ_init; "
                  f"RWSs extracted on {run.cfg.dataset})", "",
                  "| corruption | standard RA | + RWS RA | robust (trained on it) RA | standard TA | + RWS TA |",
                  "|---|---|---|---|---|---|"]
        for c in cs:
            lines.append(f"| {c} | {pct(acc['transfer/standard'].get(c))} | {pct(acc[f'transfer/patched/{c}'][c])} | "
                         f"{pct(acc[f'transfer/robust/{c}'][c])} | {pct(acc['transfer/standard']['clean'])} | "
                         f"{pct(acc[f'transfer/patched/{c}']['clean'])} |")
        lines.append("")
    if "updated/standard" in acc:
        lines += ["**Updated backbone** (θ_init trained further, then a new θ_std; RWSs from the old θ_init)", "",
                  "| corruption | standard RA | + RWS RA | standard TA | + RWS TA |", "|---|---|---|---|---|"]
        for c in cs:
            lines.append(f"| {c} | {pct(acc['updated/standard'].get(c))} | {pct(acc[f'updated/patched/{c}'][c])} | "
                         f"{pct(acc['updated/standard']['clean'])} | {pct(acc[f'updated/patched/{c}']['clean'])} |")
    return lines


def _corrupted_test_note(cfg) -> str:
    """Which corrupted test sets the RA numbers come from."""
    own = (f"test sets corrupted by rws_jax's own corruptions, preset {cfg.corruption_preset!r}, "
           f"severity {cfg.severity}")
    if cfg.corrupted_test_mode == "official":
        return (f"RA measured on the released CIFAR-10-C (TFDS cifar10_corrupted, severity {cfg.severity})"
                + (f"; for the transfer dataset {cfg.transfer_dataset}, on {own}" if cfg.transfer_dataset else ""))
    return f"RA measured on {own} (seeded)"


def _bn_note(facts: dict) -> str:
    """How patching treated BatchNorm in this run (``facts``: metrics/run_facts.json)."""
    mode = facts["bn_mode"]
    if mode == "reference":
        return ("BatchNorm, as the reference code: every BN γ/β/statistic and shortcut conv of a patched model is "
                "the mean over the robust models of the signatures applied, and the running statistics are "
                "re-estimated on the fine-tuning data corrupted with those corruptions (mixed (1−α)·old + α·new "
                "for α < 1)")
    if mode == "none":
        return "BatchNorm leaves are left as in the patched model (`bn: none`); only the other kept tensors move"
    return ("patching is the pure weight patch θ + Σ α·RWS on the kept tensors"
            + ("" if facts["has_batch_norm"] else " (the model has no BatchNorm)"))


def summary_markdown(run: RunMetrics) -> str:
    """The Markdown tables of a run's results page: accuracies of every model (TA / RA per
    corruption, means) and, when the merge stage ran, the α chosen on validation.
    Printed by ``rws-jax report --summary``; ``tests/test_readme_numbers.py`` checks that
    docs/results/demo.md holds exactly this for docs/offline_run."""
    lines = _accuracy_table(run)
    at = _alpha_table(run)
    if at:
        lines += [""] + at
    lines += [""] + _claims_table(run)
    return "\n".join(lines) + "\n"


def _claims_table(run: RunMetrics) -> list[str]:
    """The claims judged on this run, beside the verdicts of the rules before this change."""
    rows = claim_verdicts(run)
    return [f"The paper's claims, each judged by the rule beside it on this run. {VERDICT_KEY} One run has no seed "
            "std, so none of its margins is within noise.", "",
            *claims_table(rows, before_cells(rows, claim_verdicts_before(run)))]


SUMMARY_BEGIN = "<!-- demo-summary:begin (rws-jax report --summary) -->"
SUMMARY_END = "<!-- demo-summary:end -->"


def summary_block(text: str) -> str | None:
    """The part of ``text`` between the summary markers (``None`` when absent)."""
    return read_block(text, SUMMARY_BEGIN, SUMMARY_END)


def splice_summary(doc: Path, summary: str) -> None:
    """Replace the text between the summary markers of ``doc`` by ``summary``."""
    write_block(doc, SUMMARY_BEGIN, SUMMARY_END, "\n\n" + summary + "\n")


def _setup_lines(cfg, facts: dict | None) -> list[str]:
    """The report's data, model and BatchNorm lines, from metrics/run_facts.json."""
    if facts is None:
        return [f"- data: {cfg.dataset}; {_corrupted_test_note(cfg)} (split sizes, kept units and BatchNorm "
                "handling not recorded: `rws-jax stage run-facts` records them)",
                f"- model: {cfg.model} {cfg.model_kwargs or ''}; signatures keep the first {cfg.keep_units} units "
                f"of {', '.join(cfg.collections)}"]
    n = facts["data"]
    return [f"- data: {cfg.dataset} (pre-training half for θ_init: {n['pretrain']} images, fine-tuning half: "
            f"{n['finetune']}, validation {n['val']}, test {n['test']}); {_corrupted_test_note(cfg)}",
            f"- model: {cfg.model} {cfg.model_kwargs or ''}; signatures keep the first {cfg.keep_units} units "
            f"({', '.join(facts['units_kept'])}) of {', '.join(cfg.collections)}",
            f"- {_bn_note(facts)}",
            *_shrink_lines(facts)]


def _shrink_lines(facts: dict) -> list[str]:
    """The recipe's weight-decay shrink beside the reference's (metrics/run_facts.json)."""
    sh = facts.get("shrink")
    if sh is None:
        return []
    return [f"- weight decay alone shrinks every weight by ×{sh['finetune']:.3f} over this fine-tune "
            f"({sh['finetune_steps']:,} steps); by ×{sh['reference']:.3f} over the reference recipe's "
            f"{sh['reference_steps']:,} steps (a direction shared by a and every Δ_c, which the projection removes)"]


def _probe_lines(probe: dict | None) -> list[str]:
    """θ_init's linear probe beside a random network's (metrics/probe.json)."""
    if not probe:
        return []
    t, r = probe["theta_init"], probe["random_init"]
    return [f"- θ_init's linear probe (frozen {t['feature_dim']}-d penultimate features, logistic regression fitted "
            f"on the {t['train_examples']:,} fine-tuning images, scored on {t['test_examples']:,} test images): "
            f"{100 * t['test_accuracy']:.1f}%; a randomly initialised network's: {100 * r['test_accuracy']:.1f}%"]


def premise_lines(premise: dict | None) -> list[str]:
    """The premise (one linear basin) as the report's first lines (metrics/premise.json)."""
    if not premise:
        return ["- premise (the models lie in one linear basin): not measured by this run"]
    cells = []
    seeds = premise.get("standard_seeds", {}).get("clean")
    if seeds is not None:
        cells.append(f"θ_std seed 0 ↔ 1: TA {100 * seeds['barrier']:.1f}")
    for c, paths in premise.get("robust", {}).items():
        cells.append(f"θ_std ↔ θ_rob,{c}: TA {100 * paths['clean']['barrier']:.1f}, RA {100 * paths[c]['barrier']:.1f}")
    where = "; ".join(cells) + " pp"
    limit = f"{100 * premise['threshold']:.0f} pp"
    if premise.get("met"):
        return [f"- **premise met**: every accuracy barrier on the straight lines between the models is under "
                f"{limit} ({where}; {premise['points']} points a line)"]
    return [f"- **premise not met**: an accuracy barrier on the straight lines between the models reaches {limit} "
            f"or more ({where}; {premise['points']} points a line): every verdict below is judged under an unmet "
            "premise"]


def write_report(run_dir: str | Path, command: str | None = None) -> Path:
    """Writes ``report.md`` and ``figures/*.png`` into the run directory ``run_dir`` from its
    ``config.yaml`` and ``metrics/``; returns the report's path."""
    run_dir = Path(run_dir)
    run = RunMetrics.from_dir(run_dir)
    figs = run_dir / "figures"
    figs.mkdir(exist_ok=True)
    cfg = run.cfg
    if command is None and (run_dir / "command.txt").exists():
        command = (run_dir / "command.txt").read_text().strip()
    lines = [
        f"# Robust Weight Signatures: run `{cfg.name}`",
        "",
        f"{cfg.description}",
        "",
        f"- generated {datetime.datetime.now().isoformat(timespec='seconds')} by rws_jax on "
        f"{platform.node()} (Python {sys.version.split()[0]}, jax {importlib.metadata.version('jax')})",
        f"- command: `{command or '(library call)'}`",
        f"- config: [`config.yaml`](config.yaml) (digest `{cfg.digest()}`), reproduced at the end",
        *premise_lines(run.load_metrics("premise")),
        *_setup_lines(cfg, run.load_metrics("run_facts")),
        *_probe_lines(run.load_metrics("probe")),
        "- TA = clean test accuracy, RA = accuracy on the corrupted test set; checkpoints were selected on the "
        "validation split only.",
        "",
    ]
    f0 = fig_premise(run, figs)
    if f0:
        lines += ["## 0. The premise: one linear basin", "",
                  "A patch is a point near the straight line between models fine-tuned from one θ_init; it can only "
                  "carry θ_rob,c's robustness where that line has no accuracy barrier (the largest drop below the "
                  "straight line joining the endpoint accuracies).", "", f"![premise]({f0})", ""]
    f1 = fig_layer_change(run, figs)
    if f1:
        lines += ["## 1. Where do clean and robust weights differ? (layer-wise relative change)", "", f"![layer change]({f1})", ""]
    f2 = fig_similarity(run, figs)
    if f2:
        lines += ["## 2. Are RWSs discriminative? (cosine similarity)", "",
                  "Cosine similarity between the signatures (flattened kept layers): each corruption on the "
                  f"main dataset from {cfg.robust_replicates} robust model(s) trained with different seeds, and on "
                  "the transfer dataset, all from the same θ_init. The paper's claim: high for the same "
                  "corruption, low across corruptions.", "",
                  f"![similarity]({f2})", ""]
    lines += ["## 3. Patching, 5. composition, 7. quantization: TA/RA (%)", "", _corrupted_test_note(cfg) + ".", ""]
    lines += _accuracy_table(run) + [""]
    at = _alpha_table(run)
    metrics = run
    if at:
        lines += ["### Choosing α on the validation split", ""] + at + [""]
        note = alpha_search_note(metrics)
        lines += [note, ""] if note else []
    mech = mechanism_tables(metrics)
    if mech:
        lines += ["### The mechanism: what the projection removes", ""] + mech + [""]
    f4 = fig_alpha(run, figs)
    if f4:
        lines += ["## 4. Scaling α", "", f"![alpha]({f4})", ""]
    t = _transfer_table(run)
    f6 = fig_transfer(run, figs)
    per_c = transfer_by_corruption(metrics)
    if t or f6:
        lines += ["## 6. Transfer", ""] + t + [""] + ([f"![transfer]({f6})", ""] if f6 else [])
        if per_c:
            lines += ["Per corruption, the share of the target's own robust gap that the source RWS closes:", "",
                      *per_c, ""]
    st = run.load_metrics("storage")
    if st:
        f7 = fig_storage(run, figs)
        lines += ["## 7. Storage", "",
                  f"{st['kept_tensors']} tensors, {st['signature_elements']:,} of the model's {st['model_elements']:,} "
                  "values; both files written with orbax-checkpoint (`save_signature` / `save_variables`).", "",
                  "| signature | bytes on disk | full model bytes | ratio |", "|---|---|---|---|"]
        for r in st["rows"]:
            lines.append(f"| {r['bits']}-bit | {r['signature_bytes']:,.0f} | {r['model_bytes']:,} | {r['ratio']:.1f}× |")
        lines += ["", f"![storage]({f7})", ""]
    m = run.load_metrics("autopatch")
    if m:
        lines += ["## Auto-patching an unknown corruption", "", *autopatch_markdown(m), ""]
    lines += ["## Verdicts on the paper's claims", ""] + _claims_table(run) + [""]
    lines += ["## Config", "", "```yaml", cfg.to_yaml().rstrip(), "```", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
