"""Markdown tables written from a run's metrics (:class:`RunMetrics`), shared by the run
report and the study report: the claims with their rules, the mechanism diagnostics,
transfer per corruption, and what the α searches did."""

from __future__ import annotations

import numpy as np

from rws_jax.pipeline.run_metrics import RunMetrics


def pct(x) -> str:
    """An accuracy in percent with one decimal (``–`` when missing)."""
    return "–" if x is None else f"{100 * x:.1f}"


def fixed(x, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals (``–`` when missing)."""
    return "–" if x is None else f"{x:.{digits}f}"


def second_rule_cell(row: dict) -> str:
    """A claim row's second rule and its verdict (``–`` for a claim without one)."""
    return f"{row['second_rule']}: **{row['second_verdict']}**" if row.get("second_rule") else "–"


def kept_mean(mech: dict, c: str, key: str) -> float | None:
    """Mean of ``metrics/mechanism.json``'s per-unit ``key`` (``'cos'``, ``'removed'``,
    ``'robust_change'``) of corruption ``c`` over the units the signatures keep."""
    if c not in mech["corruptions"]:
        return None
    kept = set(mech["kept"])
    v = [x for u, x in zip(mech["units"], mech["corruptions"][c][key]) if u in kept and x is not None]
    return float(np.mean(v)) if v else None


def claims_table(rows: list[dict], extra: dict[str, list[str]] | None = None) -> list[str]:
    """``| claim | rule | numbers | verdict | second rule |`` plus ``extra`` columns
    (``{header: one cell per row}``)."""
    extra = extra or {}
    head = ["claim", "rule", "numbers", "verdict", "second rule: verdict", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows):
        cells = [r["claim"], r["rule"], r["evidence"], f"**{r['verdict']}**", second_rule_cell(r),
                 *(col[i] for col in extra.values())]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def mechanism_tables(m: RunMetrics) -> list[str]:
    """How much the projection removes, and each patch's TA beside its robust model's."""
    mech = m.load_metrics("mechanism")
    if not mech:
        return []
    units, kept = mech["units"], set(mech["kept"])
    lines = ["Per corruption, over the units the signatures keep (mean over units): cos(Δ_c, a) with "
             "Δ_c = θ_rob,c − θ_init and a = θ_std − θ_init, and the share ‖proj‖/‖Δ_c‖ of Δ_c that the "
             "projection removes (0: RWS_c = Δ_c). Beside them, each patch's clean accuracy next to its robust "
             "model's: a patch that removes little of Δ_c carries θ_rob,c's TA with it.", "",
             "| corruption | mean cos(Δ_c, a) | share removed | ‖Δ_c‖/‖θ_init‖ | TA θ_std | TA θ_rob,c | "
             "TA θ_std + RWS_c |", "|---|---|---|---|---|---|---|"]
    for c in mech["corruptions"]:
        means = " | ".join(fixed(kept_mean(mech, c, key)) for key in ("cos", "removed", "robust_change"))
        lines.append(f"| {c} | {means} | {pct(m.ta('standard'))} | {pct(m.ta(f'robust/{c}'))} | "
                     f"{pct(m.ta(f'patched/{c}/alpha=1'))} |")
    cs = list(mech["corruptions"])
    lines += ["", "Per unit (kept units marked *): ‖a‖/‖θ_init‖, then cos(Δ_c, a) / share removed per corruption.", "",
              "| unit | ‖a‖/‖θ_init‖ | " + " | ".join(cs) + " |", "|---|---|" + "---|" * len(cs)]
    for i, u in enumerate(units):
        a = mech["clean_change"][i]
        cells = []
        for c in cs:
            cos, rem = mech["corruptions"][c]["cos"][i], mech["corruptions"][c]["removed"][i]
            cells.append("–" if cos is None else f"{cos:.2f} / {rem:.2f}")
        lines.append(f"| {u}{' *' if u in kept else ''} | {fixed(a)} | " + " | ".join(cells) + " |")
    return lines


def transfer_by_corruption(m: RunMetrics) -> list[str]:
    """Per transfer target and corruption: the target's θ_std RA, patched with the source
    RWS_c, its own θ_rob,c, and the share of its own robust gap the patch closes."""
    rows = []
    for tgt, label, judged in m.transfer_targets:
        for c in m.cfg.corruptions:
            s, p = m.ra(f"{tgt}/standard", c), m.ra(f"{tgt}/patched/{c}", c)
            if s is None or p is None:
                continue
            r = m.ra(f"{tgt}/robust/{c}", c)
            share = "–" if r is None or r - s < 0.005 else f"{100 * (p - s) / (r - s):.0f}%"
            rows.append(f"| {label}{'' if judged else ' (beyond the paper)'} | {c} | {pct(s)} | {pct(p)} | "
                        f"{pct(r)} | {share} |")
    if not rows:
        return []
    return ["| target | corruption | RA θ_std | RA θ_std + source RWS_c | RA own θ_rob,c | share of own gap closed |",
            "|---|---|---|---|---|---|", *rows]


def alpha_search_note(m: RunMetrics) -> str | None:
    """Says which α searches ran out of their budget (None when none did or none ran)."""
    found = m.load_metrics("alpha_search")
    if not found:
        return None
    spent = [f"{c} (alone)" for c, rec in found.get("single", {}).items() if rec.get("exhausted")]
    spent += [f"the set ({method})" for method, rec in found.get("set", {}).items() if rec.get("exhausted")]
    if not spent:
        return (f"Every α search finished within its budget ({found.get('budget')} validation evaluations): the "
                "coordinate ascent stopped on a full round without improvement.")
    return (f"The α search ran out of its budget ({found.get('budget')} validation evaluations) for: "
            f"{', '.join(spent)}; those α are the best found, not a converged choice.")
