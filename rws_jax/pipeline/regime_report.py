"""The regime map's report: reads ``<out>/metrics/regime.json`` (written by
:func:`rws_jax.pipeline.regime.collect_rows`) and nothing else; writes ``report.md`` and
``figures/regime.png``, and exports them with the metrics to a docs directory."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rws_jax.pipeline.metrics_files import read_metrics, write_metrics  # noqa: E402
from rws_jax.pipeline.tables import fixed, pct  # noqa: E402


def _pp(x: Any) -> str:
    return "–" if x is None else f"{100 * x:+.1f}"


def _share(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _met(v: dict, threshold: float) -> bool | None:
    ta, ra = v.get("barrier_ta"), v.get("barrier_ra")
    if ta is None or ra is None:
        return None
    return max(float(ta), float(ra)) < threshold


def points(data: dict) -> list[dict]:
    """One point per cell and corruption: the row's fields with the cell's beside them."""
    out = []
    for row in data["rows"]:
        for c, v in row["corruptions"].items():
            out.append({**{k: row[k] for k in ("cell", "init", "recipe", "width", "probe", "shrink")},
                        "corruption": c, **v, "met": _met(v, data.get("threshold", 0.02))})
    return out


def regime_table(data: dict) -> list[str]:
    lines = ["| cell | θ_init | recipe | width | probe (random; on classes 0–4) | shrink | corruption | barrier TA / RA pp | "
             "‖a‖/‖θ_init‖ | cos(Δ,a) | TA std / rob / patched | RA std / rob / patched | gap closed α=0.5 / 1 | "
             "TA cost vs std / rob pp |",
             "|---|---|---|---:|---|---:|---|---|---:|---:|---|---|---|---|"]
    for row in data["rows"]:
        for c, v in row["corruptions"].items():
            lines.append(
                f"| {row['cell']} | {row['init']} | {row['recipe']} ({row['epochs']} ep, lr {row['lr']:g}, "
                f"wd {row['weight_decay']:.3g}) | {row['width']:g} | {pct(row['probe'])} ({pct(row['probe_random'])}; "
                f"{pct(row.get('probe_common'))}) | "
                f"{fixed(row['shrink'])} | {c} | {_pp(v['barrier_ta'])} / {_pp(v['barrier_ra'])} | "
                f"{fixed(v['clean_change'])} | {fixed(v['cos'])} | {pct(v['ta_standard'])} / {pct(v['ta_robust'])} / "
                f"{pct(v['ta_patched'])} | {pct(v['ra_standard'])} / {pct(v['ra_robust'])} / {pct(v['ra_patched'])} | "
                f"{_share(v['gap_closed_0.5'])} / {_share(v['gap_closed_1'])} | {_pp(v['ta_cost_vs_standard'])} / "
                f"{_pp(v['ta_cost_vs_robust'])} |")
    return lines


def summary_sentence(data: dict) -> str:
    """Where patching works, in numbers: the mean gap closed at α = 1 and TA cost, for the
    points whose barriers are under the threshold and for the others."""
    pts = points(data)
    thr = data.get("threshold", 0.02)
    parts = []
    for label, sel in ((f"premise met (every barrier < {100 * thr:.0f} pp)", [p for p in pts if p["met"] is True]),
                       (f"premise not met (a barrier ≥ {100 * thr:.0f} pp)", [p for p in pts if p["met"] is False])):
        g = [p["gap_closed_1"] for p in sel if p["gap_closed_1"] is not None]
        t = [p["ta_cost_vs_standard"] for p in sel if p["ta_cost_vs_standard"] is not None]
        if sel and g:
            parts.append(f"{label}: {len(sel)} points, gap closed at α = 1 "
                         f"{100 * sum(g) / len(g):.0f}% on average (range {100 * min(g):.0f}% to {100 * max(g):.0f}%), "
                         f"TA cost vs θ_std {100 * sum(t) / len(t):+.1f} pp")
        else:
            parts.append(f"{label}: no point with a measurable RA gap" if sel else f"{label}: no point")
    return "; ".join(parts) + "."


def design_section(design: dict | None) -> list[str]:
    """The study's design rule, the values that chose, and the chosen recipe's shrink."""
    if design is None:
        return ["## The study's design", "", "Not chosen yet: the rule needs the row of every label-free θ_init kind "
                "with the study's recipe.", ""]
    kinds = design["label_free_kinds"]
    probes = ", ".join(f"{k} {pct(design['probes'][k])}" for k in kinds)
    widths = ", ".join(f"1/{round(1 / float(w))}: {e}" for w, e in design["epochs_by_width"].items())
    return [
        "## The study's design", "",
        "The rule (`rws_jax.pipeline.study_design`, fixed before any cell ran): the θ_init kind with the best linear "
        "probe among those that never saw a label of the study's task (" + ", ".join(kinds) + "), compared on one "
        "task (classes 0–4); the reference's fine-tuning recipe with one cut, the number of epochs: as many as fit "
        f"the study's {design['budget_s'] / 3600:g} h budget (counted for the study built on the chosen kind, from "
        f"the per-image costs of `{design['costs_file']}`), at the widest width where that is at least the study's "
        f"earlier {design['current_epochs']} epochs.", "",
        f"- probes on classes 0–4: {probes} → **{design['init']}**",
        f"- fine-tuning epochs that fit, by width: {widths} → **width 1/{round(1 / design['width'])}, "
        f"{design['epochs']} epochs**",
        f"- the chosen recipe's shrink factor (weight decay alone, seed 0's fine-tuning split): "
        f"**{fixed(design['shrink'])}**, the reference's {fixed(design['reference_shrink'])}", ""]


def regime_figure(data: dict, path: Path) -> Path:
    pts = [p for p in points(data) if p["gap_closed_1"] is not None]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    inits = sorted({p["init"] for p in pts})
    colors = {k: plt.get_cmap("tab10")(i) for i, k in enumerate(inits)}
    markers = {"gaussian_noise": "o", "defocus_blur": "s", "fog": "^"}
    for (i, j), (x, y, xl, yl) in {
        (0, 0): ("barrier_ra", "gap_closed_1", "RA_c barrier θ_std ↔ θ_rob,c (accuracy)", "RA gap closed at α = 1 (symlog)"),
        (0, 1): ("clean_change", "gap_closed_1", "‖a‖ / ‖θ_init‖ (kept units)", "RA gap closed at α = 1 (symlog)"),
        (1, 0): ("barrier_ta", "ta_cost_vs_standard", "TA barrier θ_std ↔ θ_rob,c (accuracy)", "TA cost vs θ_std"),
        (1, 1): ("clean_change", "ta_cost_vs_standard", "‖a‖ / ‖θ_init‖ (kept units)", "TA cost vs θ_std"),
    }.items():
        ax = axes[i][j]
        for p in pts:
            if p.get(x) is None or p.get(y) is None:
                continue
            ax.scatter(p[x], p[y], color=colors[p["init"]], marker=markers.get(p["corruption"], "x"), s=36,
                       alpha=0.85)
        if x.startswith("barrier"):
            ax.axvline(data.get("threshold", 0.02), color="grey", ls=":", lw=1)
        ax.axhline(1.0 if y == "gap_closed_1" else 0.0, color="grey", ls="--", lw=0.8)
        if y == "gap_closed_1":  # a few points far below -1 would flatten the rest: linear within ±1
            ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
    handles = [plt.Line2D([], [], color=colors[k], marker="o", ls="", label=k) for k in inits]
    shown = {p["corruption"] for p in pts}
    handles += [plt.Line2D([], [], color="k", marker=m, ls="", label=c) for c, m in markers.items() if c in shown]
    if handles:  # none when no point has a measurable RA gap (the smoke-test map)
        fig.legend(handles=handles, loc="upper center", ncol=min(8, len(handles)), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_regime_report(out: str | Path, command: str | None = None) -> Path:
    """``<out>/report.md`` and ``<out>/figures/regime.png`` from ``<out>/metrics/regime.json``."""
    out = Path(out)
    data = read_metrics(out, "regime")
    if data is None:
        raise FileNotFoundError(f"{out}/metrics/regime.json does not exist: run `rws-jax regime --out {out}` first")
    plan = data["plan"]
    lines = ["# When patching works: the regime map", ""]
    if command:
        lines += [f"Written by `{command}` from `metrics/regime.json`.", ""]
    lines += [f"{len(data['rows'])} of {len(plan['cells'])} cells measured"
              + (f"; not run yet: {', '.join(data['missing'])}" if data["missing"] else "") + ".", "",
              f"Plan (`rws_jax.pipeline.regime.plan_regime`, fixed before the run): corruptions "
              f"{', '.join(plan['corruptions'])}; the longest recipe {plan['long_epochs']} epochs; estimated "
              f"{plan['estimate_s'] / 60:.0f} min of a {plan['budget_s'] / 60:.0f} min budget.", ""]
    if plan["cut"]:
        lines += ["Cut by the plan's rule: " + "; ".join(plan["cut"]) + ".", ""]
    if data["rows"]:
        lines += ["**" + summary_sentence(data) + "**", "", "![regime map](figures/regime.png)", ""]
        regime_figure(data, out / "figures" / "regime.png")
    lines += ["## By θ_init kind", "", *by_kind_table(data), ""]
    lines += design_section(data.get("design")) + regime_table(data) + [""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"


def by_kind_table(data: dict) -> list[str]:
    """Per θ_init kind (the weight-decay and width cells apart): points meeting the premise,
    the largest barrier, the mean share of the RA gap closed at α = 1 and the mean TA cost."""
    groups: dict[str, list[dict]] = {}
    for p in points(data):
        key = p["init"] if p["recipe"] in ("current", "lr_div10", "long") and p["width"] == 0.125 \
            else f"{p['init']} ({p['recipe']}, width {p['width']:g})"
        groups.setdefault(key, []).append(p)
    lines = ["| θ_init (cells) | points meeting the premise | largest barrier (pp) | mean RA gap closed at α = 1 | "
             "mean TA cost vs θ_std (pp) |", "|---|---|---|---|---|"]
    for key, pts in groups.items():
        met = sum(1 for p in pts if p["met"] is True)
        bars = [max(float(p["barrier_ta"]), float(p["barrier_ra"])) for p in pts
                if p["barrier_ta"] is not None and p["barrier_ra"] is not None]
        g = [p["gap_closed_1"] for p in pts if p["gap_closed_1"] is not None]
        t = [p["ta_cost_vs_standard"] for p in pts if p["ta_cost_vs_standard"] is not None]
        lines.append(f"| {key} | {met} of {len(pts)} | {_pp(max(bars)) if bars else '–'} | "
                     f"{_share(sum(g) / len(g)) if g else '–'} | {_pp(sum(t) / len(t)) if t else '–'} |")
    return lines


REGIME_BEGIN = "<!-- regime-summary:begin (make regime-docs: rws-jax regime --report-only --export docs/regime --splice README.md) -->"
REGIME_END = "<!-- regime-summary:end -->"


def regime_summary_markdown(data: dict, docs: str = "docs/regime") -> str:
    """README's paragraph on the map, from ``regime.json`` alone: how many cells and points,
    how many met the premise, the mean gap closed and TA cost on each side of it, the figure,
    and the design the rule chose."""
    pts = points(data)
    thr = data.get("threshold", 0.02)
    met = [p for p in pts if p["met"] is True]
    plan = data["plan"]
    lines = [f"{len(data['rows'])} of {len(plan['cells'])} cells of the map "
             f"(VGG-16, {', '.join(plan['corruptions'])}; one seed; `make regime-docs`, "
             f"[report]({docs}/report.md)): {len(met)} of {len(pts)} cell × corruption points meet the premise "
             f"(both θ_std ↔ θ_rob,c barriers under {100 * thr:.0f} pp). **{summary_sentence(data)}**", "",
             *by_kind_table(data), "", f"![regime map]({docs}/figures/regime.png)", ""]
    d = data.get("design")
    if d is not None:
        lines += [f"The study's design, by the rule fixed before the map ran (`rws_jax.pipeline.study_design`): "
                  f"θ_init **{d['init']}** (linear-probe accuracy on classes 0–4, %: "
                  + ", ".join(f"{k} {pct(v)}" for k, v in d["probes"].items())
                  + f"), width 1/{round(1 / d['width'])}, **{d['epochs']} fine-tuning epochs** (shrink "
                  f"{fixed(d['shrink'])}; the reference's {fixed(d['reference_shrink'])}).", ""]
    return "\n".join(lines)


def export_regime(out: str | Path, dest: str | Path) -> Path:
    """Copies report.md, figures/ and metrics/regime.json (no checkpoints) to ``dest``."""
    out, dest = Path(out), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(out / "report.md", dest / "report.md")
    if (out / "figures").is_dir():
        shutil.copytree(out / "figures", dest / "figures", dirs_exist_ok=True)
    write_metrics(dest, "regime", read_metrics(out, "regime"))
    return dest
